//! Route changes timed by the kernel's own notifications: `ip monitor
//! route` in a namespace, each line stamped when it arrives. Sub-second
//! bounds are measured from these stamps, not by polling `ip route` (a
//! process per poll, whose own start-up time would be in the figure).
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Routes added and removed once by `start` to prove the monitor listens
/// (documentation ranges, used by nothing else).
const PROBE_V4: &str = "198.51.100.99/32";
const PROBE_V6: &str = "2001:db8:ffff:ffff::99/128";

pub struct RouteMonitor {
    rx: mpsc::Receiver<(Instant, String)>,
    child: Child,
}

impl RouteMonitor {
    /// `ip -n NS [FAMILY] monitor route`; `family`: "-4", "-6" or None
    /// (both). Returns once the monitor is seen to listen.
    pub fn start(ns: &str, family: Option<&str>) -> Result<RouteMonitor> {
        let mut cmd = Command::new("ip");
        cmd.args(["-n", ns]);
        cmd.args(family);
        let mut child = cmd
            .args(["monitor", "route"])
            .stdout(Stdio::piped())
            .spawn()
            .context("starting ip monitor route")?;
        let out = child.stdout.take().context("ip monitor's stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send((Instant::now(), l)).is_err() {
                    return;
                }
            }
        });
        let monitor = RouteMonitor { rx, child };
        monitor.prove_listening(ns, family)?;
        Ok(monitor)
    }

    /// `ip monitor` subscribes some time after it starts (longer on a
    /// loaded machine): a route change before that is missed. A probe
    /// route added and removed until the monitor reports both proves it
    /// listens.
    fn prove_listening(&self, ns: &str, family: Option<&str>) -> Result<()> {
        let probe = if family == Some("-6") {
            PROBE_V6
        } else {
            PROBE_V4
        };
        let probe_route =
            |op| crate::process::run("ip", &["-n", ns, "route", op, "blackhole", probe]);
        let end = Instant::now() + Duration::from_secs(10);
        loop {
            probe_route("add")?;
            let seen = self.wait(probe, false, Duration::from_millis(200)).is_ok();
            probe_route("del")?;
            if seen {
                return self
                    .wait(probe, true, Duration::from_secs(5))
                    .map(|_| ())
                    .context("ip monitor listening");
            }
            if Instant::now() > end {
                bail!("ip monitor in {ns} never reported a probe route within 10 s");
            }
        }
    }

    /// Forgets the lines seen so far.
    pub fn drain(&self) {
        while self.rx.try_recv().is_ok() {}
    }

    /// Time of the first line about `prefix` (a deletion if `deleted`).
    pub fn wait(&self, prefix: &str, deleted: bool, limit: Duration) -> Result<Instant> {
        Ok(self.wait_all(&[(prefix, deleted)], limit)?[0])
    }

    /// Time of the first line about each `(prefix, deleted)`, in any order.
    pub fn wait_all(&self, events: &[(&str, bool)], limit: Duration) -> Result<Vec<Instant>> {
        let mut seen: Vec<Option<Instant>> = vec![None; events.len()];
        let end = Instant::now() + limit;
        while seen.iter().any(Option::is_none) {
            let left = end.saturating_duration_since(Instant::now());
            let Ok((t, line)) = self.rx.recv_timeout(left) else {
                let missing: Vec<_> = events
                    .iter()
                    .zip(&seen)
                    .filter(|(_, s)| s.is_none())
                    .map(|(e, _)| e)
                    .collect();
                bail!("no route event within {limit:?} for (prefix, deleted) {missing:?}");
            };
            for (i, (prefix, deleted)) in events.iter().enumerate() {
                if seen[i].is_none()
                    && about(&line, prefix)
                    && line.starts_with("Deleted") == *deleted
                {
                    seen[i] = Some(t);
                }
            }
        }
        Ok(seen.into_iter().flatten().collect())
    }
}

/// Whether an `ip monitor` line is about `prefix` (a host route prints
/// without its /32 or /128).
fn about(line: &str, prefix: &str) -> bool {
    let host = prefix
        .strip_suffix("/32")
        .or_else(|| prefix.strip_suffix("/128"))
        .unwrap_or(prefix);
    line.split_whitespace().any(|w| w == host || w == prefix)
}

impl Drop for RouteMonitor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::about;

    #[test]
    fn lines_match_their_host_route() {
        let v4 = "Deleted 198.51.100.10 nhid 12 via 192.0.2.2 dev s1 proto bgp metric 20";
        assert!(about(v4, "198.51.100.10/32"));
        assert!(!about(v4, "198.51.100.1/32"));
        let v6 = "2001:db8:ffff::10 via 2001:db8:1::2 dev s1 proto bgp metric 20 pref medium";
        assert!(about(v6, "2001:db8:ffff::10/128"));
    }
}
