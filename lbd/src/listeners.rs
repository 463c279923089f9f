//! Which VIP ports have a listening TCP socket on this node, read from
//! /proc/net/tcp and /proc/net/tcp6 (the daemon's network namespace).
//!
//! `lbd status` shows a VIP port without a listener as soon as it is gone,
//! before any health check fails `fall` times: the dataplane already sends
//! that port's new connections to their fallback node (docs/dataplane.md,
//! listener-aware steering). Hand-parsed: two fields of a fixed kernel
//! format, not worth a dependency.
use std::net::IpAddr;

/// TCP_LISTEN as /proc/net/tcp prints it (`st` column, hex).
const TCP_LISTEN_HEX: &str = "0A";

/// A listening socket: the local address and port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listener {
    pub addr: IpAddr,
    pub port: u16,
}

impl Listener {
    /// Accepts connections to `vip`:`port`: bound to the port on the VIP
    /// itself, on the wildcard address of either family (a dual-stack `[::]`
    /// socket takes IPv4 too), or on the VIP's IPv4-mapped IPv6 address.
    pub fn serves(&self, vip: IpAddr, port: u16) -> bool {
        if self.port != port {
            return false;
        }
        if self.addr.is_unspecified() || self.addr == vip {
            return true;
        }
        match (self.addr, vip) {
            (IpAddr::V6(a), IpAddr::V4(v)) => a.to_ipv4_mapped() == Some(v),
            _ => false,
        }
    }
}

/// The listening sockets of this namespace (unreadable files give none).
pub fn listening() -> Vec<Listener> {
    let mut out = Vec::new();
    for file in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(file) {
            out.extend(parse(&text));
        }
    }
    out
}

/// The LISTEN entries of one /proc/net/tcp{,6} text; lines that do not
/// parse are skipped.
pub fn parse(text: &str) -> impl Iterator<Item = Listener> + '_ {
    text.lines().skip(1).filter_map(|line| {
        let mut f = line.split_whitespace();
        let local = f.nth(1)?;
        let state = f.nth(1)?;
        if state != TCP_LISTEN_HEX {
            return None;
        }
        let (addr, port) = local.split_once(':')?;
        Some(Listener {
            addr: parse_addr(addr)?,
            port: u16::from_str_radix(port, 16).ok()?,
        })
    })
}

/// The kernel prints each 32-bit word of the address in host byte order.
fn parse_addr(hex: &str) -> Option<IpAddr> {
    let words = |n: usize| -> Option<Vec<[u8; 4]>> {
        (0..n)
            .map(|i| {
                let w = u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok()?;
                Some(w.to_ne_bytes())
            })
            .collect()
    };
    match hex.len() {
        8 => Some(IpAddr::from(words(1)?[0])),
        32 => {
            let mut b = [0u8; 16];
            for (i, w) in words(4)?.into_iter().enumerate() {
                b[i * 4..i * 4 + 4].copy_from_slice(&w);
            }
            Some(IpAddr::from(b))
        }
        _ => None,
    }
}

/// The ports of `vip` (from its config) that no listener serves.
pub fn missing(listeners: &[Listener], vip: IpAddr, ports: &[u16]) -> Vec<u16> {
    ports
        .iter()
        .copied()
        .filter(|&p| !listeners.iter().any(|l| l.serves(vip, p)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_listeners_of_both_families() {
        // Host byte order (little endian here): 198.51.100.10 is 0A6433C6.
        let tcp = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
   0: 0A6433C6:0050 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0\n\
   1: 00000000:01BB 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 2 1 0 100 0 0 10 0\n\
   2: 0A6433C6:0050 070071CB:9C40 01 00000000:00000000 00:00000000 00000000     0        0 3 1 0 100 0 0 10 0\n\
   garbage\n";
        let l: Vec<Listener> = parse(tcp).collect();
        let vip: IpAddr = "198.51.100.10".parse().expect("addr");
        assert_eq!(
            l,
            [
                Listener {
                    addr: vip,
                    port: 80
                },
                Listener {
                    addr: "0.0.0.0".parse().expect("addr"),
                    port: 443
                },
            ]
        );
        assert_eq!(missing(&l, vip, &[80, 443, 8080]), [8080]);
        let other: IpAddr = "198.51.100.11".parse().expect("addr");
        assert_eq!(missing(&l, other, &[80, 443]), [80]);

        // [::]:80, dual stack, serves both families.
        let tcp6 = "  sl  local_address                         remote_address                        st\n\
   0: 00000000000000000000000000000000:0050 00000000000000000000000000000000:0000 0A 0 0 0\n";
        let l6: Vec<Listener> = parse(tcp6).collect();
        assert!(missing(&l6, vip, &[80]).is_empty());
        let v6: IpAddr = "2001:db8::10".parse().expect("addr");
        assert!(missing(&l6, v6, &[80]).is_empty());
        assert_eq!(missing(&[], v6, &[80]), [80]);
    }

    #[test]
    fn ipv6_addresses_read_word_by_word() {
        let v6: std::net::Ipv6Addr = "2001:db8:100::10".parse().expect("addr");
        let hex: String = v6
            .octets()
            .chunks(4)
            .map(|w| format!("{:08X}", u32::from_ne_bytes([w[0], w[1], w[2], w[3]])))
            .collect();
        assert_eq!(parse_addr(&hex), Some(IpAddr::V6(v6)));
        assert_eq!(parse_addr("zz"), None);
    }

    /// The real kernel's file, with a real listener of this process.
    #[test]
    fn finds_a_real_listener() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let lo: IpAddr = "127.0.0.1".parse().expect("addr");
        assert!(missing(&listening(), lo, &[port]).is_empty());
        drop(l);
        assert_eq!(missing(&listening(), lo, &[port]), [port]);
    }
}
