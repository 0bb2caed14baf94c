//! The node engine on the real kernel: the release `dmraid-csi` binary in the
//! VM claims the virtio disks, builds arrays from its labels with
//! in-process device-mapper ioctls, re-creates them from the labels alone
//! after a restart and after a power cut (where it applies the crash fix),
//! and refuses a disk with a filesystem on it.

use dmraid_api::RaidStatus;
use e2e::raid;
use e2e::{Vm, MIB};
use std::time::{Duration, Instant};

fn status(vm: &mut Vm, id: &str) -> RaidStatus {
    let _ = vm.run_ok(&format!("dmsetup status dmraid-{id}")).unwrap();
    RaidStatus::parse(
        vm.run_ok(&format!("dmsetup status dmraid-{id}"))
            .unwrap()
            .trim(),
    )
    .unwrap()
}

fn wait_healthy(vm: &mut Vm, id: &str) -> RaidStatus {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let st = status(vm, id);
        if st.healthy() {
            return st;
        }
        assert!(Instant::now() < deadline, "{id} never in sync: {st:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn engine_builds_arrays_from_labels_and_survives_restart_and_power_cut() {
    let mut vm = Vm::builder()
        .disks(&[96 * MIB; 5])
        .with_driver()
        .unwrap()
        .boot()
        .unwrap();
    // Disks 0-3 are named to the driver; disk 4 is not, and must never be written.
    let named: Vec<String> = (0..4).map(|i| vm.disk_dev(i).unwrap()).collect();
    let unnamed = vm.disk_dev(4).unwrap();
    vm.run_ok(&format!(
        "dd if=/dev/urandom of={unnamed} bs=1M count=2 2>/dev/null"
    ))
    .unwrap();
    let unnamed_sum = vm.run_ok(&format!("md5sum < {unnamed}")).unwrap();
    let engine_cmd = format!(
        "dmraid-csi engine {} --node-id vm",
        named
            .iter()
            .map(|d| format!("--disks {d}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let engine_cmd = engine_cmd.as_str();
    // A disk with a filesystem is never claimed, and never written.
    let d3 = vm.disk_dev(3).unwrap();
    vm.run_ok(&format!("mkfs.ext4 -q -F {d3}")).unwrap();
    let before = vm.run_ok(&format!("md5sum < {d3}")).unwrap();
    let out = vm.run(&format!("{engine_cmd} disks")).unwrap();
    assert_eq!(out.code, 0);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains(&d3) && stderr.contains("ext4"), "{stderr}");
    assert_eq!(
        out.text().matches("\"uuid\"").count(),
        3,
        "three blank disks claimed: {}",
        out.text()
    );

    vm.run_ok(&format!(
        "{engine_cmd} create v5 --param raidType=raid5_ls --size 32Mi"
    ))
    .unwrap();
    vm.run_ok(&format!(
        "{engine_cmd} create v1 --param raidType=raid1 --param legs=3 --size 16Mi"
    ))
    .unwrap();
    assert_eq!(wait_healthy(&mut vm, "v5").legs.len(), 3);
    assert_eq!(wait_healthy(&mut vm, "v1").legs.len(), 3);
    // Same request again: the same volume.
    vm.run_ok(&format!(
        "{engine_cmd} create v5 --param raidType=raid5_ls --size 32Mi"
    ))
    .unwrap();
    let err = vm
        .run(&format!(
            "{engine_cmd} create v5 --param raidType=raid5_ls --size 8Mi"
        ))
        .unwrap();
    assert_ne!(err.code, 0);
    assert!(String::from_utf8_lossy(&err.stderr).contains("already exists"));

    let p5 = raid::write_pattern(&mut vm, "/dev/mapper/dmraid-v5", 8).unwrap();
    let p1 = raid::write_pattern(&mut vm, "/dev/mapper/dmraid-v1", 4).unwrap();

    // Orderly stop and start: from the labels alone, no resync.
    vm.run_ok(&format!("{engine_cmd} deactivate")).unwrap();
    assert!(
        !vm.run_ok("dmsetup ls").unwrap().contains("dmraid-"),
        "all devices gone"
    );
    vm.run_ok(&format!("{engine_cmd} activate")).unwrap();
    assert!(
        status(&mut vm, "v5").healthy(),
        "a clean restart resyncs nothing"
    );
    assert_eq!(
        raid::read_md5(&mut vm, "/dev/mapper/dmraid-v5", 8).unwrap(),
        p5
    );
    assert_eq!(
        raid::read_md5(&mut vm, "/dev/mapper/dmraid-v1", 4).unwrap(),
        p1
    );

    // Power cut mid-write, then boot: the engine repairs and the kernel resyncs the dirty regions.
    vm.spawn("while :; do dd if=/dev/urandom of=/dev/mapper/dmraid-v5 bs=64k count=4 seek=$((RANDOM % 200 + 160)) oflag=direct 2>/dev/null; done").unwrap();
    vm.run_ok("sleep 1").unwrap();
    vm.power_cut();
    vm.boot_again().unwrap();
    let shown = vm.run_ok(&format!("{engine_cmd} activate")).unwrap();
    assert!(
        shown.contains("\"unclean\": ["),
        "the crash is recognised: {shown}"
    );
    let dmesg = vm.dmesg().unwrap();
    assert!(
        dmesg.contains("not clean -- starting background reconstruction"),
        "{dmesg}"
    );
    wait_healthy(&mut vm, "v5");
    vm.run_ok("dmsetup message dmraid-v5 0 check").unwrap();
    let st = wait_healthy(&mut vm, "v5");
    assert_eq!(st.mismatches, Some(0));
    assert_eq!(
        raid::read_md5(&mut vm, "/dev/mapper/dmraid-v5", 8).unwrap(),
        p5,
        "flushed data intact"
    );

    // Delete one volume: the other is untouched and the space is reused.
    vm.run_ok(&format!("{engine_cmd} delete v1")).unwrap();
    assert!(!vm.run_ok("dmsetup ls").unwrap().contains("dmraid-v1"));
    assert_eq!(
        raid::read_md5(&mut vm, "/dev/mapper/dmraid-v5", 8).unwrap(),
        p5
    );
    vm.run_ok(&format!(
        "{engine_cmd} create v6 --param raidType=raid10 --param legs=3 --size 16Mi"
    ))
    .unwrap();
    wait_healthy(&mut vm, "v6");
    // Deleting a volume in use is refused.
    let busy = vm
        .run(&format!(
            "exec 3</dev/mapper/dmraid-v6; {engine_cmd} delete v6"
        ))
        .unwrap();
    assert_ne!(busy.code, 0);
    assert!(String::from_utf8_lossy(&busy.stderr).contains("in use"));
    assert_eq!(
        vm.run_ok(&format!("md5sum < {d3}")).unwrap(),
        before,
        "the refused disk was never written"
    );
    assert_eq!(
        vm.run_ok(&format!("md5sum < {unnamed}")).unwrap(),
        unnamed_sum,
        "a disk not named was never written"
    );
}
