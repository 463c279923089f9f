//! The metric names the shipped Grafana dashboard (configs/grafana/) and
//! alert rules (configs/prometheus/lbd-alerts.yml) use, and the names a
//! real Prometheus scrape has. Shared by lbd/tests/monitoring.rs and
//! flowmark/tests/monitoring.rs (each checks its own prefix).

use std::collections::BTreeSet;
use std::path::Path;

/// Suffixes Prometheus adds to a histogram's name.
const HISTOGRAM_SUFFIXES: [&str; 3] = ["_bucket", "_sum", "_count"];

/// Every `PREFIX...` identifier in the dashboard and the alert rules (a
/// plain scan for identifiers, so every use counts, not only ones a parser
/// of PromQL would find).
pub fn used(prefix: &str) -> BTreeSet<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut names = BTreeSet::new();
    for file in [
        "configs/grafana/lbd-site.json",
        "configs/prometheus/lbd-alerts.yml",
    ] {
        let text = std::fs::read_to_string(root.join(file)).expect(file);
        let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
        for word in text.split(|c: char| !is_ident(c)) {
            if word.starts_with(prefix) {
                names.insert(word.to_string());
            }
        }
    }
    assert!(
        !names.is_empty(),
        "no {prefix}* metric in the dashboard or rules"
    );
    names
}

/// Metric names of the samples in a Prometheus text exposition.
pub fn scraped(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_string)
        .collect()
}

/// The used names a scrape does not have (a histogram counts by its
/// `_bucket`, `_sum` and `_count` series).
pub fn missing(used: &BTreeSet<String>, scraped: &BTreeSet<String>) -> Vec<String> {
    used.iter()
        .filter(|name| {
            !scraped.contains(*name)
                && !HISTOGRAM_SUFFIXES
                    .iter()
                    .any(|s| scraped.contains(&format!("{name}{s}")))
        })
        .cloned()
        .collect()
}

/// GET /metrics from `addr` (HTTP/1.0, the body).
pub fn get_metrics(addr: std::net::SocketAddr) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(3))?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    Ok(text
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_string())
        .unwrap_or_default())
}
