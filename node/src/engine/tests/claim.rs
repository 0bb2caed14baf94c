//! Claiming disks: foreign signatures, wiping, names the kernel reuses, a second process, damaged and full labels.

use super::*;

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
    let changed: Vec<usize> = (labels::LABEL_AREA.bytes().0 as usize..esp.len())
        .filter(|i| esp[*i] != after[*i])
        .collect();
    assert!(changed.len() < 64, "{} bytes changed", changed.len());
    let mut h = disks.open(std::path::Path::new("/dev/vdb")).unwrap();
    assert_eq!(h.signatures(false).unwrap(), vec![]);
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
fn a_disk_whose_label_is_full_takes_no_new_legs_and_offers_no_capacity() {
    let disks = FakeDisks::new();
    for d in ["/dev/vdb", "/dev/vdc", "/dev/vdd"] {
        disks.add(d, 64 * MIB);
    }
    // vdb carries this node's label, grown to within a leg of its slot
    // (free ranges known to be zeroed stand in for a few hundred volumes).
    let mut dev = std::io::Cursor::new(disks.bytes("/dev/vdb"));
    let mut loaded = labels::read(&mut dev).unwrap();
    let mut label = labels::new_label("full-disk".parse().unwrap(), "node-a", 1);
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
