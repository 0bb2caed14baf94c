//! The raid types the kernel's `raid` target accepts, and what each needs.
//!
//! Names from the dm-raid target's documentation (Documentation/
//! admin-guide/device-mapper/dm-raid.rst, target 1.15): raid0, raid1,
//! raid10, raid4, raid5_{la,ra,ls,rs,n}, raid6_{zr,nr,nc}, raid6_{la,ra,ls,rs,n}_6.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A dm-raid type (RAID level and layout).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    schemars::JsonSchema,
)]
#[allow(non_camel_case_types)]
#[serde(rename_all = "snake_case")]
pub enum RaidType {
    /// Striping, no redundancy.
    Raid0,
    /// Mirroring.
    Raid1,
    /// Striped mirrors (near/far/offset copies).
    Raid10,
    /// Dedicated parity on the first device.
    Raid4,
    /// Rotating parity, left asymmetric.
    Raid5_la,
    /// Rotating parity, right asymmetric.
    Raid5_ra,
    /// Rotating parity, left symmetric (LVM's default).
    Raid5_ls,
    /// Rotating parity, right symmetric.
    Raid5_rs,
    /// Parity on the last device (the raid4 layout under a raid5 name).
    Raid5_n,
    /// Double parity, zero restart.
    Raid6_zr,
    /// Double parity, N restart.
    Raid6_nr,
    /// Double parity, N continue.
    Raid6_nc,
    /// Double parity, both parities on the last two devices.
    Raid6_n_6,
    /// raid5_la data layout with Q on the last device.
    Raid6_la_6,
    /// raid5_ra data layout with Q on the last device.
    Raid6_ra_6,
    /// raid5_ls data layout with Q on the last device.
    Raid6_ls_6,
    /// raid5_rs data layout with Q on the last device.
    Raid6_rs_6,
}

/// Every type, in a stable order.
pub const ALL: [RaidType; 17] = [
    RaidType::Raid0,
    RaidType::Raid1,
    RaidType::Raid10,
    RaidType::Raid4,
    RaidType::Raid5_la,
    RaidType::Raid5_ra,
    RaidType::Raid5_ls,
    RaidType::Raid5_rs,
    RaidType::Raid5_n,
    RaidType::Raid6_zr,
    RaidType::Raid6_nr,
    RaidType::Raid6_nc,
    RaidType::Raid6_n_6,
    RaidType::Raid6_la_6,
    RaidType::Raid6_ra_6,
    RaidType::Raid6_ls_6,
    RaidType::Raid6_rs_6,
];

impl RaidType {
    /// The name the kernel uses in tables.
    pub fn name(self) -> &'static str {
        match self {
            RaidType::Raid0 => "raid0",
            RaidType::Raid1 => "raid1",
            RaidType::Raid10 => "raid10",
            RaidType::Raid4 => "raid4",
            RaidType::Raid5_la => "raid5_la",
            RaidType::Raid5_ra => "raid5_ra",
            RaidType::Raid5_ls => "raid5_ls",
            RaidType::Raid5_rs => "raid5_rs",
            RaidType::Raid5_n => "raid5_n",
            RaidType::Raid6_zr => "raid6_zr",
            RaidType::Raid6_nr => "raid6_nr",
            RaidType::Raid6_nc => "raid6_nc",
            RaidType::Raid6_n_6 => "raid6_n_6",
            RaidType::Raid6_la_6 => "raid6_la_6",
            RaidType::Raid6_ra_6 => "raid6_ra_6",
            RaidType::Raid6_ls_6 => "raid6_ls_6",
            RaidType::Raid6_rs_6 => "raid6_rs_6",
        }
    }

    /// Parse a kernel type name.
    pub fn parse(name: &str) -> Result<RaidType> {
        ALL.iter()
            .copied()
            .find(|t| t.name() == name)
            .ok_or_else(|| {
                Error::invalid(
                    "raidType",
                    name,
                    format!(
                        "one of {}",
                        ALL.iter().map(|t| t.name()).collect::<Vec<_>>().join(", ")
                    ),
                )
            })
    }

    /// The RAID level: 0, 1, 10, 4, 5 or 6.
    pub fn level(self) -> u32 {
        match self {
            RaidType::Raid0 => 0,
            RaidType::Raid1 => 1,
            RaidType::Raid10 => 10,
            RaidType::Raid4 => 4,
            RaidType::Raid5_la
            | RaidType::Raid5_ra
            | RaidType::Raid5_ls
            | RaidType::Raid5_rs
            | RaidType::Raid5_n => 5,
            _ => 6,
        }
    }

    /// Parity devices' worth of capacity (0 for raid0/1/10).
    pub fn parity(self) -> u32 {
        match self.level() {
            4 | 5 => 1,
            6 => 2,
            _ => 0,
        }
    }

    /// True for raid4/5/6: the types with parity and a stripe cache.
    pub fn is_parity(self) -> bool {
        self.parity() > 0
    }

    /// Fewest legs this driver builds: raid4/5 need three (a two-leg raid5 is a
    /// mirror in disguise), raid6 four, the others two.
    pub fn min_legs(self) -> u32 {
        match self.level() {
            4 | 5 => 3,
            6 => 4,
            _ => 2,
        }
    }

    /// Whether chunk size means anything (dm-raid ignores it for raid1).
    pub fn uses_chunk(self) -> bool {
        self != RaidType::Raid1
    }

    /// Whether the array has redundancy to resynchronise (raid0 never resyncs).
    pub fn resyncs(self) -> bool {
        self != RaidType::Raid0
    }

    /// How many legs may fail with the data intact, for `legs` legs and
    /// `copies` raid10 copies. For raid10 this is the worst case (two failures
    /// in the same mirror group lose data); one per group survives.
    pub fn tolerated_failures(self, legs: u32, copies: u32) -> u32 {
        match self.level() {
            0 => 0,
            1 => legs.saturating_sub(1),
            10 => copies.saturating_sub(1),
            _ => self.parity(),
        }
    }
}

impl fmt::Display for RaidType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for t in ALL {
            assert_eq!(RaidType::parse(t.name()).unwrap(), t);
        }
    }

    #[test]
    fn unknown_type_lists_the_allowed_ones() {
        let e = RaidType::parse("raid7").unwrap_err().to_string();
        assert!(
            e.contains("raidType") && e.contains("\"raid7\"") && e.contains("raid6_zr"),
            "{e}"
        );
    }

    #[test]
    fn levels_and_tolerance() {
        assert_eq!(RaidType::Raid5_ls.tolerated_failures(4, 2), 1);
        assert_eq!(RaidType::Raid6_zr.tolerated_failures(5, 2), 2);
        assert_eq!(RaidType::Raid1.tolerated_failures(3, 2), 2);
        assert_eq!(RaidType::Raid10.tolerated_failures(4, 2), 1);
        assert_eq!(RaidType::Raid0.tolerated_failures(4, 2), 0);
        assert_eq!(RaidType::Raid6_nc.min_legs(), 4);
        assert!(!RaidType::Raid1.uses_chunk());
    }
}
