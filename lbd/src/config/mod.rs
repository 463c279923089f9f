//! The node's config file (TOML, default /etc/lbd/lbd.toml): parsed into
//! the loose [`raw`] form, then validated into [`Config`]. Every error names
//! the file, the key path and what was expected, e.g.
//! `lbd.toml: vips[1].address: "10.0.0.300" is not an IPv4 or IPv6 address`.
//! Validation reports every error it finds, not just the first one.
//! Nothing here touches the system: `lbd check-config` runs it anywhere.

mod bgp;
mod checks;
mod raw;
mod values;
pub use values::parse_duration;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use dataplane::loader::Vip;
use health::CheckSpec;
use raw::*;
use serde::{Deserialize, Serialize};
use values::{V, format_duration};

pub const DEFAULT_PATH: &str = "/etc/lbd/lbd.toml";
pub const DEFAULT_SOCKET: &str = "/run/lbd/lbd.sock";

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file as the operator named it.
    pub file: String,
    /// Key path (`vips[1].address`); empty for file-level errors.
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}: {}", self.file, self.message)
        } else {
            write!(f, "{}: {}: {}", self.file, self.path, self.message)
        }
    }
}

/// Every error found in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Encap {
    Gue,
    Ipip,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataplaneConfig {
    /// The uplink the XDP program runs on.
    pub interface: String,
    pub encap: Encap,
    pub gue_port: u16,
    pub pin_dir: PathBuf,
    pub table_size: u32,
    pub underlay_mtu: u16,
    pub mss_clamp: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Member {
    pub id: u16,
    pub address: IpAddr,
    pub weight: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Liveness {
    /// Every member serves its state on `address:port` and polls the others.
    pub port: u16,
    pub interval: Duration,
    pub timeout: Duration,
    pub rise: u32,
    pub fall: u32,
    /// The cluster secret that authenticates reports (see
    /// `liveness::Keys`); read when the daemon starts and at every reload,
    /// not by check-config. None: reports are not authenticated.
    pub secret_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// As in the config file and `lbd status`.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }

    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VipConfig {
    pub address: IpAddr,
    pub ports: Vec<u16>,
    pub protocols: Vec<Protocol>,
    pub checks: Vec<CheckSpec>,
}

impl VipConfig {
    /// The dataplane entries of this VIP: one per (port, protocol), all
    /// sharing the VIP's table.
    pub fn entries(&self) -> Vec<Vip> {
        let mut out = Vec::new();
        for &port in &self.ports {
            for p in &self.protocols {
                out.push(Vip {
                    addr: self.address,
                    port,
                    proto: p.number(),
                });
            }
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bfd {
    pub min_tx: Duration,
    pub min_rx: Duration,
    pub multiplier: u8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub address: IpAddr,
    pub remote_as: u32,
    pub local_address: Option<IpAddr>,
    /// Next hop for IPv4 VIPs on an IPv6 session (else the local address).
    pub next_hop_v4: Option<std::net::Ipv4Addr>,
    /// Next hop for IPv6 VIPs on an IPv4 session.
    pub next_hop_v6: Option<std::net::Ipv6Addr>,
    pub port: u16,
    pub passive: bool,
    /// Read when the daemon starts, not by check-config.
    pub md5_password_file: Option<PathBuf>,
    pub ttl_security: bool,
    pub bfd: Option<Bfd>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bgp {
    pub local_as: u32,
    pub router_id: Ipv4Addr,
    pub hold_time: u16,
    /// None: no listener (active sessions only).
    pub listen_port: Option<u16>,
    /// None: graceful restart off.
    pub graceful_restart_time: Option<u16>,
    /// RFC 1997 communities attached to every VIP route (asn << 16 | value).
    pub communities: Vec<u32>,
    pub med: Option<u32>,
    /// How long a drain keeps the routes with GRACEFUL_SHUTDOWN before it
    /// withdraws them.
    pub shutdown_wait: Duration,
    pub peers: Vec<Peer>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Api {
    pub socket: PathBuf,
    pub metrics: Option<SocketAddr>,
}

/// A validated config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub file: PathBuf,
    pub node_id: u16,
    pub hash_seed: u32,
    pub drain_period: Duration,
    pub dataplane: DataplaneConfig,
    pub members: Vec<Member>,
    pub liveness: Liveness,
    pub vips: Vec<VipConfig>,
    pub bgp: Bgp,
    pub api: Api,
}

impl Config {
    /// Reads and validates `path`. I/O errors are reported like config
    /// errors (file, message).
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigErrors(vec![ConfigError {
                file: name.clone(),
                path: String::new(),
                message: format!("cannot read: {e}"),
            }])
        })?;
        let mut cfg = Self::parse(&name, &text)?;
        cfg.file = path.to_path_buf();
        Ok(cfg)
    }

    /// Validates `text`; `file` is the name used in errors.
    pub fn parse(file: &str, text: &str) -> Result<Config, ConfigErrors> {
        let raw = parse_toml(file, text)?;
        let mut v = V::new(file);
        let cfg = validate(&mut v, raw);
        match (cfg, v.errors.is_empty()) {
            (Some(c), true) => Ok(c),
            _ => Err(ConfigErrors(v.errors)),
        }
    }

    pub fn member(&self, id: u16) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }

    /// This node's member entry (validation guarantees it exists).
    pub fn me(&self) -> Member {
        self.member(self.node_id).copied().unwrap_or(Member {
            id: self.node_id,
            address: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            weight: 1,
        })
    }

    /// A fingerprint of everything that must be equal on all nodes for them
    /// to compute the same tables: members, VIPs, encapsulation, seed, table
    /// size, drain period. Nodes publish it; a mismatch is reported loudly.
    pub fn generation(&self) -> String {
        let mut canon = format!(
            "seed={} table={} encap={:?} gue={} drain={}",
            self.hash_seed,
            self.dataplane.table_size,
            self.dataplane.encap,
            self.dataplane.gue_port,
            self.drain_period.as_millis()
        );
        for m in &self.members {
            canon += &format!(" m{}={}*{}", m.id, m.address, m.weight);
        }
        for vip in &self.vips {
            canon += &format!(" v={}:{:?}/{:?}", vip.address, vip.ports, vip.protocols);
        }
        // FNV-1a 64: stable across builds and platforms (std's hasher is not).
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in canon.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        format!("{h:016x}")
    }
}

fn parse_toml(file: &str, text: &str) -> Result<Raw, ConfigErrors> {
    let one = |path: String, message: String| {
        ConfigErrors(vec![ConfigError {
            file: file.to_string(),
            path,
            message,
        }])
    };
    let de = toml::Deserializer::parse(text).map_err(|e| {
        one(
            String::new(),
            format!("invalid TOML{}: {}", at_line(text, e.span()), e.message()),
        )
    })?;
    serde_path_to_error::deserialize::<_, Raw>(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let line = at_line(text, inner.span());
        let message = values::serde_message(inner.message());
        let path = if path == "." { String::new() } else { path };
        one(path, format!("{message}{line}"))
    })
}

/// " (line N)" for a byte span of `text`.
fn at_line(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    match span {
        Some(r) if r.start <= text.len() => {
            let line = text[..r.start].bytes().filter(|&b| b == b'\n').count() + 1;
            format!(" (line {line})")
        }
        _ => String::new(),
    }
}

fn validate(v: &mut V, raw: Raw) -> Option<Config> {
    let node_id = v.required("node_id", raw.node_id, "this node's id (1-1023)");
    let node_id = node_id.and_then(|n| v.range("node_id", n, 1, 1023, "a node id 1-1023"));
    let hash_seed = match raw.hash_seed {
        Some(s) => v.range("hash_seed", s, 0, u32::MAX.into(), "0-4294967295"),
        None => Some(dataplane_common::DEFAULT_HASH_SEED.into()),
    };
    let drain_period = v.duration_or("drain_period", raw.drain_period, "30m");
    let dataplane = dataplane(v, raw.dataplane);
    let members = members(v, raw.members);
    if let (Some(id), Some(ms)) = (node_id, &members)
        && !ms.iter().any(|m| i64::from(m.id) == id)
    {
        let ids: Vec<String> = ms.iter().map(|m| m.id.to_string()).collect();
        v.err(
            "node_id",
            format!(
                "{id} is not the id of any entry in members (ids: {})",
                ids.join(", ")
            ),
        );
    }
    if let (Some(id), Some(ms)) = (node_id, &members) {
        one_underlay_family(v, id, ms);
    }
    let liveness = liveness(v, raw.liveness);
    let vips = vips(v, raw.vips);
    let bgp = bgp::bgp(v, raw.bgp);
    let api = api(v, raw.api);
    Some(Config {
        file: PathBuf::new(),
        node_id: node_id? as u16,
        hash_seed: hash_seed? as u32,
        drain_period: drain_period?,
        dataplane: dataplane?,
        members: members?,
        liveness: liveness?,
        vips: vips?,
        bgp: bgp?,
        api: api?,
    })
}

fn dataplane(v: &mut V, raw: Option<RawDataplane>) -> Option<DataplaneConfig> {
    let raw = v.required("dataplane", raw, "a [dataplane] table")?;
    let interface = v.required(
        "dataplane.interface",
        raw.interface,
        "the uplink interface name",
    );
    let interface = interface.and_then(|i| {
        if i.is_empty() || i.len() > 15 || i.contains(['/', ' ', '\0']) {
            v.err(
                "dataplane.interface",
                format!("{i:?} is not an interface name (1-15 characters, no '/' or spaces)"),
            );
            None
        } else {
            Some(i)
        }
    });
    let encap = match raw.encapsulation.as_deref() {
        None | Some("gue") => Some(Encap::Gue),
        Some("ipip") => Some(Encap::Ipip),
        Some(o) => {
            v.err(
                "dataplane.encapsulation",
                format!("{o:?} is not an encapsulation (expected \"gue\" or \"ipip\")"),
            );
            None
        }
    };
    let gue_port = v.port_or(
        "dataplane.gue_port",
        raw.gue_port,
        dataplane_common::DEFAULT_GUE_PORT,
    );
    let pin_dir = match raw.pin_dir {
        None => Some(PathBuf::from(dataplane::loader::DEFAULT_PIN_DIR)),
        Some(p) if p.starts_with("/sys/fs/bpf/") && !p.contains("..") => Some(PathBuf::from(p)),
        Some(p) => {
            v.err(
                "dataplane.pin_dir",
                format!("{p:?} is not a directory under /sys/fs/bpf/"),
            );
            None
        }
    };
    let max = i64::from(dataplane_common::MAX_TABLE_SIZE);
    let table_size = match raw.table_size {
        None => Some(dataplane::maglev::DEFAULT_TABLE_SIZE),
        Some(t) if (2..=max).contains(&t) && values::is_prime(t as u64) => Some(t as u32),
        Some(t) => {
            v.err(
                "dataplane.table_size",
                format!("{t} is not a prime in 2-{max} (e.g. 65537, 16381, 4093)"),
            );
            None
        }
    };
    let underlay_mtu = match raw.underlay_mtu {
        None => Some(1500),
        Some(m) => v.range(
            "dataplane.underlay_mtu",
            m,
            1280,
            65535,
            "an MTU 1280-65535",
        ),
    };
    Some(DataplaneConfig {
        interface: interface?,
        encap: encap?,
        gue_port: gue_port?,
        pin_dir: pin_dir?,
        table_size: table_size?,
        underlay_mtu: underlay_mtu? as u16,
        mss_clamp: raw.mss_clamp.unwrap_or(true),
    })
}

fn members(v: &mut V, raw: Option<Vec<RawMember>>) -> Option<Vec<Member>> {
    let raw = v.required("members", raw, "at least one [[members]] entry")?;
    if raw.is_empty() {
        v.err("members", "empty: expected at least one [[members]] entry");
        return None;
    }
    let mut out: Vec<Member> = Vec::new();
    let mut ok = true;
    for (i, m) in raw.into_iter().enumerate() {
        let p = format!("members[{i}]");
        let id = v
            .required(&format!("{p}.id"), m.id, "a node id 1-1023")
            .and_then(|id| v.range(&format!("{p}.id"), id, 1, 1023, "a node id 1-1023"));
        let address = v
            .required(
                &format!("{p}.address"),
                m.address,
                "the node's underlay address",
            )
            .and_then(|a| v.ip(&format!("{p}.address"), &a));
        let weight = match m.weight {
            None => Some(1),
            Some(w) => v.range(
                &format!("{p}.weight"),
                w,
                1,
                1_000_000,
                "a weight 1-1000000",
            ),
        };
        match (id, address, weight) {
            (Some(id), Some(address), Some(weight)) => {
                if let Some(j) = out.iter().position(|o| i64::from(o.id) == id) {
                    v.err(
                        &format!("{p}.id"),
                        format!("{id} is already the id of members[{j}]"),
                    );
                    ok = false;
                } else if let Some(j) = out.iter().position(|o| o.address == address) {
                    v.err(
                        &format!("{p}.address"),
                        format!("{address} is already the address of members[{j}]"),
                    );
                    ok = false;
                } else {
                    out.push(Member {
                        id: id as u16,
                        address,
                        weight: weight as u32,
                    });
                }
            }
            _ => ok = false,
        }
    }
    ok.then_some(out)
}

/// Members are reached over this node's underlay: the dataplane has one
/// self address, in one family, to encapsulate from, and a member of the
/// other family could be neither polled nor forwarded to.
fn one_underlay_family(v: &mut V, node_id: i64, ms: &[Member]) {
    let Some(me) = ms.iter().find(|m| i64::from(m.id) == node_id) else {
        return;
    };
    let family = |a: IpAddr| if a.is_ipv4() { "IPv4" } else { "IPv6" };
    for (i, m) in ms.iter().enumerate() {
        if m.address.is_ipv4() != me.address.is_ipv4() {
            v.err(
                &format!("members[{i}].address"),
                format!(
                    "{} is {} but this node's underlay ({}, node {}) is {}: every member must be in the same family",
                    m.address,
                    family(m.address),
                    me.address,
                    me.id,
                    family(me.address)
                ),
            );
        }
    }
}

fn liveness(v: &mut V, raw: Option<RawLiveness>) -> Option<Liveness> {
    let raw = raw.unwrap_or_default();
    let port = v.port_or("liveness.port", raw.port, 9180);
    let interval = v.duration_or("liveness.interval", raw.interval, "1s");
    let timeout = v.duration_or("liveness.timeout", raw.timeout, "500ms");
    let rise = v.count_or("liveness.rise", raw.rise, 1);
    let fall = v.count_or("liveness.fall", raw.fall, 3);
    let secret_file = match raw.secret_file {
        None => Some(None),
        Some(f) if f.starts_with('/') => Some(Some(PathBuf::from(f))),
        Some(f) => {
            v.err(
                "liveness.secret_file",
                format!("{f:?} is not an absolute path"),
            );
            None
        }
    };
    if let (Some(i), Some(t)) = (interval, timeout)
        && t > i
    {
        v.err(
            "liveness.timeout",
            format!(
                "{} is longer than liveness.interval ({}): expected at most the interval",
                format_duration(t),
                format_duration(i)
            ),
        );
        return None;
    }
    Some(Liveness {
        port: port?,
        interval: interval?,
        timeout: timeout?,
        rise: rise?,
        fall: fall?,
        secret_file: secret_file?,
    })
}

fn vips(v: &mut V, raw: Option<Vec<RawVip>>) -> Option<Vec<VipConfig>> {
    let raw = v.required("vips", raw, "at least one [[vips]] entry")?;
    if raw.is_empty() {
        v.err("vips", "empty: expected at least one [[vips]] entry");
        return None;
    }
    let mut out: Vec<VipConfig> = Vec::new();
    let mut ok = true;
    let mut entries = 0usize;
    for (i, r) in raw.into_iter().enumerate() {
        let p = format!("vips[{i}]");
        match vip(v, &p, r) {
            Some(vip) => {
                if let Some(j) = out.iter().position(|o| o.address == vip.address) {
                    v.err(
                        &format!("{p}.address"),
                        format!("{} is already the address of vips[{j}]", vip.address),
                    );
                    ok = false;
                } else {
                    entries += vip.entries().len();
                    out.push(vip);
                }
            }
            None => ok = false,
        }
    }
    let max = dataplane_common::MAX_VIPS as usize;
    if ok && entries > max {
        v.err(
            "vips",
            format!(
                "{entries} address/port/protocol combinations: the dataplane holds at most {max}"
            ),
        );
        ok = false;
    }
    ok.then_some(out)
}

fn vip(v: &mut V, p: &str, r: RawVip) -> Option<VipConfig> {
    let address = v
        .required(&format!("{p}.address"), r.address, "the VIP address")
        .and_then(|a| v.ip(&format!("{p}.address"), &a));
    let ports = v.required(
        &format!("{p}.ports"),
        r.ports,
        "a list of ports, e.g. [443]",
    );
    let ports = ports.and_then(|ports| {
        if ports.is_empty() {
            v.err(&format!("{p}.ports"), "empty: expected at least one port");
            return None;
        }
        let mut out: Vec<u16> = Vec::new();
        let mut ok = true;
        for (j, port) in ports.into_iter().enumerate() {
            let pp = format!("{p}.ports[{j}]");
            match v.port(&pp, port) {
                Some(port) if out.contains(&port) => {
                    v.err(&pp, format!("{port} is listed twice"));
                    ok = false;
                }
                Some(port) => out.push(port),
                None => ok = false,
            }
        }
        ok.then_some(out)
    });
    let protocols = match r.protocols {
        None => Some(vec![Protocol::Tcp]),
        Some(list) if list.is_empty() => {
            v.err(
                &format!("{p}.protocols"),
                "empty: expected [\"tcp\"], [\"udp\"] or both",
            );
            None
        }
        Some(list) => {
            let mut out = Vec::new();
            let mut ok = true;
            for (j, s) in list.iter().enumerate() {
                let proto = match s.as_str() {
                    "tcp" => Protocol::Tcp,
                    "udp" => Protocol::Udp,
                    o => {
                        v.err(
                            &format!("{p}.protocols[{j}]"),
                            format!("{o:?} is not a protocol (expected \"tcp\" or \"udp\")"),
                        );
                        ok = false;
                        continue;
                    }
                };
                if out.contains(&proto) {
                    v.err(
                        &format!("{p}.protocols[{j}]"),
                        format!("{s:?} is listed twice"),
                    );
                    ok = false;
                } else {
                    out.push(proto);
                }
            }
            ok.then_some(out)
        }
    };
    let checks = v.required(
        &format!("{p}.checks"),
        r.checks,
        "at least one [[vips.checks]] entry",
    );
    let checks = checks.and_then(|list| {
        if list.is_empty() {
            v.err(
                &format!("{p}.checks"),
                "empty: expected at least one [[vips.checks]] entry",
            );
            return None;
        }
        let mut out = Vec::new();
        let mut ok = true;
        for (j, c) in list.into_iter().enumerate() {
            match checks::check(v, &format!("{p}.checks[{j}]"), c) {
                Some(c) => out.push(c),
                None => ok = false,
            }
        }
        ok.then_some(out)
    });
    Some(VipConfig {
        address: address?,
        ports: ports?,
        protocols: protocols?,
        checks: checks?,
    })
}

fn api(v: &mut V, raw: Option<RawApi>) -> Option<Api> {
    let raw = raw.unwrap_or_default();
    let socket = match raw.socket {
        None => Some(PathBuf::from(DEFAULT_SOCKET)),
        Some(s) if s.starts_with('/') => Some(PathBuf::from(s)),
        Some(s) => {
            v.err("api.socket", format!("{s:?} is not an absolute path"));
            None
        }
    };
    let metrics = match raw.metrics {
        None => Some(Some(SocketAddr::from(([127, 0, 0, 1], 9181)))),
        Some(m) if m.is_empty() => Some(None),
        Some(m) => v.socket_addr("api.metrics", &m).map(Some),
    };
    Some(Api {
        socket: socket?,
        metrics: metrics?,
    })
}
