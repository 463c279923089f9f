//! sock_diag netlink: bytes sent and received by a TCP flow from the
//! kernel's tcp_info (a lookup of the exact socket), and the dump of
//! established sockets that discovery matches against rules.

use std::net::IpAddr;

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload, Nla as _,
};
use netlink_packet_sock_diag::{
    SockDiagMessage,
    constants::{AF_INET, AF_INET6, IPPROTO_TCP},
    inet::{ExtensionFlags, InetRequest, InetResponse, SocketId, StateFlags, nlas::Nla},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};

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
    let socket_id = SocketId {
        source_port: flow.src.port(),
        destination_port: flow.dst.port(),
        source_address: flow.src.ip(),
        destination_address: flow.dst.ip(),
        interface_id: 0,
        // INET_DIAG_NOCOOKIE: match on the 4-tuple alone.
        cookie: [0xff; 8],
    };
    let mut found = None;
    query(
        family(flow.src.ip()),
        socket_id,
        StateFlags::all(),
        false,
        |r| {
            let id = &r.header.socket_id;
            // The kernel's lookup falls back to the listening socket once the
            // connection is gone: only the exact 4-tuple counts.
            if id.destination_port == flow.dst.port()
                && id.destination_address.to_canonical() == flow.dst.ip()
            {
                found = response_usage(r);
            }
        },
    )?;
    Ok(found)
}

fn family(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => AF_INET,
        IpAddr::V6(_) => AF_INET6,
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
pub fn dump_established(v6: bool, mut each: impl FnMut(&InetResponse)) -> anyhow::Result<()> {
    let any = if v6 {
        IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
    };
    let socket_id = SocketId {
        source_port: 0,
        destination_port: 0,
        source_address: any,
        destination_address: any,
        interface_id: 0,
        cookie: [0xff; 8],
    };
    query(
        family(any),
        socket_id,
        StateFlags::ESTABLISHED,
        true,
        &mut each,
    )
}

/// One sock_diag request; calls `each` for every socket in the answer.
fn query(
    family: u8,
    socket_id: SocketId,
    states: StateFlags,
    dump: bool,
    mut each: impl FnMut(&InetResponse),
) -> anyhow::Result<()> {
    let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    socket.set_non_blocking(false)?;
    let mut hdr = NetlinkHeader::default();
    hdr.flags = NLM_F_REQUEST | if dump { NLM_F_DUMP } else { 0 };
    let mut packet = NetlinkMessage::new(
        hdr,
        SockDiagMessage::InetRequest(InetRequest {
            family,
            protocol: IPPROTO_TCP,
            extensions: ExtensionFlags::INFO,
            states,
            socket_id,
        })
        .into(),
    );
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    socket.send(&buf, 0)?;
    let mut rx = vec![0u8; 65536];
    loop {
        let n = socket.recv(&mut &mut rx[..], 0)?;
        if n == 0 {
            return Ok(());
        }
        let mut offset = 0;
        while offset < n {
            let msg = NetlinkMessage::<SockDiagMessage>::deserialize(&rx[offset..n])?;
            let len = msg.header.length as usize;
            match msg.payload {
                NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                    each(&r);
                    if !dump {
                        return Ok(());
                    }
                }
                // ENOENT (no such socket) or the end of a dump.
                NetlinkPayload::Error(_) | NetlinkPayload::Done(_) => return Ok(()),
                _ => {}
            }
            if len == 0 {
                return Ok(());
            }
            offset += len;
        }
    }
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
