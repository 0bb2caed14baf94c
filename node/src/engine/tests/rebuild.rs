//! Leg replacement and returning disks.

use super::*;

#[test]
fn a_rebuild_onto_a_disk_without_room_is_refused_and_changes_nothing() {
    let (dm, disks, e) = setup(4, 64 * MIB);
    let s = params(&[("raidType", "raid5_ls")]);
    let v = e.create_volume("r", &s, 8 * MIB as u64).unwrap();
    dm.set_status("dmraid-r", "raid5_ls 3 ADA 8192/8192 idle 0");
    let labels_before: Vec<Vec<u8>> = ["/dev/vdb", "/dev/vdc", "/dev/vdd", "/dev/vde"]
        .iter()
        .map(|d| disks.bytes(d))
        .collect();
    // A disk that already holds another leg of the same volume has no room for this one.
    let busy = v.legs[0].disk.clone().unwrap();
    let err = e.replace_leg("r", Some(1), Some(busy.clone())).unwrap_err();
    assert!(matches!(err, Error::NoRoom(_)), "{err}");
    println!("{busy:?}: {err}");
    let labels_after: Vec<Vec<u8>> = ["/dev/vdb", "/dev/vdc", "/dev/vdd", "/dev/vde"]
        .iter()
        .map(|d| disks.bytes(d))
        .collect();
    assert!(
        labels_before == labels_after,
        "a refused rebuild wrote to a disk"
    );
    assert_eq!(e.volume("r").unwrap().legs, v.legs);
    // An unknown volume is NotFound.
    assert!(matches!(
        e.replace_leg("nosuch", None, None),
        Err(Error::NotFound(_))
    ));
}

#[test]
fn a_failed_leg_is_replaced_on_a_spare_and_old_extents_freed_when_in_sync() {
    let (dm, _disks, e) = setup(4, 64 * MIB);
    let s = params(&[("raidType", "raid5_ls")]);
    let v = e.create_volume("r", &s, 8 * MIB as u64).unwrap();
    // Healthy: nothing to rebuild.
    assert!(matches!(
        e.replace_leg("r", Some(1), None),
        Err(Error::Precondition(_))
    ));
    // Still resyncing a parity array: refused.
    dm.set_status("dmraid-r", "raid5_ls 3 aDa 10/8192 resync 0");
    assert!(e
        .replace_leg("r", Some(1), None)
        .unwrap_err()
        .to_string()
        .contains("still resyncing"));
    dm.set_status("dmraid-r", "raid5_ls 3 ADA 8192/8192 idle 0");
    let old_disk = v.legs[1].disk.clone().unwrap();
    let after = e.replace_leg("r", None, None).unwrap();
    let new_disk = after.legs[1].disk.clone().unwrap();
    assert_ne!(new_disk, old_disk);
    assert!(
        !v.legs.iter().any(|l| l.disk.as_ref() == Some(&new_disk)),
        "the spare, not another leg's disk"
    );
    // The kernel took `rebuild 1`; the table keeps it while it recovers.
    let live = || RaidTable::parse(&dm.table("dmraid-r").unwrap()[0].line()).unwrap();
    assert_eq!(live().rebuild, vec![1]);
    dm.set_status("dmraid-r", "raid5_ls 3 AaA 100/8192 recover 0");
    let loads = dm.loads("dmraid-r").len();
    assert!(!e.load_steady("r").unwrap());
    assert_eq!(dm.loads("dmraid-r").len(), loads, "no load mid-recovery");
    // Old extents stay until the array is in sync, then are freed.
    assert_eq!(e.reap_retired("r").unwrap(), 0);
    dm.set_status("dmraid-r", "raid5_ls 3 AAA 8192/8192 idle 0");
    // In sync: the same table without `rebuild`, once.
    assert!(e.load_steady("r").unwrap());
    let mut want = live();
    assert!(want.rebuild.is_empty());
    want.rebuild = vec![1];
    assert_eq!(
        RaidTable::parse(&dm.loads("dmraid-r")[loads - 1]).unwrap(),
        want,
        "only `rebuild` dropped"
    );
    assert!(!e.load_steady("r").unwrap());
    assert_eq!(dm.loads("dmraid-r").len(), loads + 1);
    assert_eq!(e.reap_retired("r").unwrap(), 2);
}

/// A raid1 `id` on two of three disks whose leg `leg` lost its disk and
/// was replaced on the third; the kernel has written every superblock.
fn raid1_with_a_replaced_leg(dm: &FakeDm, disks: &FakeDisks, e: &Engine, id: &str, leg: usize) {
    let v = e
        .create_volume(id, &params(&[("raidType", "raid1")]), 8 * MIB as u64)
        .unwrap();
    for at in meta_extents(e, id) {
        kernel_writes_superblock(disks, &at);
    }
    let lost = v.legs[leg].disk.clone().unwrap().display().to_string();
    disks.remove(&lost);
    let health = if leg == 0 { "DA" } else { "AD" };
    dm.set_status(
        &format!("dmraid-{id}"),
        &format!("raid1 2 {health} 16384/16384 idle 0"),
    );
    e.replace_leg(id, None, None).unwrap();
    for at in meta_extents(e, id).iter().filter(|at| at.0 != lost) {
        kernel_writes_superblock(disks, at);
    }
}

#[test]
fn a_rebuild_going_on_across_a_driver_restart_or_a_rate_change_is_never_started_over() {
    let (dm, disks, e) = setup(3, 64 * MIB);
    raid1_with_a_replaced_leg(&dm, &disks, &e, "m", 1);
    dm.set_status("dmraid-m", "raid1 2 Aa 4096/16384 recover 0");
    // The driver restarts while the kernel recovers: the live table with
    // `rebuild 1` stays (a load now would suspend the recovery for nothing).
    drop(e);
    let loads = dm.loads("dmraid-m").len();
    let e2 = engine(&dm, &disks);
    assert!(e2.activate_all().is_empty());
    assert_eq!(dm.loads("dmraid-m").len(), loads, "nothing reloaded");
    assert!(!e2.load_steady("m").unwrap());
    // A rate change mid-recovery loads the table without `rebuild`: with
    // it, md would start the recovery over.
    assert!(e2.set_recovery_rate("m", Some(1000)).unwrap());
    let last = dm.loads("dmraid-m").pop().unwrap();
    let t = RaidTable::parse(&last).unwrap();
    assert!(
        t.rebuild.is_empty() && t.max_recovery_rate == Some(1000),
        "{last}"
    );
    // Nothing left to load once it is in sync.
    dm.set_status("dmraid-m", "raid1 2 AA 16384/16384 idle 0");
    assert!(!e2.load_steady("m").unwrap());
    assert_eq!(dm.loads("dmraid-m").len(), loads + 1);
    // And a restarted driver that finds a finished rebuild's table loads
    // the steady one as it starts.
    let (dm3, disks3, e3) = setup(3, 64 * MIB);
    raid1_with_a_replaced_leg(&dm3, &disks3, &e3, "n", 0);
    drop(e3);
    dm3.set_status("dmraid-n", "raid1 2 AA 16384/16384 idle 0");
    let loads = dm3.loads("dmraid-n").len();
    let e4 = engine(&dm3, &disks3);
    assert!(e4.activate_all().is_empty());
    assert_eq!(dm3.loads("dmraid-n").len(), loads + 1);
    assert!(!e4.load_steady("n").unwrap());
    let t = RaidTable::parse(&dm3.table("dmraid-n").unwrap()[0].line()).unwrap();
    assert!(t.rebuild.is_empty(), "{t:?}");
}

#[test]
fn a_replacement_leg_the_kernel_never_took_is_rebuilt_at_the_next_start_then_loaded_steady() {
    let (dm, disks, e) = setup(3, 64 * MIB);
    let v = e
        .create_volume("m", &params(&[("raidType", "raid1")]), 8 * MIB as u64)
        .unwrap();
    for at in meta_extents(&e, "m") {
        kernel_writes_superblock(&disks, &at);
    }
    let lost = v.legs[1].disk.clone().unwrap();
    disks.remove(&lost.display().to_string());
    dm.set_status("dmraid-m", "raid1 2 AD 16384/16384 idle 0");
    e.replace_leg("m", None, None).unwrap();
    // The driver dies before the kernel wrote the new leg's superblock: the
    // new extents are in the labels and blank. The next start must load
    // `rebuild 1` (the kernel refuses a blank leg without it), then, once
    // in sync, the steady table.
    drop(e);
    let dm2 = Arc::new(FakeDm::new());
    dm2.status_after_swap("dmraid-m", "raid1 2 Aa 0/16384 recover 0");
    let e2 = engine(&dm2, &disks);
    assert!(e2.activate_all().is_empty());
    let loads = dm2.loads("dmraid-m");
    assert_eq!(loads.len(), 1, "{loads:#?}");
    assert!(loads[0].contains(" rebuild 1 "), "{}", loads[0]);
    dm2.set_status("dmraid-m", "raid1 2 AA 16384/16384 idle 0");
    assert!(e2.load_steady("m").unwrap());
    let loads = dm2.loads("dmraid-m");
    assert!(!loads[1].contains("rebuild"), "{}", loads[1]);
    // Once the kernel has written it, a start loads the steady table alone.
    for at in meta_extents(&e2, "m") {
        kernel_writes_superblock(&disks, &at);
    }
    drop(e2);
    let dm3 = Arc::new(FakeDm::new());
    let e3 = engine(&dm3, &disks);
    assert!(e3.activate_all().is_empty());
    assert_eq!(dm3.loads("dmraid-m").len(), 1);
    assert!(!dm3.loads("dmraid-m")[0].contains("rebuild"));
    // The same on a running array (the driver restarted, the kernel kept
    // the array up): a reload, not a second recovery.
    let e4 = engine(&dm3, &disks);
    assert!(e4.activate_all().is_empty());
    assert_eq!(dm3.loads("dmraid-m").len(), 1, "nothing reloaded");
}

#[test]
fn a_disk_back_after_its_leg_was_replaced_loses_the_leg_and_its_copy_is_freed() {
    let (dm, disks, e) = setup(3, 64 * MIB);
    let (lost, bytes) = replaced_leg_0(&dm, &disks, &e);
    let legs = leg_paths(&e, "m");
    assert!(!legs.contains(&lost));
    // The same disk comes back, its label still saying it holds leg 0.
    disks.plug(&lost, bytes);
    assert!(e.claim_disks().unwrap().is_empty());
    assert_eq!(leg_paths(&e, "m"), legs, "the replacement keeps leg 0");
    // A restart resolves it the same way, from the labels alone.
    drop(e);
    let dm2 = Arc::new(FakeDm::new());
    let e2 = engine(&dm2, &disks);
    assert!(e2.activate_all().is_empty());
    assert_eq!(leg_paths(&e2, "m"), legs);
    // In sync: the returning disk's stale copy is retired, wiped and freed.
    e2.reap_retired("m").unwrap();
    e2.wipe_pending().unwrap();
    let back = e2
        .disks()
        .into_iter()
        .find(|d| d.0.display().to_string() == lost)
        .unwrap();
    assert!(
        back.2 > 60 * MIB as u64,
        "stale copy freed: {} free",
        back.2
    );
    assert_eq!(leg_paths(&e2, "m"), legs);
}

#[test]
fn a_raid10_that_lost_a_whole_mirror_is_never_rebuilt_and_a_refused_leg_is_undone() {
    let (dm, disks, e) = setup(5, 64 * MIB);
    let s = params(&[("raidType", "raid10"), ("legs", "4")]);
    e.create_volume("m", &s, 8 * MIB as u64).unwrap();
    let labels_before: Vec<Vec<u8>> = ["/dev/vdb", "/dev/vdc", "/dev/vdd", "/dev/vde", "/dev/vdf"]
        .iter()
        .map(|d| disks.bytes(d))
        .collect();
    // Both legs of the second mirror are gone: nothing to rebuild from.
    dm.set_status("dmraid-m", "raid10 4 AADD 8192/8192 idle 0");
    let err = e.replace_leg("m", None, None).unwrap_err().to_string();
    assert!(
        err.contains("every copy of legs 2, 3 is gone") && err.contains("data lost"),
        "{err}"
    );
    let labels_after: Vec<Vec<u8>> = ["/dev/vdb", "/dev/vdc", "/dev/vdd", "/dev/vde", "/dev/vdf"]
        .iter()
        .map(|d| disks.bytes(d))
        .collect();
    assert!(labels_before == labels_after, "nothing recorded");
    // Legs in different mirrors: rebuildable; when the kernel refuses the
    // new leg, the labels go back to the old one and the spare's extents
    // are given up.
    dm.set_status("dmraid-m", "raid10 4 ADAD 8192/8192 idle 0");
    let legs = leg_paths(&e, "m");
    dm.fail_next("load dmraid-m");
    assert!(e.replace_leg("m", None, None).is_err());
    assert_eq!(
        leg_paths(&e, "m"),
        legs,
        "the old leg is still the volume's"
    );
    e.wipe_pending().unwrap();
    let spare = e
        .disks()
        .into_iter()
        .find(|d| !legs.contains(&d.0.display().to_string()))
        .unwrap();
    assert!(
        spare.2 > 60 * MIB as u64,
        "the spare's extents freed: {}",
        spare.2
    );
}

#[test]
fn a_disk_seen_half_removed_and_back_under_another_name_is_a_returning_disk() {
    let (dm, disks, e, away, bytes) = raid1_v_and_its_leg_1_disk();
    // Pulled: for a moment its node is still there, with no capacity
    // (the kernel is taking the disk apart). Not a disk, not a problem.
    disks.remove(&away);
    disks.add(&away, 0);
    assert!(e.claim_disks().unwrap().is_empty());
    disks.remove(&away);
    dm.set_status("dmraid-v", "raid1 2 AD 16384/16384 idle 0");
    // Back under a name no disk had.
    disks.plug("/dev/vdz", bytes);
    assert!(e.claim_disks().unwrap().is_empty());
    e.activate_all();
    let back = e.take_readded();
    assert_eq!(back.len(), 1, "{back:?}");
    assert_eq!(back[0].id, "v");
    assert_eq!(back[0].legs, vec![(1, PathBuf::from("/dev/vdz"))]);
}

/// The failed leg's disk is pulled between the round's presence check and
/// the replacement's label write (seen in `--test cluster`: a hot-remove,
/// and the replacement opened the disk a moment after it vanished). The
/// spare's label had taken the new leg and the array had not: the next
/// round found leg 0 "on" the spare, every disk holding a leg, and never
/// rebuilt. Now the partial record is given up and the next try, over the
/// disks present, rebuilds onto the spare.
#[test]
fn a_disk_pulled_during_the_replacements_label_write_leaves_no_half_recorded_leg() {
    let (dm, disks, e) = setup(4, 64 * MIB);
    let s = params(&[("raidType", "raid5_ls")]);
    let v = e.create_volume("r", &s, 8 * MIB as u64).unwrap();
    let failed = v.legs[0].disk.clone().unwrap();
    let spare = ["/dev/vdb", "/dev/vdc", "/dev/vdd", "/dev/vde"]
        .into_iter()
        .find(|d| {
            !v.legs
                .iter()
                .any(|l| l.disk.as_deref() == Some(std::path::Path::new(d)))
        })
        .unwrap();
    dm.set_status("dmraid-r", "raid5_ls 3 DAA 8192/8192 idle 0");
    disks.vanish_on_open(failed.to_str().unwrap());
    let err = e.replace_leg("r", Some(0), None).unwrap_err();
    println!("{err}");
    assert!(err.to_string().contains("gone"), "{err}");
    // Nothing names the spare as leg 0's place (the leg is missing, its
    // disk away), and the spare's new extents are given up.
    let after = e.volume("r").unwrap();
    assert_ne!(
        after.legs[0].disk.as_deref(),
        Some(std::path::Path::new(spare))
    );
    let on_spare: Vec<ExtentState> = lock(&e.claimed)
        .iter()
        .filter(|c| c.info.path == std::path::Path::new(spare))
        .flat_map(|c| c.label().extents.clone())
        .filter(|x| x.volume == "r")
        .map(|x| x.state)
        .collect();
    assert!(
        !on_spare.contains(&ExtentState::Active),
        "the spare holds no active extent of r: {on_spare:?}"
    );
    // The next round's try, the disk gone for good, rebuilds onto the spare.
    let healed = e.replace_leg("r", Some(0), None).unwrap();
    assert_eq!(
        healed.legs[0].disk.as_deref(),
        Some(std::path::Path::new(spare))
    );
    let live = RaidTable::parse(&dm.table("dmraid-r").unwrap()[0].line()).unwrap();
    assert_eq!(live.rebuild, vec![0]);
}
