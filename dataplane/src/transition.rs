//! Transition tables: how established connections survive a membership
//! change.
//!
//! When the Maglev table changes, a moved bucket's new owner (first hop)
//! sees packets of connections it has never heard of. The bucket keeps its
//! previous owner as second hop for a drain period: the first hop serves
//! what it has a socket for (and new SYNs) and forwards the rest to the
//! previous owner, which still holds the connection. After the drain period
//! [`settle`] drops the second hops and the steady state is one lookup again.
//!
//! A node that is down is never made a hop: forwarding to it would
//! blackhole the flow, while the first hop at least answers with a reset.

use dataplane_common::{Bucket, NO_HOP};
use std::fmt;

/// Buckets of the new table: `first` is the new owner; `second` is the
/// previous owner when the bucket moved and that node is `usable` (up and
/// reachable), else NO_HOP.
///
/// If `previous` is empty or of another length (first table, or the table
/// size changed), positions do not correspond: no second hops.
pub fn with_second_hops(
    previous: &[u16],
    next: &[u16],
    usable: impl Fn(u16) -> bool,
) -> Vec<Bucket> {
    if previous.len() != next.len() {
        return next
            .iter()
            .map(|&first| Bucket::new(first, NO_HOP))
            .collect();
    }
    previous
        .iter()
        .zip(next)
        .map(|(&prev, &first)| {
            let keep = prev != first && prev != NO_HOP && usable(prev);
            Bucket::new(first, if keep { prev } else { NO_HOP })
        })
        .collect()
}

/// Like [`with_second_hops`], but from the live buckets, so a change that
/// arrives while an earlier one is still draining does not cut that one
/// short: a bucket whose owner stays keeps its second hop (if still usable);
/// a bucket that moves takes its latest owner as second hop, or, when that
/// owner is down, keeps its older second hop (a drained node's connections
/// outlive a failure of the node that took its buckets). Otherwise
/// connections in a bucket that moved twice, still held by the owner before
/// last, are beyond two hops (docs/dataplane.md measures how few).
pub fn follow(previous: &[Bucket], next: &[u16], usable: impl Fn(u16) -> bool) -> Vec<Bucket> {
    if previous.len() != next.len() {
        return with_second_hops(&[], next, usable);
    }
    previous
        .iter()
        .zip(next)
        .map(|(prev, &first)| {
            let candidate = if prev.first == first {
                prev.second
            } else {
                prev.first
            };
            let hop = |n: u16| n != first && n != NO_HOP && usable(n);
            let second = if hop(candidate) {
                candidate
            } else if prev.first != first && hop(prev.second) {
                // The latest owner is down (its connections are gone with
                // it): the owner before it, still draining, keeps its own.
                prev.second
            } else {
                NO_HOP
            };
            Bucket::new(first, second)
        })
        .collect()
}

/// Gives each bucket its fallback (`fallbacks[i]`, see
/// [`crate::maglev::fallbacks`]) when that node is `usable`, else NO_HOP:
/// a first hop without a listener never sends a SYN to a node that is down.
/// Tables of another length (a resize) get none.
pub fn with_fallbacks(buckets: &mut [Bucket], fallbacks: &[u16], usable: impl Fn(u16) -> bool) {
    let same = buckets.len() == fallbacks.len();
    for (i, b) in buckets.iter_mut().enumerate() {
        let f = if same { fallbacks[i] } else { NO_HOP };
        b.fallback = if f != NO_HOP && f != b.first && usable(f) {
            f
        } else {
            NO_HOP
        };
    }
}

/// Ends the drain period: every bucket back to a single hop.
pub fn settle(buckets: &mut [Bucket]) {
    for b in buckets {
        b.second = NO_HOP;
    }
}

/// Buckets whose owner changed. Every bucket counts as moved when the sizes
/// differ, since a flow's bucket index changes with the table size.
pub fn moved(previous: &[u16], next: &[u16]) -> usize {
    if previous.len() != next.len() {
        return next.len();
    }
    previous.iter().zip(next).filter(|(a, b)| a != b).count()
}

/// What a table change does to existing connections, for logs and status.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransitionStats {
    /// Table size.
    pub buckets: usize,
    /// Buckets with a new owner.
    pub moved: usize,
    /// Moved buckets that keep their previous owner as second hop: their
    /// connections survive the change.
    pub with_second_hop: usize,
}

impl TransitionStats {
    /// Stats of `buckets`, built by [`with_second_hops`] from `previous`.
    pub fn of(previous: &[u16], buckets: &[Bucket]) -> Self {
        let moved = if previous.len() == buckets.len() {
            previous
                .iter()
                .zip(buckets)
                .filter(|(p, b)| **p != b.first)
                .count()
        } else {
            buckets.len()
        };
        TransitionStats {
            buckets: buckets.len(),
            moved,
            with_second_hop: buckets.iter().filter(|b| b.second != NO_HOP).count(),
        }
    }

    /// Moved buckets with no second hop (previous owner down, or the table
    /// was resized): their established connections break.
    pub fn orphaned(&self) -> usize {
        self.moved.saturating_sub(self.with_second_hop)
    }
}

impl fmt::Display for TransitionStats {
    /// One scannable line, e.g.
    /// `moved 6554/65537 (10.00%), second hop 6554, orphaned 0`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pct = if self.buckets == 0 {
            0.0
        } else {
            100.0 * self.moved as f64 / self.buckets as f64
        };
        write!(
            f,
            "moved {}/{} ({pct:.2}%), second hop {}, orphaned {}",
            self.moved,
            self.buckets,
            self.with_second_hop,
            self.orphaned()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::maglev::{self, Member};

    fn all_up(_: u16) -> bool {
        true
    }

    #[test]
    fn transition_moved_buckets_keep_previous_owner_as_second_hop() {
        let prev = [1, 2, 3, 1, 2];
        let next = [1, 2, 4, 4, 2];
        let b = with_second_hops(&prev, &next, all_up);
        let expect = [(1, NO_HOP), (2, NO_HOP), (4, 3), (4, 1), (2, NO_HOP)];
        let got: Vec<(u16, u16)> = b.iter().map(|b| (b.first, b.second)).collect();
        assert_eq!(got, expect);
        let s = TransitionStats::of(&prev, &b);
        assert_eq!(
            s,
            TransitionStats {
                buckets: 5,
                moved: 2,
                with_second_hop: 2
            }
        );
        assert_eq!(s.orphaned(), 0);
        assert_eq!(moved(&prev, &next), 2);
    }

    #[test]
    fn transition_down_node_is_never_a_hop() {
        // Node 3 failed: its buckets move to others and must not point back.
        let prev = [1, 3, 3, 2];
        let next = [1, 1, 2, 2];
        let b = with_second_hops(&prev, &next, |id| id != 3);
        assert!(b.iter().all(|b| b.second != 3 && b.first != 3));
        assert!(b.iter().all(|b| b.second == NO_HOP));
        let s = TransitionStats::of(&prev, &b);
        assert_eq!((s.moved, s.with_second_hop, s.orphaned()), (2, 0, 2));
    }

    #[test]
    fn transition_unchanged_buckets_have_no_second_hop() {
        let t = [5, 6, 7, 5];
        let b = with_second_hops(&t, &t, all_up);
        assert!(
            b.iter()
                .zip(t)
                .all(|(b, id)| b.first == id && b.second == NO_HOP)
        );
        assert_eq!(TransitionStats::of(&t, &b).moved, 0);
    }

    #[test]
    fn transition_mismatched_lengths_have_no_second_hops() {
        let next = [1, 2, 3];
        for prev in [&[][..], &[4, 4, 4, 4, 4][..]] {
            let b = with_second_hops(prev, &next, all_up);
            assert_eq!(b.len(), 3);
            assert!(
                b.iter()
                    .zip(next)
                    .all(|(b, id)| b.first == id && b.second == NO_HOP)
            );
            assert_eq!(moved(prev, &next), 3);
            let s = TransitionStats::of(prev, &b);
            assert_eq!((s.moved, s.with_second_hop, s.orphaned()), (3, 0, 3));
        }
    }

    #[test]
    fn transition_empty_previous_entry_is_never_a_hop() {
        // Even with a careless `usable`, NO_HOP is not a node.
        let b = with_second_hops(&[NO_HOP, 1], &[2, 2], all_up);
        assert_eq!(b[0], Bucket::new(2, NO_HOP));
        assert_eq!(b[1], Bucket::new(2, 1));
    }

    #[test]
    fn transition_settle_clears_every_second_hop() {
        let mut b = with_second_hops(&[1, 2, 3], &[2, 2, 1], all_up);
        assert_eq!(TransitionStats::of(&[1, 2, 3], &b).with_second_hop, 2);
        settle(&mut b);
        assert_eq!(b, [2, 2, 1].map(|first| Bucket::new(first, NO_HOP)));
    }

    #[test]
    fn transition_node_join_on_real_tables() {
        // Four nodes become five, all up: every moved bucket keeps its
        // previous owner, so no connection is orphaned.
        let four: Vec<Member> = (1..=4).map(|id| Member { id, weight: 1 }).collect();
        let five: Vec<Member> = (1..=5).map(|id| Member { id, weight: 1 }).collect();
        let prev = maglev::build(&four, 65537, 9).expect("valid input");
        let next = maglev::build(&five, 65537, 9).expect("valid input");
        let b = with_second_hops(&prev, &next, all_up);
        let s = TransitionStats::of(&prev, &b);
        assert_eq!(s.moved, moved(&prev, &next));
        assert_eq!(s.with_second_hop, s.moved);
        assert!(b.iter().all(|b| b.second == NO_HOP || b.first != b.second));
        let line = s.to_string();
        assert!(
            line.starts_with(&format!("moved {}/65537 (", s.moved)),
            "{line}"
        );
        assert!(line.ends_with("orphaned 0"), "{line}");
    }

    #[test]
    fn follow_keeps_a_draining_second_hop_and_chains_moves() {
        let live = [
            Bucket::new(4, 1), // moved 1 -> 4, draining
            Bucket::new(2, NO_HOP),
            Bucket::new(4, 3),
            Bucket::new(1, NO_HOP),
        ];
        let next = [4, 1, 2, 1];
        let b = follow(&live, &next, |n| n != 3);
        assert_eq!(b[0], Bucket::new(4, 1), "owner stays: drain continues");
        assert_eq!(b[1], Bucket::new(1, 2), "moved: latest owner is second");
        assert_eq!(b[2], Bucket::new(2, 4), "moved again: latest owner wins");
        assert_eq!(b[3], Bucket::new(1, NO_HOP));
        let down = follow(&live, &[4, 2, 4, 1], |n| n != 1);
        assert_eq!(down[0].second, NO_HOP, "a down node is never a hop");
    }

    /// Node 1 drained (its buckets went to 4, 1 second hop), then 4 fails:
    /// those buckets move on to 2 and keep 1 as second hop, since 4's own
    /// connections died with it; a bucket whose old second hop is down
    /// too, or is the new owner, gets none.
    #[test]
    fn follow_keeps_the_drained_second_hop_when_the_latest_owner_fails() {
        let live = [
            Bucket::new(4, 1),
            Bucket::new(4, 2),
            Bucket::new(4, 3),
            Bucket::new(4, NO_HOP),
        ];
        let b = follow(&live, &[2, 2, 2, 2], |n| n != 4 && n != 3);
        assert_eq!(
            b[0],
            Bucket::new(2, 1),
            "the drained node keeps its connections"
        );
        assert_eq!(b[1], Bucket::new(2, NO_HOP), "never the new owner itself");
        assert_eq!(b[2], Bucket::new(2, NO_HOP), "never a down node");
        assert_eq!(b[3], Bucket::new(2, NO_HOP));
    }
}
