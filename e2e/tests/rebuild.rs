//! Replacing a lost leg on the real kernel through the engine: raid5_ls on 4
//! legs plus a spare disk; one leg's disk is hot-removed, the engine puts a
//! new meta/data pair on the spare with `rebuild`, the array recovers, the
//! flag is dropped, the old extents are freed once in sync, data intact.

use dmraid_api::RaidStatus;
use e2e::raid;
use e2e::{Vm, MIB};
use std::time::{Duration, Instant};

fn status(vm: &mut Vm) -> RaidStatus {
    let _ = vm.run_ok("dmsetup status dmraid-v").unwrap();
    RaidStatus::parse(vm.run_ok("dmsetup status dmraid-v").unwrap().trim()).unwrap()
}

fn wait_healthy(vm: &mut Vm) -> RaidStatus {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let st = status(vm);
        if st.healthy() {
            return st;
        }
        assert!(Instant::now() < deadline, "never in sync: {st:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn raid5_leg_lost_to_a_removed_disk_is_rebuilt_on_the_spare() {
    let mut vm = Vm::builder()
        .disks(&[64 * MIB; 5])
        .with_driver()
        .unwrap()
        .boot()
        .unwrap();
    let e = "dmraid-csi engine --disks '/dev/vd*' --node-id vm";
    let shown = vm
        .run_ok(&format!(
            "{e} create v --param raidType=raid5_ls --param legs=4 --size 48Mi"
        ))
        .unwrap();
    wait_healthy(&mut vm);
    let want = raid::write_pattern(&mut vm, "/dev/mapper/dmraid-v", 16).unwrap();
    // The disk that is not in the volume is the spare; pull a leg's disk.
    let mut leg_disk = None;
    for i in 0..5 {
        let dev = vm.disk_dev(i).unwrap();
        if shown.contains(&format!("\"{dev}\"")) && leg_disk.is_none() {
            leg_disk = Some(i);
        }
    }
    let victim = leg_disk.unwrap();
    // A healthy leg is refused.
    let refused = vm.run(&format!("{e} rebuild v --leg 0")).unwrap();
    assert_ne!(refused.code, 0);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("healthy"));

    vm.hot_remove_disk(victim).unwrap();
    vm.run_ok("dd if=/dev/urandom of=/dev/mapper/dmraid-v bs=64k seek=400 count=8 oflag=direct 2>/dev/null").unwrap();
    let degraded = status(&mut vm);
    assert_eq!(degraded.dead_legs().len(), 1, "{degraded:?}");

    let out = vm.run_ok(&format!("{e} rebuild v")).unwrap();
    assert!(
        !out.contains("\"disk\": null"),
        "every leg has a disk again: {out}"
    );
    let table = vm.run_ok("dmsetup table dmraid-v").unwrap();
    assert!(
        !table.contains("rebuild"),
        "the rebuild flag is dropped once the kernel took the leg: {table}"
    );
    let st = wait_healthy(&mut vm);
    assert_eq!(st.legs.len(), 4);
    assert_eq!(
        raid::read_md5(&mut vm, "/dev/mapper/dmraid-v", 16).unwrap(),
        want
    );
    vm.run_ok("dmsetup message dmraid-v 0 check").unwrap();
    assert_eq!(wait_healthy(&mut vm).mismatches, Some(0));
    // In sync: the next activation frees the replaced leg's extents and does not rebuild again.
    let before = vm.run_ok(&format!("{e} disks")).unwrap();
    vm.run_ok(&format!("{e} activate")).unwrap();
    assert!(status(&mut vm).healthy());
    let after = vm.run_ok(&format!("{e} disks")).unwrap();
    assert_eq!(
        before, after,
        "the lost disk is gone, so nothing on the present disks changes"
    );
}
