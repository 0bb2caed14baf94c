//! The sync translation: what state an array starts in, given its type, the
//! table's flags, whether it has metadata devices and whether it is new.
//!
//! Start: the seed design's two tables (DESIGN.md). Today's kernel differs,
//! and this follows what the e2e suite measured on Debian's 6.1 kernel
//! (dm-raid 1.15.1; `e2e/tests/kernel.rs::sync_translation_matches_the_kernel`):
//! - `sync`, `nosync` and `rebuild` are exclusive: every pair is refused;
//! - with metadata, a NEW array and no flag is fully resynchronised (the
//!   seed says MaxSector: it could not tell new from clean);
//! - `sync` is accepted for raid1/4/5/6 but starts NO resync, new array or
//!   not, and raid10 refuses it ("unsupported raid10 layout"): the driver
//!   never loads `sync` (a new array is fully resynced without it);
//! - without metadata devices nothing is resynchronised at all (the seed
//!   says recovery_cp 0), and raid10 refuses to load;
//! - raid0 refuses both `sync` and `nosync`; raid6 refuses `nosync` on any set;
//! - an existing array's superblock wins over no flag and over `nosync`;
//! - `rebuild` loads even on a new array or without metadata, but then
//!   there is nothing trustworthy to rebuild from: the driver refuses both.

use crate::error::{Error, Result};
use crate::raid_type::RaidType;
use serde::Serialize;

/// The table flags that steer synchronisation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Flags {
    /// Neither flag.
    None,
    /// `sync`.
    Sync,
    /// `nosync`.
    Nosync,
    /// `rebuild <idx>` (of one leg).
    Rebuild,
    /// `sync` and `nosync` together.
    SyncAndNosync,
    /// `sync` with `rebuild`.
    SyncAndRebuild,
    /// `nosync` with `rebuild`.
    NosyncAndRebuild,
}

/// Where the array's resync starts (`recovery_cp`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum RecoveryCp {
    /// 0: the whole array resyncs.
    Zero,
    /// MaxSector: nothing to resync.
    Max,
    /// Whatever the existing superblock says.
    FromSuperblock,
}

/// The state the kernel puts an array in right after the table loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ExpectedInitialState {
    /// Array resync start.
    pub recovery_cp: RecoveryCp,
    /// The rebuilt leg starts out of sync (`In_sync` = 0, recovery_offset 0).
    pub rebuilt_leg_in_sync: bool,
    /// A full resync runs.
    pub full_resync: bool,
    /// The rebuilt leg is recovered.
    pub recovers_leg: bool,
}

impl ExpectedInitialState {
    /// The health chars expected right after load (and a second status read),
    /// for `legs` legs with the rebuilt one at `rebuilt`: during a resync all
    /// legs are `a`; during a recovery only the rebuilt one.
    pub fn health(&self, legs: usize, rebuilt: usize) -> String {
        (0..legs)
            .map(|i| {
                if self.full_resync || (self.recovers_leg && i == rebuilt) {
                    'a'
                } else {
                    'A'
                }
            })
            .collect()
    }
}

/// Inputs of one row of the translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Case {
    /// Raid type.
    pub raid_type: RaidType,
    /// Table flags.
    pub flags: Flags,
    /// Metadata devices present.
    pub metadata: bool,
    /// Blank metadata (first activation).
    pub new_array: bool,
}

/// Translate one case, or refuse it with the reason.
pub fn translate(c: Case) -> Result<ExpectedInitialState> {
    let refuse = |why: &str| Err(Error::invalid("sync flags", format!("{:?}", c.flags), why));
    let t = c.raid_type;
    match c.flags {
        Flags::SyncAndNosync => return refuse("sync or nosync, not both: the kernel refuses the pair"),
        Flags::SyncAndRebuild | Flags::NosyncAndRebuild => {
            return refuse("rebuild without sync/nosync: the kernel refuses the combination")
        }
        Flags::Sync => {
            return refuse("no `sync` flag: the kernel accepts it but starts no resync (raid10 refuses it); a new array is fully resynced without it")
        }
        _ => {}
    }
    if t == RaidType::Raid10 && !c.metadata {
        return refuse("metadata devices for raid10: the kernel refuses raid10 without them");
    }
    if c.flags == Flags::Nosync && t == RaidType::Raid0 {
        return refuse("no nosync for raid0: the kernel refuses it (raid0 never resyncs)");
    }
    if c.flags == Flags::Nosync && t.level() == 6 {
        return refuse("default for raid6: the kernel refuses nosync on a raid6 set");
    }
    let resyncs = t.resyncs();
    let state = |cp: RecoveryCp, full: bool, rebuild: bool| ExpectedInitialState {
        recovery_cp: cp,
        rebuilt_leg_in_sync: !rebuild,
        full_resync: full && resyncs,
        recovers_leg: rebuild,
    };
    if c.flags == Flags::Rebuild {
        if !resyncs {
            return refuse("no rebuild for raid0: it has no redundancy to rebuild from");
        }
        if !c.metadata {
            return refuse("metadata devices: without them nothing records the rebuild's progress (seed: INVALID)");
        }
        if c.new_array {
            return refuse("an existing array: a new one has nothing to rebuild from");
        }
        return Ok(state(RecoveryCp::FromSuperblock, false, true));
    }
    Ok(match (c.metadata, c.new_array, c.flags) {
        // Measured: without metadata the kernel assumes the array is clean.
        (false, _, _) => state(RecoveryCp::Max, false, false),
        (true, true, Flags::Nosync) => state(RecoveryCp::Max, false, false),
        (true, true, _) => state(RecoveryCp::Zero, true, false),
        (true, false, _) => state(RecoveryCp::FromSuperblock, false, false),
    })
}

/// Every input combination, for the VM suite to check against the kernel.
pub fn all_cases(raid_type: RaidType) -> Vec<Case> {
    let flags = [
        Flags::None,
        Flags::Sync,
        Flags::Nosync,
        Flags::Rebuild,
        Flags::SyncAndNosync,
        Flags::SyncAndRebuild,
        Flags::NosyncAndRebuild,
    ];
    let mut out = Vec::new();
    for f in flags {
        for metadata in [true, false] {
            for new_array in [true, false] {
                out.push(Case {
                    raid_type,
                    flags: f,
                    metadata,
                    new_array,
                });
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(
        t: RaidType,
        flags: Flags,
        metadata: bool,
        new_array: bool,
    ) -> Result<ExpectedInitialState> {
        translate(Case {
            raid_type: t,
            flags,
            metadata,
            new_array,
        })
    }

    #[test]
    fn new_array_with_metadata_and_no_flag_resyncs_fully() {
        let s = case(RaidType::Raid5_ls, Flags::None, true, true).unwrap();
        assert!(s.full_resync);
        assert_eq!(s.health(3, 0), "aaa");
    }

    #[test]
    fn existing_array_superblock_wins() {
        let s = case(RaidType::Raid5_ls, Flags::None, true, false).unwrap();
        assert_eq!(s.recovery_cp, RecoveryCp::FromSuperblock);
        assert!(!s.full_resync);
        assert_eq!(
            case(RaidType::Raid1, Flags::Nosync, true, false)
                .unwrap()
                .recovery_cp,
            RecoveryCp::FromSuperblock
        );
    }

    #[test]
    fn nosync_skips_and_raid6_refuses_it_on_a_new_set() {
        assert_eq!(
            case(RaidType::Raid5_ls, Flags::Nosync, true, true)
                .unwrap()
                .health(3, 0),
            "AAA"
        );
        assert!(case(RaidType::Raid6_zr, Flags::Nosync, true, true)
            .unwrap_err()
            .to_string()
            .contains("raid6"));
        assert!(case(RaidType::Raid6_zr, Flags::Nosync, true, false).is_err());
    }

    #[test]
    fn exclusive_flags_and_sync_are_refused() {
        for f in [
            Flags::Sync,
            Flags::SyncAndNosync,
            Flags::SyncAndRebuild,
            Flags::NosyncAndRebuild,
        ] {
            assert!(case(RaidType::Raid1, f, true, false).is_err());
        }
    }

    #[test]
    fn rebuild_recovers_one_leg_of_an_existing_array_only() {
        let s = case(RaidType::Raid5_ls, Flags::Rebuild, true, false).unwrap();
        assert!(s.recovers_leg && !s.full_resync && !s.rebuilt_leg_in_sync);
        assert_eq!(s.health(4, 2), "AAaA");
        assert!(case(RaidType::Raid5_ls, Flags::Rebuild, true, true).is_err());
        assert!(case(RaidType::Raid5_ls, Flags::Rebuild, false, false).is_err());
    }

    #[test]
    fn raid0_never_resyncs() {
        assert!(case(RaidType::Raid0, Flags::Nosync, true, true).is_err());
        let s = case(RaidType::Raid0, Flags::None, true, true).unwrap();
        assert!(!s.full_resync);
        assert_eq!(s.health(2, 0), "AA");
    }

    #[test]
    fn seed_rows_without_metadata() {
        // seed: 0 0 0 → recovery_cp 0; measured on 6.1: no resync at all
        assert!(case(RaidType::Raid10, Flags::None, false, true).is_err());
        assert_eq!(
            case(RaidType::Raid1, Flags::None, false, false)
                .unwrap()
                .recovery_cp,
            RecoveryCp::Max
        );
        // seed: 1 0 0 → MaxSector
        assert_eq!(
            case(RaidType::Raid1, Flags::Nosync, false, false)
                .unwrap()
                .recovery_cp,
            RecoveryCp::Max
        );
    }

    #[test]
    fn every_case_answers_without_panicking() {
        for t in crate::raid_type::ALL {
            assert_eq!(all_cases(t).len(), 28);
            for c in all_cases(t) {
                let _ = translate(c);
            }
        }
    }
}
