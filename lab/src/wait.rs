//! Waiting for a condition instead of sleeping: every lab and test polls
//! through here (one loop, one interval, one timeout message).
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

/// How often a condition is polled.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Polls `f` until it returns a value; the error names what was awaited.
pub fn poll<T>(what: &str, limit: Duration, f: impl FnMut() -> Option<T>) -> Result<T> {
    poll_every(what, limit, POLL_INTERVAL, f)
}

/// [`poll`] every `interval` (a loop of many short waits, where the
/// interval adds up).
pub fn poll_every<T>(
    what: &str,
    limit: Duration,
    interval: Duration,
    mut f: impl FnMut() -> Option<T>,
) -> Result<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Ok(v);
        }
        if start.elapsed() > limit {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        thread::sleep(interval);
    }
}

/// Polls `f` until it holds; returns how long that took.
pub fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) -> Result<Duration> {
    let start = Instant::now();
    poll(what, limit, || f().then(|| start.elapsed()))
}

/// [`wait_until`] for tests: panics with what was awaited.
#[track_caller]
pub fn wait_for(what: &str, limit: Duration, f: impl FnMut() -> bool) -> Duration {
    wait_until(what, limit, f).unwrap_or_else(|e| panic!("{e}"))
}

/// [`poll`] for tests: the value, or a panic naming what was awaited.
#[track_caller]
pub fn wait_value<T>(what: &str, limit: Duration, f: impl FnMut() -> Option<T>) -> T {
    poll(what, limit, f).unwrap_or_else(|e| panic!("{e}"))
}
