//! The performance-marker stream of a COPY response, as davix and gfal2
//! parse it (line prefixes matched case-insensitively by them; we write
//! StoRM's exact spelling).

use std::net::SocketAddr;

/// One `Perf Marker` ... `End` block.
pub fn perf_marker(unix_time: u64, bytes: u64, remote: Option<SocketAddr>) -> String {
    let remote = remote
        .map(|a| format!("tcp:{}", SocketAddr::new(a.ip().to_canonical(), a.port())))
        .unwrap_or_default();
    format!(
        "Perf Marker\n\
         Timestamp: {unix_time}\n\
         Stripe Index: 0\n\
         Stripe Bytes Transferred: {bytes}\n\
         Total Stripe Count: 1\n\
         RemoteConnections: {remote}\n\
         End\n"
    )
}

pub fn success() -> &'static str {
    "success: Created\n"
}

/// The last line of a failed copy; the reason stays on one line.
pub fn failure(reason: &str) -> String {
    let one_line: String = reason
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    format!("failure: {one_line}\n")
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats() {
        let a: std::net::SocketAddr = "[2001:db8::1]:2345".parse().unwrap();
        assert_eq!(
            super::perf_marker(1537788010, 238745, Some(a)),
            "Perf Marker\nTimestamp: 1537788010\nStripe Index: 0\nStripe Bytes Transferred: 238745\n\
             Total Stripe Count: 1\nRemoteConnections: tcp:[2001:db8::1]:2345\nEnd\n"
        );
        let m: std::net::SocketAddr = "[::ffff:192.0.2.4]:1234".parse().unwrap();
        assert!(
            super::perf_marker(1, 2, Some(m)).contains("RemoteConnections: tcp:192.0.2.4:1234\n")
        );
        assert_eq!(super::failure("a\nb"), "failure: a b\n");
    }
}
