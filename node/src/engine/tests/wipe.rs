//! Deleted bytes never handed out: blanking, the wiper, tombstones.

use super::*;

#[test]
fn a_new_volume_never_shows_the_deleted_volumes_filesystem() {
    let (dm, disks, e) = setup(2, 64 * MIB);
    let s = params(&[("raidType", "raid1")]);
    e.create_volume("old", &s, 8 * MIB as u64).unwrap();
    // The old volume gets an ext4 filesystem (its magic at byte 1080 of the array).
    let old = data_heads(&e, &dm, "old");
    for (disk, at) in &old {
        let mut d = disks.open(std::path::Path::new(disk)).unwrap();
        d.seek(SeekFrom::Start((*at + 1080) as u64)).unwrap();
        d.write_all(&[0x53, 0xef]).unwrap();
        assert_eq!(disks.bytes(disk)[*at + 1080..*at + 1082], [0x53, 0xef]);
    }
    e.delete_volume("old").unwrap();
    e.wipe_pending().unwrap();
    // A new volume on the same extents starts blank: NodeStage makes a new filesystem.
    e.create_volume("new", &s, 8 * MIB as u64).unwrap();
    let new = data_heads(&e, &dm, "new");
    assert_eq!(new, old, "the freed extents are reused");
    for (disk, at) in &new {
        assert_eq!(
            disks.bytes(disk)[*at + 1080..*at + 1082],
            [0, 0],
            "{disk} at {at}"
        );
    }
}

#[test]
fn a_disk_away_while_its_volume_was_deleted_frees_it_when_it_comes_back() {
    let (dm, disks, e, away, bytes) = raid1_v_and_its_leg_1_disk();
    let s = params(&[("raidType", "raid1")]);
    disks.remove(&away);
    dm.set_status("dmraid-v", "raid1 2 AD 16384/16384 idle 0");
    e.delete_volume("v").unwrap();
    // The same name made again while the disk is still away.
    let again = e.create_volume("v", &s, 8 * MIB as u64).unwrap();
    let legs = leg_paths(&e, "v");
    disks.plug(&away, bytes);
    assert!(e.claim_disks().unwrap().is_empty());
    e.wipe_pending().unwrap();
    let back = e
        .disks()
        .into_iter()
        .find(|d| d.0.display().to_string() == away)
        .unwrap();
    assert!(
        back.2 > 60 * MIB as u64,
        "the deleted volume's leg freed: {}",
        back.2
    );
    assert_eq!(
        leg_paths(&e, "v"),
        legs,
        "the new volume of that name untouched"
    );
    assert_eq!(e.volume_ids(), vec!["v".to_string()]);
    // A restart from the labels alone agrees.
    drop(e);
    let e2 = engine(&Arc::new(FakeDm::new()), &disks);
    assert!(e2.activate_all().is_empty());
    assert_eq!(leg_paths(&e2, "v"), legs);
    let _ = again;
    // Deleting it with every disk here leaves nothing behind anywhere.
    e2.delete_volume("v").unwrap();
    e2.wipe_pending().unwrap();
    assert!(e2.volume_ids().is_empty());
    assert!(e2.disks().iter().all(|d| d.2 > 60 * MIB as u64));
}

#[test]
fn a_deleted_volumes_bytes_never_reach_the_next_volume() {
    let (_dm, disks, e) = setup(3, 64 * MIB);
    let s = params(&[("raidType", "raid5_ls")]);
    e.create_volume("old", &s, 80 * MIB as u64).unwrap();
    let old = data_extents(&e, "old");
    for (disk, at, len) in &old {
        disks.poke(disk, *at, &vec![0xA5; *len]);
    }
    let free = |e: &Engine| -> u64 { e.free_gaps().iter().flatten().map(|g| g.0).sum() };
    let before = free(&e);
    e.delete_volume("old").unwrap();
    // Until wiped, the extents are nobody's: capacity does not count them
    // and a new volume cannot have them.
    assert_eq!(free(&e), before, "space being wiped is not free");
    assert!(e
        .create_volume("new", &s, 80 * MIB as u64)
        .is_err_and(|err| matches!(err, Error::NoRoom(_))));
    // A restart (a crash mid-wipe) finds the marks and finishes the wipe.
    drop(e);
    let dm2 = Arc::new(FakeDm::new());
    let e2 = engine(&dm2, &disks);
    assert!(e2.activate_all().is_empty());
    assert_eq!(e2.wipe_pending().unwrap(), 6);
    for (disk, at, len) in &old {
        assert!(
            disks.bytes(disk)[*at..*at + *len].iter().all(|b| *b == 0),
            "{disk}: the wiped extent reads as zeroes"
        );
    }
    e2.create_volume("new", &s, 80 * MIB as u64).unwrap();
    assert_eq!(
        data_extents(&e2, "new"),
        old,
        "the wiped extents are reused"
    );
    // Handed out, they are no longer known zero (the tenant writes them).
    assert!(lock(&e2.claimed)
        .iter()
        .all(|c| c
            .label()
            .zeroed
            .iter()
            .all(|z| old.iter().all(|(_, at, len)| {
                let (zs, ze) = (
                    Sectors(z.0).bytes().0 as usize,
                    Sectors(z.0 + z.1).bytes().0 as usize,
                );
                ze <= *at || zs >= at + len
            }))));
}

#[test]
fn nosync_zeroes_space_not_known_to_be_zero_and_trusts_wiped_space() {
    let dm = Arc::new(FakeDm::new());
    let disks = FakeDisks::new();
    for d in ["/dev/vdb", "/dev/vdc", "/dev/vdd"] {
        // A disk's old contents: no signature, just bytes.
        disks.plug(d, vec![0x5A; 64 * MIB]);
    }
    let e = engine(&dm, &disks);
    let s = params(&[("raidType", "raid5_ls"), ("sync", "nosync")]);
    e.create_volume("v", &s, 16 * MIB as u64).unwrap();
    for (disk, at, len) in data_extents(&e, "v") {
        assert!(
            disks.bytes(&disk)[at..at + len].iter().all(|b| *b == 0),
            "{disk}: a nosync leg starts as zeroes"
        );
    }
    // With the default sync policy the kernel's resync makes the legs
    // agree: nothing is zeroed beyond the array's head.
    e.create_volume("w", &params(&[("raidType", "raid5_ls")]), 16 * MIB as u64)
        .unwrap();
    let (disk, at, len) = data_extents(&e, "w").remove(0);
    assert_eq!(disks.bytes(&disk)[at + len - 1], 0x5A);
}

#[test]
fn tombstones_are_bounded() {
    let mut l = crate::engine::labels::new_label("d".parse().unwrap(), "n", 0);
    l.add_tombstones((0..2000u64).map(|i| (format!("u{i}"), i)));
    assert_eq!(l.deleted.len(), crate::engine::labels::MAX_TOMBSTONES);
    assert!(l.deleted.contains_key("u1999") && !l.deleted.contains_key("u0"));
}

#[test]
fn a_volume_deleted_while_its_disks_are_away_is_freed_when_they_return() {
    let (_dm, disks, e) = setup(3, 64 * MIB);
    let s = params(&[("raidType", "raid1")]);
    e.create_volume("v", &s, 8 * MIB as u64).unwrap();
    let legs = leg_paths(&e, "v");
    drop(e);
    // Made a minute ago (a deletion by id spares volumes made after it).
    for p in &legs {
        let mut h = disks.open(std::path::Path::new(p)).unwrap();
        let mut loaded = labels::read(&mut h).unwrap();
        let mut label = loaded.label.clone().unwrap();
        label.volumes.get_mut("v").unwrap().created -= 60;
        labels::write(&mut h, &mut loaded, &label).unwrap();
    }
    let saved: Vec<(String, Vec<u8>)> = legs.iter().map(|p| (p.clone(), disks.bytes(p))).collect();
    for p in &legs {
        disks.remove(p);
    }
    // After a restart nothing here knows the volume: only the caller does.
    let e = engine(&Arc::new(FakeDm::new()), &disks);
    e.delete_made_volume("v").unwrap();
    for (p, bytes) in saved {
        disks.plug(&p, bytes);
    }
    assert!(e.claim_disks().unwrap().is_empty());
    assert!(e.volume_ids().is_empty(), "{:?}", e.volume_ids());
    e.wipe_pending().unwrap();
    assert!(e.disks().iter().all(|d| d.2 > 60 * MIB as u64));
    // A volume of the same id made afterwards is not what was deleted.
    e.create_volume("v", &s, 8 * MIB as u64).unwrap();
    drop(e);
    let e = engine(&Arc::new(FakeDm::new()), &disks);
    assert!(e.activate_all().is_empty());
    assert!(e.volume("v").is_ok());
}
