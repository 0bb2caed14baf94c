//! RAID capacity arithmetic: usable size per type and legs, the per-leg data
//! extent for a requested volume size, the metadata extent, the region size,
//! and the largest volume that fits a node's free space.

use crate::error::{Error, Result};
use crate::params::{RaidSpec, DEFAULT_REGION, MAX_REGIONS};
use crate::raid_type::RaidType;
use crate::units::{Bytes, Sectors};

/// One metadata extent per leg: the dm-raid superblock (4 KiB) and the
/// write-intent bitmap (a 256-byte header and one bit per region; at most
/// 2^21 regions = 256 KiB). 4 MiB, as LVM's one rmeta extent, leaves room
/// for any supported size.
pub const META_EXTENT: Sectors = Sectors(8192);

/// Data-carrying legs' worth of capacity: raid0 legs, raid1 one leg,
/// raid4/5 legs−1, raid6 legs−2 (raid10: see [`array_sectors`]).
pub fn data_stripes(t: RaidType, legs: u32) -> u32 {
    match t.level() {
        1 => 1,
        _ => legs - t.parity(),
    }
}

/// The granularity a leg's data extent must have: the chunk, and for raid10
/// enough chunks that legs × chunks divides by the copies.
pub fn leg_granularity(spec: &RaidSpec) -> Sectors {
    let chunk = spec.chunk_sectors().0.max(1);
    if spec.raid_type == RaidType::Raid10 {
        let copies = u64::from(spec.copies());
        let legs = u64::from(spec.legs);
        // smallest k with k*legs divisible by copies
        let k = copies / gcd(copies, legs);
        Sectors(chunk * k)
    } else if spec.raid_type == RaidType::Raid1 {
        // Keep legs 4 KiB aligned for filesystems.
        Sectors(8)
    } else {
        Sectors(chunk)
    }
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The array length for a per-leg data extent of `leg` sectors. The kernel
/// requires the table length to be exactly this (dm-raid: "Target length not
/// divisible by number of data devices").
pub fn array_sectors(spec: &RaidSpec, leg: Sectors) -> Result<Sectors> {
    let g = leg_granularity(spec);
    if leg.0 == 0 || !leg.0.is_multiple_of(g.0) {
        return Err(Error::Size {
            what: "leg data size",
            detail: format!(
                "{leg} is not a positive multiple of {g} for {}",
                spec.raid_type
            ),
        });
    }
    let legs = u64::from(spec.legs);
    Ok(Sectors(match spec.raid_type {
        RaidType::Raid10 => leg.0 * legs / u64::from(spec.copies()),
        t => leg.0 * u64::from(data_stripes(t, spec.legs)),
    }))
}

/// The smallest per-leg data extent giving at least `size` bytes.
pub fn leg_for_size(spec: &RaidSpec, size: Bytes) -> Result<Sectors> {
    if size.0 == 0 {
        return Err(Error::Size {
            what: "volume size",
            detail: "0 bytes; ask for at least 1 byte".into(),
        });
    }
    let g = leg_granularity(spec).0;
    let want = size.0.div_ceil(512);
    let per_leg_num = match spec.raid_type {
        RaidType::Raid10 => want * u64::from(spec.copies()),
        _ => want,
    };
    let div = match spec.raid_type {
        RaidType::Raid10 => u64::from(spec.legs),
        t => u64::from(data_stripes(t, spec.legs)),
    };
    let leg = per_leg_num.div_ceil(div);
    let leg = leg.div_ceil(g) * g;
    Ok(Sectors(leg))
}

/// The region size to use: the spec's, checked, or the default (2 MiB)
/// grown to keep the bitmap within 2^21 regions and kept within the array.
/// `None` for raid0, which has no bitmap.
pub fn region_sectors(spec: &RaidSpec, array: Sectors) -> Result<Option<Sectors>> {
    if !spec.raid_type.resyncs() {
        return Ok(None);
    }
    // dm-raid: region_size >= ti->len / 2^21, <= ti->len, >= chunk.
    let min = array.0.div_ceil(MAX_REGIONS).max(1);
    let chunk = spec.chunk_sectors().0;
    if let Some(r) = spec.region_size {
        let r = r.sectors().0;
        if r < min || r > array.0 {
            return Err(Error::invalid(
                "regionSize",
                Bytes(r * 512),
                format!(
                    "between {} (so the bitmap has at most 2^21 regions) and the volume size {}",
                    Bytes(min.next_power_of_two() * 512),
                    Bytes(array.0 * 512)
                ),
            ));
        }
        return Ok(Some(Sectors(r)));
    }
    let mut r = DEFAULT_REGION
        .sectors()
        .0
        .max(min.next_power_of_two())
        .max(chunk);
    while r > array.0 && r / 2 >= chunk.max(8) {
        r /= 2;
    }
    Ok(Some(Sectors(r)))
}

/// The largest volume of `spec` that fits, given each disk's free extents
/// (lengths in sectors): every leg needs one metadata extent and one data
/// extent on a distinct disk. Returns 0 when fewer disks than legs have room.
pub fn largest_volume(spec: &RaidSpec, disks_free: &[Vec<Sectors>]) -> Bytes {
    // For each disk, the largest data extent it can hold beside a meta extent
    // (placed in the same gap, or in another gap).
    let mut per_disk: Vec<u64> = disks_free
        .iter()
        .map(|gaps| {
            let mut sorted: Vec<u64> = gaps.iter().map(|s| s.0).collect();
            sorted.sort_unstable_by(|a, b| b.cmp(a));
            let same_gap = sorted
                .first()
                .map_or(0, |g| g.saturating_sub(META_EXTENT.0));
            let other_gap = match sorted.get(1) {
                Some(&second) if second >= META_EXTENT.0 => sorted[0],
                _ => 0,
            };
            same_gap.max(other_gap)
        })
        .collect();
    per_disk.sort_unstable_by(|a, b| b.cmp(a));
    let legs = spec.legs as usize;
    if per_disk.len() < legs {
        return Bytes(0);
    }
    let g = leg_granularity(spec).0;
    let leg = per_disk[legs - 1] / g * g;
    if leg == 0 {
        return Bytes(0);
    }
    array_sectors(spec, Sectors(leg))
        .map(|s| s.bytes())
        .unwrap_or(Bytes(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::params::RaidSpec;
    use proptest::prelude::*;
    use std::collections::BTreeMap;

    fn spec(t: &str, legs: u32) -> RaidSpec {
        let p: BTreeMap<String, String> = [("raidType", t.to_string()), ("legs", legs.to_string())]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .collect();
        RaidSpec::from_parameters(&p).unwrap()
    }

    #[test]
    fn usable_size_per_level() {
        let leg = Sectors(1 << 20);
        assert_eq!(
            array_sectors(&spec("raid0", 3), leg).unwrap(),
            Sectors(3 << 20)
        );
        assert_eq!(array_sectors(&spec("raid1", 3), leg).unwrap(), leg);
        assert_eq!(
            array_sectors(&spec("raid5_ls", 4), leg).unwrap(),
            Sectors(3 << 20)
        );
        assert_eq!(
            array_sectors(&spec("raid6_zr", 5), leg).unwrap(),
            Sectors(3 << 20)
        );
        assert_eq!(
            array_sectors(&spec("raid10", 4), leg).unwrap(),
            Sectors(2 << 20)
        );
    }

    #[test]
    fn leg_for_size_rounds_up_to_chunks() {
        let s = spec("raid5_ls", 3);
        let leg = leg_for_size(&s, Bytes(1 << 30)).unwrap();
        assert_eq!(leg.0 % 128, 0);
        assert!(array_sectors(&s, leg).unwrap().bytes() >= Bytes(1 << 30));
        assert!(leg_for_size(&s, Bytes(0)).is_err());
    }

    #[test]
    fn raid10_odd_legs_need_a_granularity_that_divides() {
        let s = spec("raid10", 3);
        let g = leg_granularity(&s);
        assert_eq!(g, Sectors(256), "3 legs × k chunks must divide by 2 copies");
        assert!(array_sectors(&s, Sectors(128)).is_err());
    }

    #[test]
    fn region_default_grows_for_huge_volumes_and_shrinks_for_tiny_ones() {
        let s = spec("raid5_ls", 3);
        assert_eq!(
            region_sectors(&s, Sectors(1 << 21)).unwrap(),
            Some(Sectors(4096))
        );
        let huge = Sectors(1 << 35); // 16 TiB
        let r = region_sectors(&s, huge).unwrap().unwrap();
        assert!(huge.0 / r.0 <= MAX_REGIONS && r.0.is_power_of_two());
        let tiny = region_sectors(&s, Sectors(2048)).unwrap().unwrap();
        assert!(tiny.0 <= 2048 && tiny.0 >= 128);
        assert_eq!(region_sectors(&spec("raid0", 2), huge).unwrap(), None);
    }

    #[test]
    fn explicit_region_too_small_for_bitmap_is_refused() {
        let mut s = spec("raid1", 2);
        s.region_size = Some(Bytes(4096));
        let e = region_sectors(&s, Sectors(1 << 32))
            .unwrap_err()
            .to_string();
        assert!(e.contains("regionSize") && e.contains("2^21"), "{e}");
    }

    #[test]
    fn largest_volume_needs_distinct_disks() {
        let s = spec("raid5_ls", 3);
        let gib = Sectors(1 << 21);
        assert_eq!(largest_volume(&s, &[vec![gib], vec![gib]]), Bytes(0));
        let v = largest_volume(&s, &[vec![gib], vec![gib], vec![Sectors(gib.0 * 4)]]);
        let leg = (gib.0 - META_EXTENT.0) / 128 * 128;
        assert_eq!(v, Sectors(leg * 2).bytes());
    }

    proptest! {
        #[test]
        fn capacity_never_exceeds_raw_and_loses_at_most_a_chunk_per_leg(
            t in 0usize..crate::raid_type::ALL.len(), legs in 2u32..8, gaps in proptest::collection::vec(9000u64..(1<<24), 2..9)
        ) {
            let kind = crate::raid_type::ALL[t];
            prop_assume!(legs >= kind.min_legs());
            let s = spec(kind.name(), legs);
            let free: Vec<Vec<Sectors>> = gaps.iter().map(|g| vec![Sectors(*g)]).collect();
            let v = largest_volume(&s, &free);
            let raw: u64 = gaps.iter().sum::<u64>() * 512;
            prop_assert!(v.0 <= raw);
            if (gaps.len() as u32) >= legs && v.0 > 0 {
                // The smallest of the chosen disks bounds each leg; rounding loses < one granule.
                let mut sorted = gaps.clone();
                sorted.sort_unstable_by(|a, b| b.cmp(a));
                let bound = sorted[legs as usize - 1] - META_EXTENT.0;
                let leg = leg_for_size(&s, v).unwrap();
                prop_assert!(leg.0 <= bound);
                prop_assert!(bound - leg.0 < leg_granularity(&s).0);
            }
        }

        #[test]
        fn leg_for_size_is_minimal(t in 0usize..crate::raid_type::ALL.len(), legs in 2u32..8, size in 1u64..(1u64<<40)) {
            let kind = crate::raid_type::ALL[t];
            prop_assume!(legs >= kind.min_legs());
            let s = spec(kind.name(), legs);
            let leg = leg_for_size(&s, Bytes(size)).unwrap();
            prop_assert!(array_sectors(&s, leg).unwrap().bytes().0 >= size);
            let g = leg_granularity(&s).0;
            if leg.0 > g {
                prop_assert!(array_sectors(&s, Sectors(leg.0 - g)).unwrap().bytes().0 < size);
            }
        }
    }
}
