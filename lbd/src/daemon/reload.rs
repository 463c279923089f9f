//! SIGHUP: re-read the config and apply what can change without touching
//! forwarding or BGP sessions.

use std::path::PathBuf;

use health::Check;
use tracing::{error, info, warn};

use super::{Daemon, host_prefix, route_attrs};
use crate::config::Config;

impl Daemon {
    /// SIGHUP: validate the file first; an invalid one changes nothing.
    /// Health checks, route attributes and the drain period are applied
    /// live; other changes are reported as needing a restart.
    pub(crate) fn reload(&mut self) {
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
        if new == self.cfg {
            self.last_reload = Some(format!("no change at {stamp}"));
            info!("reload: no change");
            return;
        }
        let mut applied = Vec::new();
        let mut restart = Vec::new();
        let same_vips = new.vips.len() == self.cfg.vips.len()
            && new.vips.iter().zip(&self.cfg.vips).all(|(a, b)| {
                a.address == b.address && a.ports == b.ports && a.protocols == b.protocols
            });
        if same_vips {
            for (i, v) in new.vips.iter().enumerate() {
                if v.checks != self.cfg.vips[i].checks {
                    self.checks[i] = v.checks.iter().cloned().map(Check::spawn).collect();
                    applied.push(format!("checks of {}", v.address));
                }
            }
        } else {
            restart.push("vips");
        }
        let (old_attrs, new_attrs) = (route_attrs(&self.cfg), route_attrs(&new));
        if new.drain_period != self.cfg.drain_period {
            applied.push("drain_period".into());
        }
        if new.members != self.cfg.members || new.node_id != self.cfg.node_id {
            restart.push("members/node_id");
        }
        if new.dataplane != self.cfg.dataplane || new.hash_seed != self.cfg.hash_seed {
            restart.push("dataplane/hash_seed");
        }
        if new.liveness != self.cfg.liveness {
            restart.push("liveness");
        }
        if new.api != self.cfg.api {
            restart.push("api");
        }
        let bgp_session = |c: &Config| {
            (
                c.bgp.local_as,
                c.bgp.router_id,
                c.bgp.hold_time,
                c.bgp.listen_port,
                c.bgp.graceful_restart_time,
                c.bgp.peers.clone(),
            )
        };
        if bgp_session(&new) != bgp_session(&self.cfg) {
            restart.push("bgp sessions");
        }
        // Apply what is live-safe; keep the rest of the running config.
        let mut next = self.cfg.clone();
        if same_vips {
            for (i, v) in new.vips.iter().enumerate() {
                next.vips[i].checks = v.checks.clone();
            }
        }
        next.drain_period = new.drain_period;
        next.bgp.communities = new.bgp.communities.clone();
        next.bgp.med = new.bgp.med;
        next.bgp.shutdown_wait = new.bgp.shutdown_wait;
        self.cfg = next;
        if old_attrs != new_attrs {
            applied.push("route attributes".into());
            for (i, v) in self.cfg.vips.iter().enumerate() {
                if self.announced[i] {
                    let _ = self
                        .speaker
                        .announce(host_prefix(v.address), new_attrs.clone());
                }
            }
        }
        let text = format!(
            "at {stamp}: applied [{}]; needs a restart: [{}]",
            applied.join(", "),
            restart.join(", ")
        );
        if restart.is_empty() {
            info!(applied = ?applied, "reload applied");
        } else {
            warn!(applied = ?applied, needs_restart = ?restart, "reload: some changes need a restart");
        }
        self.last_reload = Some(text);
    }
}
