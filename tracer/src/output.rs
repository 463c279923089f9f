//! Output formats: folded stacks (the de-facto text format), SVG flamegraphs
//! and differential flamegraphs (both inferno), pprof (see [`crate::pprof`]).
use std::{
    collections::BTreeMap,
    fs,
    io::{BufReader, Write},
    path::Path,
};

use anyhow::{Context, Result, bail};
use clap::ValueEnum;
use inferno::{differential, flamegraph};

use crate::{
    pprof::{self, Units},
    symbolize::Stack,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// SVG flamegraph (inferno), interactive in a browser.
    Svg,
    /// Folded stacks: `frame;frame;frame count` per line.
    Folded,
    /// pprof protobuf, gzipped (go tool pprof, Pyroscope, Grafana).
    Pprof,
}

/// Folded stacks, merged: stack text -> weight.
pub type Folded = BTreeMap<String, u64>;

/// Merges symbolized stacks into folded form; `scale` divides the weights
/// (ns -> us for off-CPU), dropping stacks that round to zero.
pub fn fold(stacks: &[Stack], scale: u64) -> Folded {
    let mut m = Folded::new();
    for s in stacks {
        let key = s
            .frames
            .iter()
            .map(|f| f.folded())
            .collect::<Vec<_>>()
            .join(";");
        *m.entry(key).or_default() += s.value;
    }
    if scale > 1 {
        m = m
            .into_iter()
            .filter_map(|(k, v)| {
                let v = (v + scale / 2) / scale;
                (v > 0).then_some((k, v))
            })
            .collect();
    }
    m
}

pub fn folded_text(f: &Folded) -> String {
    let mut s = String::new();
    for (k, v) in f {
        s.push_str(k);
        s.push(' ');
        s.push_str(&v.to_string());
        s.push('\n');
    }
    s
}

/// Parses folded text, naming the file and line of anything malformed.
pub fn parse_folded(text: &str, origin: &str) -> Result<Folded> {
    let mut m = Folded::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end();
        if line.is_empty() {
            continue;
        }
        let Some((stack, count)) = line.rsplit_once(' ') else {
            bail!(
                "{origin}:{}: expected `frame;frame;... COUNT`, got {line:?}",
                i + 1
            );
        };
        let count: u64 = count.parse().with_context(|| {
            format!(
                "{origin}:{}: count {count:?} is not a non-negative integer",
                i + 1
            )
        })?;
        if stack.is_empty() {
            bail!("{origin}:{}: empty stack", i + 1);
        }
        *m.entry(stack.to_string()).or_default() += count;
    }
    Ok(m)
}

pub fn read_folded(path: &Path) -> Result<Folded> {
    let text = fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse_folded(&text, &path.display().to_string())
}

fn options<'a>(title: &str, count_name: &str) -> flamegraph::Options<'a> {
    let mut o = flamegraph::Options::default();
    o.title = title.to_string();
    o.count_name = count_name.to_string();
    o.deterministic = true;
    o
}

pub fn svg(f: &Folded, title: &str, count_name: &str) -> Result<Vec<u8>> {
    if f.is_empty() {
        bail!("no stacks were collected: nothing to draw (check the filters and the duration)");
    }
    let lines: Vec<String> = f.iter().map(|(k, v)| format!("{k} {v}")).collect();
    let mut out = Vec::new();
    flamegraph::from_lines(
        &mut options(title, count_name),
        lines.iter().map(String::as_str),
        &mut out,
    )
    .context("rendering the flamegraph")?;
    Ok(out)
}

/// Differential flamegraph (inferno's difffolded + flamegraph): frame widths
/// from `after`, red where it grew since `before`, blue where it shrank.
pub fn diff_svg(before: &Path, after: &Path, normalize: bool, title: &str) -> Result<Vec<u8>> {
    // Validate both inputs first: inferno silently skips malformed lines.
    let b = read_folded(before)?;
    let a = read_folded(after)?;
    if a.is_empty() && b.is_empty() {
        bail!(
            "both {} and {} are empty",
            before.display(),
            after.display()
        );
    }
    let mut diff = Vec::new();
    let dopt = differential::Options {
        normalize,
        ..Default::default()
    };
    differential::from_readers(
        dopt,
        BufReader::new(folded_text(&b).as_bytes()),
        BufReader::new(folded_text(&a).as_bytes()),
        &mut diff,
    )
    .context("computing the differential stacks")?;
    let mut out = Vec::new();
    flamegraph::from_reader(&mut options(title, "samples"), diff.as_slice(), &mut out)
        .context("rendering the differential flamegraph")?;
    Ok(out)
}

/// Writes a profile in the chosen format.
pub fn write(
    f: &Folded,
    format: Format,
    units: Units,
    duration_nanos: i64,
    title: &str,
    out: &mut dyn Write,
) -> Result<()> {
    match format {
        Format::Folded => out.write_all(folded_text(f).as_bytes())?,
        Format::Svg => {
            let count = match units {
                Units::Samples { .. } => "samples",
                Units::OffCpuMicros => "us",
            };
            out.write_all(&svg(f, title, count)?)?
        }
        Format::Pprof => {
            let p = pprof::from_folded(
                f.iter().map(|(k, v)| (k.as_str(), *v)),
                units,
                duration_nanos,
            );
            out.write_all(&pprof::encode(&p)?)?
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::symbolize::{Frame, Kind};

    #[test]
    fn folds_and_parses() {
        let fr = |n: &str, k| Frame {
            name: n.into(),
            kind: k,
        };
        let stacks = vec![
            Stack {
                frames: vec![fr("app", Kind::Process), fr("main", Kind::User)],
                value: 2,
            },
            Stack {
                frames: vec![fr("app", Kind::Process), fr("main", Kind::User)],
                value: 3,
            },
            Stack {
                frames: vec![
                    fr("app", Kind::Process),
                    fr("read", Kind::User),
                    fr("vfs_read", Kind::Kernel),
                ],
                value: 1,
            },
        ];
        let f = fold(&stacks, 1);
        assert_eq!(f["app;main"], 5);
        assert_eq!(f["app;read;vfs_read_[k]"], 1);
        let back = parse_folded(&folded_text(&f), "t").unwrap();
        assert_eq!(back, f);
        let us = fold(&stacks, 2);
        assert_eq!(us["app;main"], 3);
    }

    #[test]
    fn malformed_folded_names_the_line() {
        let e = parse_folded("a;b 1\nnocount\n", "x.folded")
            .unwrap_err()
            .to_string();
        assert!(e.contains("x.folded:2"), "{e}");
        let e = parse_folded("a;b -3\n", "x").unwrap_err().to_string();
        assert!(e.contains("x:1"), "{e}");
    }

    #[test]
    fn svg_names_frames() {
        let f = parse_folded("app;hot_a 7\napp;hot_b 3\n", "t").unwrap();
        let s = String::from_utf8(svg(&f, "t", "samples").unwrap()).unwrap();
        assert!(s.contains("hot_a") && s.contains("hot_b"));
        assert!(svg(&Folded::new(), "t", "samples").is_err());
    }
}
