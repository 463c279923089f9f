//! Flow identities and the flowd named-pipe line format.

use std::{
    fmt,
    net::{IpAddr, SocketAddr},
};

use serde::{Deserialize, Serialize};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn parse(s: &str) -> Option<Proto> {
        if s.eq_ignore_ascii_case("tcp") {
            Some(Proto::Tcp)
        } else if s.eq_ignore_ascii_case("udp") {
            Some(Proto::Udp)
        } else {
            None
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }

    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
        }
    }
}

/// A flow as the data supplier sees it: `src` is this host (the storage
/// node), `dst` the remote peer, as in flowd's pipe format and fireflies.
/// Addresses are canonical: an IPv4-mapped IPv6 address (what a dual-stack
/// Java socket reports) becomes the IPv4 address, so both spellings name
/// the same flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowId {
    pub proto: Proto,
    pub src: SocketAddr,
    pub dst: SocketAddr,
}

/// Why a 5-tuple is not a flow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlowError {
    BadProtocol,
    BadAddress,
    BadPort,
    MixedFamily,
}

impl FlowError {
    pub fn kind(self) -> &'static str {
        match self {
            FlowError::BadProtocol => "bad_protocol",
            FlowError::BadAddress => "bad_address",
            FlowError::BadPort => "bad_port",
            FlowError::MixedFamily => "mixed_address_family",
        }
    }

    /// The bad-input counter for an API request with this error.
    pub fn api_kind(self) -> &'static str {
        match self {
            FlowError::BadProtocol => "api_bad_protocol",
            FlowError::BadAddress => "api_bad_address",
            FlowError::BadPort => "api_bad_port",
            FlowError::MixedFamily => "api_mixed_family",
        }
    }
}

impl FlowId {
    pub fn new(
        proto: Proto,
        src: IpAddr,
        sport: u16,
        dst: IpAddr,
        dport: u16,
    ) -> Result<FlowId, FlowError> {
        if sport == 0 || dport == 0 {
            return Err(FlowError::BadPort);
        }
        let (src, dst) = (src.to_canonical(), dst.to_canonical());
        if src.is_ipv4() != dst.is_ipv4() {
            return Err(FlowError::MixedFamily);
        }
        if src.is_unspecified() || dst.is_unspecified() || src.is_multicast() || dst.is_multicast()
        {
            return Err(FlowError::BadAddress);
        }
        Ok(FlowId {
            proto,
            src: SocketAddr::new(src, sport),
            dst: SocketAddr::new(dst, dport),
        })
    }

    /// From text fields, as the pipe and the API carry them.
    pub fn parse(
        proto: &str,
        src: &str,
        sport: &str,
        dst: &str,
        dport: &str,
    ) -> Result<FlowId, FlowError> {
        let proto = Proto::parse(proto).ok_or(FlowError::BadProtocol)?;
        let ip = |s: &str| {
            s.trim_start_matches('[')
                .trim_end_matches(']')
                .parse::<IpAddr>()
        };
        let port = |s: &str| s.parse::<u16>().map_err(|_| FlowError::BadPort);
        let (src, dst) = match (ip(src), ip(dst)) {
            (Ok(s), Ok(d)) => (s, d),
            _ => return Err(FlowError::BadAddress),
        };
        FlowId::new(proto, src, port(sport)?, dst, port(dport)?)
    }

    pub fn is_ipv6(&self) -> bool {
        self.src.is_ipv6()
    }

    /// The key of the kernel flow map: the packet as it leaves this host.
    pub fn key(&self) -> Option<flowmark_common::FlowKey> {
        match (self.src.ip(), self.dst.ip()) {
            (IpAddr::V6(s), IpAddr::V6(d)) => Some(flowmark_common::FlowKey::new(
                s.octets(),
                d.octets(),
                self.src.port(),
                self.dst.port(),
                self.proto.number(),
            )),
            _ => None,
        }
    }
}

impl fmt::Display for FlowId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} -> {}", self.proto.name(), self.src, self.dst)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verb {
    Start,
    End,
}

/// One line of the flowd named-pipe ("np_api") format:
/// `start|end tcp|udp SRC SPORT DST DPORT EXP ACT`, fields separated by
/// spaces or tabs. `end` lines may omit EXP and ACT (the flow is matched on
/// its 5-tuple).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PipeLine {
    pub verb: Verb,
    pub flow: FlowId,
    /// (experiment, activity) as written; range checks happen later, with
    /// the registry, so that they are counted with the other tag errors.
    pub tag: Option<(u32, u32)>,
}

/// Why a pipe line was refused; `kind()` names the counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineError {
    Empty,
    FieldCount,
    Verb,
    Number,
    Flow(FlowError),
}

impl LineError {
    pub fn kind(self) -> &'static str {
        match self {
            LineError::Empty => "pipe_empty_line",
            LineError::FieldCount => "pipe_field_count",
            LineError::Verb => "pipe_bad_verb",
            LineError::Number => "pipe_bad_number",
            LineError::Flow(FlowError::BadProtocol) => "pipe_bad_protocol",
            LineError::Flow(FlowError::BadAddress) => "pipe_bad_address",
            LineError::Flow(FlowError::BadPort) => "pipe_bad_port",
            LineError::Flow(FlowError::MixedFamily) => "pipe_mixed_family",
        }
    }
}

pub fn parse_pipe_line(line: &str) -> Result<PipeLine, LineError> {
    let f: Vec<&str> = line.split_ascii_whitespace().collect();
    if f.is_empty() {
        return Err(LineError::Empty);
    }
    let verb = match f[0].to_ascii_lowercase().as_str() {
        "start" => Verb::Start,
        "end" => Verb::End,
        _ => return Err(LineError::Verb),
    };
    let tag = match (verb, f.len()) {
        (_, 8) => {
            let n = |s: &str| s.parse::<u32>().map_err(|_| LineError::Number);
            Some((n(f[6])?, n(f[7])?))
        }
        (Verb::End, 6) => None,
        _ => return Err(LineError::FieldCount),
    };
    let flow = FlowId::parse(f[1], f[2], f[3], f[4], f[5]).map_err(LineError::Flow)?;
    Ok(PipeLine { verb, flow, tag })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storm_webdav_lines() {
        let l = parse_pipe_line("start tcp 2001:db8::1 443 2001:db8::2 51234 3 14").unwrap();
        assert_eq!(l.verb, Verb::Start);
        assert_eq!(l.tag, Some((3, 14)));
        assert_eq!(l.flow.src, "[2001:db8::1]:443".parse().unwrap());
        assert!(l.flow.is_ipv6());
        let l = parse_pipe_line("end\ttcp 192.0.2.1 443 198.51.100.7 40000 2 4\n").unwrap();
        assert_eq!(l.verb, Verb::End);
        assert!(!l.flow.is_ipv6());
        assert_eq!(
            parse_pipe_line("end tcp 192.0.2.1 443 198.51.100.7 40000")
                .unwrap()
                .tag,
            None
        );
        // A dual-stack socket's view of an IPv4 peer is the same flow.
        let m = parse_pipe_line("end tcp ::ffff:192.0.2.1 443 ::ffff:198.51.100.7 40000").unwrap();
        assert_eq!(
            m.flow,
            parse_pipe_line("end tcp 192.0.2.1 443 198.51.100.7 40000 1 1")
                .unwrap()
                .flow
        );
    }

    #[test]
    fn bad_lines_say_why() {
        for (line, kind) in [
            ("", "pipe_empty_line"),
            ("begin tcp 192.0.2.1 1 192.0.2.2 2 3 4", "pipe_bad_verb"),
            ("start tcp 192.0.2.1 1 192.0.2.2 2 3", "pipe_field_count"),
            (
                "start sctp 192.0.2.1 1 192.0.2.2 2 3 4",
                "pipe_bad_protocol",
            ),
            (
                "start tcp 192.0.2.300 1 192.0.2.2 2 3 4",
                "pipe_bad_address",
            ),
            ("start tcp 192.0.2.1 0 192.0.2.2 2 3 4", "pipe_bad_port"),
            ("start tcp 192.0.2.1 70000 192.0.2.2 2 3 4", "pipe_bad_port"),
            (
                "start tcp 192.0.2.1 1 2001:db8::2 2 3 4",
                "pipe_mixed_family",
            ),
            ("start tcp 192.0.2.1 1 192.0.2.2 2 x 4", "pipe_bad_number"),
            ("start tcp :: 1 2001:db8::2 2 3 4", "pipe_bad_address"),
        ] {
            assert_eq!(
                parse_pipe_line(line).map_err(|e| e.kind()),
                Err(kind),
                "{line:?}"
            );
        }
    }
}
