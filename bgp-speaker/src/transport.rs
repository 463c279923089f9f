//! What a session runs on: a byte stream to the peer and a way to open one.
//!
//! The speaker runs sessions on TCP ([`TcpStream`], [`TcpDialer`]); the
//! session's unit tests run the same FSM on in-memory pipes
//! (`tokio::io::duplex`) with tokio's paused clock, so hold timers,
//! collisions and OPEN errors are checked in milliseconds of real time
//! without namespaces.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use crate::config::PeerConfig;
use crate::socket;

/// How long a TCP connect to a peer may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// One connection to a peer.
pub(crate) trait Transport: AsyncRead + AsyncWrite + Send + Unpin + 'static {
    /// Our address on the connection: the next hop we announce and the
    /// BFD session's source.
    fn local_ip(&self) -> io::Result<IpAddr>;
    /// TTL security (RFC 5082) for an accepted connection from `peer`.
    fn set_gtsm(&self, peer: IpAddr) -> io::Result<()>;
    /// Send small messages at once (no Nagle).
    fn set_nodelay(&self);
}

impl Transport for TcpStream {
    fn local_ip(&self) -> io::Result<IpAddr> {
        Ok(self.local_addr()?.ip())
    }

    fn set_gtsm(&self, peer: IpAddr) -> io::Result<()> {
        socket::set_gtsm(self, peer)
    }

    fn set_nodelay(&self) {
        let _ = TcpStream::set_nodelay(self, true);
    }
}

/// Opens our own connection to a peer (the FSM's Connect state).
pub(crate) trait Dialer<S>: Send + Sync + 'static {
    fn dial(&self, cfg: &PeerConfig) -> impl Future<Output = io::Result<S>> + Send;
}

/// TCP connect with the peer's source address, MD5 key and GTSM.
pub(crate) struct TcpDialer;

impl Dialer<TcpStream> for TcpDialer {
    async fn dial(&self, cfg: &PeerConfig) -> io::Result<TcpStream> {
        socket::connect(socket::ConnectOpts {
            peer: SocketAddr::new(cfg.address, cfg.port),
            local: cfg.local_address,
            md5: cfg.md5_password.as_deref(),
            gtsm: cfg.ttl_security,
            timeout: CONNECT_TIMEOUT,
        })
        .await
    }
}
