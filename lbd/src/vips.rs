//! One state object per VIP, kept in a map keyed by address: its config,
//! its running checks and its table live and die together (like Katran's
//! `Vip`, which owns its ring and its reals). What is announced is not
//! kept here: the BGP speaker's RIB is the one record of it.
//!
//! A reload is a [`reconcile`] of this map with the new VIP list: a VIP
//! whose address stays keeps its checks (those whose spec did not change)
//! and its table; only the side effects (withdraw, dataplane entries) are
//! left to the daemon, from the [`Reconciled`] it returns.

use std::collections::BTreeMap;
use std::net::IpAddr;

use dataplane::loader::Vip;
use health::{Check, CheckSpec};

use crate::config::VipConfig;
use crate::tables::VipTable;

/// Everything the daemon keeps about one VIP.
pub struct VipState {
    pub config: VipConfig,
    pub checks: Vec<Check>,
    pub table: VipTable,
}

/// The daemon's VIPs by address.
pub type Vips = BTreeMap<IpAddr, VipState>;

impl VipState {
    /// A VIP with its checks started (down until they pass `rise` times).
    pub fn start(config: VipConfig, table: VipTable) -> Self {
        let checks = config.checks.iter().cloned().map(Check::spawn).collect();
        Self {
            config,
            checks,
            table,
        }
    }

    pub fn address(&self) -> IpAddr {
        self.config.address
    }

    /// Every check passes (a VIP without checks always does).
    pub fn healthy(&self) -> bool {
        self.checks.iter().all(|c| c.status().up)
    }

    /// Every check has run often enough to be up if it ever will be.
    pub fn checks_settled(&self) -> bool {
        self.config
            .checks
            .iter()
            .zip(&self.checks)
            .all(|(spec, c)| c.status().probes >= u64::from(spec.rise.max(spec.fall)))
    }
}

/// The dataplane entries (port, protocol) a reload changed for one VIP.
#[derive(Debug, PartialEq, Eq)]
pub struct EntriesChange {
    pub vip: IpAddr,
    pub removed: Vec<Vip>,
    pub added: Vec<Vip>,
}

/// What a [`reconcile`] changed; the caller applies the side effects.
#[derive(Default)]
pub struct Reconciled {
    /// New VIPs: checks started, an empty (joining) table.
    pub added: Vec<IpAddr>,
    /// VIPs the config no longer has, out of the map: withdraw them, then
    /// remove their dataplane entries (their checks stop when dropped).
    pub removed: Vec<VipState>,
    /// VIPs whose check list changed.
    pub checks_changed: Vec<IpAddr>,
    /// VIPs whose ports or protocols changed.
    pub entries_changed: Vec<EntriesChange>,
}

/// Brings `vips` in line with `next` (the new config's VIPs). A VIP that
/// stays keeps its table; of its checks, those whose spec is unchanged keep
/// running with their state.
pub fn reconcile(vips: &mut Vips, next: &[VipConfig], me: u16) -> Reconciled {
    let mut out = Reconciled::default();
    let (kept, gone): (Vips, Vips) = std::mem::take(vips)
        .into_iter()
        .partition(|(a, _)| next.iter().any(|v| v.address == *a));
    out.removed = gone.into_values().collect();
    *vips = kept;
    for v in next {
        let Some(state) = vips.get_mut(&v.address) else {
            // Added on every node one after the other: the nodes that have
            // it already serve it, so this node joins them like a node
            // that starts (moved buckets keep the owner they had there as
            // second hop).
            vips.insert(v.address, VipState::start(v.clone(), VipTable::joining(me)));
            out.added.push(v.address);
            continue;
        };
        if v.checks != state.config.checks {
            let old = std::mem::take(&mut state.checks);
            state.checks = carry_checks(&state.config.checks, old, &v.checks);
            out.checks_changed.push(v.address);
        }
        let (was, now) = (state.config.entries(), v.entries());
        if was != now {
            out.entries_changed.push(EntriesChange {
                vip: v.address,
                removed: was.iter().filter(|e| !now.contains(e)).copied().collect(),
                added: now.iter().filter(|e| !was.contains(e)).copied().collect(),
            });
        }
        state.config = v.clone();
    }
    out
}

/// The checks of a VIP whose check list a reload edited: a check whose
/// spec did not change keeps running with its state; a new or edited one
/// starts in the state the VIP had (up if all its old checks were up), so
/// the VIP is not withdrawn while the new check proves itself.
fn carry_checks(old_specs: &[CheckSpec], old: Vec<Check>, new_specs: &[CheckSpec]) -> Vec<Check> {
    let was_up = !old.is_empty() && old.iter().all(|c| c.status().up);
    let mut old: Vec<(&CheckSpec, Check)> = old_specs.iter().zip(old).collect();
    new_specs
        .iter()
        .map(|spec| match old.iter().position(|(s, _)| *s == spec) {
            Some(j) => old.swap_remove(j).1,
            None => Check::spawn_as(spec.clone(), was_up),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use bgp_speaker::{IpNet, RouteAttrs, Speaker, SpeakerConfig};
    use health::Probe;

    use super::*;
    use crate::config::Protocol;
    use crate::tables::MemberView;

    fn check(name: &str) -> CheckSpec {
        CheckSpec {
            name: name.into(),
            probe: Probe::Exec {
                argv: vec!["/bin/true".into()],
            },
            interval: Duration::from_millis(20),
            timeout: Duration::from_secs(1),
            rise: 1,
            fall: 1,
        }
    }

    fn vip(addr: &str, ports: &[u16], checks: &[&str]) -> VipConfig {
        VipConfig {
            address: addr.parse().expect("address"),
            ports: ports.to_vec(),
            protocols: vec![Protocol::Tcp],
            checks: checks.iter().map(|c| check(c)).collect(),
        }
    }

    /// A built 2-node table, so a test can tell a kept table from a new one.
    fn built_table() -> VipTable {
        let mut t = VipTable::joining(1);
        let view: Vec<MemberView> = [1, 2]
            .map(|id| MemberView {
                id,
                weight: 1,
                reachable: true,
                serving: true,
            })
            .to_vec();
        let now = Instant::now();
        let c = t.update(&view, 251, 7, now).expect("table");
        t.installed(c, now, Duration::from_secs(10));
        t
    }

    async fn probed(vips: &Vips, addr: &str) {
        let a: IpAddr = addr.parse().expect("address");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !vips[&a].checks.iter().all(|c| c.status().probes > 0) {
            assert!(Instant::now() < deadline, "{addr}: checks never ran");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    fn probes(vips: &Vips, addr: &str) -> Vec<u64> {
        let a: IpAddr = addr.parse().expect("address");
        vips[&a].checks.iter().map(|c| c.status().probes).collect()
    }

    fn prefix(addr: &str) -> IpNet {
        IpNet::from(addr.parse::<IpAddr>().expect("address"))
    }

    /// Add, remove and edit VIPs in one reload: the VIPs left alone keep
    /// their checks (still counting probes), their table and their route in
    /// the speaker's RIB; only the removed VIP's route goes.
    #[tokio::test]
    async fn reconcile_keeps_the_state_and_routes_of_vips_it_does_not_touch() {
        let speaker = Speaker::start(SpeakerConfig {
            local_as: 65001,
            router_id: "192.0.2.1".parse().expect("router id"),
            hold_time: 90,
            listen_port: None,
            graceful_restart: None,
            peers: vec![],
        })
        .await
        .expect("speaker");
        let before = [
            vip("198.51.100.10", &[80], &["a"]),
            vip("198.51.100.20", &[80], &["b"]),
            vip("2001:db8::30", &[80, 443], &["c", "d"]),
        ];
        let mut vips = Vips::new();
        for v in &before {
            vips.insert(v.address, VipState::start(v.clone(), built_table()));
            speaker
                .announce(IpNet::from(v.address), RouteAttrs::default())
                .expect("announce");
        }
        for v in &before {
            probed(&vips, &v.address.to_string()).await;
        }
        let table_10 = vips[&before[0].address].table.live.clone();
        let table_30 = vips[&before[2].address].table.live.clone();
        let probes_30 = probes(&vips, "2001:db8::30");

        // .20 removed, .40 added, ::30 gets a port less and check "d" edited.
        let after = [
            vip("198.51.100.10", &[80], &["a"]),
            vip("2001:db8::30", &[80], &["c", "d2"]),
            vip("198.51.100.40", &[80], &["e"]),
        ];
        let r = reconcile(&mut vips, &after, 1);
        // Read before anything awaits: on this single-threaded runtime a
        // check started by the reconcile has not probed yet (0), one kept
        // running has (at least 1).
        let kept_probes = [
            probes(&vips, "198.51.100.10")[0],
            probes(&vips, "2001:db8::30")[0],
        ];
        let new_probes = [
            probes(&vips, "2001:db8::30")[1],
            probes(&vips, "198.51.100.40")[0],
        ];
        // The daemon withdraws what a reconcile removed.
        for gone in &r.removed {
            speaker.withdraw(IpNet::from(gone.address()));
        }

        assert_eq!(r.added, ["198.51.100.40".parse::<IpAddr>().expect("ip")]);
        assert_eq!(
            r.removed.iter().map(VipState::address).collect::<Vec<_>>(),
            ["198.51.100.20".parse::<IpAddr>().expect("ip")]
        );
        assert_eq!(r.checks_changed, [before[2].address]);
        assert_eq!(
            r.entries_changed,
            [EntriesChange {
                vip: before[2].address,
                removed: vec![Vip {
                    addr: before[2].address,
                    port: 443,
                    proto: Protocol::Tcp.number()
                }],
                added: vec![],
            }]
        );
        assert_eq!(
            vips.keys().map(ToString::to_string).collect::<Vec<_>>(),
            ["198.51.100.10", "198.51.100.40", "2001:db8::30"]
        );
        // Untouched and edited VIPs keep their tables; the new one joins.
        assert_eq!(vips[&before[0].address].table.live, table_10);
        assert_eq!(vips[&before[2].address].table.live, table_30);
        assert!(vips[&after[2].address].table.live.is_empty());
        assert_eq!(vips[&before[2].address].config, after[1]);
        // Checks "a" and "c" kept running (their probe counts go on); "d2"
        // and "e" are new, and "d2" starts up, as the VIP's checks were.
        assert!(
            kept_probes[0] >= 1 && kept_probes[1] >= probes_30[0],
            "{kept_probes:?}"
        );
        assert_eq!(new_probes, [0, 0]);
        let d2 = vips[&before[2].address].checks[1].status();
        assert_eq!(d2.name, "d2");
        assert!(d2.up, "{d2:?}");
        assert!(vips[&before[2].address].healthy());
        // Routes: the removed VIP's is gone, the others' stay, the added
        // VIP is announced only once its checks and table allow.
        assert!(speaker.is_announced(prefix("198.51.100.10")));
        assert!(speaker.is_announced(prefix("2001:db8::30")));
        assert!(!speaker.is_announced(prefix("198.51.100.20")));
        assert!(!speaker.is_announced(prefix("198.51.100.40")));
        speaker.shutdown().await;

        // A reload that changes nothing reports nothing.
        let r = reconcile(&mut vips, &after, 1);
        assert!(
            r.added.is_empty()
                && r.removed.is_empty()
                && r.checks_changed.is_empty()
                && r.entries_changed.is_empty()
        );
        assert_eq!(vips[&before[0].address].table.live, table_10);
    }
}
