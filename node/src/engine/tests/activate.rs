//! Start-up from the labels: the crash fix, volumes whose disks are away.

use super::*;

#[test]
fn a_superblock_the_crash_fix_does_not_know_is_left_alone_and_the_array_starts() {
    let (_dm, disks, e) = setup(3, 64 * MIB);
    e.create_volume("v", &params(&[("raidType", "raid5_ls")]), 8 * MIB as u64)
        .unwrap();
    let metas = meta_extents(&e, "v");
    // "Clean" superblocks; the last leg's carries an incompat feature.
    for (i, (p, off)) in metas.iter().enumerate() {
        let mut sb = vec![0u8; 148];
        sb[0..4].copy_from_slice(b"DmRd");
        sb[4..8].copy_from_slice(&1u32.to_le_bytes());
        sb[40..48].copy_from_slice(&u64::MAX.to_le_bytes());
        sb[64..72].copy_from_slice(&u64::MAX.to_le_bytes());
        if i == 2 {
            sb[144..148].copy_from_slice(&4u32.to_le_bytes());
        }
        disks.poke(p, *off, &sb);
    }
    let before: Vec<Vec<u8>> = metas
        .iter()
        .map(|(p, off)| disks.bytes(p)[*off..off + 4096].to_vec())
        .collect();
    drop(e);
    let e2 = engine(&Arc::new(FakeDm::new()), &disks);
    assert!(e2.activate_all().is_empty(), "the array starts");
    let after: Vec<Vec<u8>> = metas
        .iter()
        .map(|(p, off)| disks.bytes(p)[*off..off + 4096].to_vec())
        .collect();
    assert_eq!(after, before, "no leg's superblock was written");
    let v = e2.volume("v").unwrap();
    assert_eq!(v.unclean, None);
    let why = v.crash_fix_refused.expect("the refusal is kept");
    assert!(why.contains("unknown incompat features 0x4"), "{why}");
    assert!(why.contains("kernel "), "names the kernel: {why}");
}

#[test]
fn an_unclean_shutdown_patches_the_superblocks_and_a_clean_one_does_not() {
    let (_dm, disks, e) = setup(3, 64 * MIB);
    let v = e
        .create_volume("v", &params(&[("raidType", "raid5_ls")]), 8 * MIB as u64)
        .unwrap();
    // Pretend the kernel wrote superblocks ("clean", offset MaxSector) and a dirty bitmap.
    let metas = meta_extents(&e, "v");
    assert_eq!(metas.len(), 3);
    let write_sb = |disks: &FakeDisks| {
        for (p, off) in &metas {
            let mut sb = vec![0u8; 148];
            sb[0..4].copy_from_slice(b"DmRd");
            sb[4..8].copy_from_slice(&1u32.to_le_bytes());
            sb[40..48].copy_from_slice(&u64::MAX.to_le_bytes());
            // no reshape: MaxSector
            sb[64..72].copy_from_slice(&u64::MAX.to_le_bytes());
            disks.poke(p, *off, &sb);
            let mut bm = vec![0u8; 64];
            bm[0..4].copy_from_slice(b"bitm");
            bm[40..48].copy_from_slice(&16384u64.to_le_bytes());
            bm[52..56].copy_from_slice(&(1u32 << 20).to_le_bytes());
            disks.poke(p, off + 4096, &bm);
            disks.poke(p, off + 4096 + 256, &[0b101]);
        }
    };
    let offset = |disks: &FakeDisks| -> Vec<u64> {
        metas
            .iter()
            .map(|(p, off)| {
                let b = disks.bytes(p);
                superblock::parse_superblock(&b[*off..off + 64])
                    .unwrap()
                    .array_resync_offset
            })
            .collect()
    };
    // Crash: the process dies with the array up (no deactivate).
    write_sb(&disks);
    drop(e);
    let e2 = engine(&Arc::new(FakeDm::new()), &disks);
    assert!(e2.activate_all().is_empty());
    assert_eq!(
        offset(&disks),
        vec![0, 0, 0],
        "every leg's superblock patched"
    );
    assert_eq!(e2.volume("v").unwrap().unclean, Some((2, 8)));
    // Orderly shutdown: marker set, next activation leaves superblocks alone.
    assert!(e2.deactivate_all().is_empty());
    write_sb(&disks);
    let e3 = engine(&Arc::new(FakeDm::new()), &disks);
    assert!(e3.activate_all().is_empty());
    assert_eq!(offset(&disks), vec![u64::MAX; 3]);
    assert_eq!(e3.volume("v").unwrap().unclean, None);
    let _ = v;
}

#[test]
fn a_volume_whose_disks_are_away_is_never_made_again_and_comes_back_with_them() {
    let (dm, disks, e) = setup(4, 64 * MIB);
    let s = params(&[("raidType", "raid1")]);
    e.create_volume("v", &s, 8 * MIB as u64).unwrap();
    let legs = leg_paths(&e, "v");
    let saved: Vec<(String, Vec<u8>)> = legs.iter().map(|p| (p.clone(), disks.bytes(p))).collect();
    for p in &legs {
        disks.remove(p);
    }
    // The engine that saw the disks go remembers them.
    let err = e.create_volume("v", &s, 8 * MIB as u64).unwrap_err();
    assert!(
        matches!(&err, Error::DisksMissing { detail, .. } if detail.contains(&legs[0])),
        "{err}"
    );
    // A restart forgot those disks, but the array is still loaded.
    drop(e);
    let e = engine(&dm, &disks);
    let failures = e.activate_all();
    assert!(failures.is_empty(), "{failures:?}");
    let err = e.create_volume("v", &s, 8 * MIB as u64).unwrap_err();
    assert!(matches!(err, Error::DisksMissing { .. }), "{err}");
    let free: Vec<u64> = e.disks().iter().map(|d| d.2).collect();
    // The disks come back: the same volume, on the same extents, nothing
    // made on the other disks meanwhile.
    for (p, bytes) in saved {
        disks.plug(&p, bytes);
    }
    let before = e.claim_count();
    assert!(e.claim_disks().unwrap().is_empty());
    assert!(e.claim_count() > before);
    assert!(e.activate_all().is_empty());
    assert_eq!(leg_paths(&e, "v"), legs);
    let others: Vec<u64> = e
        .disks()
        .iter()
        .filter(|d| !legs.contains(&d.0.display().to_string()))
        .map(|d| d.2)
        .collect();
    assert_eq!(others, free, "nothing was allocated on the other disks");
    assert_eq!(
        dm.names().iter().filter(|n| *n == "dmraid-v").count(),
        1,
        "one array"
    );
}

/// Labels written by the format-1 driver (a fixture of its bytes) are
/// claimed and activated by this one into the very tables that driver
/// loaded, and what this one writes back stays format 1 while no leg has
/// several segments, so that driver can still read it.
#[test]
fn labels_of_the_format_1_driver_activate_the_same_devices() {
    let text = include_str!("format1-labels.txt");
    let disks = FakeDisks::new();
    let mut want = Vec::new();
    let mut seen = BTreeSet::new();
    for line in text.lines() {
        if let Some(t) = line.strip_prefix("# dmraid-") {
            let (name, table) = t.split_once(' ').unwrap();
            want.push((format!("dmraid-{name}"), table.to_string()));
            continue;
        }
        if line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split(' ').collect();
        if seen.insert(f[0].to_string()) {
            disks.add(f[0], 64 * MIB);
        }
        let at = if f[1] == "A" {
            0
        } else {
            labels::SLOT_BYTES as usize
        };
        let bytes: Vec<u8> = (0..f[2].len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&f[2][i..i + 2], 16).unwrap())
            .collect();
        disks.poke(f[0], at, &bytes);
    }
    assert_eq!(want.len(), 12);
    let dm = Arc::new(FakeDm::new());
    let e = engine(&dm, &disks);
    assert!(e.activate_all().is_empty());
    // The arrays' own device numbers are the fake's: masked.
    let masked = |t: &str| {
        t.split(' ')
            .map(|w| if w.starts_with("253:") { "253:_" } else { w })
            .collect::<Vec<_>>()
            .join(" ")
    };
    for (name, table) in &want {
        let got = dm.table(name).unwrap();
        let got = got.iter().map(Target::line).collect::<Vec<_>>().join("; ");
        assert_eq!(masked(&got), masked(table), "{name}");
    }
    for d in &seen {
        let b = disks.bytes(d);
        for at in [0, labels::SLOT_BYTES as usize] {
            assert_eq!(&b[at + 8..at + 12], &1u32.to_le_bytes(), "{d} at {at}");
        }
    }
}

/// A label that records a layer this driver does not know (a newer
/// driver's volume) leaves that volume down, says why, and writes nothing:
/// no crash fix, no label change; the other volumes start.
#[test]
fn a_volume_whose_labels_record_a_layer_this_driver_does_not_know_stays_down_untouched() {
    let (dm, disks, e) = setup(2, 64 * MIB);
    let spec = params(&[("raidType", "raid1")]);
    e.create_volume("v", &spec, 8 * MIB as u64).unwrap();
    e.create_volume("w", &spec, 8 * MIB as u64).unwrap();
    e.edit_volume_labels("v", |l| {
        l.volumes.get_mut("v").unwrap().stack =
            vec!["linear".into(), "integrity".into(), "raid".into()];
    })
    .unwrap();
    for at in meta_extents(&e, "v") {
        kernel_writes_superblock(&disks, &at);
    }
    // A crash: no clean-shutdown marker, the devices gone.
    drop(e);
    let dm2 = Arc::new(FakeDm::new());
    let images = |d: &FakeDisks| ["/dev/vdb", "/dev/vdc"].map(|p| d.bytes(p));
    let before = images(&disks);
    let e2 = engine(&dm2, &disks);
    let failed = e2.activate_all();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0].0, "v");
    let why = failed[0].1.to_string();
    assert!(
        why.contains("\"integrity\" is not one this driver knows (it knows linear, raid)"),
        "{why}"
    );
    let names = DeviceMapper::names(dm2.as_ref()).unwrap();
    assert!(
        names.iter().all(|n| !n.starts_with("dmraid-v")),
        "{names:?}"
    );
    assert!(names.contains(&"dmraid-w".to_string()));
    let after = images(&disks);
    let v_meta = meta_extents(&e2, "v");
    for (p, off) in v_meta {
        let i = if p == "/dev/vdb" { 0 } else { 1 };
        let same = after[i][off..off + 4096] == before[i][off..off + 4096];
        assert!(same, "v's superblock on {p} was written");
    }
    drop(dm);
}

/// A resync the rate policy's reload resumed goes on as a "requested" sync
/// that dm-raid reports as `repair`: the volume reads it as the resync it
/// is (no scrub its operator did not ask for, no resync finished early);
/// once in sync and idle, a repair reads as a repair again.
#[test]
fn a_sync_resumed_by_a_reload_reads_as_that_sync_not_a_repair() {
    use dmraid_api::status::SyncAction;
    let (dm, _disks, e) = setup(2, 64 * MIB);
    e.create_volume("v", &params(&[("raidType", "raid1")]), 8 * MIB as u64)
        .unwrap();
    dm.set_status("dmraid-v", "raid1 2 aa 100/16384 resync 0");
    assert!(e.set_recovery_rate("v", Some(50_000)).unwrap());
    dm.set_status("dmraid-v", "raid1 2 AA 300/16384 repair 0");
    let v = e.volume("v").unwrap();
    assert_eq!(v.status.as_ref().unwrap().action, Some(SyncAction::Resync));
    let (_, words) = crate::health::condition::condition(&v);
    assert!(words.contains("resyncing: 1%"), "{words}");
    dm.set_status("dmraid-v", "raid1 2 AA 16384/16384 idle 0");
    assert_eq!(
        e.volume("v").unwrap().status.unwrap().action,
        Some(SyncAction::Idle)
    );
    dm.set_status("dmraid-v", "raid1 2 AA 300/16384 repair 0");
    assert_eq!(
        e.volume("v").unwrap().status.unwrap().action,
        Some(SyncAction::Repair),
        "an operator's repair after the sync ended"
    );
}

/// A retune's reload freezes a resync first (md then writes where it
/// stands, and the new table, which reads the checkpoint at its load,
/// goes on from there), also one an earlier reload resumed as `repair`;
/// a rebuild or an idle array is reloaded as it is. A load that fails
/// lets the old table's resync go on.
#[test]
fn a_retune_freezes_a_resync_before_the_reload_but_not_a_rebuild() {
    let (dm, _disks, e) = setup(2, 64 * MIB);
    e.create_volume("v", &params(&[("raidType", "raid1")]), 8 * MIB as u64)
        .unwrap();
    let ops_after = |from: usize| -> Vec<String> {
        dm.log()[from..]
            .iter()
            .filter(|l| {
                !l.starts_with("status") && !l.starts_with("info") && !l.starts_with("table")
            })
            .cloned()
            .collect()
    };
    let reload = ["load dmraid-v", "suspend dmraid-v", "resume dmraid-v"];
    let frozen_reload = [&["message dmraid-v frozen"][..], &reload[..]].concat();
    for (status, rate, want) in [
        ("raid1 2 aa 100/16384 resync 0", 50_000, &frozen_reload[..]),
        // The same resync, resumed by that reload as a "requested" one.
        ("raid1 2 AA 300/16384 repair 0", 60_000, &frozen_reload[..]),
        ("raid1 2 aA 300/16384 recover 0", 70_000, &reload[..]),
        ("raid1 2 AA 16384/16384 idle 0", 80_000, &reload[..]),
    ] {
        dm.set_status("dmraid-v", status);
        let from = dm.log().len();
        assert!(e.set_recovery_rate("v", Some(rate)).unwrap());
        assert_eq!(ops_after(from), want, "{status}");
    }
    dm.set_status("dmraid-v", "raid1 2 aa 100/16384 resync 0");
    dm.fail_next("load dmraid-v");
    let from = dm.log().len();
    assert!(e.set_recovery_rate("v", Some(90_000)).is_err());
    assert_eq!(
        ops_after(from),
        ["message dmraid-v frozen", "message dmraid-v idle"],
        "the old table's resync unfrozen"
    );
}

/// A resync a reload swapped the table under that the status then shows
/// moving again from near 0 was started over by the kernel (6.12): the
/// engine says so once; one that goes on from where it stood (6.1,
/// frozen first) or a status still at 0 just after the load does not.
#[test]
fn a_resync_the_kernel_starts_over_at_a_reload_is_noticed() {
    let (dm, _disks, e) = setup(2, 64 * MIB);
    e.create_volume("v", &params(&[("raidType", "raid1")]), 8 * MIB as u64)
        .unwrap();
    dm.set_status("dmraid-v", "raid1 2 aa 4000/16384 resync 0");
    assert!(e.set_recovery_rate("v", Some(50_000)).unwrap());
    for goes_on in [
        "raid1 2 AA 0/16384 repair 0",
        "raid1 2 AA 4100/16384 repair 0",
    ] {
        dm.set_status("dmraid-v", goes_on);
        e.volume("v").unwrap();
    }
    assert!(!e.reload_restarts_resync(), "went on from 4000");
    dm.set_status("dmraid-v", "raid1 2 AA 6000/16384 repair 0");
    assert!(e.set_recovery_rate("v", Some(60_000)).unwrap());
    for started_over in [
        "raid1 2 AA 0/16384 repair 0",
        "raid1 2 AA 700/16384 repair 0",
    ] {
        dm.set_status("dmraid-v", started_over);
        e.volume("v").unwrap();
    }
    assert!(e.reload_restarts_resync(), "back to 700 from 6000");
}

/// The sequence number of the label on `path` (one more for every write).
fn label_seq(disks: &FakeDisks, path: &str) -> u64 {
    let mut h = disks.open(std::path::Path::new(path)).unwrap();
    labels::read(&mut h).unwrap().seq
}

/// Start-up clears the clean-shutdown marks of all its volumes in one label
/// write a disk, not one a volume, and each volume still gets the crash fix
/// exactly when it was not stopped cleanly.
#[test]
fn start_up_writes_each_label_once_whatever_the_number_of_volumes() {
    let (_dm, disks, e) = setup(2, 64 * MIB);
    let s = params(&[("raidType", "raid1")]);
    for v in ["v1", "v2", "v3", "v4", "v5"] {
        e.create_volume(v, &s, 4 * MIB as u64).unwrap();
    }
    let paths = leg_paths(&e, "v1");
    assert!(e.deactivate_all().is_empty());
    drop(e);
    let before: Vec<u64> = paths.iter().map(|p| label_seq(&disks, p)).collect();
    let dm2 = Arc::new(FakeDm::new());
    let e2 = engine(&dm2, &disks);
    assert!(e2.activate_all().is_empty());
    let after: Vec<u64> = paths.iter().map(|p| label_seq(&disks, p)).collect();
    for ((p, b), a) in paths.iter().zip(&before).zip(&after) {
        assert_eq!(a - b, 1, "{p}: label writes at start-up");
    }
    for v in ["v1", "v2", "v3", "v4", "v5"] {
        assert!(dm2.table(&format!("dmraid-{v}")).is_ok(), "{v} started");
        assert!(
            e2.volume(v).unwrap().unclean.is_none(),
            "{v}: stopped cleanly"
        );
    }
    // Every mark is cleared: a crash now is a crash for each volume.
    drop(e2);
    let e3 = engine(&Arc::new(FakeDm::new()), &disks);
    let c = lock(&e3.claimed);
    for claimed in c.iter() {
        assert!(claimed.label().volumes.values().all(|r| !r.clean_shutdown));
    }
}

/// A create is recorded finished after its array's table is loaded and
/// before the array goes live: when the resume fails, both labels already
/// say complete and the array's table is loaded but not live; the retried
/// create finds the volume and makes it live.
#[test]
fn a_create_is_recorded_finished_before_its_array_goes_live() {
    let (dm, disks, e) = setup(2, 64 * MIB);
    let s = params(&[("raidType", "raid1")]);
    dm.fail_next("resume dmraid-v");
    assert!(e.create_volume("v", &s, 8 * MIB as u64).is_err());
    for p in ["/dev/vdb", "/dev/vdc"] {
        let mut h = disks.open(std::path::Path::new(p)).unwrap();
        let label = labels::read(&mut h).unwrap().label.unwrap();
        assert_eq!(
            label.volumes.get("v").map(|r| r.complete),
            Some(true),
            "{p}"
        );
    }
    let info = dm.info("dmraid-v").unwrap().unwrap();
    assert!(!info.live_table && info.inactive_table, "{info:?}");
    e.create_volume("v", &s, 8 * MIB as u64).unwrap();
    assert!(dm.info("dmraid-v").unwrap().unwrap().live_table);
}

/// A power cut after a create was recorded finished but before its array
/// went live: the next start brings the volume up as the new array it is
/// (no superblock on any leg), with no crash fix to report.
#[test]
fn a_create_cut_before_its_array_went_live_starts_as_a_new_array() {
    let (dm, disks, e) = setup(2, 64 * MIB);
    let s = params(&[("raidType", "raid1")]);
    dm.fail_next("resume dmraid-v");
    assert!(e.create_volume("v", &s, 8 * MIB as u64).is_err());
    drop(e);
    let dm2 = Arc::new(FakeDm::new());
    let e2 = engine(&dm2, &disks);
    assert!(e2.activate_all().is_empty());
    assert!(dm2.info("dmraid-v").unwrap().unwrap().live_table);
    let v = e2.volume("v").unwrap();
    assert!(!v.creating);
    assert_eq!(v.unclean, None, "no superblock: nothing to repair");
}

/// Only 6.1 was measured going on with a resync across a reload (frozen
/// first); 6.12 starts it over, and a kernel not measured is taken to.
#[test]
fn a_resync_is_held_back_only_on_the_kernel_measured_keeping_it() {
    assert!(crate::engine::resync_survives_reload(
        "6.1.0-50-cloud-amd64\n"
    ));
    for other in [
        "6.12.118+deb12-cloud-amd64",
        "6.10.3",
        "6.11.0",
        "5.15.0-91-generic",
        "",
    ] {
        assert!(!crate::engine::resync_survives_reload(other), "{other}");
    }
}
