//! From the view of the members to the buckets of one VIP's table.
//!
//! Every node runs this over the same ordered member list and the same
//! member states, so every node computes the same table (Maglev output
//! depends only on the member set, weights, size and seed). A member is a
//! first hop when it is reachable, active and passes the VIP's checks. A
//! member that stops being a first hop (draining, failing its checks, or
//! unreachable) stays second hop of the buckets it had for the drain
//! period, so its established connections are forwarded back to it: an
//! unreachable member may be an lbd restarting (its XDP program keeps
//! serving its connections) or a dead machine (whose connections are dead
//! anyway; new flows never go to a second hop). Only a member the config no
//! longer lists is no hop at all.

use std::time::{Duration, Instant};

use dataplane::maglev::{self, Member};
use dataplane::transition;
use dataplane_common::{Bucket, NO_HOP};

/// One member as this node sees it right now, for one VIP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemberView {
    pub id: u16,
    pub weight: u32,
    /// Answers liveness polls (or is this node).
    pub reachable: bool,
    /// Active (not draining) and passing this VIP's checks.
    pub serving: bool,
}

/// A VIP's live table and its drain timer.
#[derive(Debug, Clone, Default)]
pub struct VipTable {
    /// The buckets as installed (empty before the first install).
    pub live: Vec<Bucket>,
    /// The first-hop members the live table was built from.
    pub first_hops: Vec<u16>,
    /// Their weights, (id, weight) by id: a weight change (reload) rebuilds
    /// the table even when the set of first hops stays. Empty after
    /// `resume` (unknown), so the first view rebuilds it with `follow`.
    pub built_from: Vec<(u16, u32)>,
    /// When the second hops of the last change are dropped.
    pub settle_at: Option<Instant>,
    /// This node, joining with no table of its own (see [`VipTable::joining`]).
    pub joiner: Option<u16>,
    /// This node: its buckets get fallbacks (`maglev::fallbacks_of`).
    pub me: Option<u16>,
}

/// What `update` decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Nothing to install.
    None,
    /// A new membership: install these buckets (with second hops).
    Membership {
        buckets: Vec<Bucket>,
        /// (id, weight) of the first hops, by id.
        members: Vec<(u16, u32)>,
        moved: usize,
        with_second_hop: usize,
    },
    /// The drain period ended: install the live table without second hops.
    Settled(Vec<Bucket>),
}

impl VipTable {
    /// Starts from a table found in the dataplane (daemon restart): its
    /// second hops are kept and settle after a full drain period. The
    /// restarted node `me` also joins (see [`VipTable::joining`]): while it
    /// was gone the others may have removed it, and when they take it back
    /// its buckets keep the owner they had meanwhile as second hop; its own
    /// table must say the same.
    pub fn resume(me: u16, live: Vec<Bucket>, now: Instant, drain: Duration) -> Self {
        let mut first_hops: Vec<u16> = live
            .iter()
            .map(|b| b.first)
            .filter(|&f| f != NO_HOP)
            .collect();
        first_hops.sort_unstable();
        first_hops.dedup();
        let settle_at = live
            .iter()
            .any(|b| b.second != NO_HOP)
            .then_some(now + drain);
        Self {
            live,
            first_hops,
            built_from: Vec::new(),
            settle_at,
            joiner: Some(me),
            me: Some(me),
        }
    }

    /// A node that starts with no table (first start, or after `lbd
    /// cleanup`). The other nodes' table is the one without it, so its own
    /// first table is built as the same transition theirs makes when it
    /// joins: buckets that move to it keep their previous owner as second
    /// hop, and connections established before the join survive the
    /// router sending them here.
    pub fn joining(me: u16) -> Self {
        Self {
            joiner: Some(me),
            me: Some(me),
            ..Default::default()
        }
    }

    /// Recomputes the table for `view`. Returns what to install; the caller
    /// installs it, then calls [`VipTable::installed`].
    pub fn update(
        &self,
        view: &[MemberView],
        table_size: u32,
        seed: u32,
        now: Instant,
    ) -> Result<Change, maglev::MaglevError> {
        let mut weighted: Vec<(u16, u32)> = view
            .iter()
            .filter(|m| m.reachable && m.serving)
            .map(|m| (m.id, m.weight))
            .collect();
        weighted.sort_unstable();
        let first: Vec<u16> = weighted.iter().map(|&(id, _)| id).collect();
        let usable = |id: u16| view.iter().any(|m| m.id == id);
        // A second hop the config no longer lists must go at once.
        let dead_second = self
            .live
            .iter()
            .any(|b| b.second != NO_HOP && !usable(b.second));
        if weighted != self.built_from || self.live.is_empty() || dead_second {
            if first.is_empty() {
                // Nobody serves: keep the table (no node announces the VIP,
                // so no packet arrives), but never name a gone member.
                if dead_second {
                    let mut buckets = self.live.clone();
                    for b in &mut buckets {
                        if b.second != NO_HOP && !usable(b.second) {
                            b.second = NO_HOP;
                        }
                    }
                    return Ok(Change::Settled(buckets));
                }
                return Ok(Change::None);
            }
            let members: Vec<Member> = view
                .iter()
                .filter(|m| first.contains(&m.id))
                .map(|m| Member {
                    id: m.id,
                    weight: m.weight,
                })
                .collect();
            let owners = maglev::build(&members, table_size, seed)?;
            let mut previous = std::borrow::Cow::Borrowed(&self.live);
            if let Some(me) = self.joiner
                && members.iter().any(|m| m.id != me)
            {
                // The others' table without this node, keeping the second
                // hops of a resumed table.
                let others: Vec<Member> = members.iter().copied().filter(|m| m.id != me).collect();
                let before = maglev::build(&others, table_size, seed)?;
                let mut prev = transition::with_second_hops(&[], &before, usable);
                if self.live.len() == prev.len() {
                    for (p, l) in prev.iter_mut().zip(&self.live) {
                        if l.second != p.first && usable(l.second) {
                            p.second = l.second;
                        }
                    }
                }
                previous = std::borrow::Cow::Owned(prev);
            }
            let mut buckets = transition::follow(&previous, &owners, usable);
            // This node only reads the fallbacks of its own buckets (the
            // first hop decides): one more build, not one per member.
            if let Some(me) = self.me {
                let fallbacks = maglev::fallbacks_of(&members, &owners, seed, me)?;
                transition::with_fallbacks(&mut buckets, &fallbacks, usable);
            }
            let moved = if previous.len() == owners.len() {
                previous
                    .iter()
                    .zip(&owners)
                    .filter(|(b, o)| b.first != **o)
                    .count()
            } else {
                owners.len()
            };
            let with_second_hop = buckets.iter().filter(|b| b.second != NO_HOP).count();
            return Ok(Change::Membership {
                buckets,
                members: weighted,
                moved,
                with_second_hop,
            });
        }
        if let Some(t) = self.settle_at
            && now >= t
        {
            let mut buckets = self.live.clone();
            transition::settle(&mut buckets);
            return Ok(Change::Settled(buckets));
        }
        Ok(Change::None)
    }

    /// Records that `change` is now live in the dataplane.
    pub fn installed(&mut self, change: Change, now: Instant, drain: Duration) {
        match change {
            Change::None => {}
            Change::Membership {
                buckets, members, ..
            } => {
                self.built_from = members;
                self.joiner = None;
                let mut first: Vec<u16> = buckets.iter().map(|b| b.first).collect();
                first.sort_unstable();
                first.dedup();
                self.settle_at = buckets
                    .iter()
                    .any(|b| b.second != NO_HOP)
                    .then_some(now + drain);
                self.first_hops = first;
                self.live = buckets;
            }
            Change::Settled(buckets) => {
                if buckets.iter().all(|b| b.second == NO_HOP) {
                    self.settle_at = None;
                }
                self.live = buckets;
            }
        }
    }

    /// Buckets per first-hop node, and buckets with a second hop.
    pub fn share(&self) -> (Vec<(u16, usize)>, usize) {
        let mut per: std::collections::BTreeMap<u16, usize> = Default::default();
        let mut second = 0;
        for b in &self.live {
            *per.entry(b.first).or_default() += 1;
            if b.second != NO_HOP {
                second += 1;
            }
        }
        (per.into_iter().collect(), second)
    }

    pub fn has_first_hop(&self, id: u16) -> bool {
        self.first_hops.contains(&id) && !self.live.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(spec: &[(u16, bool, bool)]) -> Vec<MemberView> {
        spec.iter()
            .map(|&(id, reachable, serving)| MemberView {
                id,
                weight: 1,
                reachable,
                serving,
            })
            .collect()
    }

    const SIZE: u32 = 4093;

    /// (moved, with_second_hop) of a membership change.
    fn membership(c: &Change) -> (usize, usize) {
        match c {
            Change::Membership {
                moved,
                with_second_hop,
                ..
            } => (*moved, *with_second_hop),
            other => panic!("not a membership change: {other:?}"),
        }
    }

    const DRAIN: Duration = Duration::from_secs(10);

    /// (first, second) of each bucket: what every node's table agrees on
    /// (fallbacks are only filled in on a node's own buckets).
    fn hops(t: &[Bucket]) -> Vec<(u16, u16)> {
        t.iter().map(|b| (b.first, b.second)).collect()
    }

    fn apply(t: &mut VipTable, v: &[MemberView], now: Instant) -> Change {
        let c = t.update(v, SIZE, 7, now).expect("table");
        t.installed(c.clone(), now, DRAIN);
        c
    }

    /// This node's buckets name, as fallback, their owner in the table
    /// without this node: where its buckets go if it leaves. Other
    /// buckets have none (this node never reads them); settling keeps them.
    #[test]
    fn own_buckets_get_the_owner_without_this_node_as_fallback() {
        let now = Instant::now();
        let mut t = VipTable {
            me: Some(2),
            ..Default::default()
        };
        let all = view(&[(1, true, true), (2, true, true), (3, true, true)]);
        apply(&mut t, &all, now);
        let without: Vec<Member> = [1, 3].map(|id| Member { id, weight: 1 }).to_vec();
        let other = maglev::build(&without, SIZE, 7).expect("table");
        assert!(t.live.iter().any(|b| b.first == 2));
        for (i, b) in t.live.iter().enumerate() {
            let want = if b.first == 2 { other[i] } else { NO_HOP };
            assert_eq!(b.fallback, want, "bucket {i}: {b:?}");
        }
        // Node 2 leaves: the new table gives each of its buckets to its
        // fallback, so connections sent there meanwhile stay put.
        let before = t.live.clone();
        apply(
            &mut t,
            &view(&[(1, true, true), (2, true, false), (3, true, true)]),
            now,
        );
        for (b, a) in before.iter().zip(&t.live) {
            if b.first == 2 {
                assert_eq!(a.first, b.fallback);
            }
        }
    }

    #[test]
    fn drain_keeps_the_drained_node_as_second_hop_until_the_period_ends() {
        let now = Instant::now();
        let mut t = VipTable::default();
        let c = apply(
            &mut t,
            &view(&[(1, true, true), (2, true, true), (3, true, true)]),
            now,
        );
        assert!(matches!(
            c,
            Change::Membership {
                with_second_hop: 0,
                ..
            }
        ));
        assert!(t.has_first_hop(3));
        let (share, _) = t.share();
        assert_eq!(share.len(), 3);
        // Node 3 drains: its buckets move, with 3 as second hop.
        let v = view(&[(1, true, true), (2, true, true), (3, true, false)]);
        let c = apply(&mut t, &v, now);
        let (moved, with_second_hop) = membership(&c);
        assert!(
            moved > 1300 && moved == with_second_hop,
            "{moved} {with_second_hop}"
        );
        assert!(!t.has_first_hop(3));
        assert!(t.live.iter().all(|b| b.first != 3));
        // Nothing changes before the drain period ends; then it settles.
        assert_eq!(
            apply(&mut t, &v, now + Duration::from_secs(9)),
            Change::None
        );
        assert!(matches!(
            apply(&mut t, &v, now + Duration::from_secs(11)),
            Change::Settled(_)
        ));
        assert!(t.live.iter().all(|b| b.second == NO_HOP));
        assert_eq!(
            apply(&mut t, &v, now + Duration::from_secs(12)),
            Change::None
        );
    }

    #[test]
    fn an_unreachable_node_stops_being_a_first_hop_and_stays_second_hop() {
        let now = Instant::now();
        let mut t = VipTable::default();
        apply(
            &mut t,
            &view(&[(1, true, true), (2, true, true), (3, true, true)]),
            now,
        );
        let before = t.live.clone();
        let c = apply(
            &mut t,
            &view(&[(1, true, true), (2, true, true), (3, false, false)]),
            now,
        );
        let (moved, with_second_hop) = membership(&c);
        assert!(t.live.iter().all(|b| b.first != 3));
        // A restarting lbd's XDP still serves its connections: every
        // bucket node 3 had now leads back to it.
        assert!(
            t.live
                .iter()
                .zip(&before)
                .all(|(n, o)| o.first != 3 || n.second == 3)
        );
        let from3 = before.iter().filter(|b| b.first == 3).count();
        assert!(
            moved >= from3 && with_second_hop == moved,
            "{moved} {with_second_hop} {from3}"
        );
    }

    #[test]
    fn a_second_hop_that_becomes_unreachable_stays_until_the_drain_period_ends() {
        let now = Instant::now();
        let mut t = VipTable::default();
        apply(
            &mut t,
            &view(&[(1, true, true), (2, true, true), (3, true, true)]),
            now,
        );
        apply(
            &mut t,
            &view(&[(1, true, true), (2, true, true), (3, true, false)]),
            now,
        );
        assert!(t.live.iter().any(|b| b.second == 3));
        let gone = view(&[(1, true, true), (2, true, true), (3, false, false)]);
        assert_eq!(apply(&mut t, &gone, now), Change::None);
        assert!(t.live.iter().any(|b| b.second == 3));
        let c = apply(&mut t, &gone, now + DRAIN + Duration::from_secs(1));
        assert!(matches!(c, Change::Settled(_)), "{c:?}");
        assert!(t.live.iter().all(|b| b.second == NO_HOP));
    }

    #[test]
    fn weight_change_and_new_member_move_buckets_with_second_hops() {
        let now = Instant::now();
        let mut t = VipTable::default();
        let v = view(&[(1, true, true), (2, true, true)]);
        apply(&mut t, &v, now);
        let before = t.live.clone();
        // Node 2's weight goes to 3 (a reload): same first hops, new table.
        let mut heavy = v.clone();
        heavy[1].weight = 3;
        let c = apply(&mut t, &heavy, now);
        let (moved, with_second_hop) = membership(&c);
        let (share, _) = t.share();
        assert!(share[1].1 > 2 * share[0].1, "{share:?}");
        assert!(moved > 1000 && moved == with_second_hop, "{moved}");
        assert!(
            t.live
                .iter()
                .zip(&before)
                .all(|(n, o)| n.first == o.first || n.second == o.first)
        );
        assert_eq!(apply(&mut t, &heavy, now), Change::None);
        // A member added by a reload: its buckets keep the previous owner.
        let mut three = heavy.clone();
        three.push(MemberView {
            id: 3,
            weight: 1,
            reachable: true,
            serving: true,
        });
        let c = apply(&mut t, &three, now);
        assert!(matches!(c, Change::Membership { .. }), "{c:?}");
        assert!(t.has_first_hop(3));
        assert!(
            t.live
                .iter()
                .filter(|b| b.first == 3)
                .all(|b| b.second == 1 || b.second == 2)
        );
    }

    #[test]
    fn a_joining_node_keeps_the_previous_owners_as_second_hops() {
        let now = Instant::now();
        let before = view(&[(1, true, true), (2, true, true)]);
        let after = view(&[(1, true, true), (2, true, true), (3, true, true)]);
        // Node 1 sees node 3 join; node 3 starts with no table.
        let mut on1 = VipTable::default();
        apply(&mut on1, &before, now);
        apply(&mut on1, &after, now);
        let mut on3 = VipTable::joining(3);
        let c = apply(&mut on3, &after, now);
        assert!(
            matches!(c, Change::Membership { moved, .. } if moved > 1000),
            "{c:?}"
        );
        assert_eq!(
            hops(&on3.live),
            hops(&on1.live),
            "the joiner's table is its peers' table"
        );
        assert!(
            on3.live
                .iter()
                .filter(|b| b.first == 3)
                .all(|b| b.second == 1 || b.second == 2)
        );
        // Alone, a joiner has nobody to keep as second hop.
        let mut alone = VipTable::joining(3);
        apply(&mut alone, &view(&[(3, true, true)]), now);
        assert!(
            alone
                .live
                .iter()
                .all(|b| b.first == 3 && b.second == NO_HOP)
        );
    }

    #[test]
    fn a_resumed_table_keeps_its_owners_and_joins_like_its_peers_see_it() {
        let now = Instant::now();
        let v = view(&[(1, true, true), (2, true, true), (3, true, true)]);
        let mut a = VipTable::default();
        apply(&mut a, &v, now);
        // Node 3 restarts and resumes its table: same owners; its own
        // buckets name the owner they had without it as second hop, like
        // its peers' tables when they take it back.
        let mut r = VipTable::resume(3, a.live.clone(), now, Duration::from_secs(10));
        apply(&mut r, &v, now);
        assert!(r.live.iter().zip(&a.live).all(|(x, y)| x.first == y.first));
        let mut peer = VipTable::default();
        apply(&mut peer, &view(&[(1, true, true), (2, true, true)]), now);
        apply(&mut peer, &v, now);
        assert_eq!(hops(&r.live), hops(&peer.live));
    }

    #[test]
    fn nobody_serving_keeps_the_table_and_all_nodes_agree() {
        let now = Instant::now();
        let v = view(&[(1, true, true), (2, true, true)]);
        let mut a = VipTable::default();
        let mut b = VipTable::default();
        apply(&mut a, &v, now);
        apply(&mut b, &[v[1], v[0]], now);
        assert_eq!(a.live, b.live, "member order does not matter");
        let before = a.live.clone();
        assert_eq!(
            apply(&mut a, &view(&[(1, true, false), (2, true, false)]), now),
            Change::None
        );
        assert_eq!(a.live, before);
    }
}
