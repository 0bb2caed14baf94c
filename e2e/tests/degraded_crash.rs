//! A parity array that loses power while degraded — a leg's disk gone, with
//! or without a rebuild onto a spare running, writes in flight — comes back
//! by itself: the kernel refuses it with the crash fix ("cannot start dirty
//! degraded array"), so the driver starts it without the resync, says how
//! many regions may be inconsistent (the RAID5/6 write hole), lets the
//! rebuild finish, and checks the array once redundancy is back. Data
//! flushed before the cut reads back intact.

use e2e::{Vm, MIB};
use std::time::{Duration, Instant};

use e2e::driver::CSI;

fn scenario(raid: &str, legs: usize, spare: bool) {
    let disks = legs + usize::from(spare);
    let mut vm = Vm::builder()
        .disks(&vec![96 * MIB; disks])
        .with_driver()
        .unwrap()
        .boot()
        .unwrap();
    // At once: a raid6 that lost one leg keeps redundancy and would wait
    // --rebuild-delay for the disk before rebuilding onto the spare.
    e2e::driver::start(&mut vm, "", "--rebuild-delay 0").unwrap();
    // A slow rebuild (4 MiB/s per device) so the power cut lands in it.
    vm.run_ok(&format!(
        "{CSI} create v --param raidType={raid} --param legs={legs} --param regionSize=512Ki --param maxRecoveryRate=4Mi --size 64Mi"
    ))
    .unwrap();
    let all_in_sync = format!(
        "dmsetup status dmraid-v | grep -q ' {} .* idle '",
        "A".repeat(legs)
    );
    vm.wait_until(&all_in_sync, Instant::now() + Duration::from_secs(180))
        .unwrap();
    let want = e2e::raid::write_pattern(&mut vm, "/dev/mapper/dmraid-v", 4).unwrap();
    let victim = e2e::raid::leg_disks(&mut vm, "v").unwrap()[1];
    vm.hot_remove_disk(victim).unwrap();
    vm.run_ok("dd if=/dev/urandom of=/dev/mapper/dmraid-v bs=64k count=4 seek=200 oflag=direct 2>/dev/null")
        .unwrap();
    if spare {
        vm.wait_until(
            "dmsetup status dmraid-v | grep -q ' recover '",
            Instant::now() + Duration::from_secs(60),
        )
        .unwrap();
    } else {
        vm.wait_until(
            "dmsetup status dmraid-v | awk '{print $6}' | grep -q D",
            Instant::now() + Duration::from_secs(60),
        )
        .unwrap();
    }
    vm.spawn("while :; do dd if=/dev/urandom of=/dev/mapper/dmraid-v bs=64k count=4 seek=$((RANDOM % 400 + 100)) oflag=direct 2>/dev/null; done")
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    vm.power_cut();
    vm.boot_again().unwrap();
    e2e::driver::start(&mut vm, "", "--rebuild-delay 0").unwrap();
    // It serves: the flushed data reads back.
    vm.wait_until(
        "dmsetup status dmraid-v >/dev/null 2>&1",
        Instant::now() + Duration::from_secs(60),
    )
    .unwrap();
    let got = e2e::raid::read_md5(&mut vm, "/dev/mapper/dmraid-v", 4).unwrap();
    assert_eq!(got, want, "{raid}: data flushed before the cut");
    let log = vm.run_ok("cat /tmp/driver.log").unwrap();
    assert!(
        log.contains("refused the dirty degraded array"),
        "{raid}: the kernel's refusal was met:\n{log}"
    );
    let said = vm
        .run_ok("dmraid-csi volumes --endpoint /run/csi.sock")
        .unwrap();
    println!("{raid} (spare: {spare}) after boot:\n{said}");
    assert!(
        said.contains("unclean shutdown while degraded") || said.contains("check"),
        "{said}"
    );
    if !spare {
        vm.hot_add_disk(96 * MIB).unwrap();
    }
    // The rebuild finishes and the check that follows runs to its end.
    vm.wait_until(&all_in_sync, Instant::now() + Duration::from_secs(300))
        .unwrap();
    vm.wait_until(
        "grep -q 'WriteHoleCheck\\|checking the array for the' /tmp/driver.log || dmraid-csi volumes --endpoint /run/csi.sock | grep -q 'mismatched sectors'",
        Instant::now() + Duration::from_secs(120),
    )
    .unwrap();
    vm.wait_until(
        "dmsetup status dmraid-v | grep -q ' idle '",
        Instant::now() + Duration::from_secs(300),
    )
    .unwrap();
    let st = vm.run_ok("dmsetup status dmraid-v").unwrap();
    println!("{raid} (spare: {spare}): after the check: {}", st.trim());
    let got = e2e::raid::read_md5(&mut vm, "/dev/mapper/dmraid-v", 4).unwrap();
    assert_eq!(
        got, want,
        "{raid}: data flushed before the cut, after the rebuild"
    );
}

#[test]
fn raid5_degraded_power_cut_without_a_spare() {
    scenario("raid5_ls", 3, false);
}

#[test]
fn raid5_degraded_power_cut_during_a_rebuild() {
    scenario("raid5_ls", 3, true);
}

#[test]
fn raid6_degraded_power_cut_during_a_rebuild() {
    scenario("raid6_zr", 4, true);
}
