//! Which VIP ports have a listening TCP socket on this node, read from
//! /proc/net/tcp and /proc/net/tcp6 (the daemon's network namespace).
//!
//! `lbd status` shows a VIP port without a listener as soon as it is gone,
//! before any health check fails `fall` times: the dataplane already sends
//! that port's new connections to their fallback node (docs/dataplane.md,
//! listener-aware steering). Hand-parsed: two fields of a fixed kernel
//! format, not worth a dependency.
//!
//! The listener quiesce (`lbd listener quiesce`) needs more than /proc's
//! text: each listening socket's inode (a new nginx has new sockets) and
//! accept queue, and the handshakes in progress. Those come from sock_diag
//! netlink ([`sockets`], through the `sockdiag` crate flowmark uses too),
//! binary and filtered by state in the kernel.
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

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

/// TCP_NEW_SYN_RECV: the state of request sockets (a handshake the
/// listener answered, waiting for the client's ACK). sock_diag reports
/// them as SYN_RECV; the crate has no flag for the kernel's state 12.
const TCP_NEW_SYN_RECV: u32 = 12;

/// A listening socket as sock_diag reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenSocket {
    pub at: Listener,
    /// The socket's inode: a restarted server has new ones.
    pub inode: u32,
    /// Connections with a finished handshake, not yet accepted.
    pub accept_queue: u32,
}

/// The listening sockets and the handshakes in progress (request sockets,
/// by local address and port) of this namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sockets {
    pub listening: Vec<ListenSocket>,
    pub handshakes: Vec<Listener>,
}

impl Sockets {
    /// Inodes of the listeners that serve `vip`:`port`.
    pub fn inodes(&self, vip: IpAddr, port: u16) -> Vec<u32> {
        self.listening
            .iter()
            .filter(|l| l.at.serves(vip, port))
            .map(|l| l.inode)
            .collect()
    }

    /// What `vip`:`port`'s listeners hold that closing them would reset.
    pub fn queue(&self, vip: IpAddr, port: u16, quiesced: bool) -> ListenerQueue {
        let serving = || self.listening.iter().filter(|l| l.at.serves(vip, port));
        ListenerQueue {
            vip,
            port,
            quiesced,
            listeners: serving().count(),
            accept_queue: serving().map(|l| l.accept_queue).sum(),
            handshakes: self
                .handshakes
                .iter()
                .filter(|h| h.serves(vip, port))
                .count(),
        }
    }
}

/// One VIP port's listeners as `lbd listener` shows them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ListenerQueue {
    pub vip: IpAddr,
    pub port: u16,
    /// New connections go to the fallback (`lbd listener quiesce`).
    pub quiesced: bool,
    /// Listening sockets serving it (several with SO_REUSEPORT).
    pub listeners: usize,
    /// Connections accepted by the kernel, not yet by the server.
    pub accept_queue: u32,
    /// Handshakes in progress (SYN answered, waiting for the ACK).
    pub handshakes: usize,
}

impl ListenerQueue {
    /// Nothing a closing listener would reset.
    pub fn is_empty(&self) -> bool {
        self.accept_queue == 0 && self.handshakes == 0
    }
}

pub use sockdiag::DiagError;
use sockdiag::{AF_INET, AF_INET6, ExtensionFlags, Query, StateFlags, TCP_LISTEN, TCP_SYN_RECV};

/// The listening sockets (and, with `handshakes`, the request sockets) of
/// both families in this network namespace.
pub fn sockets(handshakes: bool) -> Result<Sockets, DiagError> {
    let mut out = Sockets::default();
    let mut states = StateFlags::LISTEN;
    if handshakes {
        states |= StateFlags::SYN_RECV | StateFlags::from_bits_retain(1 << TCP_NEW_SYN_RECV);
    }
    for family in [AF_INET, AF_INET6] {
        dump(family, states.clone(), |state, at, inode, queue| {
            if state == TCP_LISTEN {
                out.listening.push(ListenSocket {
                    at,
                    inode,
                    accept_queue: queue,
                });
            } else if state == TCP_SYN_RECV {
                out.handshakes.push(at);
            }
        })?;
    }
    Ok(out)
}

/// One sock_diag dump of TCP sockets of `family` in `states`; `each` gets
/// (state, local address and port, inode, receive queue).
fn dump(
    family: u8,
    states: StateFlags,
    mut each: impl FnMut(u8, Listener, u32, u32),
) -> Result<(), DiagError> {
    Query::dump(family, states, ExtensionFlags::empty()).run(|r| {
        let h = &r.header;
        let at = Listener {
            addr: h.socket_id.source_address,
            port: h.socket_id.source_port,
        };
        each(h.state, at, h.inode, h.recv_queue);
    })
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

    /// The real kernel's file, with a real listener of this process: found
    /// while it listens, missing once closed. A parallel test of this
    /// binary that spawns a process at that moment holds a copy of the
    /// socket's descriptor until its exec, so the close may not yet close
    /// it (seen twice under `make test`, also with the port reserved by a
    /// second socket): the close is tried on up to five ports, and a closed
    /// listener that stays listed fails all five.
    #[test]
    fn finds_a_real_listener() {
        let lo: IpAddr = "127.0.0.1".parse().expect("addr");
        let mut listed_after_close = Vec::new();
        for _ in 0..5 {
            let l = std::net::TcpListener::bind((lo, 0)).expect("bind");
            let port = l.local_addr().expect("addr").port();
            assert!(missing(&listening(), lo, &[port]).is_empty());
            drop(l);
            if missing(&listening(), lo, &[port]) == [port] {
                return;
            }
            listed_after_close.push(port);
        }
        panic!("closed listeners still listed on ports {listed_after_close:?}");
    }

    /// sock_diag sees a real listener's inode, its accept queue filling
    /// with connections nobody accepted and draining as they are accepted,
    /// and a new socket on the port gets another inode.
    #[test]
    fn sock_diag_reads_accept_queue_and_inode() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let lo: IpAddr = "127.0.0.1".parse().expect("addr");
        let s = sockets(true).expect("sock_diag");
        let q = s.queue(lo, port, false);
        assert_eq!((q.listeners, q.accept_queue), (1, 0), "{q:?}");
        assert!(q.is_empty());
        let first = s.inodes(lo, port);
        assert_eq!(first.len(), 1);
        let clients: Vec<_> = (0..3)
            .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect"))
            .collect();
        let q = sockets(true).expect("sock_diag").queue(lo, port, true);
        assert_eq!(q.accept_queue, 3, "{q:?}");
        assert!(!q.is_empty() && q.quiesced);
        for _ in 0..3 {
            l.accept().expect("accept");
        }
        assert!(
            sockets(true)
                .expect("sock_diag")
                .queue(lo, port, true)
                .is_empty()
        );
        drop((l, clients));
        assert_eq!(
            sockets(false)
                .expect("sock_diag")
                .queue(lo, port, false)
                .listeners,
            0
        );
        let again = std::net::TcpListener::bind(("127.0.0.1", port)).expect("rebind");
        let second = sockets(false).expect("sock_diag").inodes(lo, port);
        assert_eq!(second.len(), 1);
        assert_ne!(first, second, "a new socket has a new inode");
        drop(again);
    }
}
