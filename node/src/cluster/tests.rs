//! Unit tests of the cluster side: status words and objects, times, the
//! reasons of engine errors.

use super::status::status_word;
use super::*;
use crate::engine::DiskReport;
use dmraid_api::crd::{Phase, RaidVolumeStatus};
use dmraid_api::status::RaidStatus;

#[test]
fn a_leg_being_recovered_reads_rebuilding_whatever_the_action_says() {
    let word = |line: &str, lost| status_word(&RaidStatus::parse(line).unwrap(), lost, 1);
    assert_eq!(
        word("0 1548288 raid raid5_ls 3 AaA 0/516096 recover 0 0 -", 0),
        "rebuilding"
    );
    // Around the reload that drops `rebuild`, md says resync or idle for a moment.
    assert_eq!(
        word("0 1548288 raid raid5_ls 3 AaA 0/516096 resync 0 0 -", 0),
        "rebuilding"
    );
    assert_eq!(
        word("0 1548288 raid raid5_ls 3 AaA 0/516096 idle 0 0 -", 0),
        "rebuilding"
    );
    // Every leg syncing: the initial (or post-crash) resync.
    assert_eq!(
        word("0 1548288 raid raid5_ls 3 aaa 0/516096 resync 0 0 -", 0),
        "resyncing"
    );
    assert_eq!(
        word("0 1548288 raid raid5_ls 3 ADA 516096/516096 idle 0 0 -", 1),
        "degraded"
    );
    assert_eq!(
        word("0 1548288 raid raid5_ls 3 DDA 516096/516096 idle 0 0 -", 2),
        "failed"
    );
    assert_eq!(
        word("0 1548288 raid raid5_ls 3 AAA 516096/516096 idle 0 0 -", 0),
        "healthy"
    );
}

#[test]
fn times_are_rfc3339_seconds() {
    let t = now();
    assert!(t.ends_with('Z') && t.len() == 20, "{t}");
    assert!(t.parse::<k8s_openapi::jiff::Timestamp>().is_ok());
}

#[test]
fn a_failed_create_is_a_failed_phase_with_the_reason() {
    let f = Failure {
        reason: FailureReason::NoRoom,
        message: "no room for 3 legs".into(),
        generation: 1,
    };
    let st = volume_status(None, Some(&f), None, 1, "2026-11-24T00:00:00Z");
    assert_eq!(st.phase, Phase::Failed);
    assert_eq!(st.conditions[0].type_, "Ready");
    assert_eq!(st.conditions[0].reason, "NoRoom");
    let pending = volume_status(None, None, None, 1, "2026-11-24T00:00:00Z");
    assert_eq!(pending.phase, Phase::Pending);
}

#[test]
fn an_array_whose_disks_are_away_keeps_saying_it_was_made() {
    let made = RaidVolumeStatus {
        phase: Phase::Ready,
        capacity_bytes: 64 << 20,
        size: "64Mi".into(),
        ..Default::default()
    };
    let f = Failure {
        reason: FailureReason::DisksMissing,
        message: "volume v was made on this node, but disks missing".into(),
        generation: 1,
    };
    let once = volume_status(None, Some(&f), Some(&made), 1, "2026-11-24T00:00:00Z");
    assert_eq!(once.phase, Phase::Failed);
    assert_eq!(once.conditions[0].reason, "DisksMissing");
    // Reconciled again from that status: still known as made.
    let twice = volume_status(None, Some(&f), Some(&once), 1, "2026-11-24T00:00:00Z");
    assert_eq!(twice.capacity_bytes, 64 << 20);
}

#[test]
fn reasons_for_engine_errors() {
    assert_eq!(reason(&EngineError::Busy("v".into())), FailureReason::Busy);
    assert_eq!(
        reason(&EngineError::Precondition("x".into())),
        FailureReason::NotPossible
    );
}

#[test]
fn node_status_counts_only_present_disks_as_room() {
    let d = |p: &str, present| DiskReport {
        path: p.into(),
        id: p.into(),
        size: 64 << 20,
        free: 60 << 20,
        gaps: vec![dmraid_api::units::Sectors(120_000)],
        present,
    };
    let st = node_status(
        &[
            d("/dev/vdb", true),
            d("/dev/vdc", true),
            d("/dev/vdd", false),
        ],
        vec!["v".into()],
        "t",
    );
    assert_eq!(st.disk_count, 3);
    assert_eq!(st.free, "120Mi");
    let raid1 = st.capacity.iter().find(|c| c.raid_type == "raid1").unwrap();
    assert!(raid1.largest_bytes > 0);
    let raid5 = st
        .capacity
        .iter()
        .find(|c| c.raid_type == "raid5_ls")
        .unwrap();
    assert_eq!(raid5.largest_bytes, 0, "only two disks are present");
}
