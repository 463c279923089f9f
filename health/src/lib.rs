//! health: the local health checks `lbd` runs for each VIP.
//!
//! A node announces a VIP and takes buckets of its table only while the
//! local service behind it answers. Each check is one of an HTTP(S) GET
//! (expected status, optional body match), a TCP connect, or a command
//! (exit status 0), run every `interval` with a `timeout`: a probe that has
//! not finished by then is a failed probe (a hanging service is a failed
//! service). `rise` passes in a row make a check up, `fall` failures in a
//! row make it down; it starts down, so nothing is announced before the
//! service has proven itself.
//!
//! [`Check::spawn`] runs a check as a tokio task and publishes every result
//! through a `watch` channel; [`RiseFall`] is the pure state machine.

mod probe;
mod risefall;

pub use probe::{ClientPair, Probe, ProbeError, error_chain, run_probe};
pub use risefall::RiseFall;

use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What to check and how often.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckSpec {
    /// A short name for logs and status (e.g. `http://127.0.0.1/health`).
    pub name: String,
    pub probe: Probe,
    pub interval: Duration,
    pub timeout: Duration,
    /// Consecutive passes needed to go up (>= 1).
    pub rise: u32,
    /// Consecutive failures needed to go down (>= 1).
    pub fall: u32,
}

/// The latest state of a check, as published after every probe.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CheckStatus {
    pub name: String,
    pub up: bool,
    /// Probes run so far.
    pub probes: u64,
    /// `ok` or the reason of the last failure (`timeout after 1s`,
    /// `status 503, expected 200`, ...).
    pub last_result: String,
    /// Duration of the last probe in milliseconds.
    pub last_latency_ms: Option<f64>,
    /// Wall-clock time of the last probe (seconds since the epoch).
    pub last_probe_unix: Option<u64>,
    /// Wall-clock time of the last up/down change.
    pub since_unix: Option<u64>,
}

/// A running check; dropping it stops the task.
pub struct Check {
    status: watch::Receiver<CheckStatus>,
    task: JoinHandle<()>,
}

impl Check {
    /// Starts probing on the current tokio runtime: first probe at once,
    /// then every `interval` (a probe never overlaps the next one).
    pub fn spawn(spec: CheckSpec) -> Check {
        Self::spawn_as(spec, false)
    }

    /// Like `spawn`, but starting up or down as given: a check edited by a
    /// reload takes over the state of the checks it replaces, so editing
    /// the checks of a serving VIP does not withdraw it while the new
    /// check proves itself (it goes down after `fall` failures as usual).
    pub fn spawn_as(spec: CheckSpec, up: bool) -> Check {
        let (tx, rx) = watch::channel(CheckStatus {
            name: spec.name.clone(),
            up,
            probes: 0,
            last_result: if up {
                "not probed yet (up: carried over from the previous config)".into()
            } else {
                "not probed yet".into()
            },
            last_latency_ms: None,
            last_probe_unix: None,
            since_unix: None,
        });
        let task = tokio::spawn(run(spec, up, tx));
        Check { status: rx, task }
    }

    /// The latest status.
    pub fn status(&self) -> CheckStatus {
        self.status.borrow().clone()
    }

    /// A receiver that sees every published status.
    pub fn subscribe(&self) -> watch::Receiver<CheckStatus> {
        self.status.clone()
    }
}

impl Drop for Check {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Seconds since the epoch (0 if the clock is before it).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn run(spec: CheckSpec, up: bool, tx: watch::Sender<CheckStatus>) {
    let mut rf = RiseFall::starting(spec.rise, spec.fall, up);
    let mut ticker = tokio::time::interval(spec.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let client = ClientPair::default();
    loop {
        ticker.tick().await;
        let start = Instant::now();
        let result = match tokio::time::timeout(spec.timeout, run_probe(&client, &spec.probe)).await
        {
            Ok(r) => r,
            Err(_) => Err(ProbeError::Timeout(spec.timeout)),
        };
        let latency = start.elapsed();
        let changed = rf.record(result.is_ok());
        let now = unix_now();
        let text = match &result {
            Ok(()) => "ok".to_string(),
            Err(e) => e.to_string(),
        };
        if changed {
            if rf.up() {
                tracing::info!(check = %spec.name, result = %text, "health check up");
            } else {
                tracing::warn!(check = %spec.name, result = %text, "health check down");
            }
        }
        tx.send_modify(|s| {
            s.up = rf.up();
            s.probes += 1;
            s.last_result = text;
            s.last_latency_ms = Some(latency.as_secs_f64() * 1000.0);
            s.last_probe_unix = Some(now);
            if changed {
                s.since_unix = Some(now);
            }
        });
    }
}
