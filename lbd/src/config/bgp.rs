//! Validation of the `[bgp]` table and its `[[bgp.peers]]`.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use super::raw::{RawBgp, RawPeer};
use super::values::{self, V};
use super::{Bfd, Bgp, Peer};

pub(super) fn bgp(v: &mut V, raw: Option<RawBgp>) -> Option<Bgp> {
    let raw = v.required("bgp", raw, "a [bgp] table")?;
    let local_as = v
        .required("bgp.local_as", raw.local_as, "this node's AS number")
        .and_then(|a| v.asn("bgp.local_as", a));
    let router_id = v
        .required("bgp.router_id", raw.router_id, "an IPv4 address")
        .and_then(|r| match r.parse::<Ipv4Addr>() {
            Ok(a) if !a.is_unspecified() => Some(a),
            _ => {
                v.err(
                    "bgp.router_id",
                    format!("{r:?} is not an IPv4 address (a BGP identifier is one)"),
                );
                None
            }
        });
    let hold_time = match raw.hold_time {
        None => Some(9),
        Some(h) if h == 0 || (3..=65535).contains(&h) => Some(h as u16),
        Some(h) => {
            v.err(
                "bgp.hold_time",
                format!("{h} is not a hold time (expected 0 or 3-65535 seconds)"),
            );
            None
        }
    };
    // 0: no listener, sessions are active only (the router must not be
    // passive towards us, and no peer of ours can be passive).
    let listen_port = match raw.listen_port {
        None => Some(Some(179)),
        Some(0) => Some(None),
        Some(p) => v.port("bgp.listen_port", p).map(Some),
    };
    let graceful_restart_time = match raw.graceful_restart_time {
        None => Some(Some(120)),
        Some(0) => Some(None),
        Some(t) => v
            .range(
                "bgp.graceful_restart_time",
                t,
                0,
                4095,
                "0 (off) or 1-4095 seconds",
            )
            .map(|t| Some(t as u16)),
    };
    let mut communities = Some(Vec::new());
    for (i, c) in raw.communities.unwrap_or_default().iter().enumerate() {
        match values::community(c) {
            Some(x) => {
                if let Some(list) = communities.as_mut() {
                    list.push(x);
                }
            }
            None => {
                v.err(
                    &format!("bgp.communities[{i}]"),
                    format!("{c:?} is not a community (expected \"ASN:VALUE\", each 0-65535)"),
                );
                communities = None;
            }
        }
    }
    let med = match raw.med {
        None => Some(None),
        Some(m) => v
            .range("bgp.med", m, 0, u32::MAX.into(), "0-4294967295")
            .map(|m| Some(m as u32)),
    };
    let shutdown_wait = v.duration_or("bgp.shutdown_wait", raw.shutdown_wait, "5s");
    let peers = v.required("bgp.peers", raw.peers, "at least one [[bgp.peers]] entry");
    let peers = peers.and_then(|list| {
        if list.is_empty() {
            v.err(
                "bgp.peers",
                "empty: expected at least one [[bgp.peers]] entry",
            );
            return None;
        }
        let mut out: Vec<Peer> = Vec::new();
        let mut ok = true;
        for (i, r) in list.into_iter().enumerate() {
            let p = format!("bgp.peers[{i}]");
            if r.passive == Some(true) && raw.listen_port == Some(0) {
                v.err(
                    &format!("{p}.passive"),
                    "a passive peer needs a listener, and bgp.listen_port = 0 turns it off",
                );
                ok = false;
            }
            match peer(v, &p, r) {
                Some(peer) => {
                    if let Some(j) = out.iter().position(|o| o.address == peer.address) {
                        v.err(
                            &format!("{p}.address"),
                            format!("{} is already the address of bgp.peers[{j}]", peer.address),
                        );
                        ok = false;
                    } else {
                        out.push(peer);
                    }
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    });
    Some(Bgp {
        local_as: local_as?,
        router_id: router_id?,
        hold_time: hold_time?,
        listen_port: listen_port?,
        graceful_restart_time: graceful_restart_time?,
        communities: communities?,
        med: med?,
        shutdown_wait: shutdown_wait?,
        peers: peers?,
    })
}

fn peer(v: &mut V, p: &str, r: RawPeer) -> Option<Peer> {
    let address = v
        .required(&format!("{p}.address"), r.address, "the router's address")
        .and_then(|a| v.ip(&format!("{p}.address"), &a));
    let remote_as = v
        .required(
            &format!("{p}.remote_as"),
            r.remote_as,
            "the router's AS number",
        )
        .and_then(|a| v.asn(&format!("{p}.remote_as"), a));
    let local_address = match r.local_address {
        None => Some(None),
        Some(a) => v.ip(&format!("{p}.local_address"), &a).map(Some),
    };
    let next_hop_v4 = match r.next_hop_v4 {
        None => Some(None),
        Some(a) => match a.parse::<Ipv4Addr>() {
            Ok(x) => Some(Some(x)),
            Err(_) => {
                v.err(
                    &format!("{p}.next_hop_v4"),
                    format!("{a:?} is not an IPv4 address"),
                );
                None
            }
        },
    };
    let next_hop_v6 = match r.next_hop_v6 {
        None => Some(None),
        Some(a) => match a.parse::<Ipv6Addr>() {
            Ok(x) => Some(Some(x)),
            Err(_) => {
                v.err(
                    &format!("{p}.next_hop_v6"),
                    format!("{a:?} is not an IPv6 address"),
                );
                None
            }
        },
    };
    let port = v.port_or(&format!("{p}.port"), r.port, 179);
    let md5_password_file = match r.md5_password_file {
        None => Some(None),
        Some(f) if f.starts_with('/') => Some(Some(PathBuf::from(f))),
        Some(f) => {
            v.err(
                &format!("{p}.md5_password_file"),
                format!("{f:?} is not an absolute path"),
            );
            None
        }
    };
    let bfd = match r.bfd {
        None => Some(None),
        Some(b) => {
            let bp = format!("{p}.bfd");
            let min_tx = v.duration_or(&format!("{bp}.min_tx"), b.min_tx, "100ms");
            let min_rx = v.duration_or(&format!("{bp}.min_rx"), b.min_rx, "100ms");
            let mult = match b.multiplier {
                None => Some(3),
                Some(m) => v.range(&format!("{bp}.multiplier"), m, 1, 255, "1-255"),
            };
            Some(Some(Bfd {
                min_tx: min_tx?,
                min_rx: min_rx?,
                multiplier: mult? as u8,
            }))
        }
    };
    if let (Some(a), Some(Some(l))) = (address, local_address)
        && a.is_ipv4() != l.is_ipv4()
    {
        v.err(
            &format!("{p}.local_address"),
            format!("{l} is not of the same family as the peer address {a}"),
        );
        return None;
    }
    Some(Peer {
        address: address?,
        remote_as: remote_as?,
        local_address: local_address?,
        next_hop_v4: next_hop_v4?,
        next_hop_v6: next_hop_v6?,
        port: port?,
        passive: r.passive.unwrap_or(false),
        md5_password_file: md5_password_file?,
        ttl_security: r.ttl_security.unwrap_or(false),
        bfd: bfd?,
    })
}
