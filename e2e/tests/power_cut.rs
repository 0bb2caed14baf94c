//! Power cuts mid-write, and the kernel bug the driver exists to close
//! (README "What the kernel really does"): after a cut the dm-raid superblock
//! still says "clean", so on the next activation the kernel drops the
//! bitmap's dirty bits and resyncs nothing. Both sides are shown, cut after
//! cut: (a) activated as is: no resync; (b) with `array_resync_offset` set
//! to 0 in every leg's superblock first (by `dmraid_api::superblock`, on
//! the disk images while the VM is off): the kernel resyncs only the dirty
//! regions, and a `check` then finds no mismatch.

use dmraid_api::capacity::META_EXTENT;
use dmraid_api::params::RaidSpec;
use dmraid_api::superblock::{
    dirty_regions, parse_superblock, set_array_resync_offset_zero, MAX_SECTOR,
};
use dmraid_api::table::RaidTable;
use dmraid_api::units::Sectors;
use e2e::raid::{self, create, status, wait_in_sync};
use e2e::{Vm, MIB};
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::time::{Duration, Instant};

/// 48 MiB of data per leg, 256 KiB regions: 192 bitmap regions per leg.
const LEG: Sectors = Sectors(98304);
/// Cuts per RAID type, alternating as is / fixed; `DMRAID_POWER_CUTS`
/// overrides it (the test command's second kernel runs fewer). Ten until
/// 2026-12-07: every as-is cut that left dirty regions showed the bug and
/// every fixed one resynced them, so the last four of ten added ~80 s a
/// type to the test command and found nothing the first six did not.
const CUTS: usize = 6;
/// Resync throttle while measuring (KiB/s per device): a full resync of a
/// leg takes ~48 s at this rate, a few dirty regions well under a second each.
const RATE_KIB: u64 = 1024;

fn spec(kind: &str, legs: usize) -> RaidSpec {
    let p: BTreeMap<String, String> = [
        ("raidType", kind),
        ("legs", &legs.to_string()),
        ("regionSize", "256Ki"),
        ("sync", "nosync"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    RaidSpec::from_parameters(&p).unwrap()
}

fn activate(vm: &mut Vm, s: &RaidSpec, new_array: bool, rate: Option<u64>) -> RaidTable {
    let n = s.legs as usize;
    let legs: Vec<_> = (0..n)
        .map(|i| Some(raid::make_leg(vm, "", i, i, LEG).unwrap()))
        .collect();
    if new_array {
        for i in 0..n {
            raid::wipe_meta(vm, "", i).unwrap();
        }
    }
    let mut t = RaidTable::build(s, LEG, legs, new_array, &[]).unwrap();
    t.max_recovery_rate = rate;
    create(vm, "r", &t).unwrap();
    t
}

fn read_meta(vm: &Vm, disk: usize) -> Vec<u8> {
    let mut f = std::fs::File::open(vm.disk_image(disk)).unwrap();
    let mut b = vec![0u8; META_EXTENT.bytes().0 as usize];
    f.read_exact(&mut b).unwrap();
    b
}

fn write_meta(vm: &Vm, disk: usize, b: &[u8]) {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(vm.disk_image(disk))
        .unwrap();
    f.seek(SeekFrom::Start(0)).unwrap();
    f.write_all(&b[..4096]).unwrap();
    f.sync_all().unwrap();
}

fn scenario(kind: &str, legs: usize) -> String {
    let s = spec(kind, legs);
    let mut vm = Vm::builder().disks(&vec![64 * MIB; legs]).boot().unwrap();
    activate(&mut vm, &s, true, None);
    wait_in_sync(&mut vm, "r", Duration::from_secs(60)).unwrap();
    // Data flushed before any cut: must survive every one of them.
    let keep = raid::write_pattern(&mut vm, "/dev/mapper/r", 4).unwrap();
    let mut report = format!(
        "\n{kind}, {legs} legs, {} regions per leg\n| cut | fix | dirty regions before | superblock said | resync ran | resync secs | ~regions resynced | mismatches after check |\n|---|---|---|---|---|---|---|---|\n",
        LEG.0 / 512
    );
    let mut fixed_dirty = 0;
    let cuts = std::env::var("DMRAID_POWER_CUTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CUTS);
    for cut in 0..cuts {
        let fix = cut % 2 == 1;
        vm.spawn(
            // Offsets 4..44 MiB: inside raid1's 48 MiB array too (a write past
            // its end dirtied nothing, and a cut could find no dirty region).
            "while :; do o=$((RANDOM % 40)); dd if=/dev/urandom of=/dev/mapper/r bs=64k count=4 seek=$((o*16+64)) oflag=direct 2>/dev/null; done",
        )
        .unwrap();
        // Two seconds of writes: raid1 keeps few regions dirty at once.
        vm.run_ok("sleep 2").unwrap();
        vm.power_cut();

        // On the images, with the VM off: what the kernel left behind.
        let mut dirty = 0;
        let mut said_clean = true;
        for d in 0..legs {
            let mut meta = read_meta(&vm, d);
            let sb = parse_superblock(&meta).unwrap();
            said_clean &= sb.array_resync_offset == MAX_SECTOR;
            dirty = dirty.max(dirty_regions(&meta).unwrap().0);
            if fix {
                set_array_resync_offset_zero(&mut meta).unwrap();
                write_meta(&vm, d, &meta);
            }
        }
        vm.boot_again().unwrap();
        vm.run_ok("dmesg -c > /dev/null").unwrap();
        let started = Instant::now();
        activate(&mut vm, &s, false, Some(RATE_KIB));
        let first = status(&mut vm, "r").unwrap();
        let st = wait_in_sync(&mut vm, "r", Duration::from_secs(180)).unwrap();
        let secs = started.elapsed().as_secs_f64();
        assert_eq!(st.legs.len(), legs);
        let dmesg = vm.dmesg().unwrap();
        let resynced = dmesg.contains("starting background reconstruction")
            || first.action.map(|a| a.name()) == Some("resync");
        let regions_est = (secs * RATE_KIB as f64 / 256.0).round() as u64;
        if fix {
            fixed_dirty += dirty;
            assert!(
                resynced || dirty == 0,
                "{kind} cut {cut}: patched superblock but no resync"
            );
            // Only the dirty regions: far below the ~48 s a full resync takes here.
            assert!(
                secs < 24.0,
                "{kind} cut {cut}: resync took {secs:.1} s for {dirty} dirty regions"
            );
        } else if dirty > 0 {
            assert!(
                said_clean,
                "{kind} cut {cut}: expected the kernel's 'clean' superblock after a cut"
            );
            assert!(
                !resynced,
                "{kind} cut {cut}: the kernel resynced {dirty} dirty regions by itself: it no longer drops them, revisit the crash fix"
            );
        }
        // Scrub at full speed: reload without the throttle (the array is clean now).
        vm.run_ok("dmsetup remove r").unwrap();
        let mut t = RaidTable::build(
            &s,
            LEG,
            (0..legs)
                .map(|i| {
                    Some(dmraid_api::table::LegDevs {
                        meta: raid::devno(&mut vm, &format!("m{i}")).unwrap(),
                        data: raid::devno(&mut vm, &format!("d{i}")).unwrap(),
                    })
                })
                .collect(),
            false,
            &[],
        )
        .unwrap();
        t.max_recovery_rate = None;
        create(&mut vm, "r", &t).unwrap();
        vm.run_ok("dmsetup message r 0 check").unwrap();
        let checked = wait_in_sync(&mut vm, "r", Duration::from_secs(300)).unwrap();
        let mismatches = checked.mismatches.unwrap_or(0);
        if fix {
            assert_eq!(
                mismatches, 0,
                "{kind} cut {cut}: mismatches after the fixed resync"
            );
        } else if mismatches > 0 {
            // Make the array consistent again before the next cut.
            vm.run_ok("dmsetup message r 0 repair").unwrap();
            wait_in_sync(&mut vm, "r", Duration::from_secs(300)).unwrap();
        }
        assert_eq!(
            raid::read_md5(&mut vm, "/dev/mapper/r", 4).unwrap(),
            keep,
            "{kind} cut {cut}: flushed data lost"
        );
        report.push_str(&format!(
            "| {cut} | {} | {dirty} | {} | {} | {secs:.1} | {} | {mismatches} |\n",
            if fix {
                "(b) resync offset 0"
            } else {
                "(a) as is"
            },
            if said_clean { "clean" } else { "not clean" },
            if resynced { "yes" } else { "no" },
            if fix {
                regions_est.to_string()
            } else {
                "-".into()
            },
        ));
    }
    assert!(
        fixed_dirty > 0,
        "{kind}: no cut left dirty regions; the writer never raced the cut"
    );
    report
}

#[test]
fn raid1_power_cuts_resync_the_dirty_regions_only_when_fixed() {
    let r = scenario("raid1", 2);
    println!("{r}");
    let _ = std::fs::write(
        e2e::initramfs::vm_dir().join("../reports/power-cut-raid1.md"),
        &r,
    );
}

#[test]
fn raid5_power_cuts_resync_the_dirty_regions_only_when_fixed() {
    let r = scenario("raid5_ls", 3);
    println!("{r}");
    let _ = std::fs::create_dir_all(e2e::initramfs::vm_dir().join("../reports"));
    let _ = std::fs::write(
        e2e::initramfs::vm_dir().join("../reports/power-cut-raid5.md"),
        &r,
    );
}
