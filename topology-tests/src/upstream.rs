//! A hostile second upstream: a minimal raw BGP peer that opens a session
//! with a node and sends it whatever UPDATE a scenario asks for, byte for
//! byte. Routers pass on attributes originated anywhere on the internet; a
//! malformed one reaching every node at once must not reset their sessions
//! (RFC 7606). FRR and BIRD refuse to send malformed attributes, so the
//! lab speaks the few messages it needs by hand (test code, never shipped).
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use bgp_speaker::iana::{attr, attr_flag, msg, origin, segment};
use bgp_speaker::notification::header_bytes;
use bgp_speaker::wire::{self, HEADER_LEN, MAX_LEN, OpenParams};

/// The hostile peer's AS (private range).
pub const HOSTILE_AS: u32 = 65099;
/// Its address, on the router's loopback (the nodes reach it by their
/// default route through the router).
pub const HOSTILE_ADDR: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 254);
const HOLD_TIME_S: u16 = 30;

/// One BGP message as read from the wire.
#[derive(Debug)]
pub struct Message {
    pub kind: u8,
    pub body: Vec<u8>,
}

impl Message {
    pub fn is_notification(&self) -> bool {
        self.kind == msg::NOTIFICATION
    }

    /// The error code of a NOTIFICATION.
    pub fn error_code(&self) -> Option<u8> {
        (self.kind == msg::NOTIFICATION).then(|| self.body.first().copied())?
    }

    /// "code/subcode" of a NOTIFICATION.
    pub fn notification_code(&self) -> Option<String> {
        (self.kind == msg::NOTIFICATION && self.body.len() >= 2)
            .then(|| format!("{}/{}", self.body[0], self.body[1]))
    }
}

/// An Established session with one node.
pub struct RawPeer {
    stream: TcpStream,
    pub node: Ipv4Addr,
}

fn message(kind: u8, body: &[u8]) -> Vec<u8> {
    let mut m = header_bytes(kind, HEADER_LEN + body.len());
    m.extend_from_slice(body);
    m
}

fn attribute(flags: u8, kind: u8, value: &[u8]) -> Vec<u8> {
    let mut a = vec![flags, kind, value.len() as u8];
    a.extend_from_slice(value);
    a
}

/// An UPDATE announcing 192.0.2.240/28 whose COMMUNITIES attribute (optional
/// transitive) is 3 bytes long, not a multiple of 4: RFC 7606 section 7.8
/// says treat-as-withdraw, the session stays up.
pub fn update_with_malformed_communities() -> Vec<u8> {
    let mut attrs = attribute(attr_flag::TRANSITIVE, attr::ORIGIN, &[origin::IGP]);
    let mut path = vec![segment::AS_SEQUENCE, 1];
    path.extend_from_slice(&HOSTILE_AS.to_be_bytes());
    attrs.extend(attribute(attr_flag::TRANSITIVE, attr::AS_PATH, &path));
    attrs.extend(attribute(
        attr_flag::TRANSITIVE,
        attr::NEXT_HOP,
        &HOSTILE_ADDR.octets(),
    ));
    attrs.extend(attribute(
        attr_flag::OPTIONAL | attr_flag::TRANSITIVE,
        attr::COMMUNITIES,
        &[0xfd, 0xe8, 0x00],
    ));
    update(&attrs)
}

/// The control: an UPDATE whose Total Path Attribute Length runs past the
/// message, so the NLRI cannot be located. RFC 7606 section 4 keeps this a
/// session reset (NOTIFICATION 3/1): proves the scenario sees a reset.
pub fn update_with_overrunning_attribute_length() -> Vec<u8> {
    let mut body = vec![0, 0];
    body.extend_from_slice(&200u16.to_be_bytes());
    body.extend(attribute(
        attr_flag::TRANSITIVE,
        attr::ORIGIN,
        &[origin::IGP],
    ));
    message(msg::UPDATE, &body)
}

fn update(attrs: &[u8]) -> Vec<u8> {
    let mut body = vec![0, 0];
    body.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    body.extend_from_slice(attrs);
    body.extend_from_slice(&[28, 192, 0, 2, 240]);
    message(msg::UPDATE, &body)
}

impl RawPeer {
    /// Connects from `HOSTILE_ADDR` (in the calling thread's namespace) to
    /// the node's BGP port and runs the OPEN exchange to Established.
    pub fn establish(node: Ipv4Addr, limit: Duration) -> Result<RawPeer> {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        socket.bind(&SocketAddr::from((HOSTILE_ADDR, 0)).into())?;
        socket
            .connect_timeout(&SocketAddr::from((node, 179)).into(), limit)
            .with_context(|| format!("connecting to {node}:179 from {HOSTILE_ADDR}"))?;
        let stream: TcpStream = socket.into();
        stream.set_read_timeout(Some(limit))?;
        let mut peer = RawPeer { stream, node };
        peer.send(&wire::open(&OpenParams {
            local_as: HOSTILE_AS,
            hold_time: HOLD_TIME_S,
            router_id: HOSTILE_ADDR,
            graceful_restart: None,
        }))?;
        let mut got_open = false;
        loop {
            let m = peer.read()?;
            match m.kind {
                msg::OPEN => {
                    got_open = true;
                    peer.keepalive()?;
                }
                msg::KEEPALIVE if got_open => return Ok(peer),
                msg::NOTIFICATION => bail!(
                    "node {node} refused the session: NOTIFICATION {}",
                    m.notification_code().unwrap_or_default()
                ),
                other => bail!("node {node}: message type {other} before Established"),
            }
        }
    }

    pub fn send(&mut self, bytes: &[u8]) -> Result<()> {
        self.stream
            .write_all(bytes)
            .with_context(|| format!("sending to {}", self.node))
    }

    pub fn keepalive(&mut self) -> Result<()> {
        self.send(&wire::keepalive())
    }

    /// The next message, or an error on EOF or timeout.
    pub fn read(&mut self) -> Result<Message> {
        let mut header = [0u8; HEADER_LEN];
        self.stream
            .read_exact(&mut header)
            .with_context(|| format!("reading from {}", self.node))?;
        let len = usize::from(u16::from_be_bytes([header[16], header[17]]));
        if !(HEADER_LEN..=MAX_LEN).contains(&len) {
            bail!("node {}: message length {len}", self.node);
        }
        let mut body = vec![0u8; len - HEADER_LEN];
        self.stream.read_exact(&mut body)?;
        Ok(Message {
            kind: header[18],
            body,
        })
    }

    /// Reads for `window`, answering nothing: the NOTIFICATION the node
    /// sent, if any (None: the session stayed up). UPDATEs and KEEPALIVEs
    /// of the node are skipped; a close without NOTIFICATION is an error.
    pub fn notification_within(&mut self, window: Duration) -> Result<Option<Message>> {
        let end = std::time::Instant::now() + window;
        loop {
            let left = end.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.stream.set_read_timeout(Some(left))?;
            match self.read() {
                Ok(m) if m.is_notification() => return Ok(Some(m)),
                Ok(_) => {}
                Err(e) => {
                    let timed_out = e.chain().any(|c| {
                        c.downcast_ref::<std::io::Error>().is_some_and(|io| {
                            matches!(
                                io.kind(),
                                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                            )
                        })
                    });
                    if timed_out {
                        return Ok(None);
                    }
                    return Err(e);
                }
            }
        }
    }
}
