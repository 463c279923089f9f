//! Listener quiesce: before a server (nginx) closes its listening socket,
//! the operator's `lbd listener quiesce` makes the dataplane send the VIP
//! port's new connections to their fallback while the old listener still
//! accepts what it has; the CLI waits until its accept queue and its
//! handshakes in progress are empty, so closing the socket resets nothing.
//!
//! A quiesced port resumes on `lbd listener resume`, or by itself when a
//! listening socket the quiesce did not see (another inode: the new
//! server) serves it. Both keep steering for the drain period, so the
//! connections opened on the fallback meanwhile stay there. A restarted
//! daemon adopts the quiesce flags it finds in the pinned maps, with the
//! listeners of that moment as the old ones.
use std::net::IpAddr;

use dataplane::loader::Vip;
use tracing::{info, warn};

use super::Daemon;
use crate::config::Protocol;
use crate::control::{ListenerSelection, Response};
use crate::listeners::{self, ListenerQueue, Sockets};

impl Daemon {
    /// The TCP VIP ports `sel` names; an error names what matched nothing.
    fn select(&self, sel: &ListenerSelection) -> Result<Vec<Vip>, String> {
        let vip = match &sel.vip {
            Some(v) => Some(
                v.parse::<IpAddr>()
                    .map_err(|_| format!("{v:?} is not an IP address"))?,
            ),
            None => None,
        };
        let out: Vec<Vip> = self
            .cfg
            .vips
            .iter()
            .filter(|v| vip.is_none_or(|a| a == v.address))
            .flat_map(|v| v.entries())
            .filter(|e| e.proto == Protocol::Tcp.number())
            .filter(|e| sel.port.is_none_or(|p| p == e.port))
            .collect();
        if out.is_empty() {
            let what = match (&sel.vip, sel.port) {
                (Some(v), Some(p)) => format!("{v} port {p}"),
                (Some(v), None) => v.clone(),
                (None, Some(p)) => format!("port {p}"),
                (None, None) => "this node".into(),
            };
            return Err(format!("no TCP VIP port configured for {what}"));
        }
        Ok(out)
    }

    pub(super) fn quiesce(&mut self, sel: &ListenerSelection) -> Response {
        let entries = match self.select(sel) {
            Ok(e) => e,
            Err(e) => return Response::Error(e),
        };
        let socks = match listeners::sockets(true) {
            Ok(s) => s,
            Err(e) => return Response::Error(format!("reading the listening sockets: {e}")),
        };
        for e in &entries {
            match self.dp.set_quiesced(e, true) {
                Ok(true) => {}
                Ok(false) => return Response::Error(format!("{e} is not in the dataplane")),
                Err(err) => return Response::Error(format!("{e}: {err:#}")),
            }
            let old = socks.inodes(e.addr, e.port);
            if !self.quiesced.contains_key(&(e.addr, e.port)) {
                info!(vip = %e, listeners = old.len(), "listener quiesced: new connections go to the fallback");
            }
            self.quiesced.entry((e.addr, e.port)).or_insert(old);
        }
        Response::Listeners(self.queues(&entries, &socks))
    }

    pub(super) fn resume(&mut self, sel: &ListenerSelection) -> Response {
        let entries = match self.select(sel) {
            Ok(e) => e,
            Err(e) => return Response::Error(e),
        };
        for e in &entries {
            if let Err(err) = self.dp.set_quiesced(e, false) {
                return Response::Error(format!("{e}: {err:#}"));
            }
            if self.quiesced.remove(&(e.addr, e.port)).is_some() {
                info!(vip = %e, reason = "lbd listener resume", "listener resumed");
            }
        }
        self.listener_queues(sel)
    }

    pub(super) fn listener_queues(&self, sel: &ListenerSelection) -> Response {
        let entries = match self.select(sel) {
            Ok(e) => e,
            Err(e) => return Response::Error(e),
        };
        match listeners::sockets(true) {
            Ok(socks) => Response::Listeners(self.queues(&entries, &socks)),
            Err(e) => Response::Error(format!("reading the listening sockets: {e}")),
        }
    }

    fn queues(&self, entries: &[Vip], socks: &Sockets) -> Vec<ListenerQueue> {
        entries
            .iter()
            .map(|e| {
                socks.queue(
                    e.addr,
                    e.port,
                    self.quiesced.contains_key(&(e.addr, e.port)),
                )
            })
            .collect()
    }

    /// Every tick: resumes a quiesced port that a new listener serves
    /// (sock_diag only while something is quiesced); forgets ports no
    /// longer configured; at the first tick adopts the dataplane's flags.
    pub(super) fn resume_on_new_listener(&mut self) {
        if !self.quiesce_adopted {
            self.quiesce_adopted = true;
            self.adopt_quiesced();
        }
        if self.quiesced.is_empty() {
            return;
        }
        let configured: Vec<(IpAddr, u16)> = self
            .cfg
            .vips
            .iter()
            .flat_map(|v| v.entries())
            .filter(|e| e.proto == Protocol::Tcp.number())
            .map(|e| (e.addr, e.port))
            .collect();
        self.quiesced.retain(|k, _| configured.contains(k));
        let socks = match listeners::sockets(false) {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "reading the listening sockets for the quiesced ports");
                return;
            }
        };
        let new: Vec<(IpAddr, u16)> = self
            .quiesced
            .iter()
            .filter(|((addr, port), old)| {
                socks
                    .inodes(*addr, *port)
                    .iter()
                    .any(|inode| !old.contains(inode))
            })
            .map(|(&k, _)| k)
            .collect();
        for (addr, port) in new {
            let e = Vip {
                addr,
                port,
                proto: Protocol::Tcp.number(),
            };
            match self.dp.set_quiesced(&e, false) {
                Ok(_) => {
                    self.quiesced.remove(&(addr, port));
                    info!(vip = %e, reason = "a new listening socket", "listener resumed");
                }
                Err(err) => warn!(vip = %e, error = %format!("{err:#}"), "resuming the listener"),
            }
        }
    }

    fn adopt_quiesced(&mut self) {
        let entries: Vec<Vip> = self
            .cfg
            .vips
            .iter()
            .flat_map(|v| v.entries())
            .filter(|e| e.proto == Protocol::Tcp.number())
            .filter(|e| {
                self.dp
                    .listener_state(e)
                    .is_ok_and(|s| s.is_some_and(|s| s.quiesced != 0))
            })
            .collect();
        if entries.is_empty() {
            return;
        }
        let socks = listeners::sockets(false).unwrap_or_default();
        for e in entries {
            info!(vip = %e, "quiesced before this start: resumes on a new listener or `lbd listener resume`");
            self.quiesced
                .insert((e.addr, e.port), socks.inodes(e.addr, e.port));
        }
    }
}
