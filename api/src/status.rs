//! The raid target's status line (`dmsetup status`) and the health model
//! built from it.
//!
//! Format (dm-raid.rst): `<type> <#devices> <health_chars> <sync_ratio>
//! <sync_action> <mismatch_cnt> <data_offset> <journal_char>`; older kernels
//! stop earlier (before 1.9.0 there is no data_offset, before 1.5.0 no action
//! or mismatch count). Health chars: `A` alive and in sync, `a` alive but not
//! in sync, `D` dead/failed.

use crate::error::{Error, Result};
use crate::raid_type::RaidType;
use serde::{Deserialize, Serialize};

/// One leg as the kernel sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LegState {
    /// `A`: alive and in sync.
    InSync,
    /// `a`: alive, not yet in sync (resync or recovery pending or running).
    Syncing,
    /// `D`: failed.
    Dead,
    /// `-`: no device in this position (loaded as `- -`; measured on 6.1).
    Missing,
}

/// What the array is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncAction {
    /// Nothing.
    Idle,
    /// Synchronisation paused.
    Frozen,
    /// Making redundancy consistent (initial or after a crash).
    Resync,
    /// Rebuilding a leg.
    Recover,
    /// Scrub: reading and counting mismatches.
    Check,
    /// Scrub that fixes mismatches.
    Repair,
    /// Changing layout.
    Reshape,
    /// Unknown to the kernel (e.g. while stopped).
    Undef,
}

impl SyncAction {
    fn parse(s: &str) -> Option<SyncAction> {
        Some(match s {
            "idle" => SyncAction::Idle,
            "frozen" => SyncAction::Frozen,
            "resync" => SyncAction::Resync,
            "recover" => SyncAction::Recover,
            "check" => SyncAction::Check,
            "repair" => SyncAction::Repair,
            "reshape" => SyncAction::Reshape,
            "undef" => SyncAction::Undef,
            _ => return None,
        })
    }

    /// The kernel's word.
    pub fn name(self) -> &'static str {
        match self {
            SyncAction::Idle => "idle",
            SyncAction::Frozen => "frozen",
            SyncAction::Resync => "resync",
            SyncAction::Recover => "recover",
            SyncAction::Check => "check",
            SyncAction::Repair => "repair",
            SyncAction::Reshape => "reshape",
            SyncAction::Undef => "undef",
        }
    }
}

/// A parsed status line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaidStatus {
    /// Raid type the kernel reports.
    pub raid_type: RaidType,
    /// Per-position leg state.
    pub legs: Vec<LegState>,
    /// Sectors synchronised so far.
    pub synced: u64,
    /// Sectors to synchronise in all.
    pub total: u64,
    /// Current action (None on kernels too old to say).
    pub action: Option<SyncAction>,
    /// Mismatches found by the last check/repair.
    pub mismatches: Option<u64>,
}

impl RaidStatus {
    /// Parse a status line, with or without the leading `<start> <len> raid`.
    pub fn parse(line: &str) -> Result<RaidStatus> {
        let bad = |why: String| Error::parse("raid status", format!("{why} in {line:?}"));
        let mut w: Vec<&str> = line.split_whitespace().collect();
        if w.len() >= 3 && w[2] == "raid" {
            w.drain(..3);
        }
        if w.len() < 4 {
            return Err(bad("too few words".into()));
        }
        let raid_type = RaidType::parse(w[0]).map_err(|e| bad(e.to_string()))?;
        let n: usize = w[1]
            .parse()
            .map_err(|_| bad(format!("device count {:?}", w[1])))?;
        let health = w[2];
        if health.len() != n || n == 0 {
            return Err(bad(format!("{n} devices but health {health:?}")));
        }
        let legs = health
            .chars()
            .map(|c| match c {
                'A' => Ok(LegState::InSync),
                'a' => Ok(LegState::Syncing),
                'D' => Ok(LegState::Dead),
                '-' => Ok(LegState::Missing),
                other => Err(bad(format!("health char {other:?}"))),
            })
            .collect::<Result<Vec<_>>>()?;
        let (s, t) = w[3]
            .split_once('/')
            .ok_or_else(|| bad(format!("sync ratio {:?}", w[3])))?;
        let synced = s
            .parse()
            .map_err(|_| bad(format!("sync ratio {:?}", w[3])))?;
        let total = t
            .parse()
            .map_err(|_| bad(format!("sync ratio {:?}", w[3])))?;
        let action = match w.get(4) {
            Some(a) => Some(SyncAction::parse(a).ok_or_else(|| bad(format!("sync action {a:?}")))?),
            None => None,
        };
        let mismatches = match w.get(5) {
            Some(m) => Some(
                m.parse()
                    .map_err(|_| bad(format!("mismatch count {m:?}")))?,
            ),
            None => None,
        };
        Ok(RaidStatus {
            raid_type,
            legs,
            synced,
            total,
            action,
            mismatches,
        })
    }

    /// Fraction synchronised, 0.0..=1.0.
    pub fn ratio(&self) -> f64 {
        if self.total == 0 {
            1.0
        } else {
            self.synced as f64 / self.total as f64
        }
    }

    /// Positions of failed or missing legs: neither holds data.
    pub fn dead_legs(&self) -> Vec<usize> {
        self.legs
            .iter()
            .enumerate()
            .filter(|(_, l)| matches!(l, LegState::Dead | LegState::Missing))
            .map(|(i, _)| i)
            .collect()
    }

    /// True when every leg is alive, in sync and the array idle.
    pub fn healthy(&self) -> bool {
        self.legs.iter().all(|l| *l == LegState::InSync)
            && matches!(self.action, None | Some(SyncAction::Idle))
            && self.synced == self.total
    }

    /// Failures the array can still take, given `copies` for raid10 (worst case).
    pub fn redundancy_left(&self, copies: u32) -> u32 {
        let n = self.legs.len() as u32;
        self.raid_type
            .tolerated_failures(n, copies)
            .saturating_sub(self.dead_legs().len() as u32)
    }

    /// True when more legs failed than the type tolerates, so data is lost
    /// (for raid10 this is the worst case: it may survive if the failures
    /// hit different mirrors).
    pub fn data_lost(&self, copies: u32) -> bool {
        self.dead_legs().len() as u32
            > self
                .raid_type
                .tolerated_failures(self.legs.len() as u32, copies)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_a_healthy_raid5_line() {
        let s =
            RaidStatus::parse("0 1548288 raid raid5_ls 4 AAAA 516096/516096 idle 0 0 -").unwrap();
        assert_eq!(s.legs, vec![LegState::InSync; 4]);
        assert!(s.healthy());
        assert_eq!(s.ratio(), 1.0);
        assert_eq!(s.redundancy_left(2), 1);
    }

    #[test]
    fn degraded_and_recovering() {
        let s = RaidStatus::parse("raid5_ls 4 AAaD 1000/516096 recover 0 0 -").unwrap();
        assert_eq!(s.dead_legs(), vec![3]);
        assert_eq!(s.action, Some(SyncAction::Recover));
        assert!(!s.healthy());
        assert_eq!(s.redundancy_left(2), 0);
        assert!(!s.data_lost(2));
        let lost = RaidStatus::parse("raid5_ls 4 ADDA 0/516096 idle 0").unwrap();
        assert!(lost.data_lost(2));
    }

    #[test]
    fn a_missing_position_is_a_dash() {
        // What 6.1 prints for a leg loaded as `- -`.
        let s = RaidStatus::parse("raid5_ls 4 A-AA 32768/32768 idle 0 0 -").unwrap();
        assert_eq!(s.legs[1], LegState::Missing);
        assert_eq!(s.dead_legs(), vec![1]);
        assert_eq!(s.redundancy_left(2), 0);
    }

    #[test]
    fn older_kernels_shorter_lines() {
        let s = RaidStatus::parse("raid1 2 AA 100/100").unwrap();
        assert_eq!((s.action, s.mismatches), (None, None));
        assert!(s.healthy());
    }

    #[test]
    fn garbage_is_an_error_naming_the_line() {
        for bad in [
            "",
            "raid5_ls 4 AAA 1/1 idle",
            "raid5_ls 4 AAXA 1/1",
            "raid9 2 AA 1/1",
            "raid1 2 AA 1-1",
            "raid1 2 AA 1/1 dancing",
        ] {
            let e = RaidStatus::parse(bad).unwrap_err().to_string();
            assert!(e.contains("raid status"), "{e}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(s in "[ 0-9a-zA-Z/_-]{0,60}") {
            let _ = RaidStatus::parse(&s);
        }
    }
}
