//! raid10 counts lost legs per mirror, as the kernel does: two failed legs
//! in different mirrors leave a serving array reported "degraded, no
//! redundancy left", never "data lost". A whole mirror lost is shown with
//! both its disks away at start: a running array never gets there, since md
//! keeps the last leg of a mirror and fails the I/O instead (the status
//! still reads DADA). A replacement the kernel refuses, undone, is a unit
//! test (the kernel here refuses none the driver attempts).

use e2e::vm::faults;
use e2e::{Vm, MIB};
use std::time::{Duration, Instant};

use e2e::driver::CSI;
const EP: &str = "--endpoint /run/csi.sock";

#[test]
fn raid10_survives_legs_of_different_mirrors_and_says_which_mirror_is_lost() {
    let mut vm = Vm::builder()
        .disks(&[64 * MIB; 4])
        .with_driver()
        .unwrap()
        .boot()
        .unwrap();
    e2e::driver::start(&mut vm, "", "--auto-rebuild false").unwrap();
    vm.run_ok(&format!(
        "{CSI} create v --param raidType=raid10 --param legs=4 --param sync=nosync --size 32Mi"
    ))
    .unwrap();
    let want = e2e::raid::write_pattern(&mut vm, "/dev/mapper/dmraid-v", 4).unwrap();
    // Legs 0 and 2: one of each mirror (near layout: mirrors 0+1 and 2+3).
    faults::make_failing(&mut vm, "dmraid-v+d0").unwrap();
    faults::make_failing(&mut vm, "dmraid-v+d2").unwrap();
    vm.run_ok("dd if=/dev/urandom of=/dev/mapper/dmraid-v bs=64k count=64 seek=200 oflag=direct 2>/dev/null; true")
        .unwrap();
    vm.wait_until(
        "dmsetup status dmraid-v | grep -q ' DADA '",
        Instant::now() + Duration::from_secs(60),
    )
    .unwrap();
    vm.wait_until(
        &format!("dmraid-csi volumes {EP} | grep -q 'degraded, no redundancy left'"),
        Instant::now() + Duration::from_secs(30),
    )
    .unwrap();
    let out = vm.run_ok(&format!("dmraid-csi volumes {EP}")).unwrap();
    println!("{out}");
    assert!(!out.contains("data lost"), "{out}");
    assert_eq!(
        e2e::raid::read_md5(&mut vm, "/dev/mapper/dmraid-v", 4).unwrap(),
        want,
        "the array serves"
    );
}

/// The VM disk (by index) under leg `leg` of volume `vol`.
fn disk_of_leg(vm: &mut Vm, vol: &str, leg: usize) -> usize {
    let deps = vm
        .run_ok(&format!("dmsetup deps -o devname dmraid-{vol}+d{leg}"))
        .unwrap();
    (0..vm.disk_count())
        .find(|&i| {
            let dev = vm.disk_dev(i).unwrap();
            deps.contains(&format!("({})", dev.trim_start_matches("/dev/")))
        })
        .unwrap_or_else(|| panic!("no disk under leg {leg}: {deps}"))
}

/// Both disks of one mirror are away when the node starts (power cut, then
/// an enclosure holding them does not come back): the volume is reported
/// failed with the mirror named, the spare is never touched (no rebuild the
/// level cannot do, no replacement recorded and undone every round), and
/// when the disks return the volume comes back with its data.
#[test]
fn raid10_that_lost_a_whole_mirror_is_reported_lost_never_rebuilt_and_returns_with_its_disks() {
    let mut vm = Vm::builder()
        .disks(&[64 * MIB; 5])
        .with_driver()
        .unwrap()
        .boot()
        .unwrap();
    e2e::driver::start(&mut vm, "", "").unwrap();
    vm.run_ok(&format!(
        "{CSI} create v --param raidType=raid10 --param legs=4 --param sync=nosync --size 32Mi"
    ))
    .unwrap();
    let want = e2e::raid::write_pattern(&mut vm, "/dev/mapper/dmraid-v", 4).unwrap();
    vm.run_ok("sync").unwrap();
    let mirror: Vec<usize> = (0..2).map(|leg| disk_of_leg(&mut vm, "v", leg)).collect();
    vm.power_cut();
    vm.boot_again().unwrap();
    for d in &mirror {
        vm.hot_remove_disk(*d).unwrap();
    }
    let disks_before = vm.run_ok("dmraid-csi disks --disks '/dev/vd*'").unwrap();
    println!("{disks_before}");
    e2e::driver::start(&mut vm, "", "").unwrap();
    if let Err(e) = vm.wait_until(
        &format!("timeout 10 dmraid-csi volumes {EP} | grep -q 'every copy of one mirror (legs 0, 1) is lost: data lost'"),
        Instant::now() + Duration::from_secs(60),
    ) {
        let log = vm
            .run_ok("timeout 10 dmraid-csi volumes --endpoint /run/csi.sock; dmsetup table; tail -40 /tmp/driver.log")
            .unwrap_or_default();
        panic!("{e}\n{log}");
    }
    // Several monitor rounds with automatic rebuilds on and a spare there.
    std::thread::sleep(Duration::from_secs(5));
    let out = vm.run_ok(&format!("dmraid-csi volumes {EP}")).unwrap();
    println!("{out}");
    assert!(out.contains("data lost"), "{out}");
    let disks_after = vm.run_ok("dmraid-csi disks --disks '/dev/vd*'").unwrap();
    assert_eq!(
        disks_after, disks_before,
        "no extent taken on the spare, none freed"
    );
    let log = vm.run_ok("cat /tmp/driver.log").unwrap();
    assert!(
        !log.contains("rebuild started onto a spare")
            && !log.contains("refused the replacement leg"),
        "no rebuild attempted:\n{log}"
    );
    // The enclosure comes back: the volume returns with its data.
    for d in &mirror {
        vm.replug_disk(*d).unwrap();
    }
    vm.wait_until(
        "dmsetup status dmraid-v | grep -q ' AAAA '",
        Instant::now() + Duration::from_secs(60),
    )
    .unwrap();
    assert_eq!(
        e2e::raid::read_md5(&mut vm, "/dev/mapper/dmraid-v", 4).unwrap(),
        want,
        "the same data"
    );
}
