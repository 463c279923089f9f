//! The sidecar's config file (TOML, default /etc/storage-front/storage-front.toml),
//! parsed strictly (unknown keys refused) and validated; every error names
//! the file and the key, e.g.
//! `storage-front.toml: listen: "127.0.0.1:99999" is not an IP:PORT address`.
//! Nothing here touches the system: `storage-front check-config` runs anywhere.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub const DEFAULT_PATH: &str = "/etc/storage-front/storage-front.toml";

/// Clients (davix, gfal2) give up on a marker stream silent for 30 s; StoRM
/// sends one every 5 s. More than this is refused.
pub const MAX_MARKER_INTERVAL_MS: u64 = 5_000;

#[derive(Debug, thiserror::Error)]
#[error("{file}: {key}{sep}{message}", sep = if key.is_empty() { "" } else { ": " })]
pub struct ConfigError {
    pub file: String,
    /// The key that is wrong (empty for file-level errors).
    pub key: String,
    pub message: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    listen: String,
    root: String,
    metrics: Option<String>,
    #[serde(default = "default_ca_dir")]
    ca_dir: String,
    #[serde(default = "default_flowmark_socket")]
    flowmark_socket: String,
    #[serde(default = "default_marker_interval_ms")]
    marker_interval_ms: u64,
    #[serde(default = "default_connect_timeout_ms")]
    connect_timeout_ms: u64,
    #[serde(default = "default_idle_timeout_ms")]
    idle_timeout_ms: u64,
    #[serde(default = "default_max_transfers")]
    max_transfers: usize,
}

fn default_ca_dir() -> String {
    "/etc/grid-security/certificates".into()
}
fn default_flowmark_socket() -> String {
    "/run/flowmark.sock".into()
}
fn default_marker_interval_ms() -> u64 {
    MAX_MARKER_INTERVAL_MS
}
fn default_connect_timeout_ms() -> u64 {
    10_000
}
fn default_idle_timeout_ms() -> u64 {
    60_000
}
fn default_max_transfers() -> usize {
    64
}

/// A validated config.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where nginx proxies COPY and its Lua asks for checksums (loopback).
    pub listen: SocketAddr,
    /// The document root nginx serves; every path is confined to it.
    pub root: PathBuf,
    /// Prometheus metrics listener.
    pub metrics: Option<SocketAddr>,
    /// CA certificates for https/davs remotes (hashed-name PEM files).
    pub ca_dir: PathBuf,
    /// flowmark's local API; None disables SciTag registration.
    pub flowmark_socket: Option<PathBuf>,
    pub marker_interval: Duration,
    pub connect_timeout: Duration,
    /// A remote that sends or accepts nothing for this long fails the copy.
    pub idle_timeout: Duration,
    /// Concurrent third-party copies; more get 503.
    pub max_transfers: usize,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            key: String::new(),
            message: format!("cannot read: {e}"),
        })?;
        Config::parse(&file, &text)
    }

    pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
        let err = |key: &str, message: String| ConfigError {
            file: file.to_string(),
            key: key.to_string(),
            message,
        };
        let de = toml::Deserializer::parse(text).map_err(|e| err("", e.to_string()))?;
        let raw: Raw = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            let key = if key == "." { String::new() } else { key };
            err(&key, e.into_inner().message().to_string())
        })?;
        let addr = |key: &str, v: &str| {
            v.parse::<SocketAddr>()
                .map_err(|_| err(key, format!("{v:?} is not an IP:PORT address")))
        };
        let absolute = |key: &str, v: &str| {
            let p = PathBuf::from(v);
            if p.is_absolute() {
                Ok(p)
            } else {
                Err(err(key, format!("{v:?} is not an absolute path")))
            }
        };
        let ms = |key: &str, v: u64, min: u64, max: u64| {
            if (min..=max).contains(&v) {
                Ok(Duration::from_millis(v))
            } else {
                Err(err(key, format!("{v} is outside {min}..={max}")))
            }
        };
        let listen = addr("listen", &raw.listen)?;
        if !listen.ip().is_loopback() {
            return Err(err(
                "listen",
                format!(
                    "{listen} is not a loopback address (the checksum endpoint must only be reachable by nginx)"
                ),
            ));
        }
        let root = absolute("root", &raw.root)?;
        if root
            .components()
            .any(|c| c == std::path::Component::ParentDir)
        {
            return Err(err("root", format!("{:?} contains \"..\"", raw.root)));
        }
        Ok(Config {
            listen,
            root,
            metrics: raw
                .metrics
                .as_deref()
                .map(|m| addr("metrics", m))
                .transpose()?,
            ca_dir: absolute("ca_dir", &raw.ca_dir)?,
            flowmark_socket: match raw.flowmark_socket.as_str() {
                "" | "none" => None,
                s => Some(absolute("flowmark_socket", s)?),
            },
            marker_interval: ms(
                "marker_interval_ms",
                raw.marker_interval_ms,
                10,
                MAX_MARKER_INTERVAL_MS,
            )?,
            connect_timeout: ms("connect_timeout_ms", raw.connect_timeout_ms, 100, 300_000)?,
            idle_timeout: ms("idle_timeout_ms", raw.idle_timeout_ms, 100, 3_600_000)?,
            max_transfers: if (1..=100_000).contains(&raw.max_transfers) {
                raw.max_transfers
            } else {
                return Err(err(
                    "max_transfers",
                    format!("{} is outside 1..=100000", raw.max_transfers),
                ));
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, String> {
        Config::parse("sf.toml", text).map_err(|e| e.to_string())
    }

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse("listen = \"127.0.0.1:8091\"\nroot = \"/srv/data\"\n").unwrap();
        assert_eq!(c.marker_interval, Duration::from_secs(5));
        assert_eq!(c.ca_dir, PathBuf::from("/etc/grid-security/certificates"));
        assert_eq!(c.flowmark_socket, Some(PathBuf::from("/run/flowmark.sock")));
    }

    #[test]
    fn errors_name_the_key() {
        let base = "root = \"/srv\"\n";
        for (text, want) in [
            (
                format!("listen = \"127.0.0.1:99999\"\n{base}"),
                "sf.toml: listen: \"127.0.0.1:99999\" is not an IP:PORT address",
            ),
            (
                format!("listen = \"0.0.0.0:8091\"\n{base}"),
                "sf.toml: listen: 0.0.0.0:8091 is not a loopback address",
            ),
            (
                "listen = \"127.0.0.1:1\"\nroot = \"srv\"\n".to_string(),
                "sf.toml: root: \"srv\" is not an absolute path",
            ),
            (
                format!("listen = \"127.0.0.1:1\"\n{base}marker_interval_ms = 6000\n"),
                "sf.toml: marker_interval_ms: 6000 is outside 10..=5000",
            ),
            (
                format!("listen = \"127.0.0.1:1\"\n{base}marker_intervall_ms = 60\n"),
                "sf.toml: marker_intervall_ms: unknown field",
            ),
            (
                format!("listen = \"127.0.0.1:1\"\n{base}max_transfers = \"x\"\n"),
                "sf.toml: max_transfers: invalid type",
            ),
        ] {
            let e = parse(&text).unwrap_err();
            assert!(e.starts_with(want), "{e:?} does not start with {want:?}");
        }
    }
}
