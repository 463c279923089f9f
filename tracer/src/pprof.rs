//! pprof output: the `profile.proto` messages of github.com/google/pprof,
//! declared with prost's derive (no protoc, no build step), gzip-compressed
//! as `go tool pprof`, Pyroscope and Grafana expect.
//!
//! Only the fields lbd-trace writes are declared; prost skips the others when
//! decoding, which is all the reader here needs.
use std::io::{Read, Write};

use anyhow::{Context, Result, bail};
use flate2::{Compression, read::GzDecoder, write::GzEncoder};
use prost::Message;

#[derive(Clone, PartialEq, Message)]
pub struct Profile {
    #[prost(message, repeated, tag = "1")]
    pub sample_type: Vec<ValueType>,
    #[prost(message, repeated, tag = "2")]
    pub sample: Vec<Sample>,
    #[prost(message, repeated, tag = "4")]
    pub location: Vec<Location>,
    #[prost(message, repeated, tag = "5")]
    pub function: Vec<Function>,
    #[prost(string, repeated, tag = "6")]
    pub string_table: Vec<String>,
    #[prost(int64, tag = "9")]
    pub time_nanos: i64,
    #[prost(int64, tag = "10")]
    pub duration_nanos: i64,
    #[prost(message, optional, tag = "11")]
    pub period_type: Option<ValueType>,
    #[prost(int64, tag = "12")]
    pub period: i64,
    #[prost(int64, tag = "14")]
    pub default_sample_type: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct ValueType {
    #[prost(int64, tag = "1")]
    pub r#type: i64,
    #[prost(int64, tag = "2")]
    pub unit: i64,
}

#[derive(Clone, PartialEq, Message)]
pub struct Sample {
    /// Leaf first.
    #[prost(uint64, repeated, tag = "1")]
    pub location_id: Vec<u64>,
    #[prost(int64, repeated, tag = "2")]
    pub value: Vec<i64>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Location {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(message, repeated, tag = "4")]
    pub line: Vec<Line>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Line {
    #[prost(uint64, tag = "1")]
    pub function_id: u64,
}

#[derive(Clone, PartialEq, Message)]
pub struct Function {
    #[prost(uint64, tag = "1")]
    pub id: u64,
    #[prost(int64, tag = "2")]
    pub name: i64,
    #[prost(int64, tag = "3")]
    pub system_name: i64,
}

/// What the values of a folded profile mean.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Units {
    /// On-CPU samples taken at `hz`.
    Samples { hz: u64 },
    /// Off-CPU time in microseconds.
    OffCpuMicros,
}

struct Strings {
    table: Vec<String>,
    index: std::collections::HashMap<String, i64>,
}

impl Strings {
    fn new() -> Self {
        // Index 0 must be the empty string.
        Self {
            table: vec![String::new()],
            index: [(String::new(), 0)].into(),
        }
    }
    fn id(&mut self, s: &str) -> i64 {
        if let Some(&i) = self.index.get(s) {
            return i;
        }
        let i = self.table.len() as i64;
        self.table.push(s.to_string());
        self.index.insert(s.to_string(), i);
        i
    }
}

/// Builds a pprof profile from folded stacks (root first, `;`-separated).
pub fn from_folded<'a>(
    stacks: impl IntoIterator<Item = (&'a str, u64)>,
    units: Units,
    duration_nanos: i64,
) -> Profile {
    let mut s = Strings::new();
    let mut p = Profile::default();
    match units {
        Units::Samples { hz } => {
            let period = 1_000_000_000 / hz.max(1) as i64;
            p.sample_type = vec![
                ValueType {
                    r#type: s.id("samples"),
                    unit: s.id("count"),
                },
                ValueType {
                    r#type: s.id("cpu"),
                    unit: s.id("nanoseconds"),
                },
            ];
            p.period_type = Some(ValueType {
                r#type: s.id("cpu"),
                unit: s.id("nanoseconds"),
            });
            p.period = period;
            // An index into the string table (the type's name), not into
            // sample_type.
            p.default_sample_type = s.id("cpu");
        }
        Units::OffCpuMicros => {
            p.sample_type = vec![ValueType {
                r#type: s.id("offcpu"),
                unit: s.id("microseconds"),
            }];
            p.period_type = Some(p.sample_type[0].clone());
            p.period = 1;
        }
    }
    let mut loc_of: std::collections::HashMap<String, u64> = Default::default();
    for (stack, count) in stacks {
        let mut ids = Vec::new();
        for frame in stack.split(';').rev() {
            let next = loc_of.len() as u64 + 1;
            let id = *loc_of.entry(frame.to_string()).or_insert(next);
            if id == next {
                let name = s.id(frame);
                p.function.push(Function {
                    id,
                    name,
                    system_name: name,
                });
                p.location.push(Location {
                    id,
                    line: vec![Line { function_id: id }],
                });
            }
            ids.push(id);
        }
        let mut value = vec![count as i64];
        if let Units::Samples { .. } = units {
            value.push(count as i64 * p.period);
        }
        p.sample.push(Sample {
            location_id: ids,
            value,
        });
    }
    p.string_table = s.table;
    p.duration_nanos = duration_nanos;
    p.time_nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0);
    p
}

/// Gzipped protobuf, as pprof tools read it.
pub fn encode(p: &Profile) -> Result<Vec<u8>> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::default());
    gz.write_all(&p.encode_to_vec())?;
    Ok(gz.finish()?)
}

/// Reads a pprof file (gzipped or not).
pub fn decode(bytes: &[u8]) -> Result<Profile> {
    let raw = if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut v = Vec::new();
        GzDecoder::new(bytes)
            .read_to_end(&mut v)
            .context("gunzip")?;
        v
    } else {
        bytes.to_vec()
    };
    let p = Profile::decode(raw.as_slice()).context("not a pprof protobuf")?;
    let n = p.string_table.len() as i64;
    if p.function.iter().any(|f| f.name < 0 || f.name >= n) {
        bail!("pprof: function name index out of the string table");
    }
    Ok(p)
}

impl Profile {
    /// Sum of the first value of every sample.
    pub fn total(&self) -> i64 {
        self.sample.iter().filter_map(|s| s.value.first()).sum()
    }

    /// A sample's stack as folded text (root first).
    pub fn folded(&self, sample: &Sample) -> String {
        let name = |lid: &u64| -> &str {
            self.location
                .iter()
                .find(|l| l.id == *lid)
                .and_then(|l| l.line.first())
                .and_then(|ln| self.function.iter().find(|f| f.id == ln.function_id))
                .and_then(|f| self.string_table.get(f.name as usize))
                .map(String::as_str)
                .unwrap_or("?")
        };
        sample
            .location_id
            .iter()
            .rev()
            .map(name)
            .collect::<Vec<_>>()
            .join(";")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let stacks = [("a;b;c", 3u64), ("a;b", 2), ("x;c", 1)];
        let p = from_folded(
            stacks.iter().map(|(s, c)| (*s, *c)),
            Units::Samples { hz: 99 },
            1,
        );
        let back = decode(&encode(&p).unwrap()).unwrap();
        assert_eq!(back.total(), 6);
        assert_eq!(back.sample.len(), 3);
        assert_eq!(back.folded(&back.sample[0]), "a;b;c");
        assert_eq!(back.folded(&back.sample[2]), "x;c");
        assert_eq!(back.sample[0].value[1], 3 * (1_000_000_000 / 99));
        assert_eq!(back.string_table[back.default_sample_type as usize], "cpu");
    }

    #[test]
    fn rejects_garbage() {
        assert!(decode(b"\x1f\x8bnot gzip").is_err());
        assert!(decode(b"\xff\xff\xff\xff").is_err());
    }
}
