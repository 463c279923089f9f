//! The session's inputs, named: every I/O result, timer and signal the FSM
//! reacts to becomes one [`Event`], and [`next_event`] is the one place
//! that waits for them. The states (`session.rs`) are then a `match`
//! over events, readable next to RFC 4271 section 8.1, and a test drives
//! them with in-memory connections and tokio's paused clock.

use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until};

use crate::bfd::BfdState;
use crate::conn::{Conn, Read};
use crate::rib::{Rib, Stop};
use crate::state::SessionError;
use crate::transport::Transport;

/// What happened to a session (RFC 4271 section 8.1 event numbers where the
/// RFC has one).
pub(crate) enum Event<S> {
    /// From the peer's connection: a message (events 19-28), a malformed
    /// one we owe a NOTIFICATION for (21, 22), or the close (18).
    Read(Read),
    /// HoldTimer_Expires (10); in OpenSent the large OPEN hold.
    HoldTimerExpires,
    /// KeepaliveTimer_Expires (11).
    KeepaliveTimerExpires,
    /// A connection from the peer arrived (16/17): a collision candidate
    /// while this connection runs.
    Connection(S),
    /// A connection from the peer was held for the liveness grace: judge
    /// it now (collision detection, section 6.8).
    CollisionCheck,
    /// The routes to announce changed.
    RibChanged,
    /// The speaker is gone.
    RibClosed,
    /// A restarting speaker waited its longest for its owner's first
    /// routes: End-of-RIB goes out now.
    EndOfRibDue,
    /// The BFD session's state changed (RFC 5882; Down ends the session
    /// with Cease / BFD Down, RFC 9384).
    Bfd(BfdState),
    /// ManualStop (2): shut down, or close for a restart.
    Stop,
}

/// The timers a state arms; `None` is a timer that is not running.
#[derive(Default)]
pub(crate) struct Timers {
    pub hold: Option<Instant>,
    pub keepalive: Option<Instant>,
    /// When the held connection from the peer is judged.
    pub collision: Option<Instant>,
    pub end_of_rib: Option<Instant>,
}

/// A timer's future: never fires when not armed.
async fn expiry(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// What a session waits on besides its connection and timers (the peer
/// task's fields).
pub(crate) struct Inputs<'a, S> {
    /// Connections from the peer.
    pub incoming: &'a mut mpsc::Receiver<S>,
    /// `incoming` has closed (the peer is being removed).
    pub inbox_closed: &'a mut bool,
    pub rib: &'a mut watch::Receiver<Rib>,
    pub stop: &'a mut watch::Receiver<Stop>,
}

/// Waits for the next event of the connection `c`. `rib`: route changes
/// count (Established only); `bfd`: the BFD session's state, if one runs.
pub(crate) async fn next_event<S: Transport>(
    c: &mut Conn<S>,
    inputs: Inputs<'_, S>,
    timers: &Timers,
    rib: bool,
    mut bfd: Option<&mut watch::Receiver<BfdState>>,
) -> Event<S> {
    loop {
        return tokio::select! {
            m = c.rd.recv() => Event::Read(m.unwrap_or(Read::Closed(SessionError::Closed))),
            _ = expiry(timers.hold) => Event::HoldTimerExpires,
            _ = expiry(timers.keepalive) => Event::KeepaliveTimerExpires,
            _ = expiry(timers.collision) => Event::CollisionCheck,
            _ = expiry(timers.end_of_rib) => Event::EndOfRibDue,
            s = inputs.incoming.recv(), if !*inputs.inbox_closed => match s {
                Some(s) => Event::Connection(s),
                None => {
                    // Closed only as the peer is removed; its stop follows.
                    *inputs.inbox_closed = true;
                    continue;
                }
            },
            r = inputs.rib.changed(), if rib => match r {
                Ok(()) => Event::RibChanged,
                Err(_) => Event::RibClosed,
            },
            r = async { match bfd.as_deref_mut() { Some(w) => w.changed().await, None => std::future::pending().await } } => {
                Event::Bfd(match (r, bfd.as_deref()) {
                    (Ok(()), Some(w)) => *w.borrow(),
                    _ => BfdState::Down,
                })
            },
            _ = inputs.stop.changed() => Event::Stop,
        };
    }
}
