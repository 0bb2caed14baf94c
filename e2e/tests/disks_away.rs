//! A volume whose disks are all away is never made again: the driver
//! restarts without them, CreateVolume for the same name is refused again
//! and again with "disks missing", nothing is allocated elsewhere, and when
//! the disks are plugged back the driver brings the volume up by itself
//! (no restart) with its data.

use e2e::{Vm, MIB};
use std::time::{Duration, Instant};

use e2e::driver::CSI;
const CREATE: &str = "create v --param raidType=raid1 --param legs=2 --size 32Mi";

#[test]
fn a_volume_whose_disks_are_away_is_not_made_again_and_returns_with_them() {
    let mut vm = Vm::builder()
        .disks(&[64 * MIB; 4])
        .with_driver()
        .unwrap()
        .boot()
        .unwrap();
    let pid = e2e::driver::start(&mut vm, "", "").unwrap();
    vm.run_ok(&format!("{CSI} {CREATE}")).unwrap();
    let want = e2e::raid::write_pattern(&mut vm, "/dev/mapper/dmraid-v", 8).unwrap();
    let legs = e2e::raid::leg_disks(&mut vm, "v").unwrap();
    let free_before = vm.run_ok("dmraid-csi disks --disks '/dev/vd*'").unwrap();
    // The node plugin stops; an enclosure reset takes both disks away.
    e2e::driver::stop(&mut vm, pid).unwrap();
    for d in &legs {
        vm.hot_remove_disk(*d).unwrap();
    }
    // Without automatic rebuilds: the disks return one after the other, and
    // a rebuild onto a spare in between is the grace period's matter (a
    // separate capability), not what this test is about.
    e2e::driver::start(&mut vm, "", "--auto-rebuild false").unwrap();
    for _ in 0..3 {
        let out = vm.run(&format!("{CSI} {CREATE}")).unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_ne!(out.code, 0, "made again over other disks");
        assert!(err.contains("disks missing"), "{err}");
    }
    let others = vm.run_ok("dmraid-csi disks --disks '/dev/vd*'").unwrap();
    for line in others.lines().skip(1) {
        assert!(
            free_before.contains(line),
            "another disk changed while the volume was away: {line}\nbefore:\n{free_before}"
        );
    }
    assert!(
        !vm.run_ok("dmsetup ls").unwrap().contains("dmraid-v"),
        "no second array"
    );
    // The disks come back: the running driver claims them and brings the
    // volume up with its data.
    for d in &legs {
        vm.replug_disk(*d).unwrap();
    }
    vm.wait_until(
        "dmsetup status dmraid-v | grep -q ' AA '",
        Instant::now() + Duration::from_secs(60),
    )
    .unwrap();
    let got = e2e::raid::read_md5(&mut vm, "/dev/mapper/dmraid-v", 8).unwrap();
    assert_eq!(got, want, "the same data");
    let after = vm.run_ok("dmraid-csi disks --disks '/dev/vd*'").unwrap();
    assert_eq!(
        after.lines().count(),
        free_before.lines().count(),
        "{after}"
    );
    for line in free_before.lines().skip(1) {
        let disk = line.split_whitespace().next().unwrap();
        let now = after
            .lines()
            .find(|l| l.starts_with(&format!("{disk} ")))
            .unwrap_or_else(|| panic!("{disk} gone:\n{after}"));
        assert_eq!(now, line, "no extent freed or added");
    }
}

#[test]
fn after_a_rebuild_the_volume_returns_with_its_data_when_its_disks_come_back() {
    let mut vm = Vm::builder()
        .disks(&[128 * MIB; 4])
        .with_driver()
        .unwrap()
        .boot()
        .unwrap();
    let pid = e2e::driver::start(&mut vm, "", "").unwrap();
    vm.run_ok(&format!(
        "{CSI} create v --param raidType=raid5_ls --param legs=3 --size 64Mi"
    ))
    .unwrap();
    vm.wait_until(
        "dmsetup status dmraid-v | grep -q ' AAA .* idle '",
        Instant::now() + Duration::from_secs(120),
    )
    .unwrap();
    // A leg fails and is rebuilt onto the fourth disk.
    let first = e2e::raid::leg_disks(&mut vm, "v").unwrap();
    e2e::vm::faults::make_failing(&mut vm, "dmraid-v+d0").unwrap();
    vm.run_ok("dd if=/dev/urandom of=/dev/mapper/dmraid-v bs=64k count=4 seek=100 oflag=direct 2>/dev/null; true")
        .unwrap();
    vm.wait_until(
        "dmsetup status dmraid-v | grep -q ' AAA .* idle ' && [ $(dmraid-csi volumes --endpoint /run/csi.sock | grep -c healthy) = 1 ]",
        Instant::now() + Duration::from_secs(120),
    )
    .unwrap();
    let legs = e2e::raid::leg_disks(&mut vm, "v").unwrap();
    assert_ne!(legs, first, "leg 0 moved");
    let want = e2e::raid::write_pattern(&mut vm, "/dev/mapper/dmraid-v", 4).unwrap();
    e2e::driver::stop(&mut vm, pid).unwrap();
    for d in &legs {
        vm.hot_remove_disk(*d).unwrap();
    }
    e2e::driver::start(&mut vm, "", "").unwrap();
    for d in &legs {
        vm.replug_disk(*d).unwrap();
    }
    vm.wait_until(
        "dmsetup status dmraid-v | grep -q ' AAA '",
        Instant::now() + Duration::from_secs(60),
    )
    .unwrap();
    let got = e2e::raid::read_md5(&mut vm, "/dev/mapper/dmraid-v", 4).unwrap();
    assert_eq!(
        got,
        want,
        "{}",
        vm.run_ok("dmsetup table; cat /tmp/driver.log | tail -30")
            .unwrap_or_default()
    );
}
