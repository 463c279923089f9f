//! What a member publishes, and the checks a received report must pass
//! before anything reads it: a report comes from the network, so every
//! field is validated (a closed set of states, a 16-hex-digit generation,
//! VIP keys that are addresses, bounded sizes) and any text quoted back in
//! an error is escaped.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// A report is a few hundred bytes; a body past this is refused unread.
pub const MAX_REPORT_BYTES: usize = 64 * 1024;
/// At most this many VIPs in one report (the dataplane's limit).
pub const MAX_REPORT_VIPS: usize = dataplane_common::MAX_VIPS as usize;
/// Node ids, as the config allows them.
pub const NODE_ID_RANGE: std::ops::RangeInclusive<u16> = 1..=1023;
/// `Config::generation`: FNV-1a 64 as 16 lowercase hex digits.
pub const GENERATION_DIGITS: usize = 16;

/// A node's own state, as it publishes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Serving (at least one VIP passes its checks).
    Active,
    /// `lbd drain`: no new connections, established ones keep being served.
    Draining,
    /// No VIP passes its checks (or the node is starting).
    Down,
}

impl NodeState {
    pub fn name(self) -> &'static str {
        match self {
            NodeState::Active => "active",
            NodeState::Draining => "draining",
            NodeState::Down => "down",
        }
    }
}

/// What `GET /v1/state` returns.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub node_id: u16,
    pub state: NodeState,
    pub generation: String,
    /// VIP address -> passes its checks.
    pub vips: BTreeMap<String, bool>,
}

/// Why a received report was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReportError {
    #[error("report larger than {MAX_REPORT_BYTES} bytes")]
    TooLarge,
    #[error("report is not valid JSON of the expected shape: {0}")]
    Malformed(String),
    #[error("node_id {0} is outside 1-1023")]
    NodeId(u16),
    #[error("generation {0} is not {GENERATION_DIGITS} lowercase hex digits")]
    Generation(String),
    #[error("{0} VIPs: at most {MAX_REPORT_VIPS}")]
    TooManyVips(usize),
    #[error("VIP key {0} is not an IP address in canonical form")]
    VipKey(String),
}

impl Report {
    /// Parses and validates a report received from the network.
    pub fn parse(body: &[u8]) -> Result<Report, ReportError> {
        if body.len() > MAX_REPORT_BYTES {
            return Err(ReportError::TooLarge);
        }
        let r: Report = serde_json::from_slice(body)
            .map_err(|e| ReportError::Malformed(printable(&e.to_string())))?;
        r.validate()?;
        Ok(r)
    }

    pub fn validate(&self) -> Result<(), ReportError> {
        if !NODE_ID_RANGE.contains(&self.node_id) {
            return Err(ReportError::NodeId(self.node_id));
        }
        if !is_generation(&self.generation) {
            return Err(ReportError::Generation(quoted(&self.generation)));
        }
        if self.vips.len() > MAX_REPORT_VIPS {
            return Err(ReportError::TooManyVips(self.vips.len()));
        }
        for k in self.vips.keys() {
            if k.parse::<IpAddr>().map(|a| a.to_string()).as_deref() != Ok(k.as_str()) {
                return Err(ReportError::VipKey(quoted(k)));
            }
        }
        Ok(())
    }
}

/// Exactly what `Config::generation` produces.
pub fn is_generation(s: &str) -> bool {
    s.len() == GENERATION_DIGITS && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Text from the network made safe for a terminal or a log line: printable
/// ASCII stays, everything else (controls, escapes, bidi overrides, any
/// non-ASCII) is shown as a `\u{..}` escape; at most 200 characters.
pub fn printable(s: &str) -> String {
    const MAX: usize = 200;
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i == MAX {
            out.push_str("...");
            break;
        }
        if c == ' ' || c.is_ascii_graphic() {
            out.push(c);
        } else {
            out.extend(c.escape_unicode());
        }
    }
    out
}

fn quoted(s: &str) -> String {
    format!("\"{}\"", printable(s))
}
