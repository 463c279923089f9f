//! SIGHUP: re-read the config and apply every change that can be made live
//! without breaking forwarding or flapping BGP sessions whose settings did
//! not change. What cannot change live (the uplink, the pin directory, the
//! table size, the hash seed, this node's id and address, liveness, the API,
//! the speaker-wide BGP settings) keeps its running value and is reported as
//! needing a restart.

use std::net::IpAddr;
use std::path::PathBuf;

use tracing::{error, info, warn};

use super::{Daemon, dataplane_config, host_prefix, mss_clamp, peer_config, route_attrs};
use crate::config::{Config, Member};
use crate::liveness;
use crate::vips;

/// What a reload did, for the log and `lbd status`.
#[derive(Default)]
struct Outcome {
    applied: Vec<String>,
    restart: Vec<&'static str>,
    failed: Vec<String>,
}

impl Outcome {
    fn fail(&mut self, what: String) {
        error!(error = %what, "reload: a change could not be applied");
        self.failed.push(what);
    }
}

/// `new` with the keys that cannot change live set back to `cur`'s, and the
/// names of those that differed.
fn live_part(cur: &Config, new: &Config) -> (Config, Vec<&'static str>) {
    let mut next = new.clone();
    let mut restart = Vec::new();
    let mut keep = |differs: bool, name: &'static str| {
        if differs {
            restart.push(name);
        }
        differs
    };
    if keep(
        new.node_id != cur.node_id || new.me().address != cur.me().address,
        "node_id / this node's member address",
    ) {
        next.node_id = cur.node_id;
        next.members = cur.members.clone();
    }
    let (d, n) = (&cur.dataplane, &mut next.dataplane);
    if keep(n.interface != d.interface, "dataplane.interface") {
        n.interface = d.interface.clone();
    }
    if keep(n.pin_dir != d.pin_dir, "dataplane.pin_dir") {
        n.pin_dir = d.pin_dir.clone();
    }
    if keep(n.table_size != d.table_size, "dataplane.table_size") {
        n.table_size = d.table_size;
    }
    if keep(new.hash_seed != cur.hash_seed, "hash_seed") {
        next.hash_seed = cur.hash_seed;
    }
    // The secret file is re-read live (`reload_secret`); the rest of
    // [liveness] runs in the poller and the endpoint as started.
    let mut liveness = new.liveness.clone();
    liveness.secret_file.clone_from(&cur.liveness.secret_file);
    if keep(liveness != cur.liveness, "liveness") {
        next.liveness = cur.liveness.clone();
        next.liveness
            .secret_file
            .clone_from(&new.liveness.secret_file);
    }
    if keep(new.api != cur.api, "api") {
        next.api = cur.api.clone();
    }
    let (b, n) = (&cur.bgp, &mut next.bgp);
    if keep(
        (n.local_as, n.router_id, n.hold_time) != (b.local_as, b.router_id, b.hold_time),
        "bgp.local_as / router_id / hold_time",
    ) {
        (n.local_as, n.router_id, n.hold_time) = (b.local_as, b.router_id, b.hold_time);
    }
    if keep(
        (n.listen_port, n.graceful_restart_time) != (b.listen_port, b.graceful_restart_time),
        "bgp.listen_port / graceful_restart_time",
    ) {
        (n.listen_port, n.graceful_restart_time) = (b.listen_port, b.graceful_restart_time);
    }
    (next, restart)
}

impl Daemon {
    /// The liveness secret file is re-read at every reload (a new secret,
    /// a rotation); if it cannot be read the running secrets stay.
    fn reload_secret(&mut self, next: &Config, out: &mut Outcome) {
        let changed = next.liveness.secret_file != self.cfg.liveness.secret_file;
        match super::load_keys(next) {
            Ok(keys) => {
                if keys.is_none() && self.keys.borrow().is_some() {
                    warn!(
                        "reload: liveness.secret_file removed: member reports are no longer authenticated"
                    );
                }
                self.keys.send_replace(keys);
                if changed {
                    out.applied.push("liveness.secret_file".into());
                }
                info!("reload: liveness secret re-read");
            }
            Err(e) => out.fail(format!("{e} (the running secret stays)")),
        }
    }

    /// SIGHUP: validate the file first; an invalid one changes nothing.
    pub(crate) async fn reload(&mut self) {
        let path: PathBuf = self.cfg.file.clone();
        let stamp = health::unix_now();
        let new = match Config::load(&path) {
            Ok(mut c) => {
                c.file = path.clone();
                c
            }
            Err(e) => {
                error!(file = %path.display(), errors = %e, "reload refused: the running config stays");
                self.last_reload = Some(format!(
                    "refused at {stamp}: {}",
                    e.to_string().replace('\n', "; ")
                ));
                return;
            }
        };
        let started = std::time::Instant::now();
        let (next, restart) = live_part(&self.cfg, &new);
        let mut out = Outcome {
            restart,
            ..Default::default()
        };
        self.reload_secret(&next, &mut out);
        let removed_members = self.reload_members(&next, &mut out);
        self.reload_vips(&next, &mut out);
        self.reload_dataplane(&next, &mut out);
        if next.drain_period != self.cfg.drain_period {
            out.applied.push("drain_period".into());
        }
        if route_attrs(&next) != route_attrs(&self.cfg) {
            out.applied.push("route attributes".into());
            for &vip in self.vips.keys() {
                if self.announced(vip) {
                    let _ = self.speaker.announce(host_prefix(vip), route_attrs(&next));
                }
            }
        }
        if next.bgp.shutdown_wait != self.cfg.bgp.shutdown_wait {
            out.applied.push("bgp.shutdown_wait".into());
        }
        self.reload_peers(&next, &mut out).await;
        let old_generation = self.cfg.generation();
        self.cfg = next;
        let generation = self.cfg.generation();
        if generation != old_generation {
            info!(from = %old_generation, to = %generation, "config generation");
            self.report
                .send_modify(|r| r.generation.clone_from(&generation));
            self.generation.send_replace(generation);
        }
        // Removed members leave the dataplane's node list once no table
        // names them (`tick`); tables follow the new members and VIPs now,
        // not at the next tick.
        self.gone_members
            .retain(|id| !self.cfg.members.iter().any(|m| m.id == *id));
        self.gone_members.extend(removed_members);
        self.tick();
        let took = started.elapsed();
        if out.applied.is_empty() && out.restart.is_empty() && out.failed.is_empty() {
            self.last_reload = Some(format!("no change at {stamp}"));
            info!("reload: no change");
            return;
        }
        let mut text = format!(
            "at {stamp}: applied [{}]; needs a restart: [{}]",
            out.applied.join(", "),
            out.restart.join(", ")
        );
        if !out.failed.is_empty() {
            text += &format!("; failed: [{}]", out.failed.join("; "));
        }
        if out.restart.is_empty() && out.failed.is_empty() {
            info!(applied = ?out.applied, ?took, "reload applied");
        } else {
            warn!(applied = ?out.applied, needs_restart = ?out.restart, failed = ?out.failed, ?took,
                "reload: some changes were not applied; the running values stay for them");
        }
        self.last_reload = Some(text);
    }

    /// Members added, removed, re-addressed or re-weighted: the liveness
    /// table and the dataplane's node list follow; the tables are rebuilt by
    /// the next tick (with `follow`, so moved buckets keep their previous
    /// owner as second hop). Returns the ids to remove from the dataplane
    /// once the tables no longer name them.
    fn reload_members(&mut self, next: &Config, out: &mut Outcome) -> Vec<u16> {
        let cur = &self.cfg.members;
        if &next.members == cur {
            return Vec::new();
        }
        liveness::set_members(&self.members, &next.members, next.node_id, &next.liveness);
        let same = |m: &Member| cur.iter().any(|c| c.id == m.id && c.address == m.address);
        for m in next.members.iter().filter(|m| !same(m)) {
            if let Err(e) = self.dp.set_node(m.id, Some(m.address)) {
                out.fail(format!("node {} ({}): {e:#}", m.id, m.address));
            }
        }
        let removed: Vec<u16> = cur
            .iter()
            .filter(|c| !next.members.iter().any(|m| m.id == c.id))
            .map(|c| c.id)
            .collect();
        info!(members = ?next.members.iter().map(|m| (m.id, m.address, m.weight)).collect::<Vec<_>>(),
            removed = ?removed, "reload: members");
        out.applied.push("members".into());
        removed
    }

    /// VIPs by address (`vips::reconcile`): a new one gets its checks and
    /// an empty table (it is announced once its checks pass and the table
    /// is loaded); a removed one is withdrawn, then leaves the dataplane;
    /// changed ports or protocols add or remove dataplane entries; changed
    /// checks are respawned. The VIPs left alone keep everything.
    fn reload_vips(&mut self, next: &Config, out: &mut Outcome) {
        let r = vips::reconcile(&mut self.vips, &next.vips, next.node_id);
        for addr in &r.added {
            info!(vip = %addr, "reload: VIP added");
            out.applied.push(format!("vip {addr} added"));
        }
        for addr in &r.checks_changed {
            out.applied.push(format!("checks of {addr}"));
        }
        for c in &r.entries_changed {
            out.applied.push(format!("ports/protocols of {}", c.vip));
            for e in &c.removed {
                if let Err(err) = self.dp.remove_vip(e) {
                    out.fail(format!("removing {e}: {err:#}"));
                }
            }
            let Some(live) = self.vips.get(&c.vip).map(|v| &v.table.live) else {
                continue;
            };
            if live.is_empty() {
                continue;
            }
            let clamp = mss_clamp(next, c.vip);
            for e in &c.added {
                if let Err(err) = self.dp.set_vip_table(e, live, clamp) {
                    out.fail(format!("installing {e}: {err:#}"));
                }
            }
        }
        for gone in &r.removed {
            let addr = gone.address();
            // Withdraw first: routers stop sending before the dataplane
            // stops steering (the checks stop when `r` is dropped).
            if self.speaker.is_announced(host_prefix(addr)) {
                self.speaker.withdraw(host_prefix(addr));
                info!(vip = %addr, reason = "removed from the config", "withdrawn");
            }
            for e in gone.config.entries() {
                if let Err(err) = self.dp.remove_vip(&e) {
                    out.fail(format!("removing {e}: {err:#}"));
                }
            }
            info!(vip = %addr, "reload: VIP removed");
            out.applied.push(format!("vip {addr} removed"));
        }
    }

    /// Encapsulation and GUE port go to the dataplane's config map; the MSS
    /// clamp settings are re-applied with every VIP's table.
    fn reload_dataplane(&mut self, next: &Config, out: &mut Outcome) {
        let (d, n) = (&self.cfg.dataplane, &next.dataplane);
        if (n.encap, n.gue_port) != (d.encap, d.gue_port) {
            match self.dp.set_config(&dataplane_config(next)) {
                Ok(()) => out
                    .applied
                    .push("dataplane.encapsulation / gue_port".into()),
                Err(e) => out.fail(format!("dataplane config: {e:#}")),
            }
        }
        if (n.mss_clamp, n.underlay_mtu) == (d.mss_clamp, d.underlay_mtu) {
            return;
        }
        if n.mss_clamp
            && let Err(e) = self.dp.attach_mss_clamp(&n.interface)
        {
            out.fail(format!("attaching the MSS clamp: {e:#}"));
            return;
        }
        for (&addr, v) in &self.vips {
            if v.table.live.is_empty() {
                continue;
            }
            for e in v.config.entries() {
                if let Err(err) = self
                    .dp
                    .set_vip_table(&e, &v.table.live, mss_clamp(next, addr))
                {
                    out.fail(format!("installing {e}: {err:#}"));
                }
            }
        }
        out.applied
            .push("dataplane.mss_clamp / underlay_mtu".into());
    }

    /// Peers by address: removed ones end with Cease, new ones start, a peer
    /// whose settings (or MD5 password) changed is re-established; the other
    /// sessions are not touched.
    async fn reload_peers(&mut self, next: &Config, out: &mut Outcome) {
        let mut wanted = Vec::new();
        for p in &next.bgp.peers {
            match peer_config(p) {
                Ok(pc) => wanted.push(pc),
                Err(e) => {
                    // Keep the running session of a peer we cannot read.
                    out.fail(format!("{e:#}"));
                    if let Some(pc) = self.peers.iter().find(|c| c.address == p.address) {
                        wanted.push(pc.clone());
                    }
                }
            }
        }
        let running = std::mem::take(&mut self.peers);
        let mut kept = Vec::new();
        for pc in running {
            match wanted.iter().find(|w| w.address == pc.address) {
                Some(w) if *w == pc => kept.push(pc),
                other => {
                    let why = if other.is_some() {
                        "settings changed"
                    } else {
                        "removed"
                    };
                    self.speaker.remove_peer(pc.address).await;
                    info!(peer = %pc.address, reason = why, "reload: BGP peer stopped");
                    out.applied.push(format!("bgp peer {} {why}", pc.address));
                }
            }
        }
        for w in wanted {
            if kept.iter().any(|k| k.address == w.address) {
                continue;
            }
            let addr: IpAddr = w.address;
            match self.speaker.add_peer(w.clone()).await {
                Ok(()) => {
                    info!(peer = %addr, "reload: BGP peer started");
                    if !out
                        .applied
                        .iter()
                        .any(|a| a.starts_with(&format!("bgp peer {addr} ")))
                    {
                        out.applied.push(format!("bgp peer {addr} added"));
                    }
                    kept.push(w);
                }
                Err(e) => out.fail(format!("bgp peer {addr}: {e}")),
            }
        }
        self.peers = kept;
    }
}
