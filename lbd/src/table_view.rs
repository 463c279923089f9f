//! What `lbd table VIP` shows: one VIP's installed table summed up per
//! node (owner shares, second hops, the drain deadline). One data set,
//! two printers: `--json` (stable field names) and [`TableView::render`].

use std::collections::BTreeMap;
use std::fmt::Write;
use std::net::IpAddr;
use std::time::Instant;

use dataplane_common::NO_HOP;
use serde::{Deserialize, Serialize};

use crate::columns::Columns;
use crate::tables::VipTable;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableView {
    pub vip: String,
    /// Buckets in the installed table (0 before the first install).
    pub table_size: usize,
    /// Buckets per first-hop (owner) node id.
    pub share: BTreeMap<u16, usize>,
    /// Buckets with a second hop (established connections of the previous
    /// owner are forwarded to it).
    pub second_hops: usize,
    /// Buckets per (first, second) hop pair, as `"first->second": count`.
    #[serde(with = "hop_pairs")]
    pub second_hop_pairs: BTreeMap<(u16, u16), usize>,
    /// Buckets per second-hop node id.
    #[serde(default)]
    pub second_hop_share: BTreeMap<u16, usize>,
    /// Seconds until the second hops are dropped (the drain deadline),
    /// while the table is in transition.
    pub settles_in_s: Option<u64>,
}

impl TableView {
    pub fn of(vip: IpAddr, t: &VipTable, now: Instant) -> Self {
        let mut share: BTreeMap<u16, usize> = BTreeMap::new();
        let mut pairs: BTreeMap<(u16, u16), usize> = BTreeMap::new();
        let mut second_share: BTreeMap<u16, usize> = BTreeMap::new();
        for b in &t.live {
            *share.entry(b.first).or_default() += 1;
            if b.second != NO_HOP {
                *pairs.entry((b.first, b.second)).or_default() += 1;
                *second_share.entry(b.second).or_default() += 1;
            }
        }
        Self {
            vip: vip.to_string(),
            table_size: t.live.len(),
            share,
            second_hops: pairs.values().sum(),
            second_hop_pairs: pairs,
            second_hop_share: second_share,
            settles_in_s: t
                .settle_at
                .map(|s| s.saturating_duration_since(now).as_secs()),
        }
    }

    /// The text view: a summary line, buckets per node, then the
    /// second-hop pairs while the table is in transition.
    pub fn render(&self) -> String {
        let mut o = String::new();
        if self.table_size == 0 {
            let _ = writeln!(o, "VIP {}: no table installed yet", self.vip);
            return o;
        }
        let _ = write!(
            o,
            "VIP {}: {} buckets, {} with a second hop",
            self.vip, self.table_size, self.second_hops
        );
        match self.settles_in_s {
            Some(s) => {
                let _ = writeln!(o, ", dropped in {s}s (drain deadline)");
            }
            None => {
                let _ = writeln!(o, " (settled)");
            }
        }
        let nodes: std::collections::BTreeSet<u16> = self
            .share
            .keys()
            .chain(self.second_hop_share.keys())
            .copied()
            .collect();
        let mut c = Columns::new(&["Node", "Buckets", "Share", "Second hop of"]);
        for n in nodes {
            let first = self.share.get(&n).copied().unwrap_or(0);
            c.row([
                n.to_string(),
                first.to_string(),
                format!("{:.1}%", 100.0 * first as f64 / self.table_size as f64),
                self.second_hop_share
                    .get(&n)
                    .copied()
                    .unwrap_or(0)
                    .to_string(),
            ]);
        }
        o.push('\n');
        c.write(&mut o);
        if !self.second_hop_pairs.is_empty() {
            let mut c = Columns::new(&["First", "Second", "Buckets"]);
            for ((first, second), n) in &self.second_hop_pairs {
                c.row([first.to_string(), second.to_string(), n.to_string()]);
            }
            o.push('\n');
            c.write(&mut o);
        }
        o
    }
}

/// `(first, second) -> count` as a JSON object `{"first->second": count}`.
mod hop_pairs {
    use std::collections::BTreeMap;

    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(
        pairs: &BTreeMap<(u16, u16), usize>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        pairs
            .iter()
            .map(|((a, b), n)| (format!("{a}->{b}"), *n))
            .collect::<BTreeMap<String, usize>>()
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<(u16, u16), usize>, D::Error> {
        BTreeMap::<String, usize>::deserialize(d)?
            .into_iter()
            .map(|(k, n)| {
                let (a, b) = k
                    .split_once("->")
                    .ok_or_else(|| D::Error::custom(format!("{k:?} is not \"first->second\"")))?;
                let id = |s: &str| {
                    s.parse::<u16>()
                        .map_err(|_| D::Error::custom(format!("{s:?} in {k:?} is not a node id")))
                };
                Ok(((id(a)?, id(b)?), n))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use dataplane_common::Bucket;

    use super::*;

    /// 11 buckets: node 3 drains, its 4 buckets went to nodes 1 and 2 and
    /// keep 3 as second hop for 59 more seconds.
    fn draining() -> (VipTable, Instant) {
        let now = Instant::now();
        let b = |first, second| Bucket { first, second };
        let live = vec![
            b(1, NO_HOP),
            b(2, NO_HOP),
            b(1, 3),
            b(2, NO_HOP),
            b(1, NO_HOP),
            b(2, 3),
            b(1, 3),
            b(2, NO_HOP),
            b(1, NO_HOP),
            b(2, 3),
            b(1, NO_HOP),
        ];
        let t = VipTable {
            live,
            first_hops: vec![1, 2],
            settle_at: Some(now + Duration::from_millis(59_500)),
            ..Default::default()
        };
        (t, now)
    }

    #[test]
    fn table_text_shows_shares_second_hops_and_the_drain_deadline() {
        let (t, now) = draining();
        let v = TableView::of("198.51.100.10".parse().expect("ip"), &t, now);
        assert_eq!(
            v.render(),
            "\
VIP 198.51.100.10: 11 buckets, 4 with a second hop, dropped in 59s (drain deadline)

Node  Buckets  Share  Second hop of
1     6        54.5%  0
2     5        45.5%  0
3     0        0.0%   4

First  Second  Buckets
1      3       2
2      3       2
"
        );
    }

    #[test]
    fn a_settled_table_and_an_empty_one_say_so() {
        let (mut t, now) = draining();
        for b in &mut t.live {
            b.second = NO_HOP;
        }
        t.settle_at = None;
        let v = TableView::of("2001:db8::10".parse().expect("ip"), &t, now);
        assert_eq!(
            v.render(),
            "\
VIP 2001:db8::10: 11 buckets, 0 with a second hop (settled)

Node  Buckets  Share  Second hop of
1     6        54.5%  0
2     5        45.5%  0
"
        );
        let empty = TableView::of(
            "2001:db8::10".parse().expect("ip"),
            &VipTable::default(),
            now,
        );
        assert_eq!(empty.render(), "VIP 2001:db8::10: no table installed yet\n");
    }

    #[test]
    fn table_json_keeps_its_field_names() {
        let (t, now) = draining();
        let v = TableView::of("198.51.100.10".parse().expect("ip"), &t, now);
        let json = serde_json::to_value(&v).expect("json");
        assert_eq!(
            json,
            serde_json::json!({
                "vip": "198.51.100.10",
                "table_size": 11,
                "share": {"1": 6, "2": 5},
                "second_hops": 4,
                "second_hop_pairs": {"1->3": 2, "2->3": 2},
                "second_hop_share": {"3": 4},
                "settles_in_s": 59,
            })
        );
        let back: TableView = serde_json::from_value(json).expect("parse");
        assert_eq!(back, v);
        let bad = serde_json::json!({
            "vip": "x", "table_size": 0, "share": {}, "second_hops": 0,
            "second_hop_pairs": {"1-3": 1}, "settles_in_s": null,
        });
        let e = serde_json::from_value::<TableView>(bad).expect_err("refused");
        assert!(
            e.to_string().contains("\"1-3\" is not \"first->second\""),
            "{e}"
        );
    }
}
