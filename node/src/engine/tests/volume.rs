//! A volume's life on fake devices: create, delete, expand, names, races.

use super::*;

#[test]
fn create_writes_labels_then_devices_and_is_idempotent() {
    let (dm, _disks, e) = setup(3, 64 * MIB);
    let s = params(&[("raidType", "raid5_ls")]);
    let v = e.create_volume("pvc-1", &s, 32 * MIB as u64).unwrap();
    assert!(v.capacity >= 32 * MIB as u64);
    assert_eq!(v.legs.iter().filter(|l| l.disk.is_some()).count(), 3);
    let names = dm.names();
    assert!(names.contains(&"dmraid-pvc-1".to_string()));
    assert_eq!(names.len(), 7, "3 meta + 3 data + the array: {names:?}");
    let raid_line = dm.table("dmraid-pvc-1").unwrap()[0].line();
    let t = RaidTable::parse(&raid_line).unwrap();
    assert_eq!(
        (t.raid_type, t.legs.len()),
        (dmraid_api::RaidType::Raid5_ls, 3)
    );
    // The same request again: same volume, no new devices.
    let ops = dm.log().len();
    let again = e.create_volume("pvc-1", &s, 32 * MIB as u64).unwrap();
    assert_eq!(again.capacity, v.capacity);
    assert_eq!(dm.log().len(), ops, "nothing to do the second time");
    // A different request under the same name.
    let e2 = e.create_volume("pvc-1", &s, 16 * MIB as u64).unwrap_err();
    assert!(matches!(e2, Error::AlreadyExists(_)), "{e2}");
}

#[test]
fn labels_alone_rebuild_the_array_after_a_restart() {
    let (dm, disks, e) = setup(3, 64 * MIB);
    e.create_volume(
        "v1",
        &params(&[("raidType", "raid1"), ("legs", "3")]),
        8 * MIB as u64,
    )
    .unwrap();
    let before = dm.table("dmraid-v1").unwrap();
    drop(e);
    // A new process, devices gone (reboot): everything comes back from the labels.
    let dm2 = Arc::new(FakeDm::new());
    let e2 = engine(&dm2, &disks);
    assert!(e2.activate_all().is_empty());
    let after = dm2.table("dmraid-v1").unwrap();
    assert_eq!(
        RaidTable::parse(&after[0].line()).unwrap().raid_type,
        RaidTable::parse(&before[0].line()).unwrap().raid_type
    );
    assert_eq!(dm2.names().len(), 7);
    assert_eq!(e2.volume_ids(), vec!["v1".to_string()]);
}

#[test]
fn a_missing_disk_renders_dashes_for_its_leg() {
    let (_dm, disks, e) = setup(3, 64 * MIB);
    let v = e
        .create_volume("v", &params(&[("raidType", "raid5_ls")]), 8 * MIB as u64)
        .unwrap();
    e.deactivate_all();
    let lost = v.legs[1].disk.clone().unwrap();
    disks.remove(lost.to_str().unwrap());
    let dm2 = Arc::new(FakeDm::new());
    let e2 = engine(&dm2, &disks);
    assert!(e2.activate_all().is_empty());
    let t = RaidTable::parse(&dm2.table("dmraid-v").unwrap()[0].line()).unwrap();
    assert!(t.legs[1].is_none(), "{}", t.render());
    assert!(t.legs[0].is_some() && t.legs[2].is_some());
}

#[test]
fn delete_refuses_an_open_volume_then_frees_its_extents_for_reuse() {
    let (dm, _disks, e) = setup(3, 64 * MIB);
    let s1 = params(&[("raidType", "raid5_ls")]);
    let s2 = params(&[("raidType", "raid1"), ("legs", "3")]);
    e.create_volume("a", &s1, 16 * MIB as u64).unwrap();
    e.create_volume("b", &s2, 8 * MIB as u64).unwrap();
    let b_table = dm.table("dmraid-b").unwrap();
    dm.set_open("dmraid-a", true);
    assert!(matches!(e.delete_volume("a"), Err(Error::Precondition(_))));
    assert!(dm.info("dmraid-a").unwrap().is_some(), "nothing removed");
    dm.set_open("dmraid-a", false);
    let free_before: u64 = e.disks().iter().map(|d| d.2).sum();
    e.delete_volume("a").unwrap();
    let wiping: u64 = e.disks().iter().map(|d| d.2).sum();
    assert_eq!(wiping, free_before, "extents being wiped are not free yet");
    assert_eq!(
        e.wipe_pending().unwrap(),
        6,
        "a meta and a data extent per leg"
    );
    let free_after: u64 = e.disks().iter().map(|d| d.2).sum();
    assert!(free_after > free_before);
    assert!(dm.names().iter().all(|n| !n.starts_with("dmraid-a")));
    assert_eq!(
        dm.table("dmraid-b").unwrap(),
        b_table,
        "the other volume is untouched"
    );
    e.delete_volume("a").unwrap();
    // The freed space serves a new volume.
    e.create_volume("c", &s1, 16 * MIB as u64).unwrap();
}

#[test]
fn no_room_is_resource_exhausted_and_bad_specs_write_nothing() {
    let (dm, disks, e) = setup(2, 32 * MIB);
    let before: Vec<Vec<u8>> = ["/dev/vdb", "/dev/vdc"]
        .iter()
        .map(|p| disks.bytes(p))
        .collect();
    let err = e
        .create_volume("big", &params(&[("raidType", "raid5_ls")]), 8 * MIB as u64)
        .unwrap_err();
    let status: tonic::Status = err.into();
    assert_eq!(status.code(), tonic::Code::ResourceExhausted);
    assert!(
        status.message().contains("needs 3 distinct disks"),
        "{}",
        status.message()
    );
    let err = e
        .create_volume("bad id/x", &params(&[("raidType", "raid1")]), MIB as u64)
        .unwrap_err();
    assert_eq!(
        tonic::Status::from(err).code(),
        tonic::Code::InvalidArgument
    );
    let after: Vec<Vec<u8>> = ["/dev/vdb", "/dev/vdc"]
        .iter()
        .map(|p| disks.bytes(p))
        .collect();
    assert_eq!(before, after, "rejected requests change no label");
    assert!(dm.names().is_empty());
}

#[test]
fn a_half_done_create_is_rolled_back_and_redone() {
    let (dm, _disks, e) = setup(3, 64 * MIB);
    let s = params(&[("raidType", "raid5_ls")]);
    dm.fail_next("load dmraid-v");
    assert!(e.create_volume("v", &s, 8 * MIB as u64).is_err());
    // Labels say incomplete; a retry undoes and finishes it.
    let v = e.create_volume("v", &s, 8 * MIB as u64).unwrap();
    assert!(v.status.is_some());
    assert_eq!(dm.names().len(), 7);
}

/// The node formats and mounts a volume held: the monitor's ceiling
/// retune (a reload, whose suspend would fail the mount) passes over it
/// meanwhile and may run once it is let go.
#[test]
fn a_volume_held_for_a_mount_is_not_reloaded_meanwhile() {
    let (_dm, _disks, e) = setup(3, 64 * MIB);
    let s = params(&[("raidType", "raid1")]);
    e.create_volume("v", &s, 8 * MIB as u64).unwrap();
    let inside = e
        .with_volume_held("v", || e.set_recovery_rate("v", Some(1000)))
        .unwrap();
    assert!(matches!(inside, Err(Error::Busy(_))), "{inside:?}");
    assert!(e.set_recovery_rate("v", Some(1000)).is_ok());
    assert!(matches!(
        e.with_volume_held("bad id!", || ()),
        Err(Error::BadId(_))
    ));
}

#[test]
fn concurrent_operations_on_one_volume_abort() {
    let (_dm, _disks, e) = setup(3, 64 * MIB);
    let _held = e.lock_volume("v").unwrap();
    let err = e.delete_volume("v").unwrap_err();
    assert_eq!(tonic::Status::from(err).code(), tonic::Code::Aborted);
}

/// An operation that ends within the wait (the monitor's reload of a
/// recovery ceiling) does not fail a CSI call that comes meanwhile: the
/// call waits for it (csi-sanity's DeleteVolume got Aborted before).
#[test]
fn a_call_waits_for_a_short_operation_in_flight() {
    let (_dm, _disks, e) = setup(3, 64 * MIB);
    let s = params(&[("raidType", "raid1")]);
    e.create_volume("v", &s, 8 * MIB as u64).unwrap();
    std::thread::scope(|scope| {
        let held = e.lock_volume("v").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        scope.spawn(move || {
            rx.recv().unwrap();
            std::thread::sleep(std::time::Duration::from_millis(300));
            drop(held);
        });
        tx.send(()).unwrap();
        // Housekeeping does not wait: it tries next round.
        assert!(matches!(
            e.set_recovery_rate("v", Some(1000)),
            Err(Error::Busy(_))
        ));
        e.delete_volume("v").unwrap();
    });
    assert!(e.volume("v").is_err());
}

/// The new region of a grown array is resynced as a "requested" sync,
/// which dm-raid reports as `repair`: the volume reads it as a resync (no
/// repair started and finished that nobody asked for), and a repair after
/// it as a repair.
#[test]
fn the_resync_of_a_grown_region_reads_as_a_resync_not_a_repair() {
    use dmraid_api::status::SyncAction;
    let (dm, _disks, e) = setup(3, 128 * MIB);
    e.create_volume("g", &params(&[("raidType", "raid1")]), 16 * MIB as u64)
        .unwrap();
    dm.set_status("dmraid-g", "raid1 2 AA 32768/32768 idle 0");
    // The grown table resyncs its new region, as dm-raid says: repair.
    dm.status_after_swap("dmraid-g", "raid1 2 AA 32768/98304 repair 0");
    let grown = e.expand_volume("g", 48 * MIB as u64).unwrap();
    assert_eq!(grown.status.unwrap().action, Some(SyncAction::Resync));
    dm.set_status("dmraid-g", "raid1 2 AA 40000/98304 repair 0");
    assert_eq!(
        e.volume("g").unwrap().status.unwrap().action,
        Some(SyncAction::Resync)
    );
    dm.set_status("dmraid-g", "raid1 2 AA 98304/98304 idle 0");
    e.volume("g").unwrap();
    dm.set_status("dmraid-g", "raid1 2 AA 100/98304 repair 0");
    assert_eq!(
        e.volume("g").unwrap().status.unwrap().action,
        Some(SyncAction::Repair),
        "an operator's repair after the grown region's resync"
    );
}

#[test]
fn expand_grows_extents_in_place_and_reloads_with_the_new_length() {
    let (dm, _disks, e) = setup(3, 128 * MIB);
    let s = params(&[("raidType", "raid5_ls")]);
    let v = e.create_volume("g", &s, 16 * MIB as u64).unwrap();
    let grown = e.expand_volume("g", 48 * MIB as u64).unwrap();
    assert!(grown.capacity >= 48 * MIB as u64 && grown.capacity > v.capacity);
    let t = RaidTable::parse(&dm.table("dmraid-g").unwrap()[0].line()).unwrap();
    assert_eq!(t.length.bytes().0, grown.capacity);
    assert_eq!(
        dm.table("dmraid-g+d0").unwrap()[0].length,
        grown.spec.leg_data
    );
    // Smaller: unchanged. Idempotent at the same size.
    assert_eq!(
        e.expand_volume("g", MIB as u64).unwrap().capacity,
        grown.capacity
    );
    // More than a leg's disk has free: a clear refusal naming the disk,
    // nothing changed.
    e.create_volume("n", &s, 8 * MIB as u64).unwrap();
    let err = e.expand_volume("g", 250 * MIB as u64).unwrap_err();
    assert!(matches!(err, Error::NoRoom(_)), "{err}");
    assert!(err.to_string().contains("free"), "{err}");
    assert_eq!(e.volume("g").unwrap().capacity, grown.capacity);
    // Labels carry the new size across a restart.
    drop(e);
}

#[test]
fn a_volume_reads_its_old_size_until_the_array_is_reloaded_with_the_new_one() {
    let (dm, _disks, e) = setup(3, 128 * MIB);
    let s = params(&[("raidType", "raid5_ls")]);
    let v = e.create_volume("g", &s, 16 * MIB as u64).unwrap();
    // The labels and the data linears grow; loading the array fails, as a
    // crash or another reader in that window would find it.
    dm.fail_next("load dmraid-g");
    e.expand_volume("g", 48 * MIB as u64).unwrap_err();
    assert_eq!(e.volume("g").unwrap().capacity, v.capacity);
    // Asked again, it finishes, and only then reads the new size.
    let grown = e.expand_volume("g", 48 * MIB as u64).unwrap();
    assert!(grown.capacity >= 48 * MIB as u64, "{}", grown.capacity);
    assert_eq!(e.volume("g").unwrap().capacity, grown.capacity);
}

#[test]
fn device_names_of_one_volume_never_catch_another() {
    let (dm, _disks, e) = setup(3, 64 * MIB);
    let s = params(&[("raidType", "raid1"), ("legs", "2")]);
    e.create_volume("a", &s, 4 * MIB as u64).unwrap();
    e.create_volume("a-m0", &s, 4 * MIB as u64).unwrap();
    e.create_volume("a+x", &s, 4 * MIB as u64).unwrap_err();
    e.delete_volume("a").unwrap();
    let left = dm.names();
    assert!(left.contains(&"dmraid-a-m0".to_string()), "{left:?}");
    assert_eq!(
        left.iter().filter(|n| n.starts_with("dmraid-a-m0")).count(),
        5,
        "{left:?}"
    );
}

#[test]
fn volumes_created_at_the_same_time_never_share_an_extent() {
    for round in 0..20 {
        let (_dm, _disks, e) = setup(4, 64 * MIB);
        let e = Arc::new(e);
        let s = params(&[("raidType", "raid1")]);
        let threads: Vec<_> = (0..6)
            .map(|i| {
                let (e, s) = (e.clone(), s.clone());
                std::thread::spawn(move || {
                    e.create_volume(&format!("v{i}"), &s, 8 * MIB as u64)
                        .unwrap()
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let mut x = all_extents(&e);
        assert_eq!(x.len(), 6 * 2 * 2, "round {round}: {x:?}");
        x.sort();
        for w in x.windows(2) {
            assert!(
                w[0].0 != w[1].0 || w[0].2 <= w[1].1,
                "round {round}: {} and {} overlap on disk {}",
                w[0].3,
                w[1].3,
                w[0].0
            );
        }
    }
}

#[test]
fn a_name_that_looks_like_another_names_id_never_gets_that_volume() {
    let (_dm, _disks, e) = setup(3, 64 * MIB);
    let s = params(&[("raidType", "raid1")]);
    let name = "my volume #1";
    let id = crate::csi::controller::volume_id(name);
    assert_ne!(id, name);
    e.create_named(&id, Some(name), &s, 8 * MIB as u64).unwrap();
    e.create_named(&id, Some(name), &s, 8 * MIB as u64)
        .expect("the same name again is the same volume");
    let err = e
        .create_named(&id, Some(&id), &s, 8 * MIB as u64)
        .unwrap_err();
    assert!(
        matches!(&err, Error::NameTaken { owner, .. } if owner == name),
        "{err}"
    );
    // The cluster path names volumes by id: unchanged.
    e.create_volume(&id, &s, 8 * MIB as u64).unwrap();
}

#[test]
fn a_finished_create_wins_over_an_older_in_flight_record_on_any_disk_order() {
    let (dm, disks, e) = setup(2, 64 * MIB);
    let s = params(&[("raidType", "raid1")]);
    e.create_volume("v", &s, 8 * MIB as u64).unwrap();
    let legs = leg_paths(&e, "v");
    drop(e);
    // A crash right after the create: one disk's label still says "in flight".
    let mut h = disks.open(std::path::Path::new(&legs[1])).unwrap();
    let mut loaded = labels::read(&mut h).unwrap();
    let mut label = loaded.label.clone().unwrap();
    label.volumes.get_mut("v").unwrap().complete = false;
    labels::write(&mut h, &mut loaded, &label).unwrap();
    drop(h);
    for order in [false, true] {
        // The other disk order: the in-flight copy is read first.
        if order {
            for p in &legs {
                let bytes = disks.bytes(p);
                disks.remove(p);
                let renamed = if p.ends_with('b') {
                    "/dev/vdz"
                } else {
                    "/dev/vda"
                };
                disks.plug(renamed, bytes);
            }
        }
        let dm2 = Arc::new(FakeDm::new());
        let e2 = engine(&dm2, &disks);
        let failures = e2.activate_all();
        assert!(failures.is_empty(), "{failures:?}");
        assert!(
            e2.volume("v").is_ok_and(|v| v.status.is_some()),
            "the volume survives (order {order})"
        );
    }
    let _ = dm;
}

proptest::proptest! {
    /// The records of one volume on several disks merge to the same one
    /// whatever order the disks are read in, and a finished create is never
    /// lost to an in-flight copy of the same generation.
    #[test]
    fn label_records_merge_by_a_total_order(
        recs in proptest::collection::vec((0u64..3, proptest::bool::ANY, 0u64..3), 1..6),
        seed in 0u64..1000,
    ) {
        let records: Vec<VolumeRecord> = recs
            .iter()
            .map(|(g, complete, n)| VolumeRecord {
                spec: serde_json::json!({ "n": n }),
                clean_shutdown: false,
                complete: *complete,
                generation: *g,
                uid: "u".into(),
                created: 0,
                last_check: 0,
                stack: Vec::new(),
            })
            .collect();
        let merge = |rs: &[VolumeRecord]| {
            rs.iter().fold(None::<VolumeRecord>, |have, r| match have {
                Some(h) if !newer(r, &h) => Some(h),
                _ => Some(r.clone()),
            })
        };
        let mut shuffled = records.clone();
        let len = shuffled.len();
        shuffled.rotate_left((seed as usize) % len);
        shuffled.swap(0, (seed as usize / 7) % len);
        let a = merge(&records).unwrap();
        let b = merge(&shuffled).unwrap();
        proptest::prop_assert_eq!(&a, &b);
        let top = records.iter().map(|r| r.generation).max().unwrap();
        proptest::prop_assert_eq!(a.generation, top);
        if records.iter().any(|r| r.generation == top && r.complete) {
            proptest::prop_assert!(a.complete);
        }
    }
}

/// A volume hemmed in by another grows anyway: each leg gets a second
/// data segment elsewhere on its disk, its data device maps both in
/// order, the labels say so in format 2 (which a format-1 driver refuses),
/// a restart makes the same devices from the labels alone, and once the
/// volume is gone its labels are format 1 again.
#[test]
fn a_volume_hemmed_in_by_another_grows_in_a_second_segment() {
    let (dm, disks, e) = setup(2, 64 * MIB);
    let s = params(&[("raidType", "raid1"), ("legs", "2"), ("sync", "nosync")]);
    let a = e.create_volume("a", &s, 8 * MIB as u64).unwrap();
    e.create_volume("b", &s, 8 * MIB as u64).unwrap();
    let grown = e.expand_volume("a", 20 * MIB as u64).unwrap();
    assert!(grown.capacity >= 20 * MIB as u64, "{grown:?}");
    let old = a.spec.leg_data;
    let tables = |dm: &FakeDm| -> Vec<String> {
        ["dmraid-a+d0", "dmraid-a+d1"]
            .iter()
            .map(|n| {
                dm.table(n)
                    .unwrap()
                    .iter()
                    .map(Target::line)
                    .collect::<Vec<_>>()
                    .join("; ")
            })
            .collect()
    };
    let before = tables(&dm);
    for (leg, t) in dm_tables_of(&dm, &["dmraid-a+d0", "dmraid-a+d1"])
        .iter()
        .enumerate()
    {
        assert_eq!(t.len(), 2, "leg {leg}: {t:?}");
        assert_eq!((t[0].start, t[0].length), (0, old), "leg {leg}");
        assert_eq!(t[1].start, old, "leg {leg}");
        assert_eq!(t[0].length + t[1].length, grown.spec.leg_data, "leg {leg}");
    }
    let raid = RaidTable::parse(&dm.table("dmraid-a").unwrap()[0].line()).unwrap();
    assert_eq!(raid.length.bytes().0, grown.capacity);
    for d in ["/dev/vdb", "/dev/vdc"] {
        assert_eq!(newest_format(&disks.bytes(d)), 2, "{d}");
    }
    // A restart: the same devices from the labels alone.
    assert!(e.deactivate_all().is_empty());
    drop(e);
    let dm2 = Arc::new(FakeDm::new());
    let e = engine(&dm2, &disks);
    assert!(e.activate_all().is_empty());
    assert_eq!(tables(&dm2), before);
    assert_eq!(e.volume("a").unwrap().capacity, grown.capacity);
    // Gone, and wiped: format 1 again.
    e.delete_volume("a").unwrap();
    e.wipe_pending().unwrap();
    e.forget_deleted().unwrap();
    for d in ["/dev/vdb", "/dev/vdc"] {
        assert_eq!(newest_format(&disks.bytes(d)), 1, "{d}");
    }
}

fn dm_tables_of(dm: &FakeDm, names: &[&str]) -> Vec<Vec<Target>> {
    names.iter().map(|n| dm.table(n).unwrap()).collect()
}

/// The format version in the header of a disk's newest label copy.
fn newest_format(disk: &[u8]) -> u32 {
    let word = |at: usize, n: usize| {
        let mut b = [0u8; 8];
        b[..n].copy_from_slice(&disk[at..at + n]);
        u64::from_le_bytes(b)
    };
    let at = [0, labels::SLOT_BYTES as usize]
        .into_iter()
        .max_by_key(|&at| word(at + 12, 8))
        .unwrap();
    word(at + 8, 4) as u32
}

/// A crash in an expansion between two disks' label writes: one leg's disk
/// records the new size and a second segment, the other neither. The next
/// start makes the array at the size both legs have (no leg mapped past
/// what its label gives it), and the expansion asked again grows the short
/// leg only.
#[test]
fn an_expansion_cut_short_between_two_disks_starts_at_the_old_size_and_finishes_when_asked_again() {
    let (_dm, disks, e) = setup(2, 64 * MIB);
    let s = params(&[("raidType", "raid1"), ("legs", "2"), ("sync", "nosync")]);
    let a = e.create_volume("a", &s, 8 * MIB as u64).unwrap();
    e.create_volume("b", &s, 8 * MIB as u64).unwrap();
    let area = labels::LABEL_AREA.bytes().0 as usize;
    let vdc_before = disks.bytes("/dev/vdc")[..area].to_vec();
    let grown = e.expand_volume("a", 20 * MIB as u64).unwrap();
    assert!(e.deactivate_all().is_empty());
    drop(e);
    // vdc's label write never happened.
    disks.poke("/dev/vdc", 0, &vdc_before);
    let dm = Arc::new(FakeDm::new());
    let e = engine(&dm, &disks);
    assert!(e.activate_all().is_empty());
    assert_eq!(e.volume("a").unwrap().capacity, a.capacity);
    let raid = RaidTable::parse(&dm.table("dmraid-a").unwrap()[0].line()).unwrap();
    assert_eq!(raid.length.bytes().0, a.capacity);
    let lens: Vec<u64> = ["dmraid-a+d0", "dmraid-a+d1"]
        .iter()
        .map(|n| dm.table(n).unwrap().iter().map(|t| t.length).sum())
        .collect();
    assert!(lens.contains(&a.spec.leg_data), "{lens:?}");
    // Asked again: the short leg grows, the grown one stays as it is.
    let again = e.expand_volume("a", 20 * MIB as u64).unwrap();
    assert_eq!(again.capacity, grown.capacity);
    for n in ["dmraid-a+d0", "dmraid-a+d1"] {
        let t = dm.table(n).unwrap();
        assert_eq!(t.len(), 2, "{n}: {t:?}");
        assert_eq!(t.iter().map(|t| t.length).sum::<u64>(), grown.spec.leg_data);
    }
}
