//! bgp-speaker: the embedded BGP-4 speaker with BFD that `lbd` uses to
//! announce a node's VIPs (/32, /128) to the site routers and withdraw them.
//!
//! The routers spread VIP traffic over every announcing node with ECMP; this
//! crate is how a node joins and leaves that set. It speaks to real routers
//! (FRR, BIRD, vendor boxes): RFC 4271 FSM with backoff and collision
//! detection, MP-BGP for IPv6, 4-octet AS, route refresh, graceful restart as
//! the restarting speaker, TCP-MD5, GTSM and single-hop BFD. Routes the
//! routers send us are decoded, counted and ignored.
//!
//! ```no_run
//! # async fn f() -> Result<(), bgp_speaker::StartError> {
//! use bgp_speaker::{PeerConfig, RouteAttrs, Speaker, SpeakerConfig};
//! let speaker = Speaker::start(SpeakerConfig {
//!     local_as: 65101,
//!     router_id: "192.0.2.2".parse().unwrap(),
//!     hold_time: 9,
//!     listen_port: Some(179),
//!     graceful_restart: None,
//!     peers: vec![PeerConfig::new("192.0.2.1".parse().unwrap(), 65000)],
//! })
//! .await?;
//! speaker
//!     .announce("198.51.100.10/32".parse().unwrap(), RouteAttrs::default())
//!     .expect("unicast prefix");
//! # Ok(()) }
//! ```

pub mod bfd;
pub mod config;
mod conn;
pub mod iana;
pub mod notification;
pub mod raw_check;
mod rib;
mod session;
mod socket;
mod speaker;
mod state;
mod transport;
pub mod wire;

pub use bfd::BfdState;
pub use config::{
    BfdConfig, GRACEFUL_SHUTDOWN, GracefulRestart, Origin, PeerConfig, RouteAttrs, SpeakerConfig,
};
pub use ipnet::IpNet;
pub use speaker::{RouteError, Speaker, StartError};
pub use state::{PeerStatus, SessionError, SessionEvent, State};

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A small xorshift generator: jitter and discriminators need spread, not
/// cryptographic strength.
pub(crate) fn random_u32() -> u32 {
    static STATE: AtomicU64 = AtomicU64::new(0);
    let mut x = STATE.load(Ordering::Relaxed);
    if x == 0 {
        x = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x9E37_79B9_7F4A_7C15)
            ^ u64::from(std::process::id()) << 32
            | 1;
    }
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    STATE.store(x, Ordering::Relaxed);
    (x >> 16) as u32
}

/// `d` scaled by a random factor in [0.75, 1.0] (RFC 4271 section 10).
pub(crate) fn jitter(d: Duration) -> Duration {
    d.mul_f64(0.75 + f64::from(random_u32() % 1000) / 4000.0)
}

/// RFC 5880 section 6.8.7: 75-100% of the interval, at most 90% when the
/// detect multiplier is 1.
pub(crate) fn jitter_bfd(d: Duration, mult: u8) -> Duration {
    let span = if mult == 1 { 600.0 } else { 1000.0 };
    d.mul_f64(0.75 + f64::from(random_u32() % 1000) / 4000.0 * span / 1000.0)
}
