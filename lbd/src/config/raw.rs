//! The config file as TOML gives it: loosely typed (strings for addresses
//! and durations, i64 for numbers, options everywhere) so that validation
//! in `mod.rs` can say exactly what was wrong, where, and what was expected.
//! Unknown keys are refused here (`deny_unknown_fields`).

use serde::Deserialize;

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Raw {
    pub node_id: Option<i64>,
    pub hash_seed: Option<i64>,
    pub drain_period: Option<String>,
    pub dataplane: Option<RawDataplane>,
    pub members: Option<Vec<RawMember>>,
    pub liveness: Option<RawLiveness>,
    pub vips: Option<Vec<RawVip>>,
    pub bgp: Option<RawBgp>,
    pub api: Option<RawApi>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawDataplane {
    pub interface: Option<String>,
    pub encapsulation: Option<String>,
    pub gue_port: Option<i64>,
    pub pin_dir: Option<String>,
    pub table_size: Option<i64>,
    pub underlay_mtu: Option<i64>,
    pub mss_clamp: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMember {
    pub id: Option<i64>,
    pub address: Option<String>,
    pub weight: Option<i64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawLiveness {
    pub port: Option<i64>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub rise: Option<i64>,
    pub fall: Option<i64>,
    pub secret_file: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVip {
    pub address: Option<String>,
    pub ports: Option<Vec<i64>>,
    pub protocols: Option<Vec<String>>,
    pub checks: Option<Vec<RawCheck>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCheck {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub url: Option<String>,
    pub expect_status: Option<i64>,
    pub body_contains: Option<String>,
    pub verify_tls: Option<bool>,
    pub address: Option<String>,
    pub command: Option<Vec<String>>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub rise: Option<i64>,
    pub fall: Option<i64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawBgp {
    pub local_as: Option<i64>,
    pub router_id: Option<String>,
    pub hold_time: Option<i64>,
    pub listen_port: Option<i64>,
    pub graceful_restart_time: Option<i64>,
    pub communities: Option<Vec<String>>,
    pub med: Option<i64>,
    pub shutdown_wait: Option<String>,
    pub peers: Option<Vec<RawPeer>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPeer {
    pub address: Option<String>,
    pub remote_as: Option<i64>,
    pub local_address: Option<String>,
    pub next_hop_v4: Option<String>,
    pub next_hop_v6: Option<String>,
    pub port: Option<i64>,
    pub passive: Option<bool>,
    pub md5_password_file: Option<String>,
    pub ttl_security: Option<bool>,
    pub bfd: Option<RawBfd>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBfd {
    pub min_tx: Option<String>,
    pub min_rx: Option<String>,
    pub multiplier: Option<i64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RawApi {
    pub socket: Option<String>,
    pub metrics: Option<String>,
}
