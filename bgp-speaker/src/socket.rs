//! TCP socket options the session needs and tokio does not expose:
//! TCP-MD5 (RFC 2385), GTSM (RFC 5082), source address, dual-stack listener.

use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::Duration;

use tokio::net::{TcpListener, TcpSocket, TcpStream};

const TCP_MD5SIG: libc::c_int = 14;
const TCP_MD5SIG_MAXKEYLEN: usize = 80;
const IP_MINTTL: libc::c_int = 21;
const IPV6_MINHOPCOUNT: libc::c_int = 73;

/// `struct tcp_md5sig` from linux/tcp.h.
#[repr(C)]
struct TcpMd5Sig {
    addr: libc::sockaddr_storage,
    flags: u8,
    prefixlen: u8,
    keylen: u16,
    ifindex: libc::c_int,
    key: [u8; TCP_MD5SIG_MAXKEYLEN],
}

pub(crate) fn setsockopt<T>(
    fd: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    v: &T,
) -> io::Result<()> {
    // SAFETY: `v` points to a live value of the size we pass.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (v as *const T).cast(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Installs (or with `None`, removes) the MD5 key for `peer` on a socket of
/// family `v6_socket`. On an IPv6 socket an IPv4 peer is given v4-mapped.
pub fn set_md5(
    fd: &impl AsRawFd,
    v6_socket: bool,
    peer: IpAddr,
    key: Option<&str>,
) -> io::Result<()> {
    let key = key.unwrap_or("").as_bytes();
    if key.len() > TCP_MD5SIG_MAXKEYLEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("TCP-MD5 key of {} bytes exceeds 80", key.len()),
        ));
    }
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut sig = TcpMd5Sig {
        addr: unsafe { std::mem::zeroed() },
        flags: 0,
        prefixlen: 0,
        keylen: key.len() as u16,
        ifindex: 0,
        key: [0; TCP_MD5SIG_MAXKEYLEN],
    };
    sig.key[..key.len()].copy_from_slice(key);
    let peer = match (peer, v6_socket) {
        (IpAddr::V4(a), true) => IpAddr::V6(a.to_ipv6_mapped()),
        (p, _) => p,
    };
    match peer {
        IpAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut sig.addr as *mut libc::sockaddr_storage).cast(), sin) };
        }
        IpAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: 0,
                sin6_flowinfo: 0,
                sin6_addr: libc::in6_addr {
                    s6_addr: a.octets(),
                },
                sin6_scope_id: 0,
            };
            // SAFETY: sockaddr_in6 fits in sockaddr_storage.
            unsafe { std::ptr::write((&mut sig.addr as *mut libc::sockaddr_storage).cast(), sin6) };
        }
    }
    setsockopt(fd, libc::IPPROTO_TCP, TCP_MD5SIG, &sig)
}

/// GTSM: send with TTL/hop limit 255, drop anything that arrives with less
/// than 254 (one hop away at most).
pub fn set_gtsm(fd: &impl AsRawFd, peer: IpAddr) -> io::Result<()> {
    let ttl: libc::c_int = 255;
    let min: libc::c_int = 254;
    match peer {
        IpAddr::V4(_) => {
            setsockopt(fd, libc::IPPROTO_IP, libc::IP_TTL, &ttl)?;
            setsockopt(fd, libc::IPPROTO_IP, IP_MINTTL, &min)
        }
        IpAddr::V6(_) => {
            setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_UNICAST_HOPS, &ttl)?;
            setsockopt(fd, libc::IPPROTO_IPV6, IPV6_MINHOPCOUNT, &min)
        }
    }
}

/// Options for one outgoing connection.
pub struct ConnectOpts<'a> {
    pub peer: SocketAddr,
    pub local: Option<IpAddr>,
    pub md5: Option<&'a str>,
    pub gtsm: bool,
    pub timeout: Duration,
}

pub async fn connect(o: ConnectOpts<'_>) -> io::Result<TcpStream> {
    let sock = match o.peer {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(local) = o.local {
        sock.bind(SocketAddr::new(local, 0))?;
    }
    if o.md5.is_some() {
        set_md5(&sock, o.peer.is_ipv6(), o.peer.ip(), o.md5)?;
    }
    if o.gtsm {
        set_gtsm(&sock, o.peer.ip())?;
    }
    let stream = tokio::time::timeout(o.timeout, sock.connect(o.peer))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// A dual-stack listener on `[::]:port` (MD5 keys are added per peer with
/// [`set_md5`]). With `gtsm` (every peer uses TTL security) the listener itself drops
/// SYNs that arrive with TTL < 254; otherwise GTSM starts on the accepted
/// socket of each peer that wants it.
pub fn listen(port: u16, gtsm: bool) -> io::Result<TcpListener> {
    let sock = TcpSocket::new_v6()?;
    let off: libc::c_int = 0;
    setsockopt(&sock, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, &off)?;
    if gtsm {
        // IPv4 peers arrive v4-mapped on this socket: set both levels.
        set_gtsm(&sock, IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))?;
        set_gtsm(&sock, IpAddr::V6(Ipv6Addr::UNSPECIFIED))?;
    }
    sock.set_reuseaddr(true)?;
    sock.bind(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port))?;
    sock.listen(64)
}

/// The peer address with IPv4-mapped IPv6 folded back to IPv4.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(a) => a.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(a)),
        v4 => v4,
    }
}
