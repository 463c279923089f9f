//! Value checks shared by the config validation, each producing the
//! "what was expected" half of an error message.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::ConfigError;

/// Collects errors while validating one file.
pub struct V {
    file: String,
    pub errors: Vec<ConfigError>,
}

impl V {
    pub fn new(file: &str) -> Self {
        Self {
            file: file.to_string(),
            errors: Vec::new(),
        }
    }

    pub fn err(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.clone(),
            path: path.to_string(),
            message: message.into(),
        });
    }

    pub fn required<T>(&mut self, path: &str, v: Option<T>, expected: &str) -> Option<T> {
        if v.is_none() {
            self.err(path, format!("missing: expected {expected}"));
        }
        v
    }

    pub fn range(&mut self, path: &str, v: i64, lo: i64, hi: i64, what: &str) -> Option<i64> {
        if (lo..=hi).contains(&v) {
            Some(v)
        } else {
            self.err(path, format!("{v} is out of range: expected {what}"));
            None
        }
    }

    pub fn port(&mut self, path: &str, v: i64) -> Option<u16> {
        if (1..=65535).contains(&v) {
            Some(v as u16)
        } else {
            self.err(path, format!("{v} is not a port: expected 1-65535"));
            None
        }
    }

    pub fn port_or(&mut self, path: &str, v: Option<i64>, default: u16) -> Option<u16> {
        match v {
            None => Some(default),
            Some(p) => self.port(path, p),
        }
    }

    /// rise / fall style counts: 1-100.
    pub fn count_or(&mut self, path: &str, v: Option<i64>, default: u32) -> Option<u32> {
        match v {
            None => Some(default),
            Some(n) => self.range(path, n, 1, 100, "1-100").map(|n| n as u32),
        }
    }

    pub fn asn(&mut self, path: &str, v: i64) -> Option<u32> {
        if v == 23456 {
            self.err(
                path,
                "23456 is AS_TRANS, not a usable AS number: expected 1-4294967295",
            );
            None
        } else {
            self.range(path, v, 1, u32::MAX.into(), "an AS number 1-4294967295")
                .map(|a| a as u32)
        }
    }

    pub fn ip(&mut self, path: &str, s: &str) -> Option<IpAddr> {
        match s.parse::<IpAddr>() {
            Ok(a) if a.is_unspecified() || a.is_multicast() || is_broadcast(a) => {
                self.err(
                    path,
                    format!("{s:?} is not a unicast address: expected a host address"),
                );
                None
            }
            Ok(a) => Some(a),
            Err(_) => {
                self.err(path, format!("{s:?} is not an IPv4 or IPv6 address"));
                None
            }
        }
    }

    pub fn socket_addr(&mut self, path: &str, s: &str) -> Option<SocketAddr> {
        match s.parse::<SocketAddr>() {
            Ok(a) if a.port() != 0 => Some(a),
            _ => {
                self.err(
                    path,
                    format!(
                        "{s:?} is not an address and port (expected e.g. \"127.0.0.1:9181\" or \"[::1]:9181\")"
                    ),
                );
                None
            }
        }
    }

    pub fn url(&mut self, path: &str, s: &str, kind: &str) -> Option<String> {
        match reqwest::Url::parse(s) {
            Ok(u) if u.scheme() == kind && u.host().is_some() => Some(s.to_string()),
            Ok(u) if u.scheme() != kind => {
                self.err(
                    path,
                    format!(
                        "{s:?} is a {}:// URL but the check type is {kind:?}: expected {kind}://",
                        u.scheme()
                    ),
                );
                None
            }
            _ => {
                self.err(
                    path,
                    format!("{s:?} is not a URL (expected e.g. \"{kind}://127.0.0.1/health\")"),
                );
                None
            }
        }
    }

    /// A duration above zero; `default` when unset.
    pub fn duration_or(
        &mut self,
        path: &str,
        v: Option<String>,
        default: &str,
    ) -> Option<Duration> {
        let s = v.as_deref().unwrap_or(default);
        match parse_duration(s) {
            Some(d) if !d.is_zero() => Some(d),
            _ => {
                self.err(
                    path,
                    format!(
                        "{s:?} is not a duration above zero (expected e.g. \"500ms\", \"2s\", \"5m\", \"1h\")"
                    ),
                );
                None
            }
        }
    }
}

/// "500ms", "2s", "5m", "1h" (an integer and a unit).
pub fn parse_duration(s: &str) -> Option<Duration> {
    let split = s.find(|c: char| !c.is_ascii_digit())?;
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    let ms = match unit {
        "ms" => n,
        "s" => n.checked_mul(1000)?,
        "m" => n.checked_mul(60_000)?,
        "h" => n.checked_mul(3_600_000)?,
        _ => return None,
    };
    Some(Duration::from_millis(ms))
}

/// The shortest exact form of `d` in the config's units.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// "ASN:VALUE" with both parts 0-65535.
pub fn community(s: &str) -> Option<u32> {
    let (a, b) = s.split_once(':')?;
    let a: u16 = a.parse().ok()?;
    let b: u16 = b.parse().ok()?;
    Some(u32::from(a) << 16 | u32::from(b))
}

pub fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut i = 2;
    while i * i <= n {
        if n.is_multiple_of(i) {
            return false;
        }
        i += 1;
    }
    true
}

/// serde's messages talk about "fields" and Rust types; operators edit keys
/// in TOML.
pub fn serde_message(m: &str) -> String {
    let m = m.trim();
    if let Some(rest) = m.strip_prefix("unknown field `") {
        let (key, expected) = rest.split_once('`').unwrap_or((rest, ""));
        let expected = expected
            .trim_start_matches(',')
            .trim()
            .replace("expected one of ", "expected one of: ")
            .replace('`', "");
        return format!("unknown key {key:?}: {expected}");
    }
    m.replace("invalid type: ", "wrong type: ")
        .replace("expected a sequence", "expected a list")
        .replace("expected i64", "expected an integer")
        .replace("expected a boolean", "expected true or false")
        .replace("expected struct Raw", "expected a table")
}

/// 255.255.255.255 is nobody's address (and no BGP route).
fn is_broadcast(a: IpAddr) -> bool {
    matches!(a, IpAddr::V4(v) if v.is_broadcast())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("2s"), Some(Duration::from_secs(2)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        for bad in ["", "s", "2", "2x", "-1s", "1.5s", "99999999999999999999h"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
        assert_eq!(format_duration(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format_duration(Duration::from_secs(120)), "2m");
    }

    #[test]
    fn communities_and_primes() {
        assert_eq!(community("65000:100"), Some(65000 << 16 | 100));
        assert_eq!(community("65536:1"), None);
        assert_eq!(community("1"), None);
        assert!(is_prime(65537) && is_prime(4093) && !is_prime(65536) && !is_prime(1));
    }

    #[test]
    fn host_addresses_are_unicast() {
        let mut v = V::new("lbd.toml");
        assert!(v.ip("vips[0].address", "198.51.100.10").is_some());
        for bad in ["255.255.255.255", "224.0.0.5", "0.0.0.0", "ff02::1", "::"] {
            assert_eq!(v.ip("vips[0].address", bad), None, "{bad}");
        }
        assert_eq!(v.errors.len(), 5);
        assert!(
            v.errors[0]
                .to_string()
                .ends_with("\"255.255.255.255\" is not a unicast address: expected a host address"),
            "{}",
            v.errors[0]
        );
    }
}
