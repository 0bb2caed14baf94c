//! How many lost legs a volume survives, counted the way its RAID level
//! lays out its copies: parity levels survive as many losses as they have
//! parity devices wherever they fall; mirrors lose data only when every
//! copy of some chunk is gone, so raid10 counts per copy set, not in total.
//!
//! raid10 copy sets (md's raid10 as dm-raid configures it): `near` puts the
//! copies of chunk k on `copies` consecutive devices starting at k·copies
//! (mod legs), so the sets are the windows of `copies` devices starting at
//! every multiple of gcd(copies, legs); `far` and `offset` keep the copies
//! inside "far sets" of `copies` devices (dm-raid sets RAID10_USE_FAR_SETS;
//! the last set takes the remainder), rotated by one device per copy, so
//! the sets are the cyclic windows inside each far set.

use crate::params::{Raid10Format, RaidSpec};
use std::collections::BTreeSet;

/// What a set of failed legs leaves of a volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Survival {
    /// Some data has no copy left: the legs of one copy set (or more legs
    /// than the parity covers) are all gone.
    pub lost: bool,
    /// Failures it survives from here whatever legs fail next (0 when lost).
    pub left: u32,
    /// A copy set with every leg failed, for the message (raid1/raid10).
    pub lost_set: Option<Vec<usize>>,
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The sets of legs that each hold every copy of some chunk (raid1: all
/// legs; raid10: per layout). Empty for levels without copies.
pub fn copy_sets(spec: &RaidSpec) -> Vec<Vec<usize>> {
    let n = spec.legs as usize;
    match spec.raid_type.level() {
        1 => vec![(0..n).collect()],
        10 => {
            let c = (spec.copies() as usize).clamp(1, n.max(1));
            match spec.raid10_format.unwrap_or_default() {
                Raid10Format::Near => {
                    let g = gcd(c, n).max(1);
                    (0..n)
                        .step_by(g)
                        .map(|s| (0..c).map(|j| (s + j) % n).collect())
                        .collect()
                }
                Raid10Format::Far | Raid10Format::Offset => {
                    let sets = (n / c).max(1);
                    let mut out = Vec::new();
                    for k in 0..sets {
                        let base = k * c;
                        let size = if k + 1 == sets { n - base } else { c };
                        for d in 0..size {
                            out.push((0..c).map(|j| base + (d + j) % size).collect());
                        }
                    }
                    out
                }
            }
        }
        _ => Vec::new(),
    }
}

/// What losing `failed` (leg indexes) leaves of a volume of `spec`.
pub fn survival(spec: &RaidSpec, failed: &BTreeSet<usize>) -> Survival {
    let n = failed.len() as u32;
    let level = spec.raid_type.level();
    if level == 0 {
        return Survival {
            lost: n > 0,
            left: 0,
            lost_set: None,
        };
    }
    let sets = copy_sets(spec);
    if sets.is_empty() {
        let parity = spec.raid_type.parity();
        return Survival {
            lost: n > parity,
            left: parity.saturating_sub(n),
            lost_set: None,
        };
    }
    let lost_set = sets
        .iter()
        .find(|s| s.iter().all(|l| failed.contains(l)))
        .cloned();
    let left = sets
        .iter()
        .map(|s| s.iter().filter(|l| !failed.contains(l)).count() as u32)
        .min()
        .unwrap_or(0)
        .saturating_sub(1);
    Survival {
        lost: lost_set.is_some(),
        left: if lost_set.is_some() { 0 } else { left },
        lost_set,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn spec(kv: &[(&str, &str)]) -> RaidSpec {
        RaidSpec::from_pairs(kv).unwrap()
    }

    fn set(legs: &[usize]) -> BTreeSet<usize> {
        legs.iter().copied().collect()
    }

    #[test]
    fn raid10_near_loses_data_only_when_a_whole_mirror_goes() {
        let s = spec(&[("raidType", "raid10"), ("legs", "4")]);
        assert_eq!(copy_sets(&s), vec![vec![0, 1], vec![2, 3]]);
        let two_mirrors = survival(&s, &set(&[0, 2]));
        assert!(!two_mirrors.lost, "legs 0 and 2 are in different mirrors");
        assert_eq!(two_mirrors.left, 0);
        let one_mirror = survival(&s, &set(&[2, 3]));
        assert!(one_mirror.lost);
        assert_eq!(one_mirror.lost_set, Some(vec![2, 3]));
        assert_eq!(survival(&s, &set(&[])).left, 1);
    }

    #[test]
    fn raid10_near_with_an_odd_number_of_legs_overlaps_its_mirrors() {
        // 3 legs, 2 copies: chunk copies on (0,1), (2,0), (1,2).
        let s = spec(&[("raidType", "raid10"), ("legs", "3")]);
        assert_eq!(copy_sets(&s).len(), 3);
        for pair in [[0, 1], [1, 2], [0, 2]] {
            assert!(survival(&s, &set(&pair)).lost, "{pair:?}");
        }
        assert!(!survival(&s, &set(&[1])).lost);
    }

    #[test]
    fn raid10_three_copies_and_far_sets() {
        let s = spec(&[("raidType", "raid10"), ("legs", "6"), ("raid10Copies", "3")]);
        let r = survival(&s, &set(&[0, 1, 3, 4]));
        assert!(!r.lost, "two of each three-way mirror");
        let f = spec(&[
            ("raidType", "raid10"),
            ("legs", "4"),
            ("raid10Format", "far"),
        ]);
        assert!(!survival(&f, &set(&[0, 2])).lost);
        assert!(survival(&f, &set(&[0, 1])).lost);
    }

    #[test]
    fn parity_and_mirrors_count_as_before() {
        let r6 = spec(&[("raidType", "raid6_zr"), ("legs", "5")]);
        assert_eq!(survival(&r6, &set(&[1, 4])).left, 0);
        assert!(!survival(&r6, &set(&[1, 4])).lost);
        assert!(survival(&r6, &set(&[0, 1, 4])).lost);
        let r1 = spec(&[("raidType", "raid1"), ("legs", "3")]);
        assert_eq!(survival(&r1, &set(&[2])).left, 1);
        assert!(survival(&r1, &set(&[0, 1, 2])).lost);
        let r0 = spec(&[("raidType", "raid0"), ("legs", "2")]);
        assert!(survival(&r0, &set(&[1])).lost);
    }

    proptest! {
        /// Every leg is in some copy set, and a volume with no failure is
        /// never lost and survives copies−1 more for raid10.
        #[test]
        fn every_leg_has_copies(legs in 2u32..12, copies in 2u32..4, far in any::<bool>()) {
            prop_assume!(copies <= legs);
            let l = legs.to_string();
            let c = copies.to_string();
            let f = if far { "far" } else { "near" };
            let s = spec(&[("raidType", "raid10"), ("legs", &l), ("raid10Copies", &c), ("raid10Format", f)]);
            let sets = copy_sets(&s);
            for leg in 0..legs as usize {
                prop_assert!(sets.iter().any(|set| set.contains(&leg)));
            }
            prop_assert!(sets.iter().all(|set| set.len() == copies as usize));
            let none = survival(&s, &BTreeSet::new());
            prop_assert!(!none.lost);
            prop_assert_eq!(none.left, copies - 1);
        }
    }
}
