//! What a session is and how it went: its FSM state, the events it reports
//! and its counters. A leaf module: the session writes these, the speaker
//! hands out snapshots.

use std::collections::BTreeMap;
use std::io;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::bfd::BfdState;

/// RFC 4271 section 8.2.2 session states (serialised by these names).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
}

impl State {
    /// The RFC's name, as FRR and BIRD show it.
    pub fn name(self) -> &'static str {
        match self {
            State::Idle => "Idle",
            State::Connect => "Connect",
            State::Active => "Active",
            State::OpenSent => "OpenSent",
            State::OpenConfirm => "OpenConfirm",
            State::Established => "Established",
        }
    }
}

/// Why a connection of a session ended (or never got going); its text is
/// the peer's `last_error` and the `reason` of the state change.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("local address: {0}")]
    LocalAddress(#[source] io::Error),
    #[error("GTSM: {0}")]
    Gtsm(#[source] io::Error),
    #[error("connect: {0}")]
    Connect(#[source] io::Error),
    #[error("write: {0}")]
    Write(#[source] io::Error),
    #[error("write: peer stopped reading")]
    WriteStalled,
    /// The peer closed the connection (or reading it failed).
    #[error("connection closed: {0}")]
    Read(#[source] io::Error),
    #[error("connection closed")]
    Closed,
    /// The peer's NOTIFICATION, as `Notification::describe` puts it.
    #[error("received NOTIFICATION {0}")]
    NotificationReceived(String),
    /// Ours, sent before closing.
    #[error("sent NOTIFICATION {0}")]
    NotificationSent(String),
    /// BFD went down; we sent this NOTIFICATION (Cease / BFD Down).
    #[error("BFD down; sent NOTIFICATION {0}")]
    BfdDown(String),
    #[error("stopped")]
    Stopped,
}

/// A session changed state.
#[derive(Debug, Clone, Serialize)]
pub struct SessionEvent {
    pub peer: IpAddr,
    pub from: State,
    pub to: State,
    /// Why it left Established or failed to get there.
    pub reason: Option<String>,
}

/// Per-peer counters, a snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct PeerStatus {
    pub peer: IpAddr,
    pub state: State,
    /// Time in Established, if there.
    pub uptime: Option<Duration>,
    pub messages_in: u64,
    pub messages_out: u64,
    pub updates_in: u64,
    pub updates_out: u64,
    /// Prefixes the peer announced to us (counted and ignored).
    pub prefixes_received: u64,
    /// Prefixes currently announced on this session.
    pub prefixes_sent: u64,
    /// Times the session reached Established.
    pub established_count: u64,
    pub last_error: Option<String>,
    pub bfd: Option<BfdState>,
    pub local_address: Option<IpAddr>,
    /// UPDATEs handled as treat-as-withdraw (RFC 7606): their routes are
    /// withdrawn, the session stays up.
    pub treat_as_withdraw: u64,
    /// Attributes dropped with attribute discard (RFC 7606).
    pub attribute_discard: u64,
    /// Errors handled without a session reset, per "approach/class"
    /// (e.g. "treat-as-withdraw/origin").
    pub update_errors: BTreeMap<String, u64>,
}

#[derive(Debug)]
pub(crate) struct PeerShared {
    pub status: PeerStatus,
    pub since: Option<Instant>,
}

impl PeerShared {
    /// A peer that has not connected yet: Idle, every counter zero.
    pub fn new(peer: IpAddr) -> Self {
        PeerShared {
            status: PeerStatus {
                peer,
                state: State::Idle,
                uptime: None,
                messages_in: 0,
                messages_out: 0,
                updates_in: 0,
                updates_out: 0,
                prefixes_received: 0,
                prefixes_sent: 0,
                established_count: 0,
                last_error: None,
                bfd: None,
                local_address: None,
                treat_as_withdraw: 0,
                attribute_discard: 0,
                update_errors: BTreeMap::new(),
            },
            since: None,
        }
    }
}
