//! Words for an array's health: the CSI VolumeCondition (abnormal +
//! message) every status surface shares, from the kernel's status line and
//! where each leg lives.

use crate::engine::VolumeInfo;
use dmraid_api::status::{LegState, SyncAction};
use dmraid_api::EventReason;

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
    let copies = v.spec.spec.copies();
    let Some(st) = &v.status else {
        return (true, not_active(v));
    };
    let disk = |leg: usize| {
        v.legs
            .get(leg)
            .and_then(|l| l.disk.as_ref())
            .map(|d| d.display().to_string())
            .unwrap_or_else(|| "missing".into())
    };
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
            parts.push(format!("leg {i} (disk {}) failed", disk(i)));
        }
    }
    let lost = lost_legs(v, st);
    let failed = lost.len();
    let survival = dmraid_api::redundancy::survival(&v.spec.spec, &lost);
    if survival.lost {
        parts.push(match &survival.lost_set {
            Some(set) if kind.level() == 10 && copies > 1 => format!(
                "every copy of one mirror (legs {}) is lost: data lost",
                set.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            _ => "more legs lost than the RAID level survives: data lost".into(),
        });
    } else if failed > 0 {
        let left = survival.left;
        parts.push(if left == 0 {
            "degraded, no redundancy left".to_string()
        } else {
            format!("degraded, survives {left} more failure(s)")
        });
    }
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
                .map(|(i, _)| format!("leg {i} onto {}", disk(i)))
                .collect();
            if rebuilding.is_empty() {
                parts.push(format!("recovering: {pct}%{eta}"));
            } else {
                parts.push(format!("rebuilding {}: {pct}%{eta}", rebuilding.join(", ")));
            }
        }
        Some(SyncAction::Resync) => parts.push(format!("resyncing: {pct}%{eta}")),
        _ if st.legs.contains(&LegState::Syncing) => {
            parts.push(format!("legs not yet in sync, resync pending: {pct}%"))
        }
        Some(SyncAction::Check) | Some(SyncAction::Repair) => {
            parts.push(format!("scrubbing: {pct}%{eta}"))
        }
        _ => {}
    }
    for (leg, ms, typical) in &v.slow_legs {
        parts.push(format!(
            "warning: leg {leg} (disk {}) is slow, {ms} ms per I/O against {typical} ms on the others",
            disk(*leg as usize)
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
    // A leg being rebuilt is not redundancy yet: abnormal until in sync.
    let rebuilding = st.action == Some(SyncAction::Recover)
        || (st.legs.contains(&LegState::Syncing) && st.legs.contains(&LegState::InSync));
    let abnormal = failed > 0
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

/// Legs whose I/Os took far longer than the others' between two samples of
/// their counters (I/Os, ms): (leg, ms per I/O, typical ms of the others).
/// A leg needs a few I/Os to be judged, and is slow at ≥ 50 ms per I/O and
/// ≥ 5× the others' median (the kernel keeps such a leg: it only fails legs
/// that return errors).
pub fn slow_legs(
    before: &[Option<(u64, u64)>],
    now: &[Option<(u64, u64)>],
) -> Vec<(u32, u64, u64)> {
    const MIN_IOS: u64 = 4;
    let lat: Vec<Option<u64>> = now
        .iter()
        .zip(before.iter())
        .map(|(n, b)| match (n, b) {
            (Some((ni, nm)), Some((bi, bm))) if ni >= bi && nm >= bm && ni - bi >= MIN_IOS => {
                Some((nm - bm) / (ni - bi))
            }
            _ => None,
        })
        .collect();
    let mut out = Vec::new();
    for (i, l) in lat.iter().enumerate() {
        let Some(ms) = l else { continue };
        let mut others: Vec<u64> = lat
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .filter_map(|(_, o)| *o)
            .collect();
        if others.is_empty() {
            continue;
        }
        others.sort_unstable();
        let typical = others[others.len() / 2];
        if *ms >= 50 && *ms >= 5 * typical.max(1) {
            out.push((i as u32, *ms, typical));
        }
    }
    out
}

/// A duration for people: "45s", "3m", "2h10m".
pub fn duration_words(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m", secs.div_ceil(60)),
        _ => {
            let m = secs.div_ceil(60);
            if m.is_multiple_of(60) {
                format!("{}h", m / 60)
            } else {
                format!("{}h{}m", m / 60, m % 60)
            }
        }
    }
}

/// Time left of a sync from two samples of (seconds, sectors synced) and
/// the total; None when nothing moved or the samples go backwards.
pub fn eta(earlier: (f64, u64), later: (f64, u64), total: u64) -> Option<u64> {
    let dt = later.0 - earlier.0;
    let done = later.1.checked_sub(earlier.1)?;
    if dt <= 0.0 || done == 0 {
        return None;
    }
    let rate = done as f64 / dt;
    Some((total.saturating_sub(later.1) as f64 / rate).ceil() as u64)
}

/// The resync/rebuild/scrub percentage inside a condition message written by
/// [`condition`], for progress bars in the CLI.
pub fn progress(message: &str) -> Option<u32> {
    ["rebuilding", "resyncing", "scrubbing", "resync pending"]
        .iter()
        .find_map(|word| {
            let rest = &message[message.find(word)?..];
            let pct = rest.find('%')?;
            let digits: String = rest[..pct]
                .chars()
                .rev()
                .take_while(|c| c.is_ascii_digit())
                .collect();
            digits.chars().rev().collect::<String>().parse().ok()
        })
}

/// A text progress bar: `[#####-----]  50%`.
pub fn bar(pct: u32) -> String {
    let filled = (pct.min(100) / 5) as usize;
    format!(
        "[{}{}] {pct:>3}%",
        "#".repeat(filled),
        "-".repeat(20 - filled)
    )
}

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
    let mut out = Vec::new();
    let (_, condition) = condition(v);
    let condition = condition
        .strip_prefix(&format!("{kind}: "))
        .unwrap_or(&condition)
        .to_string();
    let lost = |s: &Snapshot, i: usize| {
        matches!(
            s.legs.get(i).map(|l| l.0),
            Some(Some(LegState::Dead)) | Some(Some(LegState::Missing))
        )
    };
    for (i, (_, disk)) in now.legs.iter().enumerate() {
        let was_lost = prev.is_some_and(|p| lost(p, i));
        if lost(&now, i) && !was_lost {
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
    let Some(prev) = prev else {
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
        return out;
    };
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
    let finished =
        |a: SyncAction| prev.action == Some(a) && now.action != Some(a) && now.action.is_some();
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
    if all_in_sync && was_syncing && !still {
        if prev_mixed || prev.action == Some(SyncAction::Recover) {
            out.push(ev(
                false,
                EventReason::RebuildFinished,
                format!("{kind}: rebuild finished, all legs in sync"),
            ));
        } else {
            out.push(ev(
                false,
                EventReason::ResyncFinished,
                format!("{kind}: resync finished"),
            ));
        }
    }
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
            out.push(ev(
                false,
                EventReason::CheckStarted,
                format!(
                    "{kind}: {} started",
                    if a == SyncAction::Check {
                        "check"
                    } else {
                        "repair"
                    }
                ),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{LegInfo, VolumeSpec};
    use dmraid_api::RaidStatus;
    use std::collections::BTreeMap;
    use std::path::PathBuf;

    fn vol(status: &str, missing: Option<usize>) -> VolumeInfo {
        let p: BTreeMap<String, String> = [
            ("raidType".to_string(), "raid5_ls".to_string()),
            ("legs".into(), "4".into()),
        ]
        .into();
        VolumeInfo {
            id: "v".into(),
            spec: VolumeSpec {
                spec: dmraid_api::RaidSpec::from_parameters(&p).unwrap(),
                requested: 1,
                leg_data: 128,
                name: None,
            },
            capacity: 1,
            legs: (0..4)
                .map(|i| LegInfo {
                    leg: i,
                    disk: (Some(i as usize) != missing)
                        .then(|| PathBuf::from(format!("/dev/vd{}", (b'b' + i as u8) as char))),
                })
                .collect(),
            device: "/dev/mapper/dmraid-v".into(),
            status: Some(RaidStatus::parse(status).unwrap()),
            unclean: None,
            write_hole: None,
            crash_fix_refused: None,
            unreadable: vec![],
            eta_seconds: None,
            slow_legs: vec![],
        }
    }

    #[test]
    fn a_rebuilding_leg_never_reads_ok() {
        let v = vol("raid5_ls 4 AAaA 5/10 recover 0", None);
        let (abnormal, msg) = condition(&v);
        assert!(abnormal, "{msg}");
        assert_eq!(state_word(abnormal, &msg), "REBUILDING");
        let v = vol("raid5_ls 4 aaaa 5/10 resync 0", None);
        let (abnormal, msg) = condition(&v);
        assert!(!abnormal, "a new array's resync is not a fault: {msg}");
        assert_eq!(state_word(abnormal, &msg), "RESYNCING");
        let v = vol("raid5_ls 4 AADA 10/10 idle 0", None);
        let (abnormal, msg) = condition(&v);
        assert_eq!(state_word(abnormal, &msg), "DEGRADED");
        let v = vol("raid5_ls 4 AAAA 10/10 idle 0", None);
        let (abnormal, msg) = condition(&v);
        assert_eq!(state_word(abnormal, &msg), "ok");
    }

    #[test]
    fn a_leg_that_may_be_on_a_disk_with_an_unreadable_label_is_not_called_missing() {
        let mut v = vol("raid5_ls 4 AADA 10/10 idle 0", Some(2));
        let (_, msg) = condition(&v);
        assert!(msg.contains("leg 2: disk missing"), "{msg}");
        v.unreadable = vec![("/dev/vdx".into(), "copy A: body checksum mismatch".into())];
        let (abnormal, msg) = condition(&v);
        assert!(abnormal);
        assert!(!msg.contains("disk missing"), "{msg}");
        assert!(
            msg.contains("leg 2: on no disk with a readable label")
                && msg.contains("disk /dev/vdx is here but its label is unreadable"),
            "{msg}"
        );
        assert_eq!(state_word(abnormal, &msg), "DEGRADED");
    }

    #[test]
    fn an_inactive_raid10_without_a_whole_mirror_says_so() {
        let mut v = vol("raid10 4 AAAA 10/10 idle 0", None);
        let p: BTreeMap<String, String> = [
            ("raidType".to_string(), "raid10".to_string()),
            ("legs".into(), "4".into()),
        ]
        .into();
        v.spec.spec = dmraid_api::RaidSpec::from_parameters(&p).unwrap();
        v.status = None;
        v.legs[0].disk = None;
        v.legs[1].disk = None;
        let (abnormal, msg) = condition(&v);
        assert!(abnormal);
        assert!(
            msg.contains("not active")
                && msg.contains("disk missing for leg(s) 0, 1")
                && msg.contains("every copy of one mirror (legs 0, 1) is lost: data lost unless their disks return"),
            "{msg}"
        );
        assert_eq!(state_word(abnormal, &msg), "FAILED");
        v.legs[1].disk = Some("/dev/vdc".into());
        v.legs[2].disk = None;
        let (_, msg) = condition(&v);
        assert!(
            !msg.contains("data lost"),
            "legs 0 and 2 are in different mirrors: {msg}"
        );
    }

    #[test]
    fn raid10_counts_lost_legs_per_mirror() {
        let mut v = vol("raid10 4 DADA 10/10 idle 0", None);
        let p: BTreeMap<String, String> = [
            ("raidType".to_string(), "raid10".to_string()),
            ("legs".into(), "4".into()),
        ]
        .into();
        v.spec.spec = dmraid_api::RaidSpec::from_parameters(&p).unwrap();
        let (abnormal, msg) = condition(&v);
        assert!(abnormal);
        assert!(
            msg.contains("degraded, no redundancy left") && !msg.contains("data lost"),
            "legs 0 and 2 are in different mirrors: {msg}"
        );
        assert_eq!(crate::cluster::health_word(&v), "degraded");
        v.status = Some(RaidStatus::parse("raid10 4 AADD 10/10 idle 0").unwrap());
        let (_, msg) = condition(&v);
        assert!(
            msg.contains("every copy of one mirror (legs 2, 3) is lost: data lost"),
            "{msg}"
        );
        assert_eq!(crate::cluster::health_word(&v), "failed");
    }

    #[test]
    fn a_leg_loss_then_rebuild_then_sync_tell_their_story() {
        let healthy = vol("raid5_ls 4 AAAA 10/10 idle 0", None);
        assert!(transitions(None, &healthy).is_empty());
        let s0 = Snapshot::of(&healthy);
        let failed = vol("raid5_ls 4 AADA 10/10 idle 0", None);
        let e = transitions(Some(&s0), &failed);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].warning && e[0].reason == "LegFailed");
        assert!(
            e[0].message.contains("leg 2 (/dev/vdd)"),
            "{}",
            e[0].message
        );
        let s1 = Snapshot::of(&failed);
        assert!(transitions(Some(&s1), &failed).is_empty(), "no repeat");
        let mut rebuilding = vol("raid5_ls 4 AAaA 1/10 recover 0", None);
        rebuilding.legs[2].disk = Some("/dev/vdf".into());
        let e = transitions(Some(&s1), &rebuilding);
        assert_eq!(e[0].reason, "RebuildStarted", "{e:?}");
        assert!(e[0].message.contains("/dev/vdf"));
        let s2 = Snapshot::of(&rebuilding);
        let mut done = vol("raid5_ls 4 AAAA 10/10 idle 0", None);
        done.legs[2].disk = Some("/dev/vdf".into());
        let e = transitions(Some(&s2), &done);
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].reason, "RebuildFinished");
    }

    #[test]
    fn a_resync_that_ends_between_rounds_is_still_reported() {
        let pending = Snapshot::of(&vol("raid5_ls 4 aaaa 0/10 idle 0", None));
        let e = transitions(Some(&pending), &vol("raid5_ls 4 AAAA 10/10 idle 0", None));
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].reason, "ResyncFinished");
    }

    #[test]
    fn missing_disks_checks_and_unclean_starts_are_reported() {
        let gone = vol("raid5_ls 4 AAAA 10/10 idle 0", Some(1));
        let s = Snapshot::of(&vol("raid5_ls 4 AAAA 10/10 idle 0", None));
        let e = transitions(Some(&s), &gone);
        assert!(e[0].message.contains("leg 1 (/dev/vdc)"), "{e:?}");
        let checking = vol("raid5_ls 4 AAAA 5/10 check 0", None);
        let e = transitions(Some(&s), &checking);
        assert_eq!(e[0].reason, "CheckStarted");
        let e = transitions(
            Some(&Snapshot::of(&checking)),
            &vol("raid5_ls 4 AAAA 10/10 idle 8", None),
        );
        assert!(e[0].warning && e[0].reason == "MismatchesFound", "{e:?}");
        let mut unclean = vol("raid5_ls 4 AAAA 3/10 resync 0", None);
        unclean.unclean = Some((3, 192));
        let e = transitions(None, &unclean);
        assert_eq!(e[0].reason, "UncleanShutdown");
        assert!(e[0].message.contains("3 of 192"));
        let mut refused = vol("raid5_ls 4 AAAA 3/10 idle 0", None);
        refused.crash_fix_refused = Some("unknown incompat features 0x4".into());
        let e = transitions(None, &refused);
        assert_eq!(e[0].reason, "CrashFixRefused");
        assert!(e[0].warning && e[0].message.contains("0x4"), "{:?}", e[0]);
        let (abnormal, msg) = condition(&refused);
        assert!(abnormal, "{msg}");
        assert!(msg.contains("started without the crash fix"), "{msg}");
    }

    #[test]
    fn eta_from_the_sync_rate() {
        // 100 sectors in 2 s, 800 left: 16 s.
        assert_eq!(eta((10.0, 100), (12.0, 200), 1000), Some(16));
        assert_eq!(eta((10.0, 200), (12.0, 200), 1000), None, "nothing moved");
        assert_eq!(
            eta((10.0, 300), (12.0, 200), 1000),
            None,
            "a new sync restarted"
        );
        assert_eq!(duration_words(45), "45s");
        assert_eq!(duration_words(150), "3m");
        assert_eq!(duration_words(7800), "2h10m");
        let mut v = vol("raid5_ls 4 AAaA 41/100 recover 0", None);
        v.eta_seconds = Some(180);
        let (_, msg) = condition(&v);
        assert!(
            msg.contains("rebuilding leg 2 onto /dev/vdd: 41%, ETA 3m"),
            "{msg}"
        );
        assert_eq!(progress(&msg), Some(41));
    }

    #[test]
    fn a_check_that_ends_between_rounds_is_told_by_its_count() {
        let before = Snapshot::of(&vol("raid5_ls 4 AAAA 10/10 idle 0", None));
        let e = transitions(Some(&before), &vol("raid5_ls 4 AAAA 10/10 idle 64", None));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].warning && e[0].reason == "MismatchesFound");
        let after_repair = Snapshot::of(&vol("raid5_ls 4 AAAA 10/10 idle 64", None));
        let e = transitions(
            Some(&after_repair),
            &vol("raid5_ls 4 AAAA 10/10 idle 0", None),
        );
        assert_eq!(e[0].reason, "CheckFinished");
    }

    #[test]
    fn a_leg_far_slower_than_the_others_is_flagged() {
        let before = [Some((100, 100)), Some((100, 100)), Some((100, 100))];
        // 20 I/Os each: 2 ms, 3 ms, 150 ms per I/O.
        let now = [Some((120, 140)), Some((120, 160)), Some((120, 3100))];
        assert_eq!(slow_legs(&before, &now), vec![(2, 150, 3)]);
        // Too few I/Os to judge, or a leg without counters: nothing.
        let idle = [Some((101, 101)), Some((101, 101)), Some((101, 400))];
        assert!(slow_legs(&before, &idle).is_empty());
        let mut v = vol("raid5_ls 4 AAAA 10/10 idle 0", None);
        v.slow_legs = vec![(2, 150, 3)];
        let (abnormal, msg) = condition(&v);
        assert!(!abnormal, "a slow leg is a warning, the array still works");
        assert!(
            msg.contains("leg 2 (disk /dev/vdd) is slow, 150 ms per I/O"),
            "{msg}"
        );
    }

    #[test]
    fn healthy_is_normal() {
        let (abnormal, msg) = condition(&vol("raid5_ls 4 AAAA 10/10 idle 0", None));
        assert!(!abnormal);
        assert_eq!(msg, "raid5_ls: healthy, all legs in sync");
        let (_, msg) = condition(&vol("raid5_ls 4 aaaa 0/10 idle 0", None));
        assert!(
            msg.contains("resync pending: 0%"),
            "not healthy before the first resync: {msg}"
        );
    }

    #[test]
    fn a_failed_leg_names_leg_and_disk() {
        let (abnormal, msg) = condition(&vol("raid5_ls 4 AADA 10/10 idle 0", None));
        assert!(abnormal);
        assert_eq!(
            msg,
            "raid5_ls: leg 2 (disk /dev/vdd) failed; degraded, no redundancy left"
        );
    }

    #[test]
    fn rebuild_progress_and_missing_disks() {
        let (abnormal, msg) = condition(&vol("raid5_ls 4 AAaA 41/100 recover 0", None));
        assert!(abnormal, "a leg being rebuilt is not redundancy yet");
        assert!(msg.contains("rebuilding leg 2 onto /dev/vdd: 41%"), "{msg}");
        assert_eq!(progress(&msg), Some(41));
        assert_eq!(progress("raid1: healthy, all legs in sync"), None);
        assert_eq!(bar(50), "[##########----------]  50%");
        let (abnormal, msg) = condition(&vol("raid5_ls 4 AADA 10/10 idle 0", Some(2)));
        assert!(abnormal && msg.contains("leg 2: disk missing"), "{msg}");
        let (_, msg) = condition(&vol("raid5_ls 4 ADDA 10/10 idle 0", None));
        assert!(msg.contains("data lost"), "{msg}");
    }
}
