//! One sock_diag netlink request and its answers. The netlink crates
//! (`netlink-packet-sock-diag`, `netlink-sys`) give the messages and the
//! socket but leave the request/receive loop to their caller; lbd (the
//! listening sockets and handshakes of its listener quiesce) and flowmark
//! (a flow's tcp_info, the established sockets its discovery matches) both
//! need it, so it lives here once.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_sock_diag::{SockDiagMessage, constants::IPPROTO_TCP, inet::InetRequest};
pub use netlink_packet_sock_diag::{
    constants::{AF_INET, AF_INET6, TCP_LISTEN, TCP_SYN_RECV},
    inet::{ExtensionFlags, InetResponse, SocketId, StateFlags},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_SOCK_DIAG};

/// INET_DIAG_NOCOOKIE: match sockets on their addresses alone.
const NO_COOKIE: [u8; 8] = [0xff; 8];

/// sock_diag could not be asked or answered nonsense.
#[derive(Debug, thiserror::Error)]
pub enum DiagError {
    #[error("sock_diag netlink socket: {0}")]
    Io(#[from] std::io::Error),
    #[error("sock_diag answer: {0}")]
    Decode(String),
    /// The kernel answered with an error (ENOENT: no such socket).
    #[error("sock_diag refused the request: {0}")]
    Refused(String),
}

/// The address family of `ip` as sock_diag names it.
pub fn family(ip: IpAddr) -> u8 {
    match ip {
        IpAddr::V4(_) => AF_INET,
        IpAddr::V6(_) => AF_INET6,
    }
}

/// A socket id that matches every socket of `family` (for dumps).
pub fn any_socket(family: u8) -> SocketId {
    let any = if family == AF_INET {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    } else {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    };
    tcp_socket(any, 0, any, 0)
}

/// The id of the TCP socket with this 4-tuple (for a lookup).
pub fn tcp_socket(src: IpAddr, src_port: u16, dst: IpAddr, dst_port: u16) -> SocketId {
    SocketId {
        source_port: src_port,
        destination_port: dst_port,
        source_address: src,
        destination_address: dst,
        interface_id: 0,
        cookie: NO_COOKIE,
    }
}

/// What to ask about which TCP sockets.
pub struct Query {
    pub family: u8,
    pub states: StateFlags,
    /// Extensions to attach (e.g. `INFO`: tcp_info).
    pub extensions: ExtensionFlags,
    pub socket: SocketId,
    /// Every socket matching (a dump), or the one socket `socket` names.
    pub dump: bool,
}

impl Query {
    /// Every TCP socket of `family` in `states`.
    pub fn dump(family: u8, states: StateFlags, extensions: ExtensionFlags) -> Query {
        Query {
            family,
            states,
            extensions,
            socket: any_socket(family),
            dump: true,
        }
    }

    /// Sends the request; `each` gets every socket in the answer (a lookup
    /// stops at the first).
    pub fn run(self, mut each: impl FnMut(&InetResponse)) -> Result<(), DiagError> {
        let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        socket.set_non_blocking(false)?;
        let mut hdr = NetlinkHeader::default();
        hdr.flags = NLM_F_REQUEST | if self.dump { NLM_F_DUMP } else { 0 };
        let mut packet = NetlinkMessage::new(
            hdr,
            SockDiagMessage::InetRequest(InetRequest {
                family: self.family,
                protocol: IPPROTO_TCP,
                extensions: self.extensions,
                states: self.states,
                socket_id: self.socket,
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
                let msg = NetlinkMessage::<SockDiagMessage>::deserialize(&rx[offset..n])
                    .map_err(|e| DiagError::Decode(e.to_string()))?;
                let len = msg.header.length as usize;
                match msg.payload {
                    NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                        each(&r);
                        if !self.dump {
                            return Ok(());
                        }
                    }
                    NetlinkPayload::Done(_) => return Ok(()),
                    NetlinkPayload::Error(e) => return Err(DiagError::Refused(format!("{e:?}"))),
                    _ => {}
                }
                if len == 0 {
                    return Ok(());
                }
                offset += len;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    #[test]
    fn a_dump_finds_a_listening_socket_with_its_inode() {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = l.local_addr().expect("addr").port();
        let mut found = Vec::new();
        Query::dump(AF_INET, StateFlags::LISTEN, ExtensionFlags::empty())
            .run(|r| {
                if r.header.socket_id.source_port == port {
                    found.push(r.header.inode);
                }
            })
            .expect("dump");
        assert_eq!(found.len(), 1, "one listener on {port}");
        assert_ne!(found[0], 0, "with its inode");
    }

    #[test]
    fn a_lookup_of_no_socket_is_refused() {
        let any = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let q = Query {
            family: AF_INET,
            states: StateFlags::all(),
            extensions: ExtensionFlags::empty(),
            socket: tcp_socket(any, 1, any, 2),
            dump: false,
        };
        assert!(matches!(q.run(|_| {}), Err(DiagError::Refused(_))));
    }
}
