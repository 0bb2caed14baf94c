//! Where a volume's legs go: pure decisions over the disks' allocation
//! tables, no I/O.
//!
//! Policy: each leg needs one metadata and one data extent, on a disk no
//! other leg of the volume uses (a failure domain: two partitions of one
//! disk are one domain). Disks with the most free space are chosen
//! first (ties by id), which keeps free space even across disks so later,
//! wider arrays still fit; on each disk the meta+data pair goes contiguous
//! into the smallest gap that holds it (best fit), so large gaps stay whole,
//! and apart (each in the smallest gap that holds it) when no gap holds
//! both. A leg that grows later grows in place or in further data segments
//! on its disk ([`grow`]).

use crate::engine::labels::{Extent, LABEL_AREA};
use dmraid_api::units::Sectors;

/// One claimed disk as the allocator sees it.
#[derive(Debug, Clone)]
pub struct DiskSpace {
    /// Stable id (the label's disk uuid or the operator's path).
    pub id: String,
    /// Size of the disk in sectors.
    pub size: Sectors,
    /// Extents already allocated.
    pub used: Vec<(Sectors, Sectors)>,
    /// The failure domain: the whole disk's device number for a
    /// partition, the disk's own id otherwise. No two legs of a volume
    /// share one.
    pub domain: String,
    /// How messages name it (the device path; the id when unknown).
    pub name: String,
}

impl DiskSpace {
    /// From a disk's label extents.
    pub fn new(id: &str, size: Sectors, extents: &[Extent]) -> Self {
        DiskSpace {
            id: id.to_string(),
            size,
            used: extents.iter().map(|e| (e.start, e.len)).collect(),
            domain: id.to_string(),
            name: id.to_string(),
        }
    }

    /// The same disk, named `name` in messages.
    pub fn named(mut self, name: &str) -> Self {
        name.clone_into(&mut self.name);
        self
    }

    /// The same disk in failure domain `domain` (a partition's whole disk).
    pub fn in_domain(mut self, domain: &str) -> Self {
        domain.clone_into(&mut self.domain);
        self
    }

    /// Free gaps `(start, len)` after the label area, in disk order.
    pub fn gaps(&self) -> Vec<(Sectors, Sectors)> {
        let mut used = self.used.clone();
        used.sort_unstable();
        let mut gaps = Vec::new();
        let mut at = LABEL_AREA;
        for (s, l) in used {
            if s > at {
                gaps.push((at, s - at));
            }
            at = at.max(s + l);
        }
        if self.size > at {
            gaps.push((at, self.size - at));
        }
        gaps
    }

    /// Total free sectors.
    pub fn free(&self) -> Sectors {
        self.gaps().iter().map(|g| g.1).sum()
    }

    /// Where a leg of `meta` + `data` sectors goes on this disk, as
    /// (meta start, data start): contiguous in the smallest gap that holds
    /// both; else the data in the smallest gap that holds it and the
    /// metadata in the smallest other gap that holds it (what the capacity
    /// reported counts on).
    fn spot(&self, meta: Sectors, data: Sectors) -> Option<(Sectors, Sectors)> {
        if let Some(at) = self.best_fit(meta + data) {
            return Some((at, at + meta));
        }
        let gaps = self.gaps();
        let smallest = |need: Sectors, not: Option<Sectors>| {
            gaps.iter()
                .filter(|g| g.1 >= need && Some(g.0) != not)
                .min_by_key(|g| (g.1, g.0))
                .map(|g| g.0)
        };
        let d = smallest(data, None)?;
        Some((smallest(meta, Some(d))?, d))
    }

    fn best_fit(&self, need: Sectors) -> Option<Sectors> {
        self.gaps()
            .into_iter()
            .filter(|g| g.1 >= need)
            .min_by_key(|g| (g.1, g.0))
            .map(|g| g.0)
    }
}

/// Where one leg goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// Leg position.
    pub leg: u32,
    /// Disk id.
    pub disk: String,
    /// Metadata extent start (sectors).
    pub meta_start: Sectors,
    /// Data extent start: right after the metadata when one gap holds both.
    pub data_start: Sectors,
}

/// Not enough room: the message says what would fit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NoRoom(pub String);

fn describe(disks: &[&DiskSpace]) -> String {
    if disks.is_empty() {
        return "none".into();
    }
    disks
        .iter()
        .map(|d| format!("{} {} free", d.name, d.free().bytes()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Place `legs` legs of `meta + data` sectors each on distinct disks,
/// avoiding the disks in `avoid`; `first_leg` numbers the placements.
pub fn place(
    disks: &[DiskSpace],
    legs: u32,
    first_leg: u32,
    meta: Sectors,
    data: Sectors,
    avoid: &[String],
) -> Result<Vec<Placement>, NoRoom> {
    let need = meta + data;
    let avoided = |d: &DiskSpace| {
        avoid.contains(&d.id)
            || disks
                .iter()
                .any(|a| avoid.contains(&a.id) && a.domain == d.domain)
    };
    let mut fit: Vec<&DiskSpace> = disks
        .iter()
        .filter(|d| !avoided(d) && d.spot(meta, data).is_some())
        .collect();
    fit.sort_by(|a, b| b.free().cmp(&a.free()).then_with(|| a.id.cmp(&b.id)));
    // One disk per failure domain: the roomiest of each.
    let mut domains = Vec::new();
    fit.retain(|d| {
        if domains.contains(&&d.domain) {
            return false;
        }
        domains.push(&d.domain);
        true
    });
    if fit.len() < legs as usize {
        let others: Vec<&DiskSpace> = disks.iter().filter(|d| !avoided(d)).collect();
        if others.is_empty() {
            let names: Vec<&str> = disks.iter().map(|d| d.name.as_str()).collect();
            return Err(NoRoom(if names.is_empty() {
                "no disk is claimed on this node: name disks with --disks (Helm value node.disks)"
                    .to_string()
            } else {
                format!(
                    "every claimed disk ({}) already holds a leg of this volume, and no two legs may share a disk; add a disk",
                    names.join(", ")
                )
            }));
        }
        return Err(NoRoom(format!(
            "needs {legs} distinct disks with {} free each (data {} in one piece, metadata {} beside it or in another); {} have room. Claimed disks: {}",
            need.bytes(),
            data.bytes(),
            meta.bytes(),
            fit.len(),
            describe(&others)
        )));
    }
    Ok(fit
        .iter()
        .take(legs as usize)
        .enumerate()
        .map(|(i, d)| {
            let (meta_start, data_start) = d.spot(meta, data).unwrap_or_default();
            Placement {
                leg: first_leg + i as u32,
                disk: d.id.clone(),
                meta_start,
                data_start,
            }
        })
        .collect())
}

/// Add `r` to sorted, disjoint sector ranges `(start, len)`, merging
/// neighbours. The `ranges_*` helpers take plain numbers: they edit a
/// label's `zeroed` list as it is stored.
pub fn ranges_add(ranges: &mut Vec<(u64, u64)>, r: (u64, u64)) {
    if r.1 == 0 {
        return;
    }
    ranges.push(r);
    ranges.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for &(s, l) in ranges.iter() {
        match merged.last_mut() {
            Some(last) if s <= last.0 + last.1 => {
                last.1 = last.1.max(s + l - last.0);
            }
            _ => merged.push((s, l)),
        }
    }
    *ranges = merged;
}

/// Remove `r` from sorted, disjoint sector ranges.
pub fn ranges_remove(ranges: &mut Vec<(u64, u64)>, r: (u64, u64)) {
    if r.1 == 0 {
        return;
    }
    let (rs, re) = (r.0, r.0 + r.1);
    let mut out = Vec::with_capacity(ranges.len() + 1);
    for &(s, l) in ranges.iter() {
        let e = s + l;
        if e <= rs || s >= re {
            out.push((s, l));
            continue;
        }
        if s < rs {
            out.push((s, rs - s));
        }
        if e > re {
            out.push((re, e - re));
        }
    }
    *ranges = out;
}

/// Whether sorted, disjoint ranges cover all of `r`.
pub fn ranges_cover(ranges: &[(u64, u64)], r: (u64, u64)) -> bool {
    r.1 == 0 || ranges.iter().any(|&(s, l)| s <= r.0 && r.0 + r.1 <= s + l)
}

/// Whether the data extent at `start` of `len` can grow to `new_len` in
/// place (the sectors after it are free and on the disk).
pub fn can_grow(disk: &DiskSpace, start: Sectors, len: Sectors, new_len: Sectors) -> bool {
    let end = start + new_len;
    end <= disk.size
        && disk
            .used
            .iter()
            .all(|&(s, l)| (s, l) == (start, len) || s + l <= start || s >= end)
}

/// How a leg's data grows on its disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Growth {
    /// The last segment grows in place: the sectors after it are free.
    InPlace,
    /// New segments `(start, len)` in the disk's free gaps, mapped after
    /// the leg's end in this order.
    Segments(Vec<(Sectors, Sectors)>),
}

/// How the leg whose last data segment is `len` sectors at `start` grows
/// by `extra` sectors on `disk`: in place when the sectors after it are
/// free (one contiguous segment stays one); else one new segment in the
/// smallest gap that holds it all; else the largest gaps first, so the
/// leg gets as few segments as the disk allows. None when the disk has
/// fewer than `extra` free sectors.
pub fn grow(disk: &DiskSpace, start: Sectors, len: Sectors, extra: Sectors) -> Option<Growth> {
    if can_grow(disk, start, len, len + extra) {
        return Some(Growth::InPlace);
    }
    if let Some(at) = disk.best_fit(extra) {
        return Some(Growth::Segments(vec![(at, extra)]));
    }
    let mut gaps = disk.gaps();
    gaps.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let mut segments = Vec::new();
    let mut left = extra;
    for (at, gap) in gaps {
        if left.is_zero() {
            break;
        }
        let take = gap.min(left);
        segments.push((at, take));
        left -= take;
    }
    left.is_zero().then_some(Growth::Segments(segments))
}

#[cfg(test)]
mod tests {
    use super::*;
    use dmraid_api::capacity::{largest_volume, leg_for_size, META_EXTENT};
    use dmraid_api::RaidSpec;
    use proptest::prelude::*;

    fn disk(id: &str, gib: u64) -> DiskSpace {
        DiskSpace::new(id, Sectors(gib << 21), &[])
    }

    fn apply(disks: &mut [DiskSpace], p: &[Placement], meta: u64, data: u64) {
        for pl in p {
            let d = disks.iter_mut().find(|d| d.id == pl.disk).unwrap();
            d.used.push((pl.meta_start, Sectors(meta)));
            d.used.push((pl.data_start, Sectors(data)));
        }
    }

    /// Sector spans `(start, len)` from plain numbers.
    fn spans(raw: &[(u64, u64)]) -> Vec<(Sectors, Sectors)> {
        raw.iter().map(|&(s, l)| (Sectors(s), Sectors(l))).collect()
    }

    #[test]
    fn a_leg_grows_in_place_else_in_the_fewest_segments_its_disk_allows() {
        let l = LABEL_AREA.0;
        // Used: the leg [l, l+100), a neighbour [l+100, l+110), another
        // [l+150, l+160); free: 40 at l+110, 20 at l+160 .. disk end l+180.
        let mut d = DiskSpace::new("d", Sectors(l + 180), &[]);
        d.used = spans(&[(l, 100), (l + 100, 10), (l + 150, 10)]);
        let grow = |extra| grow(&d, Sectors(l), Sectors(100), Sectors(extra));
        // The space after the leg is taken: one new segment in the
        // smallest gap that holds it.
        assert_eq!(grow(15), Some(Growth::Segments(spans(&[(l + 160, 15)]))));
        assert_eq!(grow(30), Some(Growth::Segments(spans(&[(l + 110, 30)]))));
        // No gap holds it: the largest gaps first.
        assert_eq!(
            grow(50),
            Some(Growth::Segments(spans(&[(l + 110, 40), (l + 160, 10)])))
        );
        // More than the disk has free.
        assert_eq!(grow(61), None);
        // The neighbour gone: in place.
        d.used.retain(|u| u.0 != Sectors(l + 100));
        assert_eq!(
            super::grow(&d, Sectors(l), Sectors(100), Sectors(50)),
            Some(Growth::InPlace)
        );
    }

    #[test]
    fn legs_go_to_distinct_disks_with_most_room_first() {
        let disks = vec![disk("a", 1), disk("b", 3), disk("c", 2)];
        let p = place(&disks, 2, 0, Sectors(8192), Sectors(1 << 20), &[]).unwrap();
        assert_eq!(
            p.iter().map(|p| p.disk.as_str()).collect::<Vec<_>>(),
            ["b", "c"]
        );
        assert!(p
            .iter()
            .all(|p| p.meta_start >= LABEL_AREA && p.data_start == p.meta_start + Sectors(8192)));
    }

    #[test]
    fn no_room_says_what_there_is() {
        let disks = vec![disk("a", 1), disk("b", 1)];
        let e = place(&disks, 3, 0, Sectors(8192), Sectors(1 << 20), &[])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("needs 3 distinct disks") && e.contains("2 have room") && e.contains("a "),
            "{e}"
        );
    }

    #[test]
    fn freed_space_is_reused_and_avoided_disks_skipped() {
        let mut disks = vec![disk("a", 1), disk("b", 1), disk("c", 1)];
        let p = place(&disks, 3, 0, Sectors(8192), Sectors(100_000), &[]).unwrap();
        apply(&mut disks, &p, 8192, 100_000);
        let first = p[0].meta_start;
        for d in &mut disks {
            d.used.clear();
        }
        let again = place(&disks, 3, 0, Sectors(8192), Sectors(100_000), &[]).unwrap();
        assert_eq!(again[0].meta_start, first);
        let r = place(
            &disks,
            1,
            2,
            Sectors(8192),
            Sectors(100_000),
            &["a".into(), "b".into()],
        )
        .unwrap();
        assert_eq!((r[0].disk.as_str(), r[0].leg), ("c", 2));
    }

    #[test]
    fn two_partitions_of_one_disk_never_hold_two_legs() {
        let disks = vec![
            disk("p1", 3).in_domain("8:0"),
            disk("p2", 3).in_domain("8:0"),
            disk("b", 1),
        ];
        let p = place(&disks, 2, 0, Sectors(8192), Sectors(1 << 20), &[]).unwrap();
        assert_eq!(
            p.iter().map(|p| p.disk.as_str()).collect::<Vec<_>>(),
            ["p1", "b"]
        );
        let e = place(&disks, 3, 0, Sectors(8192), Sectors(1 << 20), &[]).unwrap_err();
        assert!(e.0.contains("2 have room"), "{e}");
        // A replacement avoids the whole disk of the legs it must not share.
        let r = place(
            &disks,
            1,
            1,
            Sectors(8192),
            Sectors(1 << 20),
            &["p1".into()],
        )
        .unwrap();
        assert_eq!(r[0].disk, "b");
    }

    #[test]
    fn no_room_for_a_replacement_says_every_disk_is_taken() {
        let disks = vec![
            disk("a", 1).named("/dev/vdb"),
            disk("b", 1).named("/dev/vdc"),
        ];
        let e = place(
            &disks,
            1,
            1,
            Sectors(8192),
            Sectors(1000),
            &["a".into(), "b".into()],
        )
        .unwrap_err();
        assert!(
            e.0.contains("every claimed disk (/dev/vdb, /dev/vdc) already holds a leg"),
            "{e}"
        );
        let e = place(&[], 1, 0, Sectors(8192), Sectors(1000), &[]).unwrap_err();
        assert!(e.0.contains("no disk is claimed"), "{e}");
    }

    #[test]
    fn grow_in_place_only_into_free_space() {
        let mut d = disk("a", 1);
        d.used = spans(&[(2048, 8192), (10240, 1000), (20000, 10)]);
        let can = |d: &DiskSpace, start, len, new_len| {
            can_grow(d, Sectors(start), Sectors(len), Sectors(new_len))
        };
        assert!(can(&d, 10240, 1000, 9760));
        assert!(!can(&d, 10240, 1000, 9761));
        assert!(!can(&disk("b", 1), 2048, 10, 1 << 22));
    }

    proptest! {
        #[test]
        fn zeroed_ranges_behave_like_a_set_of_sectors(
            ops in proptest::collection::vec((any::<bool>(), 0u64..200, 0u64..40), 0..40)
        ) {
            let mut ranges = Vec::new();
            let mut set = std::collections::BTreeSet::new();
            for (add, s, l) in ops {
                if add {
                    ranges_add(&mut ranges, (s, l));
                    set.extend(s..s + l);
                } else {
                    ranges_remove(&mut ranges, (s, l));
                    for x in s..s + l { set.remove(&x); }
                }
                let from_ranges: std::collections::BTreeSet<u64> =
                    ranges.iter().flat_map(|&(s, l)| s..s + l).collect();
                prop_assert_eq!(&from_ranges, &set);
                for w in ranges.windows(2) { prop_assert!(w[0].0 + w[0].1 < w[1].0); }
                prop_assert!(ranges.iter().all(|r| r.1 > 0));
            }
            for s in 0..50u64 {
                let covered = (s..s + 10).all(|x| set.contains(&x));
                prop_assert_eq!(ranges_cover(&ranges, (s, 10)), covered);
            }
        }

        #[test]
        fn allocations_never_overlap_or_leave_the_disk(
            sizes in proptest::collection::vec(1u64..6, 2..7),
            reqs in proptest::collection::vec((1u32..4, 1u64..400_000), 1..12)
        ) {
            let mut disks: Vec<DiskSpace> = sizes.iter().enumerate().map(|(i, g)| DiskSpace::new(&format!("d{i}"), Sectors(g << 20), &[])).collect();
            for (legs, data) in reqs {
                if let Ok(p) = place(&disks, legs, 0, Sectors(8192), Sectors(data), &[]) {
                    let mut ids: Vec<&str> = p.iter().map(|p| p.disk.as_str()).collect();
                    ids.dedup();
                    prop_assert_eq!(ids.len(), legs as usize);
                    apply(&mut disks, &p, 8192, data);
                }
            }
            for d in &disks {
                let mut u = d.used.clone();
                u.sort_unstable();
                for w in u.windows(2) { prop_assert!(w[0].0 + w[0].1 <= w[1].0); }
                for (s, l) in u { prop_assert!(s >= LABEL_AREA && s + l <= d.size); }
            }
        }

        /// GetCapacity's answer (largest_volume over the free gaps) is a
        /// volume the allocator can place, however fragmented the disks.
        #[test]
        fn the_capacity_reported_is_a_volume_that_can_be_placed(
            sizes in proptest::collection::vec(1u64..4, 2..6),
            reqs in proptest::collection::vec((1u32..3, 1u64..600_000), 1..14),
            freed in proptest::collection::vec(any::<bool>(), 30),
            kind in 0usize..3,
        ) {
            let mut disks: Vec<DiskSpace> = sizes.iter().enumerate().map(|(i, g)| DiskSpace::new(&format!("d{i}"), Sectors(g << 20), &[])).collect();
            for (legs, data) in reqs {
                if let Ok(p) = place(&disks, legs, 0, META_EXTENT, Sectors(data), &[]) {
                    apply(&mut disks, &p, META_EXTENT.0, data);
                }
            }
            // Some extents freed again: holes between the others.
            let mut k = 0;
            for d in &mut disks {
                d.used.retain(|_| { k += 1; !freed[k % freed.len()] });
            }
            let spec = match kind {
                0 => RaidSpec::from_pairs(&[("raidType", "raid1"), ("legs", "2")]),
                1 => RaidSpec::from_pairs(&[("raidType", "raid5_ls"), ("legs", "3")]),
                _ => RaidSpec::from_pairs(&[("raidType", "raid1"), ("legs", "3")]),
            }.unwrap();
            let gaps: Vec<Vec<Sectors>> = disks.iter().map(|d| d.gaps().into_iter().map(|g| g.1).collect()).collect();
            let bytes = largest_volume(&spec, &gaps);
            if bytes.0 > 0 {
                let leg = leg_for_size(&spec, bytes).unwrap();
                let placed = place(&disks, spec.legs, 0, META_EXTENT, leg, &[]);
                prop_assert!(placed.is_ok(), "{} reported, not placed: {:?}; gaps {:?}", bytes, placed, gaps);
            }
        }
    }
}
