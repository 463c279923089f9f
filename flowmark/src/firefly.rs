//! Fireflies: the SciTags UDP flow reports (JSON schema version 1, framed
//! as an RFC 5424 syslog message, local0.info).

use std::time::SystemTime;

use serde_json::{Value, json};
use time::{OffsetDateTime, format_description::well_known::Rfc3339};

use crate::{flow::FlowId, scitag::SciTag};

/// The UDP port fireflies go to, on the flow's peer and on collectors.
pub const PORT: u16 = 10514;
/// Largest datagram the collector reads; a firefly is a few hundred bytes.
pub const MAX_DATAGRAM: usize = 8192;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Start,
    Ongoing,
    End,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Start => "start",
            State::Ongoing => "ongoing",
            State::End => "end",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Usage {
    pub received: Option<u64>,
    pub sent: Option<u64>,
}

pub fn rfc3339(t: SystemTime) -> String {
    // Formatting a UTC time as RFC 3339 cannot fail for years 0..=9999.
    OffsetDateTime::from(t).format(&Rfc3339).unwrap_or_default()
}

/// The firefly JSON document.
pub fn message(
    state: State,
    flow: &FlowId,
    tag: SciTag,
    application: &str,
    start: SystemTime,
    now: SystemTime,
    usage: Option<Usage>,
) -> Value {
    let mut lifecycle = json!({
        "state": state.name(),
        "start-time": rfc3339(start),
        "current-time": rfc3339(now),
    });
    if state == State::End {
        lifecycle["end-time"] = json!(rfc3339(now));
    }
    let mut msg = json!({
        "version": 1,
        "flow-lifecycle": lifecycle,
        "flow-id": {
            "afi": if flow.is_ipv6() { "ipv6" } else { "ipv4" },
            "src-ip": flow.src.ip().to_string(),
            "dst-ip": flow.dst.ip().to_string(),
            "protocol": flow.proto.name(),
            "src-port": flow.src.port(),
            "dst-port": flow.dst.port(),
        },
        "context": {
            "experiment-id": tag.experiment,
            "activity-id": tag.activity,
            "application": application,
        },
    });
    if let Some(u) = usage {
        let mut usage = serde_json::Map::new();
        if let Some(r) = u.received {
            usage.insert("received".into(), json!(r));
        }
        if let Some(s) = u.sent {
            usage.insert("sent".into(), json!(s));
        }
        msg["usage"] = Value::Object(usage);
    }
    msg
}

/// `<134>1 TIME HOST APP - firefly-json - JSON` (134 = local0.info).
pub fn frame(msg: &Value, hostname: &str, app: &str, now: SystemTime) -> String {
    format!(
        "<134>1 {} {} {} - firefly-json - {}",
        rfc3339(now),
        hostname,
        app,
        msg
    )
}

/// Why a datagram is not a firefly; `name()` is the metric label.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reject {
    NotUtf8,
    BadSyslogHeader,
    NotJson(String),
    Schema(String),
}

impl Reject {
    pub fn name(&self) -> &'static str {
        match self {
            Reject::NotUtf8 => "not_utf8",
            Reject::BadSyslogHeader => "bad_syslog_header",
            Reject::NotJson(_) => "not_json",
            Reject::Schema(_) => "schema",
        }
    }
}

/// The JSON of a datagram, with or without the syslog header.
///
/// The header is RFC 5424: `<PRI>VERSION TIMESTAMP HOST APP PROCID MSGID SD
/// MSG`. Producers differ in SD and MSGID, so rather than parse all seven
/// fields the JSON is taken from the first `{` after a well-formed `<PRI>`:
/// no header field can contain `{` except structured data, which fireflies
/// never carry.
pub fn payload(datagram: &[u8]) -> Result<&str, Reject> {
    let text = std::str::from_utf8(datagram).map_err(|_| Reject::NotUtf8)?;
    let text = text.trim_start();
    if text.starts_with('{') {
        return Ok(text);
    }
    let rest = text.strip_prefix('<').ok_or(Reject::BadSyslogHeader)?;
    let close = rest.find('>').ok_or(Reject::BadSyslogHeader)?;
    let pri = &rest[..close];
    if pri.is_empty() || pri.len() > 3 || !pri.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Reject::BadSyslogHeader);
    }
    let body = &rest[close + 1..];
    body.find('{')
        .map(|i| &body[i..])
        .ok_or(Reject::BadSyslogHeader)
}

/// Parses and validates a datagram against the published firefly schema.
pub fn parse(datagram: &[u8]) -> Result<Value, Reject> {
    let json = payload(datagram)?;
    let value: Value =
        serde_json::from_str(json.trim_end()).map_err(|e| Reject::NotJson(e.to_string()))?;
    crate::registry::validate_firefly(&value).map_err(Reject::Schema)?;
    Ok(value)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn sample(state: State, v6: bool) -> Value {
        let flow = if v6 {
            FlowId::parse("tcp", "2001:db8::1", "443", "2001:db8::2", "50000").unwrap()
        } else {
            FlowId::parse("tcp", "192.0.2.1", "443", "198.51.100.2", "50000").unwrap()
        };
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let usage = (state == State::End).then_some(Usage {
            received: Some(10),
            sent: Some(20),
        });
        message(
            state,
            &flow,
            SciTag::from_value(206).unwrap(),
            "flowmark",
            t0,
            t0 + Duration::from_secs(5),
            usage,
        )
    }

    #[test]
    fn our_fireflies_validate_with_and_without_header() {
        for state in [State::Start, State::Ongoing, State::End] {
            for v6 in [true, false] {
                let msg = sample(state, v6);
                let framed = frame(&msg, "node1", "flowmark", SystemTime::now());
                assert!(framed.starts_with("<134>1 "));
                assert_eq!(parse(framed.as_bytes()), Ok(msg.clone()));
                assert_eq!(parse(msg.to_string().as_bytes()), Ok(msg));
            }
        }
    }

    #[test]
    fn rejects_say_why() {
        let good = sample(State::End, true);
        let mut no_end_time = good.clone();
        no_end_time["flow-lifecycle"]
            .as_object_mut()
            .unwrap()
            .remove("end-time");
        let mut wrong_afi = good.clone();
        wrong_afi["flow-id"]["afi"] = json!("ipv4");
        for (d, want) in [
            (b"\xff\xfe".to_vec(), "not_utf8"),
            (b"hello".to_vec(), "bad_syslog_header"),
            (b"<134 no close".to_vec(), "bad_syslog_header"),
            (b"<1x4>1 - - {}".to_vec(), "bad_syslog_header"),
            (
                b"<134>1 2024 host app - firefly-json - {\"version\":".to_vec(),
                "not_json",
            ),
            (b"{}".to_vec(), "schema"),
            (no_end_time.to_string().into_bytes(), "schema"),
            (wrong_afi.to_string().into_bytes(), "schema"),
        ] {
            assert_eq!(
                parse(&d).map_err(|e| e.name()),
                Err(want),
                "{}",
                String::from_utf8_lossy(&d)
            );
        }
    }
}
