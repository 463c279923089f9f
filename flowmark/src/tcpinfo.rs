//! sock_diag netlink: bytes sent and received by a TCP flow from the
//! kernel's tcp_info (a lookup of the exact socket), and the dump of
//! established sockets that discovery matches against rules.

use netlink_packet_core::Nla as _;
use netlink_packet_sock_diag::inet::nlas::Nla;
use sockdiag::{DiagError, ExtensionFlags, InetResponse, Query, StateFlags};

use crate::{
    firefly::Usage,
    flow::{FlowId, Proto},
};

/// tcp_info of the flow's local socket: `sent` is bytes_acked plus the
/// unacknowledged send queue (what the application wrote), `received` is
/// bytes_received. `None` when the socket is
/// gone (the flow was reported after close) or the flow is not TCP.
pub fn usage(flow: &FlowId) -> Option<Usage> {
    if flow.proto != Proto::Tcp {
        return None;
    }
    match lookup(flow) {
        Ok(u) => u,
        Err(e) => {
            tracing::debug!(%flow, "sock_diag lookup failed: {e:#}");
            None
        }
    }
}

fn lookup(flow: &FlowId) -> anyhow::Result<Option<Usage>> {
    let mut found = None;
    let query = Query {
        family: sockdiag::family(flow.src.ip()),
        states: StateFlags::all(),
        extensions: ExtensionFlags::INFO,
        socket: sockdiag::tcp_socket(
            flow.src.ip(),
            flow.src.port(),
            flow.dst.ip(),
            flow.dst.port(),
        ),
        dump: false,
    };
    answered(query.run(|r| {
        let id = &r.header.socket_id;
        // The kernel's lookup falls back to the listening socket once the
        // connection is gone: only the exact 4-tuple counts.
        if id.destination_port == flow.dst.port()
            && id.destination_address.to_canonical() == flow.dst.ip()
        {
            found = response_usage(r);
        }
    }))?;
    Ok(found)
}

/// ENOENT (no such socket) answers as an empty result.
fn answered(r: Result<(), DiagError>) -> Result<(), DiagError> {
    match r {
        Err(DiagError::Refused(_)) => Ok(()),
        r => r,
    }
}

/// Usage from a sock_diag answer that carries tcp_info.
pub fn response_usage(r: &InetResponse) -> Option<Usage> {
    r.nlas.iter().find_map(|nla| match nla {
        // Acked plus still queued (write_seq - snd_una): all the application
        // wrote, even when the flow ends before its last segments are acked.
        Nla::TcpInfo(info) => Some(Usage {
            sent: Some(info.bytes_acked + r.header.send_queue as u64),
            received: Some(info.bytes_received),
        }),
        _ => None,
    })
}

/// The cgroup v2 id of the socket (INET_DIAG_CGROUP_ID, sent by the kernel
/// unasked), if present.
pub fn response_cgroup(r: &InetResponse) -> Option<u64> {
    const INET_DIAG_CGROUP_ID: u16 = 21;
    r.nlas.iter().find_map(|nla| match nla {
        Nla::Other(a) if a.kind() == INET_DIAG_CGROUP_ID && a.value_len() == 8 => {
            let mut v = [0u8; 8];
            a.emit_value(&mut v);
            Some(u64::from_ne_bytes(v))
        }
        _ => None,
    })
}

/// Established TCP sockets of one family, with tcp_info.
pub fn dump_established(v6: bool, each: impl FnMut(&InetResponse)) -> anyhow::Result<()> {
    let family = if v6 {
        sockdiag::AF_INET6
    } else {
        sockdiag::AF_INET
    };
    answered(Query::dump(family, StateFlags::ESTABLISHED, ExtensionFlags::INFO).run(each))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::{
        io::{Read, Write},
        net::{TcpListener, TcpStream},
    };

    use super::*;

    #[test]
    fn reads_bytes_of_a_live_loopback_connection() {
        let l = TcpListener::bind("[::1]:0").unwrap();
        let mut c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut s, peer) = l.accept().unwrap();
        s.write_all(&vec![7u8; 100_000]).unwrap();
        let mut got = vec![0u8; 100_000];
        c.read_exact(&mut got).unwrap();
        c.write_all(b"hello").unwrap();
        let mut h = [0u8; 5];
        s.read_exact(&mut h).unwrap();
        let flow = FlowId::new(
            Proto::Tcp,
            l.local_addr().unwrap().ip(),
            l.local_addr().unwrap().port(),
            peer.ip(),
            peer.port(),
        )
        .unwrap();
        let u = usage(&flow).expect("socket found");
        assert_eq!(u.sent, Some(100_000));
        assert_eq!(u.received, Some(5));
        drop((s, c));
        let gone = FlowId::new(Proto::Tcp, peer.ip(), 1, peer.ip(), 2).unwrap();
        assert_eq!(usage(&gone), None);
    }
}
