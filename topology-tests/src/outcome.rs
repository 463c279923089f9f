//! What a scenario reports: transfer counts, the failover time where one
//! is measured, named checks (the tests require every check to pass; the
//! benchmark reports them) and notes. A leaf module: the scenarios and
//! grid_clients both fill one.
use std::time::Instant;

use serde::Serialize;

use crate::workload::Finished;

#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub ok: bool,
    pub detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub name: String,
    /// Jobs the workloads ran: each is a PUT and, after a good PUT, a GET.
    pub jobs: usize,
    pub transfers_ok: usize,
    pub transfers_failed: usize,
    pub failover_ms: Option<u64>,
    /// After a router restart: until the ECMP route is whole again.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub route_restored_ms: Option<u64>,
    pub bytes: u64,
    pub duration_s: f64,
    pub checks: Vec<Check>,
    /// The first few failed transfers, for the report.
    pub failures: Vec<String>,
    /// What was seen but is not a goal of the scenario.
    pub notes: Vec<String>,
}

impl Outcome {
    pub(crate) fn new(name: &str) -> Outcome {
        Outcome {
            name: name.into(),
            jobs: 0,
            transfers_ok: 0,
            transfers_failed: 0,
            failover_ms: None,
            route_restored_ms: None,
            bytes: 0,
            duration_s: 0.0,
            checks: Vec::new(),
            failures: Vec::new(),
            notes: Vec::new(),
        }
    }

    pub fn check(&mut self, name: &str, ok: bool, detail: impl Into<String>) {
        self.checks.push(Check {
            name: name.into(),
            ok,
            detail: detail.into(),
        });
    }

    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }

    /// Every job of the workloads counted so far did its PUT and its GET:
    /// nothing failed and nothing went missing.
    pub(crate) fn check_every_job_done(&mut self, name: &str) {
        let ok = self.jobs > 0 && self.transfers_failed == 0 && self.transfers_ok == 2 * self.jobs;
        let detail = format!(
            "{} ok, {} failed of {} jobs ({} transfers)",
            self.transfers_ok,
            self.transfers_failed,
            self.jobs,
            2 * self.jobs
        );
        self.check(name, ok, detail);
    }

    pub(crate) fn count(&mut self, finished: &Finished) {
        self.jobs += finished.jobs;
        for t in &finished.transfers {
            if let Some(e) = &t.error {
                self.transfers_failed += 1;
                if self.failures.len() < 8 {
                    self.failures.push(format!(
                        "{:?} job {} via {} on node {}, failed at {} UTC: {e}",
                        t.kind,
                        t.job,
                        t.vip,
                        t.node.map_or("?".into(), |n| n.to_string()),
                        utc_time_of(t.started + t.elapsed)
                    ));
                }
            } else {
                self.transfers_ok += 1;
                self.bytes += t.bytes;
            }
        }
    }

    /// Human summary, several lines.
    pub fn render(&self) -> String {
        let mut s = format!(
            "{}: {} transfers ok, {} failed, {:.1} GB in {:.0} s{}\n",
            self.name,
            self.transfers_ok,
            self.transfers_failed,
            self.bytes as f64 / 1e9,
            self.duration_s,
            self.failover_ms
                .map_or(String::new(), |f| format!(", failover {f} ms"))
        );
        for c in &self.checks {
            s += &format!(
                "  [{}] {}: {}\n",
                if c.ok { "ok" } else { "FAIL" },
                c.name,
                c.detail
            );
        }
        for f in &self.failures {
            s += &format!("  failed: {f}\n");
        }
        for n in &self.notes {
            s += &format!("  note: {n}\n");
        }
        s
    }
}

/// `HH:MM:SS.mmm` (UTC) of a past instant, to line a failure up with the
/// nodes' logs.
fn utc_time_of(at: Instant) -> String {
    let ago = at.elapsed();
    let t = std::time::SystemTime::now()
        .checked_sub(ago)
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .unwrap_or_default();
    let (s, ms) = (t.as_secs() % 86_400, t.subsec_millis());
    format!("{:02}:{:02}:{:02}.{ms:03}", s / 3600, s / 60 % 60, s % 60)
}
