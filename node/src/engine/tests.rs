//! The engine's decisions, on fake devices: ordering, idempotence, crash
//! repair, refusals.

use super::*;
use crate::kernel::disks::FakeDisks;
use crate::kernel::dm::FakeDm;

const MIB: usize = 1 << 20;

fn params(kv: &[(&str, &str)]) -> RaidSpec {
    RaidSpec::from_pairs(kv).unwrap()
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

/// The bytes of a `size`-byte image file after `mkfs` ran on it.
fn formatted(mkfs: &str, args: &[&str], size: usize) -> Vec<u8> {
    let t = tempfile::NamedTempFile::new().unwrap();
    t.as_file().set_len(size as u64).unwrap();
    let out = std::process::Command::new(mkfs)
        .args(args)
        .arg(t.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{mkfs}: {out:?}");
    std::fs::read(t.path()).unwrap()
}

fn engine_over(disks: &FakeDisks, globs: &[&str], wipe: bool) -> Engine {
    Engine::new(
        Arc::new(FakeDm::new()),
        Arc::new(disks.clone()),
        EngineConfig {
            node: "n".into(),
            globs: globs.iter().map(|g| g.to_string()).collect(),
            wipe,
        },
    )
}

#[test]
fn foreign_signatures_are_refused_and_unnamed_disks_never_touched() {
    let disks = FakeDisks::new();
    let ext4 = formatted("mkfs.ext4", &["-q", "-F"], 16 * MIB);
    let esp = formatted("mkfs.vfat", &[], 40 * MIB);
    disks.plug("/dev/vdb", ext4.clone());
    disks.plug("/dev/vdc", esp.clone());
    disks.add("/dev/vdd", 16 * MIB);
    disks.add("/dev/sda", 16 * MIB);
    disks.hold("/dev/vdd", "vdd is in use (mounted at /srv)");
    let e = engine_over(&disks, &["/dev/vd*"], false);
    let problems: Vec<String> = e
        .claim_disks()
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(problems.len(), 3, "{problems:?}");
    assert!(
        problems
            .iter()
            .any(|p| p.contains("/dev/vdb") && p.contains("ext4") && p.contains("--wipe-disks")),
        "{problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("/dev/vdc") && p.contains("vfat")),
        "a FAT boot sector (an ESP) is a signature: {problems:?}"
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("/dev/vdd") && p.contains("mounted at /srv")),
        "{problems:?}"
    );
    assert!(e.disks().is_empty());
    assert_eq!(disks.bytes("/dev/sda"), vec![0u8; 16 * MIB]);
    assert_eq!(
        disks.bytes("/dev/vdb"),
        ext4,
        "the refused disk is untouched"
    );
    assert_eq!(
        disks.bytes("/dev/vdc"),
        esp,
        "the refused disk is untouched"
    );
    assert_eq!(disks.bytes("/dev/vdd"), vec![0u8; 16 * MIB]);
}

#[test]
fn wipe_disks_erases_exactly_the_signatures_then_claims() {
    let disks = FakeDisks::new();
    let esp = formatted("mkfs.vfat", &[], 40 * MIB);
    disks.plug("/dev/vdb", esp.clone());
    let e = engine_over(&disks, &["/dev/vdb"], true);
    assert!(e.claim_disks().unwrap().is_empty());
    assert_eq!(e.disks().len(), 1);
    let after = disks.bytes("/dev/vdb");
    // Past the label area, only the bytes libblkid names changed (FAT32
    // keeps a backup boot sector at sector 6, which it also reports).
    let changed: Vec<usize> = (labels::LABEL_AREA.0 as usize * 512..esp.len())
        .filter(|i| esp[*i] != after[*i])
        .collect();
    assert!(changed.len() < 64, "{} bytes changed", changed.len());
    let mut h = disks.open(std::path::Path::new("/dev/vdb")).unwrap();
    assert_eq!(h.signatures(false).unwrap(), vec![]);
}

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
    let mut sb = vec![0u8; 148];
    sb[0..4].copy_from_slice(b"DmRd");
    sb[4..8].copy_from_slice(&1u32.to_le_bytes());
    sb[40..48].copy_from_slice(&u64::MAX.to_le_bytes());
    sb[64..72].copy_from_slice(&u64::MAX.to_le_bytes());
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

/// Three disks and a raid1 volume `v`: its leg 1's disk and that disk's bytes.
fn raid1_v_and_its_leg_1_disk() -> (Arc<FakeDm>, FakeDisks, Engine, String, Vec<u8>) {
    let (dm, disks, e) = setup(3, 64 * MIB);
    let s = params(&[("raidType", "raid1")]);
    let v = e.create_volume("v", &s, 8 * MIB as u64).unwrap();
    let away = v.legs[1].disk.clone().unwrap().display().to_string();
    let bytes = disks.bytes(&away);
    (dm, disks, e, away, bytes)
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

/// (start, len) in bytes of every data extent of volume `id`.
fn data_extents(e: &Engine, id: &str) -> Vec<(String, usize, usize)> {
    lock(&e.claimed)
        .iter()
        .flat_map(|c| {
            c.label()
                .extents
                .iter()
                .filter(|x| x.volume == id && x.role == Role::Data)
                .map(|x| {
                    (
                        c.info.path.display().to_string(),
                        x.start as usize * 512,
                        x.len as usize * 512,
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect()
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
                let (zs, ze) = (z.0 as usize * 512, (z.0 + z.1) as usize * 512);
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
    let mut l = crate::engine::labels::new_label("d".into(), "n", 0);
    l.add_tombstones((0..2000u64).map(|i| (format!("u{i}"), i)));
    assert_eq!(l.deleted.len(), crate::engine::labels::MAX_TOMBSTONES);
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

#[test]
fn a_present_disk_with_both_label_copies_damaged_is_named_not_called_missing() {
    let (_dm, disks, e) = setup(2, 64 * MIB);
    let s = params(&[("raidType", "raid1")]);
    e.create_volume("v", &s, 8 * MIB as u64).unwrap();
    let legs = leg_paths(&e, "v");
    drop(e);
    // Both copies of the second disk's label damaged (a bad sector, a stray write).
    for slot in [0usize, 512 * 1024] {
        disks.poke(&legs[1], slot + 100, b"garbage!");
    }
    let e = Engine::new(
        Arc::new(FakeDm::new()),
        Arc::new(disks.clone()),
        EngineConfig {
            node: "node-a".into(),
            globs: vec!["/dev/vd*".into()],
            wipe: false,
        },
    );
    let problems = e.claim_disks().unwrap();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert!(e.activate_all().is_empty());
    let v = e.volume("v").unwrap();
    assert_eq!(v.unreadable.len(), 1);
    assert_eq!(v.unreadable[0].0, legs[1]);
    let (_, msg) = crate::health::condition::condition(&v);
    assert!(
        msg.contains(&format!(
            "disk {} is here but its label is unreadable",
            legs[1]
        )),
        "{msg}"
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

#[test]
fn a_disk_whose_label_is_full_takes_no_new_legs_and_offers_no_capacity() {
    let disks = FakeDisks::new();
    for d in ["/dev/vdb", "/dev/vdc", "/dev/vdd"] {
        disks.add(d, 64 * MIB);
    }
    // vdb carries this node's label, grown to within a leg of its slot
    // (free ranges known to be zeroed stand in for a few hundred volumes).
    let mut dev = std::io::Cursor::new(disks.bytes("/dev/vdb"));
    let mut loaded = labels::read(&mut dev).unwrap();
    let mut label = labels::new_label("full-disk".into(), "node-a", 1);
    let free_from = labels::LABEL_AREA.0 + 10;
    let len = |l: &DiskLabel| labels::check(l, loaded.disk()).unwrap().len();
    let want = 512 * 1024 - 64 - 2048;
    let mut n = 0;
    while len(&label) < want {
        // Grow by about half of what is missing at a time.
        let per = (len(&label) / label.zeroed.len().max(1)).max(8);
        for _ in 0..((want - len(&label)) / per / 2).max(1) {
            label.zeroed.push((free_from + 2 * n, 1));
            n += 1;
        }
    }
    labels::write(&mut dev, &mut loaded, &label).unwrap();
    assert!(!loaded.has_room_for_a_leg());
    disks.remove("/dev/vdb");
    disks.plug("/dev/vdb", dev.into_inner());
    let dm = Arc::new(FakeDm::new());
    let e = engine(&dm, &disks);
    let gaps = e.free_gaps();
    assert_eq!(gaps.len(), 2, "the full disk offers no capacity: {gaps:?}");
    let s = params(&[("raidType", "raid1")]);
    let v = e.create_volume("v", &s, 8 * MIB as u64).unwrap();
    let mut on: Vec<String> = v
        .legs
        .iter()
        .map(|l| l.disk.clone().unwrap().display().to_string())
        .collect();
    on.sort();
    assert_eq!(on, ["/dev/vdc", "/dev/vdd"]);
    // Three legs need three disks with room: refused, saying why.
    let three = params(&[("raidType", "raid1"), ("legs", "3")]);
    let err = e.create_volume("w", &three, 8 * MIB as u64).unwrap_err();
    assert!(matches!(err, Error::NoRoom(_)), "{err}");
    assert!(
        err.to_string().contains(
            "not counted: /dev/vdb (its label records as many volumes as its 512 KiB slot holds)"
        ),
        "{err}"
    );
}
