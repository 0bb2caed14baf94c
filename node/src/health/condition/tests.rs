//! Unit tests of a volume's condition words, its health events, sync
//! progress and slow legs.

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
        creating: false,
        deleting: false,
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
            && msg.contains(
                "every copy of one mirror (legs 0, 1) is lost: data lost unless their disks return"
            ),
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
