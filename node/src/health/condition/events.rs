//! The health events of a volume: a snapshot of it kept between two
//! rounds, and the events (leg lost, rebuild started or finished, check
//! results, unclean shutdowns) that tell what changed since.

use super::{condition, crash_fix_refused_words, write_hole_words};
use crate::engine::VolumeInfo;
use dmraid_api::status::{LegState, SyncAction};
use dmraid_api::{EventReason, RaidType};

/// What the health surfaces keep of a volume between two rounds, to tell
/// what changed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// Per-position state (None: the array is not active) and disk.
    pub legs: Vec<(Option<LegState>, Option<String>)>,
    /// The kernel's sync action.
    pub action: Option<SyncAction>,
    /// Mismatches after the last check.
    pub mismatches: Option<u64>,
    /// Unclean-shutdown repair in progress.
    pub unclean: Option<(u64, u64)>,
    /// Regions that may be inconsistent after an unclean degraded shutdown.
    pub write_hole: Option<u64>,
    /// Why the crash fix was refused after an unclean shutdown.
    pub crash_fix_refused: Option<String>,
}

impl Snapshot {
    /// The snapshot of a volume now.
    pub fn of(v: &VolumeInfo) -> Snapshot {
        let st = v.status.as_ref();
        Snapshot {
            legs: v
                .legs
                .iter()
                .enumerate()
                .map(|(i, l)| {
                    let state = st.and_then(|s| s.legs.get(i).copied());
                    let state = if l.disk.is_none() {
                        Some(LegState::Missing)
                    } else {
                        state
                    };
                    (state, l.disk.as_ref().map(|d| d.display().to_string()))
                })
                .collect(),
            action: st.and_then(|s| s.action),
            mismatches: st.and_then(|s| s.mismatches),
            unclean: v.unclean,
            write_hole: v.write_hole,
            crash_fix_refused: v.crash_fix_refused.clone(),
        }
    }
}

/// Something that happened to a volume, for Kubernetes Events and the
/// status's recent history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthEvent {
    /// Warning (true) or Normal.
    pub warning: bool,
    /// Why, as Kubernetes shows it.
    pub reason: EventReason,
    /// What happened, in words.
    pub message: String,
}

fn ev(warning: bool, reason: EventReason, message: String) -> HealthEvent {
    HealthEvent {
        warning,
        reason,
        message,
    }
}

/// The events between the last snapshot (None: first sight) and now.
pub fn transitions(prev: Option<&Snapshot>, v: &VolumeInfo) -> Vec<HealthEvent> {
    let now = Snapshot::of(v);
    let kind = v.spec.spec.raid_type;
    let (_, condition) = condition(v);
    let condition = condition
        .strip_prefix(&format!("{kind}: "))
        .unwrap_or(&condition)
        .to_string();
    let mut out = legs_lost(prev, &now, kind, &condition);
    let Some(prev) = prev else {
        out.extend(first_round(&now));
        return out;
    };
    out.extend(rebuilds_started(prev, &now, kind));
    out.extend(sync_finished(prev, &now, kind));
    out.extend(scrubs(prev, &now, kind));
    out
}

/// A Warning per leg lost since the last round (every lost leg at the first).
fn legs_lost(
    prev: Option<&Snapshot>,
    now: &Snapshot,
    kind: RaidType,
    condition: &str,
) -> Vec<HealthEvent> {
    let lost = |s: &Snapshot, i: usize| {
        matches!(
            s.legs.get(i).map(|l| l.0),
            Some(Some(LegState::Dead)) | Some(Some(LegState::Missing))
        )
    };
    let mut out = Vec::new();
    for (i, (_, disk)) in now.legs.iter().enumerate() {
        let was_lost = prev.is_some_and(|p| lost(p, i));
        if lost(now, i) && !was_lost {
            let disk = disk
                .clone()
                .or_else(|| prev.and_then(|p| p.legs.get(i).and_then(|l| l.1.clone())))
                .unwrap_or_else(|| "missing disk".into());
            out.push(ev(
                true,
                EventReason::LegFailed,
                format!("{kind} leg {i} ({disk}) failed; {condition}"),
            ));
        }
    }
    out
}

/// What the first round after a start says once: a write hole, an unclean
/// shutdown being resynced, a crash fix refused.
fn first_round(now: &Snapshot) -> Vec<HealthEvent> {
    let mut out = Vec::new();
    if let Some(n) = now.write_hole {
        out.push(ev(true, EventReason::UncleanDegraded, write_hole_words(n)));
    }
    if let Some((dirty, regions)) = now.unclean {
        out.push(ev(
            true,
            EventReason::UncleanShutdown,
            format!("unclean shutdown: resyncing {dirty} of {regions} regions"),
        ));
    }
    if let Some(why) = &now.crash_fix_refused {
        out.push(ev(
            true,
            EventReason::CrashFixRefused,
            crash_fix_refused_words(why),
        ));
    }
    out
}

/// A leg that moved to another disk and is syncing there: a rebuild started.
fn rebuilds_started(prev: &Snapshot, now: &Snapshot, kind: RaidType) -> Vec<HealthEvent> {
    let mut out = Vec::new();
    for (i, (state, disk)) in now.legs.iter().enumerate() {
        let before = prev.legs.get(i);
        let moved = before.is_some_and(|b| b.1 != *disk) && disk.is_some();
        if moved && *state == Some(LegState::Syncing) {
            out.push(ev(
                false,
                EventReason::RebuildStarted,
                format!(
                    "rebuilding {kind} leg {i} onto {}",
                    disk.clone().unwrap_or_default()
                ),
            ));
        }
    }
    out
}

/// A rebuild or resync that ended since the last round.
fn sync_finished(prev: &Snapshot, now: &Snapshot, kind: RaidType) -> Option<HealthEvent> {
    let all_in_sync = now.legs.iter().all(|l| l.0 == Some(LegState::InSync));
    // A sync may end between two rounds without a round ever seeing its
    // action: tell by the legs. A rebuild shows some legs in sync and some
    // syncing; a resync shows them all syncing.
    let prev_syncing = prev.legs.iter().any(|l| l.0 == Some(LegState::Syncing));
    let prev_mixed = prev_syncing && prev.legs.iter().any(|l| l.0 == Some(LegState::InSync));
    let was_syncing = prev_syncing
        || matches!(
            prev.action,
            Some(SyncAction::Recover) | Some(SyncAction::Resync)
        );
    let still = matches!(
        now.action,
        Some(SyncAction::Recover) | Some(SyncAction::Resync)
    );
    if !(all_in_sync && was_syncing && !still) {
        return None;
    }
    Some(if prev_mixed || prev.action == Some(SyncAction::Recover) {
        ev(
            false,
            EventReason::RebuildFinished,
            format!("{kind}: rebuild finished, all legs in sync"),
        )
    } else {
        ev(
            false,
            EventReason::ResyncFinished,
            format!("{kind}: resync finished"),
        )
    })
}

/// A check or repair that ended (with its mismatch count) or started.
fn scrubs(prev: &Snapshot, now: &Snapshot, kind: RaidType) -> Vec<HealthEvent> {
    let mut out = Vec::new();
    let finished =
        |a: SyncAction| prev.action == Some(a) && now.action != Some(a) && now.action.is_some();
    // A short scrub ends between two rounds: a new mismatch count on an
    // idle array tells it ran.
    let idle = matches!(now.action, Some(SyncAction::Idle) | None);
    let count_changed = idle
        && prev.mismatches.is_some()
        && now.mismatches.is_some()
        && prev.mismatches != now.mismatches;
    if finished(SyncAction::Check) || finished(SyncAction::Repair) || count_changed {
        let m = now.mismatches.unwrap_or(0);
        let what = if prev.action == Some(SyncAction::Repair) {
            "repair"
        } else {
            "check"
        };
        out.push(ev(
            m > 0,
            if m > 0 {
                EventReason::MismatchesFound
            } else {
                EventReason::CheckFinished
            },
            format!("{kind}: {what} finished, {m} mismatched sectors"),
        ));
    }
    for a in [SyncAction::Check, SyncAction::Repair] {
        if now.action == Some(a) && prev.action != Some(a) {
            let what = if a == SyncAction::Check {
                "check"
            } else {
                "repair"
            };
            out.push(ev(
                false,
                EventReason::CheckStarted,
                format!("{kind}: {what} started"),
            ));
        }
    }
    out
}
