//! The engine's decisions, on fake devices: ordering, idempotence, crash
//! repair, refusals.

use super::*;
use crate::disks::FakeDisks;
use crate::dm::FakeDm;

const MIB: usize = 1 << 20;

fn params(kv: &[(&str, &str)]) -> RaidSpec {
    let p: BTreeMap<String, String> = kv
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    RaidSpec::from_parameters(&p).unwrap()
}

fn setup(n: usize, size: usize) -> (Arc<FakeDm>, FakeDisks, Engine) {
    let dm = Arc::new(FakeDm::new());
    let disks = FakeDisks::new();
    for i in 0..n {
        disks.add(&format!("/dev/vd{}", (b'b' + i as u8) as char), size);
    }
    let e = engine(&dm, &disks);
    (dm, disks, e)
}

fn engine(dm: &Arc<FakeDm>, disks: &FakeDisks) -> Engine {
    let e = Engine::new(
        dm.clone(),
        Arc::new(disks.clone()),
        EngineConfig {
            node: "node-a".into(),
            globs: vec!["/dev/vd*".into()],
            wipe: false,
        },
    );
    assert!(e.claim_disks().unwrap().is_empty());
    e
}

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

#[test]
fn foreign_signatures_are_refused_and_unnamed_disks_never_touched() {
    let dm = Arc::new(FakeDm::new());
    let disks = FakeDisks::new();
    disks.add("/dev/vdb", 16 * MIB);
    disks.add("/dev/sda", 16 * MIB);
    let mut ext4 = [0u8; 2];
    ext4.copy_from_slice(&[0x53, 0xEF]);
    disks.poke("/dev/vdb", 1080, &ext4);
    let e = Engine::new(
        dm,
        Arc::new(disks.clone()),
        EngineConfig {
            node: "n".into(),
            globs: vec!["/dev/vd*".into()],
            wipe: false,
        },
    );
    let problems = e.claim_disks().unwrap();
    assert_eq!(problems.len(), 1);
    assert!(
        problems[0].to_string().contains("ext2/3/4")
            && problems[0].to_string().contains("--wipe-disks")
    );
    assert_eq!(disks.bytes("/dev/sda"), vec![0u8; 16 * MIB]);
    assert_eq!(
        &disks.bytes("/dev/vdb")[1080..1082],
        &ext4,
        "the refused disk is untouched"
    );
}

#[test]
fn an_unclean_shutdown_patches_the_superblocks_and_a_clean_one_does_not() {
    let (_dm, disks, e) = setup(3, 64 * MIB);
    let v = e
        .create_volume("v", &params(&[("raidType", "raid5_ls")]), 8 * MIB as u64)
        .unwrap();
    // Pretend the kernel wrote superblocks ("clean", offset MaxSector) and a dirty bitmap.
    let metas: Vec<(String, usize)> = {
        let claimed = lock(&e.claimed);
        claimed
            .iter()
            .flat_map(|c| {
                c.label()
                    .extents
                    .iter()
                    .filter(|x| x.role == Role::Meta)
                    .map(|x| (c.info.path.display().to_string(), x.start as usize * 512))
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    assert_eq!(metas.len(), 3);
    let write_sb = |disks: &FakeDisks| {
        for (p, off) in &metas {
            let mut sb = vec![0u8; 64];
            sb[0..4].copy_from_slice(b"DmRd");
            sb[4..8].copy_from_slice(&1u32.to_le_bytes());
            sb[40..48].copy_from_slice(&u64::MAX.to_le_bytes());
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
fn concurrent_operations_on_one_volume_abort() {
    let (_dm, _disks, e) = setup(3, 64 * MIB);
    let _held = e.lock_volume("v").unwrap();
    let err = e.delete_volume("v").unwrap_err();
    assert_eq!(tonic::Status::from(err).code(), tonic::Code::Aborted);
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
    // Blocked by a neighbour: a clear refusal, nothing changed.
    e.create_volume("n", &s, 8 * MIB as u64).unwrap();
    let err = e.expand_volume("g", 100 * MIB as u64).unwrap_err();
    assert!(matches!(err, Error::Precondition(_)), "{err}");
    assert_eq!(e.volume("g").unwrap().capacity, grown.capacity);
    // Labels carry the new size across a restart.
    drop(e);
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
    // The kernel saw `rebuild 1`, then the same table without it.
    let loads: Vec<String> = dm
        .log()
        .into_iter()
        .filter(|l| l == "load dmraid-r")
        .collect();
    assert!(loads.len() >= 3);
    let live = RaidTable::parse(&dm.table("dmraid-r").unwrap()[0].line()).unwrap();
    assert!(live.rebuild.is_empty());
    // Old extents stay until the array is in sync, then are freed.
    dm.set_status("dmraid-r", "raid5_ls 3 AaA 100/8192 recover 0");
    assert_eq!(e.reap_retired("r").unwrap(), 0);
    dm.set_status("dmraid-r", "raid5_ls 3 AAA 8192/8192 idle 0");
    assert_eq!(e.reap_retired("r").unwrap(), 2);
}

/// (disk, byte offset) of each leg's data extent, from the live linears.
fn data_heads(e: &Engine, dm: &FakeDm, id: &str) -> Vec<(String, usize)> {
    let v = e.volume(id).unwrap();
    v.legs
        .iter()
        .map(|l| {
            let t = dm.table(&leg_name(id, l.leg, Role::Data)).unwrap();
            let start: usize = t[0]
                .params
                .split_whitespace()
                .nth(1)
                .unwrap()
                .parse()
                .unwrap();
            (l.disk.as_ref().unwrap().display().to_string(), start * 512)
        })
        .collect()
}

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
        let head = &disks.bytes(disk)[*at..*at + crate::signature::HEAD_BYTES];
        assert!(crate::signature::detect(head).is_some());
    }
    e.delete_volume("old").unwrap();
    // A new volume on the same extents starts blank: NodeStage makes a new filesystem.
    e.create_volume("new", &s, 8 * MIB as u64).unwrap();
    let new = data_heads(&e, &dm, "new");
    assert_eq!(new, old, "the freed extents are reused");
    for (disk, at) in &new {
        let head = &disks.bytes(disk)[*at..*at + crate::signature::HEAD_BYTES];
        assert_eq!(crate::signature::detect(head), None, "{disk} at {at}");
    }
}

/// Every extent on every claimed disk, as (disk, start, end, owner).
fn all_extents(e: &Engine) -> Vec<(String, u64, u64, String)> {
    lock(&e.claimed)
        .iter()
        .flat_map(|c| {
            let disk = c.label().disk_uuid.clone();
            c.label()
                .extents
                .iter()
                .map(move |x| {
                    (
                        disk.clone(),
                        x.start,
                        x.start + x.len,
                        format!("{}/{}/{:?}", x.volume, x.leg, x.role),
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn volumes_created_at_the_same_time_never_share_an_extent() {
    for round in 0..20 {
        let (_dm, _disks, e) = setup(4, 256 * MIB);
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

/// (disk path, byte offset) of every metadata extent of `id` in the labels.
fn meta_extents(e: &Engine, id: &str) -> Vec<(String, usize)> {
    lock(&e.claimed)
        .iter()
        .flat_map(|c| {
            c.label()
                .extents
                .iter()
                .filter(|x| {
                    x.volume == id && x.role == Role::Meta && x.state == ExtentState::Active
                })
                .map(|x| (c.info.path.display().to_string(), x.start as usize * 512))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Write what the kernel writes when it takes a leg: a dm-raid superblock.
fn kernel_writes_superblock(disks: &FakeDisks, at: &(String, usize)) {
    let mut sb = vec![0u8; 64];
    sb[0..4].copy_from_slice(b"DmRd");
    sb[4..8].copy_from_slice(&1u32.to_le_bytes());
    sb[40..48].copy_from_slice(&u64::MAX.to_le_bytes());
    disks.poke(&at.0, at.1, &sb);
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
    // `rebuild 1` (the kernel refuses a blank leg without it), then the
    // steady table.
    drop(e);
    let dm2 = Arc::new(FakeDm::new());
    let e2 = engine(&dm2, &disks);
    assert!(e2.activate_all().is_empty());
    let loads = dm2.loads("dmraid-m");
    assert_eq!(loads.len(), 2, "{loads:#?}");
    assert!(loads[0].contains(" rebuild 1 "), "{}", loads[0]);
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

/// raid1 "m" on two of three disks, its leg 0 disk pulled and the leg
/// rebuilt on the third. Returns the pulled disk's path and bytes.
fn replaced_leg_0(dm: &FakeDm, disks: &FakeDisks, e: &Engine) -> (String, Vec<u8>) {
    let v = e
        .create_volume("m", &params(&[("raidType", "raid1")]), 8 * MIB as u64)
        .unwrap();
    let lost = v.legs[0].disk.clone().unwrap().display().to_string();
    let bytes = disks.bytes(&lost);
    disks.remove(&lost);
    dm.set_status("dmraid-m", "raid1 2 DA 16384/16384 idle 0");
    e.replace_leg("m", Some(0), None).unwrap();
    dm.set_status("dmraid-m", "raid1 2 AA 16384/16384 idle 0");
    (lost, bytes)
}

fn leg_paths(e: &Engine, id: &str) -> Vec<String> {
    e.volume(id)
        .unwrap()
        .legs
        .iter()
        .map(|l| {
            l.disk
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        })
        .collect()
}

#[test]
fn a_new_disk_that_takes_a_removed_disks_name_is_claimed_as_itself() {
    let (dm, disks, e) = setup(3, 64 * MIB);
    let (lost, _) = replaced_leg_0(&dm, &disks, &e);
    let legs = leg_paths(&e, "m");
    let old_uuid = e
        .disks()
        .into_iter()
        .find(|d| d.0.display().to_string() == lost)
        .unwrap()
        .3;
    // The kernel gives a blank disk the removed one's name and number.
    disks.add(&lost, 64 * MIB);
    assert!(e.claim_disks().unwrap().is_empty());
    let now = e.disks();
    let fresh = now
        .iter()
        .find(|d| d.0.display().to_string() == lost)
        .unwrap();
    assert_ne!(
        fresh.3, old_uuid,
        "labelled as a new disk, not taken for the old one"
    );
    assert_eq!(
        now.iter()
            .filter(|d| d.0.display().to_string() == lost)
            .count(),
        1
    );
    assert!(fresh.2 > 60 * MIB as u64, "all free: {}", fresh.2);
    assert_eq!(leg_paths(&e, "m"), legs, "the legs stay where they are");
    e.activate_all();
    let live = RaidTable::parse(&dm.table("dmraid-m").unwrap()[0].line()).unwrap();
    assert!(live.rebuild.is_empty());
    assert_eq!(leg_paths(&e, "m"), legs);
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
    // In sync: the returning disk's stale copy is retired and freed.
    e2.reap_retired("m").unwrap();
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
fn a_disk_away_while_its_volume_was_deleted_frees_it_when_it_comes_back() {
    let (dm, disks, e) = setup(3, 64 * MIB);
    let s = params(&[("raidType", "raid1")]);
    let v = e.create_volume("v", &s, 8 * MIB as u64).unwrap();
    let away = v.legs[1].disk.clone().unwrap().display().to_string();
    let bytes = disks.bytes(&away);
    disks.remove(&away);
    dm.set_status("dmraid-v", "raid1 2 AD 16384/16384 idle 0");
    e.delete_volume("v").unwrap();
    // The same name made again while the disk is still away.
    let again = e.create_volume("v", &s, 8 * MIB as u64).unwrap();
    let legs = leg_paths(&e, "v");
    disks.plug(&away, bytes);
    assert!(e.claim_disks().unwrap().is_empty());
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
    assert!(e2.volume_ids().is_empty());
    assert!(e2.disks().iter().all(|d| d.2 > 60 * MIB as u64));
}

#[test]
fn tombstones_are_bounded() {
    let mut l = crate::labels::new_label("d".into(), "n", 0);
    l.add_tombstones((0..2000u64).map(|i| (format!("u{i}"), i)));
    assert_eq!(l.deleted.len(), crate::labels::MAX_TOMBSTONES);
    assert!(l.deleted.contains_key("u1999") && !l.deleted.contains_key("u0"));
}

#[test]
fn a_second_process_over_the_same_disks_is_refused_then_builds_on_the_firsts_labels() {
    let (_dm, disks, first) = setup(2, 64 * MIB);
    // Another process (another state directory) claimed the same disks.
    let second = engine(&Arc::new(FakeDm::new()), &disks);
    let s = params(&[("raidType", "raid1")]);
    first.create_volume("a", &s, 8 * MIB as u64).unwrap();
    let before = (disks.bytes("/dev/vdb"), disks.bytes("/dev/vdc"));
    let err = second.create_volume("b", &s, 8 * MIB as u64).unwrap_err();
    assert!(
        err.to_string().contains("another dmraid-csi process"),
        "{err}"
    );
    assert_eq!(
        (disks.bytes("/dev/vdb"), disks.bytes("/dev/vdc")),
        before,
        "a refused write changes nothing"
    );
    // Each refusal re-reads the disk it hit; the caller retries and the
    // second volume lands beside the first, never over it.
    let mut tries = 1;
    while let Err(e) = second.create_volume("b", &s, 8 * MIB as u64) {
        assert!(e.to_string().contains("another dmraid-csi process"), "{e}");
        tries += 1;
        assert!(tries <= 3, "one refusal per stale disk at most");
    }
    for path in ["/dev/vdb", "/dev/vdc"] {
        let mut dev = disks.open(std::path::Path::new(path)).unwrap();
        let label = labels::read(&mut dev).unwrap().label.unwrap();
        let on_disk: BTreeSet<&str> = label.extents.iter().map(|x| x.volume.as_str()).collect();
        assert_eq!(on_disk, BTreeSet::from(["a", "b"]), "{path}");
    }
}
