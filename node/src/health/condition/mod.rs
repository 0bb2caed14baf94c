//! Words for an array's health: the CSI VolumeCondition (abnormal +
//! message) every status surface shares, from the kernel's status line and
//! where each leg lives.
//!
//! The condition's words are here; the events that tell what changed
//! between two rounds are in `events`, a sync's progress and time left in
//! `progress`, the judgement of slow legs in `slow_legs`.

use crate::engine::VolumeInfo;
use dmraid_api::status::{LegState, SyncAction};

mod events;
mod progress;
mod slow_legs;
#[cfg(test)]
mod tests;

pub use events::{transitions, HealthEvent, Snapshot};
pub use progress::{bar, duration_words, eta, progress};
pub use slow_legs::slow_legs;

/// The STATE word `dmraid-csi volumes` prints for a volume condition (the
/// CLI sees only the condition): never `ok` while redundancy is reduced.
pub fn state_word(abnormal: bool, message: &str) -> &'static str {
    let has = |w: &str| message.contains(w);
    if has("data lost") {
        "FAILED"
    } else if has("not active") {
        "INACTIVE"
    } else if has("rebuilding") || has("recovering") {
        "REBUILDING"
    } else if has("degraded") || has("disk missing") || has("no disk with a readable label") {
        "DEGRADED"
    } else if abnormal {
        "ABNORMAL"
    } else if has("resync") {
        "RESYNCING"
    } else if has("scrubbing") {
        "SCRUBBING"
    } else {
        "ok"
    }
}

/// An unclean shutdown the crash fix could not be applied to, in words.
fn crash_fix_refused_words(why: &str) -> String {
    format!("warning: unclean shutdown, started without the crash fix ({why}): the kernel may skip the regions written at the crash; run a check")
}

/// What an unclean shutdown while degraded leaves, in words.
pub fn write_hole_words(regions: u64) -> String {
    format!("unclean shutdown while degraded: {regions} regions may be inconsistent (parity cannot be checked without every leg); a check runs once redundancy is back")
}

/// The legs a volume has lost: disk missing or failed in the kernel.
pub fn lost_legs(v: &VolumeInfo, st: &dmraid_api::RaidStatus) -> std::collections::BTreeSet<usize> {
    v.legs
        .iter()
        .enumerate()
        .filter(|(_, l)| l.disk.is_none())
        .map(|(i, _)| i)
        .chain(st.dead_legs())
        .collect()
}

/// The condition of a volume whose array is not loaded: which legs' disks
/// are missing, and whether what is here can serve at all (a raid10 with
/// both disks of one mirror away cannot, and is never rebuilt).
fn not_active(v: &VolumeInfo) -> String {
    let kind = v.spec.spec.raid_type;
    let mut parts = vec![format!("{kind}: array is not active on this node")];
    let missing: std::collections::BTreeSet<usize> = v
        .legs
        .iter()
        .enumerate()
        .filter(|(_, l)| l.disk.is_none())
        .map(|(i, _)| i)
        .collect();
    if missing.is_empty() {
        return parts.remove(0);
    }
    parts.push(format!(
        "disk missing for leg(s) {}",
        missing
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    ));
    for (path, why) in &v.unreadable {
        parts.push(format!(
            "disk {path} is here but its label is unreadable ({why}): a missing leg may be on it"
        ));
    }
    let survival = dmraid_api::redundancy::survival(&v.spec.spec, &missing);
    if survival.lost {
        parts.push(match &survival.lost_set {
            Some(set) if kind.level() == 10 && v.spec.spec.copies() > 1 => format!(
                "every copy of one mirror (legs {}) is lost: data lost unless their disks return",
                set.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            _ => "more legs lost than the RAID level survives: data lost unless their disks return"
                .into(),
        });
    }
    parts.join("; ")
}

/// (abnormal, message) for a volume, e.g. "raid5_ls: leg 2 (disk /dev/vdc)
/// failed; degraded, no redundancy left".
pub fn condition(v: &VolumeInfo) -> (bool, String) {
    let kind = v.spec.spec.raid_type;
    let Some(st) = &v.status else {
        return (true, not_active(v));
    };
    let lost = lost_legs(v, st);
    let mut parts = where_legs_are(v, st);
    parts.extend(redundancy_words(v, &lost));
    parts.extend(sync_words(v, st));
    parts.extend(notes(v, st));
    // A leg being rebuilt is not redundancy yet: abnormal until in sync.
    let rebuilding = st.action == Some(SyncAction::Recover)
        || (st.legs.contains(&LegState::Syncing) && st.legs.contains(&LegState::InSync));
    let abnormal = !lost.is_empty()
        || rebuilding
        || v.write_hole.is_some()
        || v.crash_fix_refused.is_some()
        || st.mismatches.is_some_and(|m| m > 0);
    let healthy_text = if parts.is_empty() {
        "healthy, all legs in sync".to_string()
    } else {
        parts.join("; ")
    };
    (abnormal, format!("{kind}: {healthy_text}"))
}

/// The disk of a leg in words ("missing" when it has none).
fn disk_of(v: &VolumeInfo, leg: usize) -> String {
    v.legs
        .get(leg)
        .and_then(|l| l.disk.as_ref())
        .map(|d| d.display().to_string())
        .unwrap_or_else(|| "missing".into())
}

/// Legs on no disk, disks whose label cannot be read, legs that failed.
fn where_legs_are(v: &VolumeInfo, st: &dmraid_api::RaidStatus) -> Vec<String> {
    let mut parts = Vec::new();
    for (i, l) in v.legs.iter().enumerate() {
        if l.disk.is_none() {
            // A disk whose label cannot be read may hold it: "missing"
            // would send the operator looking for a disk that is there.
            parts.push(if v.unreadable.is_empty() {
                format!("leg {i}: disk missing")
            } else {
                format!("leg {i}: on no disk with a readable label")
            });
        }
    }
    for (path, why) in &v.unreadable {
        parts.push(format!(
            "disk {path} is here but its label is unreadable ({why}): a missing leg may be on it"
        ));
    }
    for i in st.dead_legs() {
        if v.legs.get(i).is_some_and(|l| l.disk.is_some()) {
            parts.push(format!("leg {i} (disk {}) failed", disk_of(v, i)));
        }
    }
    parts
}

/// What the lost legs leave: data lost, or how many more failures it survives.
fn redundancy_words(v: &VolumeInfo, lost: &std::collections::BTreeSet<usize>) -> Option<String> {
    let kind = v.spec.spec.raid_type;
    let survival = dmraid_api::redundancy::survival(&v.spec.spec, lost);
    if survival.lost {
        return Some(match &survival.lost_set {
            Some(set) if kind.level() == 10 && v.spec.spec.copies() > 1 => format!(
                "every copy of one mirror (legs {}) is lost: data lost",
                set.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            _ => "more legs lost than the RAID level survives: data lost".into(),
        });
    }
    if lost.is_empty() {
        return None;
    }
    Some(match survival.left {
        0 => "degraded, no redundancy left".to_string(),
        left => format!("degraded, survives {left} more failure(s)"),
    })
}

/// The sync running, with its progress and ETA.
fn sync_words(v: &VolumeInfo, st: &dmraid_api::RaidStatus) -> Option<String> {
    let pct = (st.ratio() * 100.0).floor();
    let eta = v
        .eta_seconds
        .map(|s| format!(", ETA {}", duration_words(s)))
        .unwrap_or_default();
    match st.action {
        Some(SyncAction::Recover) => {
            let rebuilding: Vec<String> = st
                .legs
                .iter()
                .enumerate()
                .filter(|(_, l)| **l == LegState::Syncing)
                .map(|(i, _)| format!("leg {i} onto {}", disk_of(v, i)))
                .collect();
            Some(if rebuilding.is_empty() {
                format!("recovering: {pct}%{eta}")
            } else {
                format!("rebuilding {}: {pct}%{eta}", rebuilding.join(", "))
            })
        }
        Some(SyncAction::Resync) => Some(format!("resyncing: {pct}%{eta}")),
        _ if st.legs.contains(&LegState::Syncing) => {
            Some(format!("legs not yet in sync, resync pending: {pct}%"))
        }
        Some(SyncAction::Check) | Some(SyncAction::Repair) => {
            Some(format!("scrubbing: {pct}%{eta}"))
        }
        _ => None,
    }
}

/// Slow legs, an unclean shutdown, a write hole, a refused crash fix, mismatches.
fn notes(v: &VolumeInfo, st: &dmraid_api::RaidStatus) -> Vec<String> {
    let mut parts = Vec::new();
    for (leg, ms, typical) in &v.slow_legs {
        parts.push(format!(
            "warning: leg {leg} (disk {}) is slow, {ms} ms per I/O against {typical} ms on the others",
            disk_of(v, *leg as usize)
        ));
    }
    if let Some((dirty, regions)) = v.unclean {
        parts.push(format!(
            "unclean shutdown: resyncing {dirty} of {regions} regions"
        ));
    }
    if let Some(n) = v.write_hole {
        parts.push(write_hole_words(n));
    }
    if let Some(why) = &v.crash_fix_refused {
        parts.push(crash_fix_refused_words(why));
    }
    if let Some(m) = st.mismatches.filter(|m| *m > 0) {
        parts.push(format!("{m} mismatched sectors found by the last check"));
    }
    parts
}
