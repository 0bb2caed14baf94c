//! Words for an array's health: the CSI VolumeCondition (abnormal +
//! message) every status surface shares, from the kernel's status line and
//! where each leg lives.

use crate::engine::VolumeInfo;
use dmraid_api::status::{LegState, SyncAction};

/// (abnormal, message) for a volume, e.g. "raid5_ls: leg 2 (disk /dev/vdc)
/// failed; degraded, no redundancy left".
pub fn condition(v: &VolumeInfo) -> (bool, String) {
    let kind = v.spec.spec.raid_type;
    let copies = v.spec.spec.copies();
    let Some(st) = &v.status else {
        return (true, format!("{kind}: array is not active on this node"));
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
            parts.push(format!("leg {i}: disk missing"));
        }
    }
    for i in st.dead_legs() {
        if v.legs.get(i).is_some_and(|l| l.disk.is_some()) {
            parts.push(format!("leg {i} (disk {}) failed", disk(i)));
        }
    }
    let missing = v.legs.iter().filter(|l| l.disk.is_none()).count() as u32;
    let failed = (st.dead_legs().len() as u32).max(missing);
    let tolerated = kind.tolerated_failures(v.legs.len() as u32, copies);
    if failed > tolerated {
        parts.push("more legs lost than the RAID level survives: data lost".into());
    } else if failed > 0 {
        let left = tolerated - failed;
        parts.push(if left == 0 {
            "degraded, no redundancy left".to_string()
        } else {
            format!("degraded, survives {left} more failure(s)")
        });
    }
    let pct = (st.ratio() * 100.0).floor();
    match st.action {
        Some(SyncAction::Recover) => {
            let rebuilding: Vec<String> = st
                .legs
                .iter()
                .enumerate()
                .filter(|(_, l)| **l == LegState::Syncing)
                .map(|(i, _)| format!("leg {i} onto {}", disk(i)))
                .collect();
            parts.push(format!("rebuilding {}: {pct}%", rebuilding.join(", ")));
        }
        Some(SyncAction::Resync) => parts.push(format!("resyncing: {pct}%")),
        Some(SyncAction::Check) | Some(SyncAction::Repair) => {
            parts.push(format!("scrubbing: {pct}%"))
        }
        _ => {}
    }
    if let Some((dirty, regions)) = v.unclean {
        parts.push(format!(
            "unclean shutdown: resyncing {dirty} of {regions} regions"
        ));
    }
    if let Some(m) = st.mismatches.filter(|m| *m > 0) {
        parts.push(format!("{m} mismatched sectors found by the last check"));
    }
    let abnormal = failed > 0 || st.mismatches.is_some_and(|m| m > 0);
    let healthy_text = if parts.is_empty() {
        "healthy, all legs in sync".to_string()
    } else {
        parts.join("; ")
    };
    (abnormal, format!("{kind}: {healthy_text}"))
}

/// The resync/rebuild/scrub percentage inside a condition message written by
/// [`condition`], for progress bars in the CLI.
pub fn progress(message: &str) -> Option<u32> {
    ["rebuilding", "resyncing", "scrubbing"]
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
        }
    }

    #[test]
    fn healthy_is_normal() {
        let (abnormal, msg) = condition(&vol("raid5_ls 4 AAAA 10/10 idle 0", None));
        assert!(!abnormal);
        assert_eq!(msg, "raid5_ls: healthy, all legs in sync");
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
        assert!(!abnormal);
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
