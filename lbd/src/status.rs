//! What `lbd status` shows: the data set, assembled here from the
//! daemon's parts ([`assemble`]), sent as JSON over the control socket
//! (`--json` prints it as is; its field names are stable), and the dense
//! text rendering ([`render`]). A new field is one line in its struct and
//! one in the function that fills it (`vip_status`, `peer_line`,
//! `member_line`, `node_status`).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use bgp_speaker::{BfdState, PeerStatus, Speaker, State};
use dataplane::loader::Dataplane;
use serde::{Deserialize, Serialize};

use crate::columns::Columns;
use crate::config::{Config, Member, Protocol};
use crate::liveness::{self, MemberStatus, NodeState, printable};
use crate::vips::{VipState, Vips};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub node: NodeStatus,
    /// By address (IPv4 before IPv6).
    pub vips: Vec<VipStatus>,
    pub bgp: Vec<PeerLine>,
    pub members: Vec<MemberLine>,
    /// The liveness endpoint's connections by outcome (`served`,
    /// `refused_not_member`, `refused_too_many`, `deadline_exceeded`,
    /// `bad_request`).
    #[serde(default)]
    pub liveness: BTreeMap<String, u64>,
    /// BGP connections refused because their source is not a peer.
    #[serde(default)]
    pub bgp_refused_unknown: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub id: u16,
    pub state: NodeState,
    pub reason: String,
    pub generation: String,
    pub config: String,
    pub uptime_s: u64,
    /// Outcome of the last SIGHUP, if any.
    pub last_reload: Option<String>,
    /// Dataplane counters not tied to a VIP (not VIP traffic, fragments,
    /// malformed packets, tunnel packets dropped), summed over CPUs.
    #[serde(default)]
    pub dataplane: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VipStatus {
    pub address: String,
    pub ports: Vec<u16>,
    pub protocols: Vec<Protocol>,
    pub healthy: bool,
    pub announced: bool,
    /// This node is a first hop in its own table.
    pub in_table: bool,
    pub checks: Vec<CheckLine>,
    /// Dataplane counters summed over the VIP's port/protocol entries.
    pub counters: BTreeMap<String, u64>,
    /// Buckets per first-hop node id.
    pub share: BTreeMap<u16, usize>,
    pub second_hops: usize,
    pub table_size: usize,
    /// Seconds until the second hops are dropped, while in transition.
    pub settles_in_s: Option<u64>,
    /// TCP ports of the VIP with no listening socket on this node right
    /// now (new connections go to their fallback node).
    #[serde(default)]
    pub listener_missing: Vec<u16>,
    /// The dataplane checks this VIP's packets against the fallback (a SYN
    /// found no listener within the drain period).
    #[serde(default)]
    pub steering_to_fallback: bool,
    /// TCP ports quiesced by `lbd listener quiesce` (new connections go to
    /// the fallback while the listener drains its accept queue).
    #[serde(default)]
    pub listener_quiesced: Vec<u16>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckLine {
    pub name: String,
    pub up: bool,
    pub last_result: String,
    pub latency_ms: Option<f64>,
    pub probes: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PeerLine {
    pub peer: String,
    pub state: State,
    pub uptime_s: Option<u64>,
    pub prefixes_sent: u64,
    pub prefixes_received: u64,
    pub bfd: Option<BfdState>,
    pub last_error: Option<String>,
    /// Malformed UPDATEs handled without a session reset (RFC 7606), per
    /// "approach/class", e.g. "treat-as-withdraw/origin".
    #[serde(default)]
    pub update_errors: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberLine {
    pub id: u16,
    pub address: String,
    /// This node itself.
    pub local: bool,
    pub up: bool,
    /// What the member reported while up; `down` when it is not.
    pub state: NodeState,
    pub generation: Option<String>,
    pub generation_matches: bool,
    pub last_seen_unix: Option<u64>,
    pub last_error: Option<String>,
}

/// What the daemon lends [`assemble`].
pub struct Sources<'a> {
    pub cfg: &'a Config,
    pub vips: &'a Vips,
    pub state: NodeState,
    pub reason: &'a str,
    pub uptime: Duration,
    pub last_reload: Option<&'a str>,
    pub dp: &'a Dataplane,
    pub speaker: &'a Speaker,
    /// The other members as the liveness poller last saw them.
    pub members: &'a BTreeMap<u16, MemberStatus>,
    pub liveness: &'a liveness::Counters,
}

/// The whole status from the daemon's parts.
pub fn assemble(src: &Sources) -> Status {
    let now = Instant::now();
    let generation = src.cfg.generation();
    let listening = crate::listeners::listening();
    Status {
        node: node_status(src, &generation),
        vips: src
            .vips
            .iter()
            .map(|(&addr, v)| vip_status(src, addr, v, &listening, now))
            .collect(),
        bgp: src.speaker.peers().into_iter().map(peer_line).collect(),
        members: src
            .cfg
            .members
            .iter()
            .map(|m| member_line(src, m, &generation))
            .collect(),
        liveness: src
            .liveness
            .snapshot()
            .into_iter()
            .map(|(k, n)| (k.to_string(), n))
            .collect(),
        bgp_refused_unknown: src.speaker.refused_unknown(),
    }
}

fn node_status(src: &Sources, generation: &str) -> NodeStatus {
    NodeStatus {
        id: src.cfg.node_id,
        state: src.state,
        reason: src.reason.to_string(),
        generation: generation.to_string(),
        config: src.cfg.file.display().to_string(),
        uptime_s: src.uptime.as_secs(),
        last_reload: src.last_reload.map(str::to_string),
        dataplane: match src.dp.counters(None) {
            Ok(c) => c.into_iter().map(|(k, n)| (k.to_string(), n)).collect(),
            Err(_) => BTreeMap::new(),
        },
    }
}

fn vip_status(
    src: &Sources,
    addr: IpAddr,
    v: &VipState,
    listening: &[crate::listeners::Listener],
    now: Instant,
) -> VipStatus {
    let mut counters: BTreeMap<String, u64> = BTreeMap::new();
    for e in v.config.entries() {
        if let Ok(c) = src.dp.counters(Some(&e)) {
            for (k, n) in c {
                *counters.entry(k.to_string()).or_default() += n;
            }
        }
    }
    let t = &v.table;
    let (share, second_hops) = t.share();
    let states: Vec<_> = v
        .config
        .entries()
        .into_iter()
        .filter_map(|e| Some((e.port, src.dp.listener_state(&e).ok().flatten()?)))
        .collect();
    let steering_to_fallback = states.iter().any(|(_, s)| s.steering != 0);
    let mut listener_quiesced: Vec<u16> = states
        .iter()
        .filter(|(_, s)| s.quiesced != 0)
        .map(|&(p, _)| p)
        .collect();
    listener_quiesced.dedup();
    VipStatus {
        address: addr.to_string(),
        ports: v.config.ports.clone(),
        protocols: v.config.protocols.clone(),
        healthy: v.healthy(),
        // The RIB, drain included: a draining node still announces (with
        // GRACEFUL_SHUTDOWN) until `shutdown_wait` ends.
        announced: src.speaker.is_announced(addr.into()),
        in_table: t.has_first_hop(src.cfg.node_id),
        checks: v
            .checks
            .iter()
            .map(|c| {
                let s = c.status();
                CheckLine {
                    name: s.name,
                    up: s.up,
                    last_result: s.last_result,
                    latency_ms: s.last_latency_ms,
                    probes: s.probes,
                }
            })
            .collect(),
        counters,
        share: share.into_iter().collect(),
        second_hops,
        table_size: t.live.len(),
        settles_in_s: t
            .settle_at
            .map(|s| s.saturating_duration_since(now).as_secs()),
        listener_missing: if v.config.protocols.contains(&Protocol::Tcp) {
            crate::listeners::missing(listening, addr, &v.config.ports)
        } else {
            Vec::new()
        },
        steering_to_fallback,
        listener_quiesced,
    }
}

fn peer_line(p: PeerStatus) -> PeerLine {
    PeerLine {
        peer: p.peer.to_string(),
        state: p.state,
        uptime_s: p.uptime.map(|u| u.as_secs()),
        prefixes_sent: p.prefixes_sent,
        prefixes_received: p.prefixes_received,
        bfd: p.bfd,
        last_error: p.last_error,
        update_errors: p.update_errors,
    }
}

fn member_line(src: &Sources, m: &Member, generation: &str) -> MemberLine {
    if m.id == src.cfg.node_id {
        return MemberLine {
            id: m.id,
            address: m.address.to_string(),
            local: true,
            up: true,
            state: src.state,
            generation: Some(generation.to_string()),
            generation_matches: true,
            last_seen_unix: Some(health::unix_now()),
            last_error: None,
        };
    }
    let s = src.members.get(&m.id);
    let report = s.and_then(|s| s.report.as_ref());
    let up = s.is_some_and(|s| s.up);
    MemberLine {
        id: m.id,
        address: m.address.to_string(),
        local: false,
        up,
        state: match (up, report) {
            (true, Some(r)) => r.state,
            _ => NodeState::Down,
        },
        generation: report.map(|r| r.generation.clone()),
        generation_matches: report.is_none_or(|r| r.generation == generation),
        last_seen_unix: s.and_then(|s| s.last_seen_unix),
        last_error: s.and_then(|s| s.last_error.clone()),
    }
}

/// The first 8 characters of a generation, escaped (a member's report
/// could carry anything; slicing bytes would panic on non-ASCII).
fn short_generation(g: &str) -> String {
    printable(&g.chars().take(8).collect::<String>())
}

fn ago(now: u64, t: Option<u64>) -> String {
    match t {
        Some(t) => format!("{}s", now.saturating_sub(t)),
        None => "never".into(),
    }
}

fn dur(s: Option<u64>) -> String {
    match s {
        None => "-".into(),
        Some(s) if s >= 86400 => format!("{}d{:02}h", s / 86400, s % 86400 / 3600),
        Some(s) => format!("{:02}:{:02}:{:02}", s / 3600, s % 3600 / 60, s % 60),
    }
}

/// The one-screen text view.
pub fn render(s: &Status, now_unix: u64) -> String {
    let mut o = String::new();
    let n = &s.node;
    let _ = writeln!(
        o,
        "node {} {} ({}), generation {}, up {}, config {}",
        n.id,
        n.state.name().to_uppercase(),
        n.reason,
        short_generation(&n.generation),
        dur(Some(n.uptime_s)),
        n.config
    );
    if let Some(r) = &n.last_reload {
        let _ = writeln!(o, "last reload: {r}");
    }
    let g = |k: &str| n.dataplane.get(k).copied().unwrap_or(0);
    let _ = writeln!(
        o,
        "dataplane: tunnel drops {} not from a member, {} not VIP inside; {} malformed",
        g("drop_not_member"),
        g("drop_decap_not_vip"),
        g("drop_malformed")
    );
    // Minimum widths keep the usual layout; a longer cell widens its
    // column for every row.
    let mut t = Columns::new(&[
        "VIP",
        "Ports",
        "Health",
        "BGP",
        "Table",
        "Share (node:buckets)",
        "2nd-hop",
        "Local",
        "Fwd1st",
        "Fwd2nd",
        "Decap",
        "Drops",
    ])
    .min_widths(&[24, 11, 6, 9, 5, 24, 7, 9, 9, 9, 9]);
    for v in &s.vips {
        let ports = v
            .ports
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join(",");
        let protocols = v
            .protocols
            .iter()
            .map(|p| p.name())
            .collect::<Vec<_>>()
            .join("+");
        let share = v
            .share
            .iter()
            .map(|(n, b)| format!("{n}:{b}"))
            .collect::<Vec<_>>()
            .join(" ");
        let c = |k: &str| v.counters.get(k).copied().unwrap_or(0);
        let drops = c("drop_no_node") + c("drop_no_route") + c("drop_too_big") + c("drop_encap");
        let second = match v.settles_in_s {
            Some(t) => format!("{} ({}s)", v.second_hops, t),
            None => v.second_hops.to_string(),
        };
        t.row([
            v.address.clone(),
            format!("{ports}/{protocols}"),
            (if v.healthy { "up" } else { "DOWN" }).into(),
            (if v.announced {
                "announced"
            } else {
                "withdrawn"
            })
            .into(),
            (if v.in_table { "in" } else { "out" }).into(),
            share,
            second,
            c("pass_local").to_string(),
            c("fwd_first_hop").to_string(),
            c("fwd_second_hop").to_string(),
            c("decap").to_string(),
            drops.to_string(),
        ]);
        if !v.listener_quiesced.is_empty() {
            let ports: Vec<String> = v.listener_quiesced.iter().map(u16::to_string).collect();
            t.note(format!(
                "listener quiesced on port(s) [{}] (lbd listener resume)",
                ports.join(",")
            ));
        }
        if !v.listener_missing.is_empty() || v.steering_to_fallback {
            let ports: Vec<String> = v.listener_missing.iter().map(u16::to_string).collect();
            t.note(format!(
                "listener missing on port(s) [{}]; steering to fallback: {}; {} SYNs sent to the fallback",
                ports.join(","),
                if v.steering_to_fallback { "yes" } else { "no" },
                c("syn_to_fallback")
            ));
        }
        for ch in &v.checks {
            let lat = ch
                .latency_ms
                .map(|l| format!("{l:.1}ms"))
                .unwrap_or_else(|| "-".into());
            t.note(format!(
                "check {:<40} {:<5} {:<9} {}",
                ch.name,
                if ch.up { "up" } else { "DOWN" },
                lat,
                printable(&ch.last_result)
            ));
        }
    }
    o.push('\n');
    t.write(&mut o);
    let mut t = Columns::new(&[
        "BGP peer",
        "State",
        "Up/Down",
        "PfxSnt",
        "PfxRcd",
        "BFD",
        "Last error",
    ])
    .min_widths(&[24, 11, 9, 5, 5, 5]);
    for p in &s.bgp {
        t.row([
            p.peer.clone(),
            p.state.name().into(),
            dur(p.uptime_s),
            p.prefixes_sent.to_string(),
            p.prefixes_received.to_string(),
            p.bfd.map_or("-", BfdState::name).into(),
            printable(p.last_error.as_deref().unwrap_or("")),
        ]);
        if !p.update_errors.is_empty() {
            let list: Vec<String> = p
                .update_errors
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect();
            t.note(format!("RFC 7606, session kept: {}", list.join(", ")));
        }
    }
    o.push('\n');
    t.write(&mut o);
    if s.bgp_refused_unknown > 0 {
        let _ = writeln!(
            o,
            "BGP connections from unconfigured addresses refused: {}",
            s.bgp_refused_unknown
        );
    }
    let mut t = Columns::new(&[
        "Member",
        "Address",
        "Reach",
        "State",
        "Generation",
        "Last seen",
        "Note",
    ])
    .min_widths(&[6, 24, 5, 8, 10, 9]);
    for m in &s.members {
        let gen_text = m
            .generation
            .as_deref()
            .map(short_generation)
            .unwrap_or_else(|| "-".into());
        // What a member reported (or what failed about it) is its text,
        // not ours: escaped before it reaches the terminal.
        let mut note = printable(m.last_error.as_deref().unwrap_or_default());
        if m.generation.is_some() && !m.generation_matches {
            note = format!("GENERATION DIFFERS {note}");
        }
        t.row([
            if m.local {
                format!("{}*", m.id)
            } else {
                m.id.to_string()
            },
            printable(&m.address),
            (if m.up { "up" } else { "DOWN" }).into(),
            m.state.name().into(),
            gen_text,
            if m.local {
                "-".into()
            } else {
                ago(now_unix, m.last_seen_unix)
            },
            note.trim().to_string(),
        ]);
    }
    o.push('\n');
    t.write(&mut o);
    if !s.liveness.is_empty() {
        let counts: Vec<String> = s.liveness.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let _ = writeln!(o, "\nliveness endpoint: {}", counts.join(", "));
    }
    o
}

/// A status with something wrong in every part, for the tests of its
/// views.
#[cfg(test)]
pub(crate) fn example() -> Status {
    Status {
        node: NodeStatus {
            id: 1,
            state: NodeState::Active,
            reason: "1/1 VIPs pass their checks".into(),
            generation: "6d2bab2875707e18".into(),
            config: "/etc/lbd/lbd.toml".into(),
            uptime_s: 3725,
            last_reload: Some("refused at 1: lbd.toml: vips[0].ports[0]: 0 is not a port".into()),
            dataplane: BTreeMap::from([("drop_not_member".into(), 12)]),
        },
        vips: vec![VipStatus {
            address: "198.51.100.10".into(),
            ports: vec![80, 443],
            protocols: vec![Protocol::Tcp],
            healthy: false,
            announced: false,
            in_table: false,
            checks: vec![CheckLine {
                name: "http://127.0.0.1/health".into(),
                up: false,
                last_result: "status 503, expected 200".into(),
                latency_ms: Some(1.25),
                probes: 9,
            }],
            counters: BTreeMap::from([
                ("pass_local".into(), 7),
                ("drop_no_route".into(), 2),
                ("drop_encap".into(), 1),
            ]),
            share: BTreeMap::from([(2, 2047), (3, 2046)]),
            second_hops: 1364,
            table_size: 4093,
            settles_in_s: Some(59),
            listener_missing: vec![443],
            steering_to_fallback: true,
            listener_quiesced: vec![443],
        }],
        bgp: vec![PeerLine {
            peer: "192.0.2.1".into(),
            state: State::Active,
            uptime_s: None,
            prefixes_sent: 0,
            prefixes_received: 0,
            bfd: None,
            last_error: Some("connect: Connection refused".into()),
            update_errors: BTreeMap::from([("treat-as-withdraw/origin".into(), 2)]),
        }],
        members: vec![MemberLine {
            id: 2,
            address: "192.0.2.12".into(),
            local: false,
            up: true,
            state: NodeState::Active,
            generation: Some("0123456789abcdef".into()),
            generation_matches: false,
            last_seen_unix: Some(95),
            last_error: None,
        }],
        liveness: BTreeMap::from([("served".into(), 12), ("refused_not_member".into(), 3)]),
        bgp_refused_unknown: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_text_is_escaped_and_never_panics() {
        let mut s = example();
        // What an old or hostile member could have made us store: a
        // multi-byte generation (byte slicing at 8 used to panic) and
        // terminal escapes in an error.
        s.members[0].generation = Some("ééééééééé".into());
        s.members[0].last_error = Some("bad \u{1b}[2J\u{202e}".into());
        s.node.generation = "\u{1b}[31mgéné".into();
        let text = render(&s, 100);
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{202e}'),
            "{text:?}"
        );
        assert!(text.contains("\\u{e9}\\u{e9}"), "{text}");
        assert!(text.contains("bad \\u{1b}[2J\\u{202e}"), "{text}");
        assert!(
            text.contains("liveness endpoint: refused_not_member 3, served 12"),
            "{text}"
        );
    }

    #[test]
    fn render_shows_what_is_wrong_at_a_glance() {
        let text = render(&example(), 100);
        for want in [
            "node 1 ACTIVE (1/1 VIPs pass their checks), generation 6d2bab28, up 01:02:05",
            "last reload: refused at 1: lbd.toml: vips[0].ports[0]: 0 is not a port",
            "tunnel drops 12 not from a member, 0 not VIP inside",
            "80,443/tcp",
            "DOWN    withdrawn  out",
            "2:2047 3:2046",
            "1364 (59s)",
            "status 503, expected 200",
            "1.2ms",
            "connect: Connection refused",
            "RFC 7606, session kept: treat-as-withdraw/origin 2",
            "GENERATION DIFFERS",
            "5s",
            "listener missing on port(s) [443]; steering to fallback: yes",
        ] {
            assert!(text.contains(want), "{want:?} missing from:\n{text}");
        }
        // Drops add up the four drop counters.
        assert!(
            text.lines()
                .any(|l| l.starts_with("198.51.100.10") && l.trim_end().ends_with(" 3")),
            "{text}"
        );
    }

    #[test]
    fn status_json_round_trips() {
        let s = example();
        let json = serde_json::to_string(&s).expect("json");
        let back: Status = serde_json::from_str(&json).expect("parse");
        assert_eq!(serde_json::to_string(&back).expect("json"), json);
    }
}
