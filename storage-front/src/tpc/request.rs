//! A COPY request's headers, checked (WLCG HTTP-TPC): `Source` (pull) or
//! `Destination` (push), `Credential`, `Overwrite`,
//! `RequireChecksumVerification`, `TransferHeader<Name>` and `SciTag`.
//! Every refusal carries the reason the client gets with its 400.

use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::http::uri::{Scheme, Uri};

/// At most this many `TransferHeader*` headers (tokens and a few more).
pub const MAX_TRANSFER_HEADERS: usize = 32;
/// Longest remote URL accepted.
pub const MAX_URL_LEN: usize = 8192;

/// Valid SciTag values: experiment << 6 | activity, experiment >= 1.
pub const SCITAG_RANGE: std::ops::RangeInclusive<u32> = 65..=65535;
pub const SCITAG: &str = "scitag";
const TRANSFER_HEADER: &str = "transferheader";

/// Headers a client may not set on our request to the remote: they frame
/// the request (smuggling) or are ours to set.
const RESERVED: [&str; 7] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
    "te",
    "expect",
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Direction {
    /// `Source:`: we GET the remote and store it locally.
    Pull,
    /// `Destination:`: we PUT our file to the remote.
    Push,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SciTag {
    Absent,
    Valid(u16),
    /// Present but unusable: the copy runs unmarked (and is counted).
    Invalid,
}

#[derive(Debug, Clone)]
pub struct CopyRequest {
    pub direction: Direction,
    /// The remote URL with dav/davs mapped to http/https.
    pub remote: Uri,
    pub overwrite: bool,
    pub verify_checksum: bool,
    /// Sent on every request to the remote (`TransferHeaderX: v` -> `X: v`).
    pub remote_headers: Vec<(HeaderName, HeaderValue)>,
    pub scitag: SciTag,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RequestError {
    #[error("both Source and Destination given: a COPY is either a pull or a push")]
    Both,
    #[error("neither Source nor Destination given")]
    Neither,
    #[error("{header}: {reason}")]
    BadUrl {
        header: &'static str,
        reason: String,
    },
    #[error(
        "Credential {0:?} is not supported (only \"none\": pass a token with TransferHeaderAuthorization)"
    )]
    Credential(String),
    #[error("{0}: expected {1}")]
    BadValue(&'static str, &'static str),
    #[error("more than {MAX_TRANSFER_HEADERS} TransferHeader headers")]
    TooManyTransferHeaders,
    #[error("TransferHeader{0} is not allowed")]
    ReservedHeader(String),
    #[error("a header value is not visible ASCII")]
    NotAscii,
}

impl CopyRequest {
    pub fn parse(headers: &HeaderMap) -> Result<CopyRequest, RequestError> {
        let text = |name: &'static str| -> Result<Option<&str>, RequestError> {
            headers
                .get(name)
                .map(|v| {
                    v.to_str()
                        .map(str::trim)
                        .map_err(|_| RequestError::NotAscii)
                })
                .transpose()
        };
        let (direction, header, url) = match (text("source")?, text("destination")?) {
            (Some(_), Some(_)) => return Err(RequestError::Both),
            (None, None) => return Err(RequestError::Neither),
            (Some(s), None) => (Direction::Pull, "Source", s),
            (None, Some(d)) => (Direction::Push, "Destination", d),
        };
        let remote = remote_url(url).map_err(|reason| RequestError::BadUrl { header, reason })?;
        match text("credential")? {
            None => {}
            Some(c) if c.eq_ignore_ascii_case("none") => {}
            Some(c) => return Err(RequestError::Credential(c.to_string())),
        }
        let flag = |name: &'static str, yes: &str, no: &str, default, expected| match text(name)? {
            None => Ok(default),
            Some(v) if v.eq_ignore_ascii_case(yes) => Ok(true),
            Some(v) if v.eq_ignore_ascii_case(no) => Ok(false),
            Some(_) => Err(RequestError::BadValue(name, expected)),
        };
        let overwrite = flag("overwrite", "T", "F", true, "T or F")?;
        let verify_checksum = flag(
            "requirechecksumverification",
            "true",
            "false",
            false,
            "true or false",
        )?;

        let mut remote_headers = Vec::new();
        for (name, value) in headers {
            let Some(rest) = name.as_str().strip_prefix(TRANSFER_HEADER) else {
                continue;
            };
            if remote_headers.len() == MAX_TRANSFER_HEADERS {
                return Err(RequestError::TooManyTransferHeaders);
            }
            if rest.is_empty() || RESERVED.contains(&rest) {
                return Err(RequestError::ReservedHeader(rest.to_string()));
            }
            let name = HeaderName::from_bytes(rest.as_bytes())
                .map_err(|_| RequestError::ReservedHeader(rest.to_string()))?;
            remote_headers.push((name, value.clone()));
        }
        // SciTag wins over TransferHeaderSciTag, even when invalid
        // (StoRM-WebDAV and dCache); the value the remote sees is ours.
        let raw = headers
            .get(SCITAG)
            .or_else(|| headers.get("transferheaderscitag"));
        let scitag = match raw {
            None => SciTag::Absent,
            Some(v) => parse_scitag(v.to_str().unwrap_or("")),
        };
        remote_headers.retain(|(n, _)| n.as_str() != SCITAG);
        if let SciTag::Valid(v) = scitag {
            remote_headers.push((HeaderName::from_static(SCITAG), HeaderValue::from(v)));
        }
        Ok(CopyRequest {
            direction,
            remote,
            overwrite,
            verify_checksum,
            remote_headers,
            scitag,
        })
    }
}

/// A SciTag value: decimal digits only (no sign, hex or fraction), in range.
pub fn parse_scitag(v: &str) -> SciTag {
    let v = v.trim();
    if v.is_empty() || v.len() > 5 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return SciTag::Invalid;
    }
    match v.parse::<u32>() {
        Ok(n) if SCITAG_RANGE.contains(&n) => SciTag::Valid(n as u16),
        _ => SciTag::Invalid,
    }
}

/// An absolute http/https/dav/davs URL with a host; dav(s) becomes http(s).
pub fn remote_url(url: &str) -> Result<Uri, String> {
    if url.len() > MAX_URL_LEN {
        return Err(format!("URL longer than {MAX_URL_LEN} bytes"));
    }
    let uri: Uri = url
        .parse()
        .map_err(|e| format!("{url:?} is not a URL ({e})"))?;
    let scheme = match uri.scheme_str().map(str::to_ascii_lowercase).as_deref() {
        Some("http" | "dav") => Scheme::HTTP,
        Some("https" | "davs") => Scheme::HTTPS,
        Some(s) => return Err(format!("scheme {s:?} is not http, https, dav or davs")),
        None => return Err(format!("{url:?} is not an absolute URL")),
    };
    let authority = uri
        .authority()
        .filter(|a| !a.host().is_empty())
        .ok_or_else(|| format!("{url:?} has no host"))?
        .clone();
    if authority.as_str().contains('@') {
        return Err(format!(
            "{url:?}: user information in URLs is not supported"
        ));
    }
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    if !path.starts_with('/') {
        return Err(format!("{url:?} has no absolute path"));
    }
    Uri::builder()
        .scheme(scheme)
        .authority(authority)
        .path_and_query(path)
        .build()
        .map_err(|e| format!("{url:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(pairs: &[(&str, &str)]) -> Result<CopyRequest, String> {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(
                HeaderName::from_bytes(n.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        CopyRequest::parse(&h).map_err(|e| e.to_string())
    }

    #[test]
    fn pull_push_and_headers() {
        let r = parse(&[
            ("Source", "davs://se.example.org:8443/data/f?x=1"),
            ("TransferHeaderAuthorization", "Bearer x"),
            ("TransferHeaderSciTag", "206"),
            ("Credential", "none"),
            ("Overwrite", "f"),
            ("RequireChecksumVerification", "TRUE"),
        ])
        .unwrap();
        assert_eq!(r.direction, Direction::Pull);
        assert_eq!(
            r.remote.to_string(),
            "https://se.example.org:8443/data/f?x=1"
        );
        assert!(!r.overwrite && r.verify_checksum);
        assert_eq!(r.scitag, SciTag::Valid(206));
        let h: Vec<_> = r
            .remote_headers
            .iter()
            .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap()))
            .collect();
        assert_eq!(h, ["authorization: Bearer x", "scitag: 206"]);
        let r = parse(&[("Destination", "http://[2001:db8::1]/x"), ("SciTag", "64")]).unwrap();
        assert_eq!(r.direction, Direction::Push);
        assert!(r.overwrite && !r.verify_checksum);
        assert_eq!(r.scitag, SciTag::Invalid);
        assert!(r.remote_headers.is_empty());
        // SciTag decides even when invalid; TransferHeaderSciTag is dropped.
        let r = parse(&[
            ("Destination", "http://h/x"),
            ("SciTag", "70000"),
            ("TransferHeaderSciTag", "206"),
        ])
        .unwrap();
        assert_eq!(r.scitag, SciTag::Invalid);
        assert!(r.remote_headers.is_empty());
    }

    #[test]
    fn refusals_say_why() {
        for (pairs, want) in [
            (
                vec![("Source", "http://a/x"), ("Destination", "http://b/y")],
                "both Source",
            ),
            (vec![], "neither Source"),
            (vec![("Source", "ftp://a/x")], "Source: scheme \"ftp\""),
            (
                vec![("Source", "/x")],
                "Source: \"/x\" is not an absolute URL",
            ),
            (
                vec![("Destination", "http://u@h/x")],
                "Destination: \"http://u@h/x\": user",
            ),
            (
                vec![("Source", "http://a/x"), ("Credential", "gridsite")],
                "Credential \"gridsite\"",
            ),
            (
                vec![("Source", "http://a/x"), ("Overwrite", "yes")],
                "overwrite: expected T or F",
            ),
            (
                vec![("Source", "http://a/x"), ("TransferHeaderHost", "evil")],
                "TransferHeaderhost is not allowed",
            ),
            (
                vec![
                    ("Source", "http://a/x"),
                    ("TransferHeaderContent-Length", "0"),
                ],
                "TransferHeadercontent-length is not allowed",
            ),
        ] {
            let e = parse(&pairs).unwrap_err();
            assert!(e.starts_with(want), "{e:?} does not start with {want:?}");
        }
        let many: Vec<(String, &str)> = (0..=MAX_TRANSFER_HEADERS)
            .map(|i| (format!("TransferHeaderX{i}"), "v"))
            .collect();
        let mut pairs: Vec<(&str, &str)> = many.iter().map(|(n, v)| (n.as_str(), *v)).collect();
        pairs.push(("Source", "http://a/x"));
        assert!(parse(&pairs).unwrap_err().starts_with("more than"));
    }

    #[test]
    fn scitag_values() {
        for (v, want) in [
            ("65", SciTag::Valid(65)),
            (" 65535 ", SciTag::Valid(65535)),
            ("64", SciTag::Invalid),
            ("65536", SciTag::Invalid),
            ("+100", SciTag::Invalid),
            ("0x80", SciTag::Invalid),
            ("", SciTag::Invalid),
            ("99999999999", SciTag::Invalid),
        ] {
            assert_eq!(parse_scitag(v), want, "{v:?}");
        }
    }
}
