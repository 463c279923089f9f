//! Log2 latency histograms: bucket `i` holds durations in `[2^i, 2^(i+1))` ns.
use serde::Serialize;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Bucket {
    pub lo_ns: u64,
    pub hi_ns: u64,
    pub count: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    pub target: String,
    pub count: u64,
    pub mean_ns: f64,
    /// Index (into `buckets`) of the bucket that holds the median.
    pub median_bucket: Option<usize>,
    pub p50_ns: f64,
    pub p90_ns: f64,
    pub p99_ns: f64,
    /// Non-empty range of buckets, from the first to the last non-zero one.
    pub buckets: Vec<Bucket>,
    pub unmatched_exits: u64,
}

fn bounds(i: usize) -> (u64, u64) {
    let lo = if i == 0 { 0 } else { 1u64 << i };
    let hi = if i >= 63 { u64::MAX } else { 1u64 << (i + 1) };
    (lo, hi)
}

/// Percentile `q` in 0..=1, interpolated linearly inside its bucket.
pub fn percentile(hist: &[u64], q: f64) -> f64 {
    let total: u64 = hist.iter().sum();
    if total == 0 {
        return 0.0;
    }
    let rank = q * total as f64;
    let mut acc = 0u64;
    for (i, &c) in hist.iter().enumerate() {
        if c == 0 {
            continue;
        }
        if (acc + c) as f64 >= rank {
            let (lo, hi) = bounds(i);
            let within = (rank - acc as f64) / c as f64;
            return lo as f64 + within.clamp(0.0, 1.0) * (hi - lo) as f64;
        }
        acc += c;
    }
    bounds(hist.len().saturating_sub(1)).1 as f64
}

pub fn report(target: &str, hist: &[u64], sum_ns: u64, unmatched: u64) -> Report {
    let count: u64 = hist.iter().sum();
    let first = hist.iter().position(|&c| c > 0);
    let last = hist.iter().rposition(|&c| c > 0);
    let (buckets, median_bucket) = match (first, last) {
        (Some(f), Some(l)) => {
            let b: Vec<Bucket> = (f..=l)
                .map(|i| {
                    let (lo_ns, hi_ns) = bounds(i);
                    Bucket {
                        lo_ns,
                        hi_ns,
                        count: hist[i],
                    }
                })
                .collect();
            let mut acc = 0;
            let med = b.iter().position(|x| {
                acc += x.count;
                acc * 2 >= count
            });
            (b, med)
        }
        _ => (Vec::new(), None),
    };
    Report {
        target: target.to_string(),
        count,
        mean_ns: if count > 0 {
            sum_ns as f64 / count as f64
        } else {
            0.0
        },
        median_bucket,
        p50_ns: percentile(hist, 0.5),
        p90_ns: percentile(hist, 0.9),
        p99_ns: percentile(hist, 0.99),
        buckets,
        unmatched_exits: unmatched,
    }
}

/// Human duration for the table.
pub fn human(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.2}s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.2}ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2}us", ns / 1e3)
    } else {
        format!("{ns:.0}ns")
    }
}

/// The histogram as a table, `bcc funclatency` style.
pub fn text(r: &Report) -> String {
    let mut s = format!("latency of {}: {} calls", r.target, r.count);
    if r.count == 0 {
        s.push_str(" (none seen: check the target and the filters)\n");
        return s;
    }
    s.push_str(&format!(
        ", mean {}, p50 {}, p90 {}, p99 {}\n",
        human(r.mean_ns),
        human(r.p50_ns),
        human(r.p90_ns),
        human(r.p99_ns)
    ));
    let max = r.buckets.iter().map(|b| b.count).max().unwrap_or(1).max(1);
    s.push_str(&format!(
        "{:>22} : {:>10}   distribution\n",
        "range", "count"
    ));
    for (i, b) in r.buckets.iter().enumerate() {
        let bar = "*".repeat(((b.count * 40).div_ceil(max)) as usize);
        let mark = if Some(i) == r.median_bucket {
            " <- median"
        } else {
            ""
        };
        s.push_str(&format!(
            "{:>10} .. {:<9} : {:>10}   |{:<40}|{mark}\n",
            human(b.lo_ns as f64),
            human(b.hi_ns as f64),
            b.count,
            bar
        ));
    }
    if r.unmatched_exits > 0 {
        s.push_str(&format!(
            "({} returns without a seen entry: calls already running at attach time)\n",
            r.unmatched_exits
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_bucket_and_percentiles() {
        let mut h = vec![0u64; 64];
        h[10] = 1; // ~1us
        h[20] = 8; // ~1ms
        h[25] = 1;
        let r = report("f", &h, 0, 0);
        assert_eq!(r.count, 10);
        assert_eq!(r.buckets[r.median_bucket.unwrap()].lo_ns, 1 << 20);
        assert!(r.p50_ns >= (1u64 << 20) as f64 && r.p50_ns < (1u64 << 21) as f64);
        assert!(r.p99_ns >= (1u64 << 25) as f64);
        assert!(text(&r).contains("<- median"));
    }

    #[test]
    fn empty_histogram() {
        let r = report("f", &[0; 64], 0, 3);
        assert_eq!(r.count, 0);
        assert_eq!(r.median_bucket, None);
        assert!(text(&r).contains("none seen"));
    }
}
