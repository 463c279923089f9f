//! Maglev consistent hashing (Eisenbud et al., NSDI 2016), weighted the way
//! Katran's `MaglevHashV2` does it.
//!
//! Every node builds each VIP's table on its own and the XDP program only
//! indexes the result, so nodes agree on a flow's owner without talking to
//! each other. That only works if the table is a pure function of
//! (membership, table size, seed):
//!
//! - each member's permutation comes from a fixed hash of its id and the
//!   cluster seed (the kernel's jhash, shared with the flow hash), never from
//!   std's randomly keyed hashers; colliding skips are resolved in id order
//!   (see `distinct_skips`);
//! - members are placed in id order, whatever order the caller lists them in:
//!   the membership is a set, so two nodes that learned it in a different
//!   order still build the same table.
//!
//! The table is also what the flow predictor and the tests use to say which
//! node owns a flow.

use dataplane_common::{MAX_NODES, MAX_TABLE_SIZE, NO_HOP, jhash_3words};
use std::time::Instant;

/// Table size used unless a VIP asks for another. Equal-weight members get
/// shares one bucket apart at most, so up to 655 nodes (M > 100·N) every
/// share is within 1% of fair.
pub const DEFAULT_TABLE_SIZE: u32 = 65537;

/// Salts that make a member's offset and skip two independent hashes.
const OFFSET_SALT: u32 = 0x6f66_6673; // "offs"
const SKIP_SALT: u32 = 0x736b_6970; // "skip"

/// One node of a VIP's membership.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Member {
    /// Node id, 1..MAX_NODES (0 is `NO_HOP`).
    pub id: u16,
    /// Relative share of the buckets; 0 keeps the node out of the table
    /// (drained) while it stays a known member.
    pub weight: u32,
}

/// Why a table could not be built.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MaglevError {
    #[error("Maglev table size {0} is not prime; use a prime such as 65537, 16381 or 4093")]
    NotPrime(u32),
    #[error("Maglev table size {size} is larger than the dataplane maximum {max}")]
    TooLarge { size: u32, max: u32 },
    #[error("no member has a weight above 0: a table needs at least one node to own its buckets")]
    NoWeight,
    #[error("node id {0} appears more than once in the membership")]
    DuplicateId(u16),
    #[error("node id {id} is out of range: node ids are 1..={max}")]
    InvalidId { id: u16, max: u32 },
}

/// A member's walk through its permutation of the table.
struct Cursor {
    id: u16,
    weight: u64,
    /// Katran's cumulative weight: a member places one entry per round once
    /// this reaches the largest weight, so shares follow the weights.
    credit: u64,
    /// Next position of the permutation (offset + k·skip mod M), kept
    /// incrementally so the hot loop has no division.
    pos: u32,
    skip: u32,
}

impl Cursor {
    #[inline]
    fn advance(&mut self, size: u32) {
        // pos and skip are below size <= MAX_TABLE_SIZE: no overflow, and
        // one subtraction wraps.
        self.pos += self.skip;
        if self.pos >= size {
            self.pos -= size;
        }
    }
}

/// Builds a VIP's table: entry i is the node that owns flows hashing to
/// bucket i. The result depends only on the set of members (the order of
/// `members` does not matter), their weights, `table_size` and `seed`.
pub fn build(members: &[Member], table_size: u32, seed: u32) -> Result<Vec<u16>, MaglevError> {
    check_table_size(table_size)?;
    let mut cursors = cursors(members, table_size, seed)?;
    let max_weight = cursors
        .iter()
        .map(|c| c.weight)
        .max()
        .ok_or(MaglevError::NoWeight)?;

    // NO_HOP marks an empty entry: ids are never 0, so the table is its own
    // "filled" bitmap.
    let mut table = vec![NO_HOP; table_size as usize];
    let mut filled = 0u32;
    // Terminates: the heaviest member places one entry every round, and each
    // permutation visits every position, so an empty one is always found.
    loop {
        for c in cursors.iter_mut() {
            c.credit += c.weight;
            if c.credit < max_weight {
                continue;
            }
            c.credit -= max_weight;
            while table[c.pos as usize] != NO_HOP {
                c.advance(table_size);
            }
            table[c.pos as usize] = c.id;
            c.advance(table_size);
            filled += 1;
            if filled == table_size {
                return Ok(table);
            }
        }
    }
}

/// Each bucket's fallback: the owner bucket i would have if its owner in
/// `table` (the result of [`build`] over the same `members`, size and seed)
/// were not a member, i.e. `build(members without table[i])[i]`; NO_HOP when
/// no other member has a weight. Every node computes the same fallbacks,
/// and when the owner does leave, the table every node builds then gives
/// each of its buckets to exactly this node: connections a first hop sent
/// to the fallback stay where the next table puts them.
///
/// Costs one [`build`] per member owning buckets (N builds); a node only
/// ever uses the fallbacks of its own buckets, which [`fallbacks_of`]
/// computes with one build.
pub fn fallbacks(members: &[Member], table: &[u16], seed: u32) -> Result<Vec<u16>, MaglevError> {
    let mut owners: Vec<u16> = table.to_vec();
    owners.sort_unstable();
    owners.dedup();
    let mut out = vec![NO_HOP; table.len()];
    for owner in owners {
        for (o, f) in out
            .iter_mut()
            .zip(fallbacks_of(members, table, seed, owner)?)
        {
            if f != NO_HOP {
                *o = f;
            }
        }
    }
    Ok(out)
}

/// [`fallbacks`] of the buckets `owner` owns in `table`; NO_HOP elsewhere.
pub fn fallbacks_of(
    members: &[Member],
    table: &[u16],
    seed: u32,
    owner: u16,
) -> Result<Vec<u16>, MaglevError> {
    let size = u32::try_from(table.len()).unwrap_or(u32::MAX);
    check_table_size(size)?;
    let mut out = vec![NO_HOP; table.len()];
    if !table.contains(&owner) {
        return Ok(out);
    }
    let rest: Vec<Member> = members.iter().copied().filter(|m| m.id != owner).collect();
    let without = match build(&rest, size, seed) {
        Ok(t) => t,
        Err(MaglevError::NoWeight) => return Ok(out),
        Err(e) => return Err(e),
    };
    for ((o, &first), w) in out.iter_mut().zip(table).zip(without) {
        if first == owner {
            *o = w;
        }
    }
    Ok(out)
}

fn check_table_size(size: u32) -> Result<(), MaglevError> {
    if size > MAX_TABLE_SIZE {
        return Err(MaglevError::TooLarge {
            size,
            max: MAX_TABLE_SIZE,
        });
    }
    if !is_prime(size) {
        return Err(MaglevError::NotPrime(size));
    }
    Ok(())
}

/// Trial division: sizes are at most MAX_TABLE_SIZE, so at most 255 steps.
fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2u32;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

/// Validates the members and returns the cursors of those with a weight,
/// in id order.
fn cursors(members: &[Member], size: u32, seed: u32) -> Result<Vec<Cursor>, MaglevError> {
    let mut seen = [false; MAX_NODES as usize];
    let mut cursors = Vec::with_capacity(members.len());
    for m in members {
        if m.id == NO_HOP || u32::from(m.id) >= MAX_NODES {
            return Err(MaglevError::InvalidId {
                id: m.id,
                max: MAX_NODES - 1,
            });
        }
        let slot = &mut seen[usize::from(m.id)];
        if *slot {
            return Err(MaglevError::DuplicateId(m.id));
        }
        *slot = true;
        if m.weight == 0 {
            continue;
        }
        cursors.push(Cursor {
            id: m.id,
            weight: u64::from(m.weight),
            credit: 0,
            pos: offset(m.id, size, seed),
            skip: skip(m.id, size, seed, 0),
        });
    }
    cursors.sort_unstable_by_key(|c| c.id);
    distinct_skips(&mut cursors, size, seed);
    Ok(cursors)
}

/// Where a member's walk starts: 0..M.
fn offset(id: u16, size: u32, seed: u32) -> u32 {
    jhash_3words(u32::from(id), OFFSET_SALT, 0, seed) % size
}

/// A member's step, attempt 0 unless it collided: 1..M, hence coprime with
/// the prime M, so the walk visits every position once.
fn skip(id: u16, size: u32, seed: u32, attempt: u32) -> u32 {
    jhash_3words(u32::from(id), SKIP_SALT, attempt, seed) % (size - 1) + 1
}

/// Makes the members' skips distinct, in id order.
///
/// Two members with the same skip walk the same cycle, one a fixed distance
/// behind the other: they fight over the same positions, and any membership
/// change reshuffles buckets between them (measured up to 1.9x the ideal
/// 1/N movement at N = 9). With M - 1 possible skips that happens for ~9%
/// of seeds at N = 100 and M = 65537, and lasts as long as the membership.
/// So a member whose skip is taken by a lower id rehashes. The price is
/// rare: a join or leave of a member that collides with another (chance
/// ~N/M) changes that other member's skip too.
fn distinct_skips(cursors: &mut [Cursor], size: u32, seed: u32) {
    /// Bounded so tables smaller than the membership (where distinct skips
    /// cannot exist) still build; never reached on real sizes.
    const ATTEMPTS: u32 = 32;
    let mut taken = vec![0u64; (size as usize).div_ceil(64)];
    let is_taken = |taken: &[u64], s: u32| taken[(s / 64) as usize] & (1 << (s % 64)) != 0;
    for c in cursors {
        let mut attempt = 0;
        while is_taken(&taken, c.skip) && attempt < ATTEMPTS {
            attempt += 1;
            c.skip = skip(c.id, size, seed, attempt);
        }
        taken[(c.skip / 64) as usize] |= 1 << (c.skip % 64);
    }
}

/// Median wall time in milliseconds of `runs` builds (at least one) of a
/// table of `table_size` with `nodes` equally weighted members, ids
/// 1..=nodes. For the dataplane benchmark binary.
///
/// # Panics
/// If the arguments cannot make a table (`nodes` is 0 or at least
/// MAX_NODES, or `table_size` is invalid): they are the benchmark's own
/// constants, not outside input.
pub fn bench_build_ms(nodes: usize, table_size: u32, runs: usize) -> f64 {
    let members: Vec<Member> = (1..=nodes)
        .map(|id| Member {
            id: u16::try_from(id).unwrap_or(u16::MAX),
            weight: 1,
        })
        .collect();
    let mut times: Vec<f64> = (0..runs.max(1))
        .map(|run| {
            let start = Instant::now();
            let table = build(&members, table_size, run as u32);
            let ms = start.elapsed().as_secs_f64() * 1e3;
            if let Err(e) = std::hint::black_box(table) {
                panic!("bench_build_ms({nodes}, {table_size}, {runs}): {e}");
            }
            ms
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::HashMap;

    fn equal(ids: impl IntoIterator<Item = u16>) -> Vec<Member> {
        ids.into_iter().map(|id| Member { id, weight: 1 }).collect()
    }

    fn counts(table: &[u16]) -> HashMap<u16, usize> {
        let mut c = HashMap::new();
        for &id in table {
            *c.entry(id).or_insert(0) += 1;
        }
        c
    }

    /// Each member's final skip, in id order.
    fn skips(ids: &[u16], size: u32, seed: u32) -> Vec<(u16, u32)> {
        let c = cursors(&equal(ids.iter().copied()), size, seed).expect("valid input");
        c.iter().map(|c| (c.id, c.skip)).collect()
    }

    fn moved(a: &[u16], b: &[u16]) -> usize {
        a.iter().zip(b).filter(|(x, y)| x != y).count()
    }

    /// Pins the algorithm: hash, salts, permutation walk, weights, skip
    /// collisions and placement order. If this fails, tables differ across
    /// a rolling upgrade and nodes disagree on owners: change it only on
    /// purpose.
    #[test]
    fn maglev_golden_tables() {
        let table = build(&equal([1, 2, 3]), 13, 0).expect("valid input");
        assert_eq!(table, [1, 3, 1, 2, 3, 3, 1, 1, 2, 2, 2, 1, 3]);

        let weighted = [Member { id: 1, weight: 1 }, Member { id: 2, weight: 3 }];
        let table = build(&weighted, 13, 7).expect("valid input");
        assert_eq!(table, [2, 2, 1, 2, 2, 2, 1, 2, 2, 2, 2, 2, 1]);

        let big = build(&equal(1..=5), DEFAULT_TABLE_SIZE, 42).expect("valid input");
        assert_eq!(big[..8], [4, 4, 4, 4, 4, 5, 4, 3]);
        assert_eq!(big[65529..], [5, 1, 5, 3, 2, 4, 4, 4]);

        // Nodes 13 and 686 collide on skip with this seed.
        let ids = [800, 13, 86, 677, 965, 686, 845, 560, 716];
        let table = build(&equal(ids), DEFAULT_TABLE_SIZE, 1_145_803_801).expect("valid input");
        assert_eq!(table[..8], [845, 13, 677, 686, 86, 13, 965, 86]);
    }

    /// Pins the fallback definition on the first golden table.
    #[test]
    fn maglev_golden_fallbacks() {
        let m = equal([1, 2, 3]);
        let table = build(&m, 13, 0).expect("valid input");
        let fb = fallbacks(&m, &table, 0).expect("valid input");
        let without = |id: u16| build(&equal([1, 2, 3].into_iter().filter(|&x| x != id)), 13, 0);
        let (w1, w2, w3) = (
            without(1).expect("valid"),
            without(2).expect("valid"),
            without(3).expect("valid"),
        );
        for i in 0..13 {
            let want = match table[i] {
                1 => w1[i],
                2 => w2[i],
                _ => w3[i],
            };
            assert_eq!(fb[i], want, "bucket {i}");
        }
        assert_eq!(fb, [3, 1, 2, 1, 2, 2, 2, 2, 1, 3, 1, 3, 2]);
        // One owner's share, as a node computes its own.
        let of2 = fallbacks_of(&m, &table, 0, 2).expect("valid input");
        for i in 0..13 {
            let want = if table[i] == 2 { fb[i] } else { NO_HOP };
            assert_eq!(of2[i], want, "bucket {i}");
        }
        // One member: nobody to fall back to.
        let one = build(&equal([4]), 13, 0).expect("valid input");
        assert_eq!(fallbacks(&equal([4]), &one, 0), Ok(vec![NO_HOP; 13]));
        assert_eq!(
            fallbacks(&m, &table[..12], 0),
            Err(MaglevError::NotPrime(12))
        );
    }

    #[test]
    fn maglev_rejects_bad_table_sizes() {
        let m = equal([1]);
        assert_eq!(build(&m, 65536, 0), Err(MaglevError::NotPrime(65536)));
        assert_eq!(build(&m, 0, 0), Err(MaglevError::NotPrime(0)));
        assert_eq!(build(&m, 1, 0), Err(MaglevError::NotPrime(1)));
        assert_eq!(
            build(&m, 65539, 0),
            Err(MaglevError::TooLarge {
                size: 65539,
                max: MAX_TABLE_SIZE
            })
        );
        let msg = MaglevError::NotPrime(65536).to_string();
        assert!(msg.contains("65536"), "{msg}");
    }

    #[test]
    fn maglev_rejects_bad_members() {
        assert_eq!(build(&[], 13, 0), Err(MaglevError::NoWeight));
        let drained = [Member { id: 1, weight: 0 }, Member { id: 2, weight: 0 }];
        assert_eq!(build(&drained, 13, 0), Err(MaglevError::NoWeight));
        assert_eq!(
            build(&equal([1, 2, 1]), 13, 0),
            Err(MaglevError::DuplicateId(1))
        );
        // A drained duplicate is still a duplicate: the membership is wrong.
        let dup = [Member { id: 5, weight: 1 }, Member { id: 5, weight: 0 }];
        assert_eq!(build(&dup, 13, 0), Err(MaglevError::DuplicateId(5)));
        assert_eq!(
            build(&equal([0]), 13, 0),
            Err(MaglevError::InvalidId { id: 0, max: 1023 })
        );
        assert_eq!(
            build(&equal([1, 1024]), 13, 0),
            Err(MaglevError::InvalidId {
                id: 1024,
                max: 1023
            })
        );
        assert!(build(&equal([1023]), 13, 0).is_ok());
        let msg = MaglevError::InvalidId {
            id: 1024,
            max: 1023,
        }
        .to_string();
        assert!(msg.contains("1024") && msg.contains("1023"), "{msg}");
        assert!(MaglevError::DuplicateId(7).to_string().contains('7'));
    }

    #[test]
    fn maglev_zero_weight_member_owns_nothing() {
        let m = [
            Member { id: 1, weight: 1 },
            Member { id: 2, weight: 0 },
            Member { id: 3, weight: 1 },
        ];
        let table = build(&m, 1009, 3).expect("valid input");
        assert!(!table.contains(&2));
        // Same table as if node 2 were not listed at all.
        assert_eq!(table, build(&equal([1, 3]), 1009, 3).expect("valid input"));
    }

    #[test]
    fn maglev_tiny_tables_are_full() {
        // Fewer buckets than members: every bucket still has an owner.
        let table = build(&equal(1..=10), 7, 1).expect("valid input");
        assert!(table.iter().all(|&id| (1..=10).contains(&id)));
        assert_eq!(build(&equal([9]), 2, 0), Ok(vec![9, 9]));
    }

    #[test]
    fn maglev_seed_changes_the_table() {
        let m = equal(1..=8);
        let a = build(&m, 4093, 1).expect("valid input");
        let b = build(&m, 4093, 2).expect("valid input");
        assert!(moved(&a, &b) > 4093 / 2);
    }

    #[test]
    fn maglev_bench_helper_reports_a_time() {
        // Ten nodes into 4093 buckets takes microseconds to a few ms; a
        // zero or an hour means the helper does not time the build.
        let ms = bench_build_ms(10, 4093, 3);
        assert!(ms > 0.0 && ms < 1000.0, "{ms} ms");
    }

    /// A prime table size above 100·n, as the operator guide recommends.
    fn size_for(n: usize) -> impl Strategy<Value = u32> {
        prop::sample::select(vec![4093u32, 10007, 16381, 65537])
            .prop_filter("M > 100·N", move |&m| m as usize > 100 * n)
    }

    /// `n` distinct ids in 1..MAX_NODES, in random order.
    fn ids(n: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Vec<u16>> {
        prop::collection::btree_set(1u16..1024, n)
            .prop_map(|s| s.into_iter().collect())
            .prop_shuffle()
    }

    /// Equally weighted ids and a table size above 100·N.
    fn membership_and_size() -> impl Strategy<Value = (Vec<u16>, u32)> {
        ids(1..=60).prop_flat_map(|ids| {
            let n = ids.len();
            (Just(ids), size_for(n))
        })
    }

    /// Members with weights 1..=100.
    fn weighted() -> impl Strategy<Value = Vec<Member>> {
        ids(1..=30)
            .prop_flat_map(|ids| {
                let n = ids.len();
                (Just(ids), prop::collection::vec(1u32..=100, n))
            })
            .prop_map(|(ids, w)| {
                let m = ids.into_iter().zip(w);
                m.map(|(id, weight)| Member { id, weight }).collect()
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn maglev_prop_imbalance_within_one_percent(
            (ids, size) in membership_and_size(),
            seed in any::<u32>(),
        ) {
            let table = build(&equal(ids.iter().copied()), size, seed).expect("valid input");
            let c = counts(&table);
            prop_assert_eq!(c.len(), ids.len());
            let fair = f64::from(size) / ids.len() as f64;
            let max = *c.values().max().expect("non-empty") as f64;
            let min = *c.values().min().expect("non-empty") as f64;
            prop_assert!(
                max <= fair * 1.01 && min >= fair * 0.99,
                "fair {fair}, min {min}, max {max}"
            );
        }

        #[test]
        fn maglev_prop_weights_respected(members in weighted(), seed in any::<u32>()) {
            let size = DEFAULT_TABLE_SIZE;
            let table = build(&members, size, seed).expect("valid input");
            let c = counts(&table);
            let total: u64 = members.iter().map(|m| u64::from(m.weight)).sum();
            for m in &members {
                let expected = f64::from(size) * f64::from(m.weight) / total as f64;
                let got = c.get(&m.id).copied().unwrap_or(0) as f64;
                // Within 2%, plus a couple of buckets of rounding for tiny shares.
                prop_assert!(
                    (got - expected).abs() <= expected * 0.02 + 2.0,
                    "node {} weight {}: {} buckets, expected {:.1}", m.id, m.weight, got, expected
                );
            }
        }

        #[test]
        fn maglev_prop_same_input_same_table_any_order(
            ids in ids(1..=40),
            seed in any::<u32>(),
            rotate in any::<prop::sample::Index>(),
        ) {
            let members = equal(ids.iter().copied());
            let a = build(&members, 16381, seed).expect("valid input");
            let b = build(&members, 16381, seed).expect("valid input");
            prop_assert_eq!(&a, &b);
            // Reversed and rotated: the membership is a set.
            let mut other = members.clone();
            other.reverse();
            let k = rotate.index(other.len());
            other.rotate_left(k);
            prop_assert_eq!(&a, &build(&other, 16381, seed).expect("valid input"));
        }

        /// The fallback definition, checked against an independent build:
        /// fallback != owner, it is the owner of the bucket in the table
        /// built without the owner, never a zero-weight member, and the
        /// result does not depend on the members' order.
        #[test]
        fn maglev_prop_fallback_is_the_owner_without_the_first(
            members in weighted(),
            seed in any::<u32>(),
            pick in any::<prop::sample::Index>(),
        ) {
            let size = 4093;
            let mut members = members;
            // One drained member: it must never be a fallback.
            let k = pick.index(members.len());
            let drained = members[k].id;
            if members.len() > 1 {
                members[k].weight = 0;
            }
            let table = build(&members, size, seed).expect("valid input");
            let fb = fallbacks(&members, &table, seed).expect("valid input");
            let weighted = members.iter().filter(|m| m.weight > 0).count();
            let owner = table[pick.index(table.len())];
            let rest: Vec<Member> = members.iter().copied().filter(|m| m.id != owner).collect();
            let without = build(&rest, size, seed).ok();
            for (i, (&first, &f)) in table.iter().zip(&fb).enumerate() {
                if weighted == 1 {
                    prop_assert_eq!(f, NO_HOP);
                    continue;
                }
                prop_assert_ne!(f, first, "bucket {}", i);
                prop_assert_ne!(f, NO_HOP);
                if members.len() > 1 {
                    prop_assert_ne!(f, drained);
                }
                if first == owner {
                    prop_assert_eq!(Some(f), without.as_ref().map(|w| w[i]), "bucket {}", i);
                }
            }
            let mut reversed = members.clone();
            reversed.reverse();
            prop_assert_eq!(fb, fallbacks(&reversed, &table, seed).expect("valid input"));
        }

        /// A table with N nodes against the same table without one of
        /// them: that is node N joining, or leaving (movement is symmetric).
        /// The ideal moves the node's 1/N share and nothing else.
        #[test]
        fn maglev_prop_adding_or_removing_one_node_moves_about_one_nth(
            ids in ids(2..=60),
            seed in any::<u32>(),
            pick in any::<prop::sample::Index>(),
        ) {
            let size = DEFAULT_TABLE_SIZE;
            let n = ids.len();
            let changed = ids[pick.index(n)];
            let rest: Vec<u16> = ids.iter().copied().filter(|&id| id != changed).collect();
            // The documented exception (see distinct_skips): the changed
            // node collided with a member, whose skip changes with it.
            let kept = skips(&ids, size, seed).into_iter().filter(|(id, _)| *id != changed);
            prop_assume!(kept.eq(skips(&rest, size, seed)));
            let with = build(&equal(ids.iter().copied()), size, seed).expect("valid input");
            let without = build(&equal(rest.iter().copied()), size, seed).expect("valid input");
            prop_assert!(!without.contains(&changed));
            let frac = moved(&with, &without) as f64 / f64::from(size);
            let ideal = 1.0 / n as f64;
            // At least the changed node's buckets, and not much more.
            prop_assert!(
                frac >= ideal * 0.99 && frac <= ideal * 1.5,
                "n {n}: moved {frac:.4}, ideal {ideal:.4}"
            );
        }
    }

    /// Maglev trades some extra churn for perfect balance: the extra grows
    /// with N/M. Measured at M = 65537 over 20 seeds: N = 10 moves
    /// 1.02-1.04x the ideal 1/N, N = 30 1.09-1.16x, N = 100 1.52-1.62x,
    /// N = 300 3.4-3.7x. The property tests cover N <= 60 with a 1.5x
    /// bound; this pins N = 100 so a placement regression still shows.
    #[test]
    fn maglev_movement_at_hundred_nodes() {
        let size = DEFAULT_TABLE_SIZE;
        for seed in 0..3u32 {
            let table = build(&equal(1..=100), size, seed).expect("valid input");
            let gone = (seed * 37 % 100 + 1) as u16;
            let removed =
                build(&equal((1..=100).filter(|&id| id != gone)), size, seed).expect("valid input");
            let added = build(&equal((1..=100).chain([500])), size, seed).expect("valid input");
            let rm = moved(&table, &removed) as f64 / f64::from(size) * 100.0;
            let add = moved(&table, &added) as f64 / f64::from(size) * 101.0;
            assert!(
                (1.0..=1.75).contains(&rm),
                "seed {seed}: removal moved {rm:.3}x 1/N"
            );
            assert!(
                (1.0..=1.75).contains(&add),
                "seed {seed}: addition moved {add:.3}x 1/(N+1)"
            );
        }
    }

    /// Found by the property test: nodes 13 and 686 hash to the same skip
    /// with this seed. Before skips were made distinct, adding any one of
    /// these nine nodes moved 1.4-1.9x the ideal 1/N. Now only adding 13
    /// costs more (686 changes skip with it): the documented price.
    #[test]
    fn maglev_colliding_skips_do_not_inflate_movement() {
        let ids = [800u16, 13, 86, 677, 965, 686, 845, 560, 716];
        let seed = 1_145_803_801;
        let size = DEFAULT_TABLE_SIZE;
        assert_eq!(skip(13, size, seed, 0), skip(686, size, seed, 0));
        let c = cursors(&equal(ids), size, seed).expect("valid input");
        let mut skips: Vec<u32> = c.iter().map(|c| c.skip).collect();
        skips.sort_unstable();
        skips.dedup();
        assert_eq!(skips.len(), ids.len());
        let after = build(&equal(ids), size, seed).expect("valid input");
        for added in ids {
            let before = build(
                &equal(ids.into_iter().filter(|&id| id != added)),
                size,
                seed,
            )
            .expect("valid input");
            let ratio = moved(&before, &after) as f64 / f64::from(size) * ids.len() as f64;
            let bound = if added == 13 { 2.1 } else { 1.1 };
            assert!(ratio <= bound, "adding {added} moved {ratio:.3}x 1/N");
        }
    }
}
