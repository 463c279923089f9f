//! Configuration of the speaker, its peers and the routes it announces.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Speaker-wide settings: who we are and how every session behaves by default.
#[derive(Debug, Clone)]
pub struct SpeakerConfig {
    /// Our AS number (4-octet capable; sent as AS_TRANS in the 2-octet field
    /// when it does not fit).
    pub local_as: u32,
    /// BGP identifier.
    pub router_id: Ipv4Addr,
    /// Hold time we offer in OPEN (seconds, 0 or >= 3). The session uses the
    /// smaller of ours and the peer's.
    pub hold_time: u16,
    /// TCP port to accept sessions on; `None` means no listener (active
    /// peers only). 179 in production, tests may use another one.
    pub listen_port: Option<u16>,
    /// Graceful restart (RFC 4724) as the restarting speaker.
    pub graceful_restart: Option<GracefulRestart>,
    pub peers: Vec<PeerConfig>,
}

/// Graceful restart parameters advertised in the OPEN capability.
#[derive(Debug, Clone, Copy)]
pub struct GracefulRestart {
    /// How long the router keeps our routes after the session drops
    /// (seconds, at most 4095).
    pub restart_time: u16,
    /// Set the Restart State (R) bit: this process is a restart of one that
    /// had sessions, so the router must not wait for us before sending EoR.
    pub restarting: bool,
}

/// One BGP neighbour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub address: IpAddr,
    pub remote_as: u32,
    /// Source address for the TCP session (and BFD); `None` lets the kernel
    /// choose.
    pub local_address: Option<IpAddr>,
    /// Only accept connections from the peer, never connect.
    pub passive: bool,
    /// Remote TCP port when connecting (179 unless testing).
    pub port: u16,
    /// TCP-MD5 signature key (RFC 2385), at most 80 bytes.
    pub md5_password: Option<String>,
    /// GTSM (RFC 5082): send with TTL 255 and accept only TTL >= 254.
    pub ttl_security: bool,
    /// Initial connect-retry delay; doubles (with jitter) up to
    /// `connect_retry_max` after each failed attempt.
    pub connect_retry: Duration,
    pub connect_retry_max: Duration,
    /// Next hop for IPv4 prefixes when the session has no IPv4 local address
    /// (IPv6 transport). Defaults to the session's local address.
    pub next_hop_v4: Option<Ipv4Addr>,
    /// Next hop for IPv6 prefixes when the session runs over IPv4.
    pub next_hop_v6: Option<Ipv6Addr>,
    /// Single-hop BFD tied to this session.
    pub bfd: Option<BfdConfig>,
}

impl PeerConfig {
    /// A peer with the defaults a site router expects: active, port 179,
    /// connect retry 1 s growing to 60 s, no MD5, no GTSM, no BFD.
    pub fn new(address: IpAddr, remote_as: u32) -> Self {
        Self {
            address,
            remote_as,
            local_address: None,
            passive: false,
            port: 179,
            md5_password: None,
            ttl_security: false,
            connect_retry: Duration::from_secs(1),
            connect_retry_max: Duration::from_secs(60),
            next_hop_v4: None,
            next_hop_v6: None,
            bfd: None,
        }
    }
}

/// BFD timers (RFC 5880 section 6.8.1 names).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BfdConfig {
    pub desired_min_tx: Duration,
    pub required_min_rx: Duration,
    pub detect_mult: u8,
}

impl Default for BfdConfig {
    fn default() -> Self {
        Self {
            desired_min_tx: Duration::from_millis(100),
            required_min_rx: Duration::from_millis(100),
            detect_mult: 3,
        }
    }
}

/// ORIGIN attribute values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Origin {
    #[default]
    Igp,
    Egp,
    Incomplete,
}

/// Path attributes for one announced prefix. NEXT_HOP is always "self".
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct RouteAttrs {
    pub origin: Origin,
    /// How many extra times our AS is prepended (eBGP only).
    pub as_path_prepend: u8,
    pub med: Option<u32>,
    /// LOCAL_PREF, sent to iBGP peers only (100 when unset).
    pub local_pref: Option<u32>,
    /// RFC 1997 communities as (asn << 16 | value).
    pub communities: Vec<u32>,
    /// RFC 8092 large communities.
    pub large_communities: Vec<(u32, u32, u32)>,
}

/// RFC 8326 GRACEFUL_SHUTDOWN well-known community 65535:0.
pub const GRACEFUL_SHUTDOWN: u32 = 0xFFFF_0000;
