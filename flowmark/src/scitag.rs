//! The SciTag value (`experiment << 6 | activity`), its flow-label encoding,
//! and its extraction from an HTTP request with the precedence and range
//! rules of StoRM-WebDAV and dCache.

use std::fmt;

use flowmark_common::{MAX_LABEL_EXPERIMENT, encode_label};

/// Smallest and largest valid SciTag values (experiment 1..=1023, activity 0..=63).
pub const MIN_VALUE: u32 = 65;
pub const MAX_VALUE: u32 = 65535;
pub const MAX_EXPERIMENT: u16 = 1023;

/// A valid SciTag: an experiment and one of its activities.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SciTag {
    pub experiment: u16,
    pub activity: u8,
}

/// Why a value is not a SciTag.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TagError {
    #[error("{0:?} is not a decimal integer")]
    NotANumber(String),
    #[error("{0} is outside the SciTag range {MIN_VALUE}..={MAX_VALUE}")]
    OutOfRange(u64),
    #[error("experiment {0} is outside 1..={MAX_EXPERIMENT}")]
    ExperimentOutOfRange(u32),
    #[error("activity {0} is outside 0..=63")]
    ActivityOutOfRange(u32),
}

impl TagError {
    /// A short stable name, for counters and "logged once per kind".
    pub fn kind(&self) -> &'static str {
        match self {
            TagError::NotANumber(_) => "scitag_not_a_number",
            TagError::OutOfRange(_) => "scitag_out_of_range",
            TagError::ExperimentOutOfRange(_) => "experiment_out_of_range",
            TagError::ActivityOutOfRange(_) => "activity_out_of_range",
        }
    }
}

/// Why a valid SciTag has no flow label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LabelError {
    #[error(
        "experiment {0} does not fit the 9 experiment bits of the IPv6 flow label (max 511): fireflies only"
    )]
    ExperimentTooLarge(u16),
}

impl SciTag {
    pub fn new(experiment: u32, activity: u32) -> Result<Self, TagError> {
        if !(1..=MAX_EXPERIMENT as u32).contains(&experiment) {
            return Err(TagError::ExperimentOutOfRange(experiment));
        }
        if activity > 63 {
            return Err(TagError::ActivityOutOfRange(activity));
        }
        Ok(SciTag {
            experiment: experiment as u16,
            activity: activity as u8,
        })
    }

    pub fn from_value(value: u64) -> Result<Self, TagError> {
        if !(MIN_VALUE as u64..=MAX_VALUE as u64).contains(&value) {
            return Err(TagError::OutOfRange(value));
        }
        Ok(SciTag {
            experiment: (value >> 6) as u16,
            activity: (value & 0x3F) as u8,
        })
    }

    /// Parses a decimal value, surrounding whitespace allowed (as HTTP
    /// header values may carry it); signs, hex and fractions are refused.
    pub fn parse(text: &str) -> Result<Self, TagError> {
        let t = text.trim();
        if t.is_empty() || t.len() > 20 || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(TagError::NotANumber(truncate(text, 64)));
        }
        match t.parse::<u64>() {
            Ok(v) => Self::from_value(v),
            Err(_) => Err(TagError::OutOfRange(u64::MAX)),
        }
    }

    pub fn value(&self) -> u32 {
        (self.experiment as u32) << 6 | self.activity as u32
    }

    /// The flow label with all entropy bits zero.
    pub fn flow_label(&self) -> Result<u32, LabelError> {
        if self.experiment > MAX_LABEL_EXPERIMENT {
            return Err(LabelError::ExperimentTooLarge(self.experiment));
        }
        Ok(encode_label(self.experiment, self.activity))
    }
}

impl fmt::Display for SciTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (experiment {}, activity {})",
            self.value(),
            self.experiment,
            self.activity
        )
    }
}

/// Where a request's SciTag came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Source {
    /// The `SciTag` request header.
    Header,
    /// The `TransferHeaderSciTag` header of an HTTP third-party COPY.
    TransferHeader,
    /// The xrootd-style `scitag.flow` query parameter.
    Query,
}

/// What [`extract`] found in a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Extracted {
    /// No SciTag anywhere: the flow is not registered.
    Absent,
    /// A valid tag.
    Tag(SciTag, Source),
    /// The deciding source carried an invalid value: the request goes on
    /// unmarked (experiment 0 / activity 0), never fails.
    Invalid(TagError, Source),
}

impl Extracted {
    pub fn tag(&self) -> Option<SciTag> {
        match self {
            Extracted::Tag(t, _) => Some(*t),
            _ => None,
        }
    }
}

/// Extracts the SciTag of a request.
///
/// Precedence: `SciTag` header, then `TransferHeaderSciTag` (ignored
/// whenever `SciTag` is present, even if `SciTag` is invalid: the
/// StoRM-WebDAV / dCache rule), then `scitag.flow` in the query string.
/// Header names are matched case-insensitively; the first occurrence wins.
/// The source that decides is the first one present, valid or not: a bad
/// `SciTag` does not fall back to a lower-precedence source.
pub fn extract<'a, I>(headers: I, query: Option<&str>) -> Extracted
where
    I: IntoIterator<Item = (&'a str, &'a str)>,
{
    let mut scitag = None;
    let mut transfer = None;
    for (name, value) in headers {
        let name = name.trim();
        if scitag.is_none() && name.eq_ignore_ascii_case("scitag") {
            scitag = Some(value);
        } else if transfer.is_none() && name.eq_ignore_ascii_case("transferheaderscitag") {
            transfer = Some(value);
        }
    }
    let (value, source) = if let Some(v) = scitag {
        (v, Source::Header)
    } else if let Some(v) = transfer {
        (v, Source::TransferHeader)
    } else if let Some(v) = query.and_then(query_scitag) {
        (v, Source::Query)
    } else {
        return Extracted::Absent;
    };
    match SciTag::parse(value) {
        Ok(tag) => Extracted::Tag(tag, source),
        Err(e) => Extracted::Invalid(e, source),
    }
}

/// The first `scitag.flow` parameter of a query string (with or without the
/// leading `?`). Values are plain integers, so no percent-decoding is needed:
/// an encoded value is simply not a number and counts as invalid.
fn query_scitag(query: &str) -> Option<&str> {
    let query = query.strip_prefix('?').unwrap_or(query);
    query
        .split('&')
        .find_map(|pair| pair.strip_prefix("scitag.flow="))
}

/// At most `max` characters of outside input, for log lines.
pub fn truncate(text: &str, max: usize) -> String {
    let mut out: String = text.chars().take(max).collect();
    if text.chars().count() > max {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_206_is_cms_14() {
        let t = SciTag::parse("206").unwrap();
        assert_eq!((t.experiment, t.activity), (3, 14));
        assert_eq!(t.flow_label(), Ok(196664));
    }

    #[test]
    fn every_value_round_trips() {
        for v in MIN_VALUE..=MAX_VALUE {
            let t = SciTag::from_value(v as u64).unwrap();
            assert_eq!(t.value(), v);
            assert_eq!(SciTag::new(t.experiment as u32, t.activity as u32), Ok(t));
            match t.flow_label() {
                Ok(label) => {
                    assert!(t.experiment < 512);
                    let (e, a) = flowmark_common::decode_label(label);
                    assert_eq!((e, a), (t.experiment, t.activity));
                }
                Err(LabelError::ExperimentTooLarge(e)) => {
                    assert!(e >= 512);
                    assert_eq!(e, t.experiment);
                }
            }
        }
    }

    #[test]
    fn out_of_range_and_garbage_are_refused() {
        for bad in [
            "",
            "64",
            "0",
            "65536",
            "-206",
            "+206",
            "0x10",
            "2.5",
            "206a",
            "99999999999999999999999",
        ] {
            assert!(SciTag::parse(bad).is_err(), "{bad}");
        }
        assert_eq!(SciTag::parse(" 206\t").map(|t| t.value()), Ok(206));
        assert_eq!(
            SciTag::parse("65").map(|t| (t.experiment, t.activity)),
            Ok((1, 1))
        );
    }

    #[test]
    fn experiments_from_512_have_no_label() {
        let t = SciTag::new(512, 0).unwrap();
        let err = t.flow_label().unwrap_err();
        assert!(err.to_string().contains("511"), "{err}");
        assert!(SciTag::new(511, 63).unwrap().flow_label().is_ok());
    }

    #[test]
    fn precedence_scitag_then_transfer_then_query() {
        let q = Some("a=1&scitag.flow=300");
        assert_eq!(
            extract([("SciTag", "206"), ("TransferHeaderSciTag", "100")], q),
            Extracted::Tag(SciTag::from_value(206).unwrap(), Source::Header)
        );
        assert_eq!(
            extract([("transferheaderscitag", "100")], q),
            Extracted::Tag(SciTag::from_value(100).unwrap(), Source::TransferHeader)
        );
        assert_eq!(
            extract([("Host", "x")], q),
            Extracted::Tag(SciTag::from_value(300).unwrap(), Source::Query)
        );
        assert_eq!(extract([("Host", "x")], None), Extracted::Absent);
        assert_eq!(
            extract(std::iter::empty(), Some("?scitag.flowx=1")),
            Extracted::Absent
        );
        // An invalid SciTag still wins over TransferHeaderSciTag: unmarked.
        assert!(matches!(
            extract([("SCITAG", "70000"), ("TransferHeaderSciTag", "206")], None),
            Extracted::Invalid(TagError::OutOfRange(70000), Source::Header)
        ));
    }
}
