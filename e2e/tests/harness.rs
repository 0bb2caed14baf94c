//! The harness itself, proven on the real kernel: boot, commands, files,
//! dm-raid built by hand, disk hot-remove/add, power cut, in-guest faults.

use e2e::vm::faults;
use e2e::{Vm, MIB};
use std::time::{Duration, Instant};

#[test]
fn boots_and_runs_commands_with_exit_codes() {
    let mut vm = Vm::builder().boot().unwrap();
    assert_eq!(vm.run_ok("echo hello").unwrap(), "hello\n");
    let out = vm.run("echo oops >&2; exit 3").unwrap();
    assert_eq!(out.code, 3);
    assert_eq!(String::from_utf8_lossy(&out.stderr), "oops\n");
    let err = vm.run_ok("false").unwrap_err();
    assert!(err.contains("exit 1"), "{err}");
    assert!(vm.dmesg().unwrap().contains("Linux version"));
    assert!(vm.run_ok("cat /proc/modules").unwrap().contains("dm_raid"));
    // A command that never returns (a stuck guest) fails with what QEMU
    // and the console show, not a bare timeout.
    let err = vm
        .wait_until("sleep 6", Instant::now() + Duration::from_secs(2))
        .unwrap_err();
    assert!(err.contains("timed out"), "{err}");
    assert!(err.contains("\"running\""), "QEMU's run state: {err}");
    assert!(err.contains("RIP="), "the vCPU's registers: {err}");
    assert!(err.contains("the guest's console"), "{err}");
    // And the kernel's list of blocked tasks (magic SysRq `w`), which
    // names what a hung dm/md call waits on.
    assert!(err.contains("Show Blocked State"), "SysRq w: {err}");
    assert!(
        err.contains("Show backtrace of all active CPUs"),
        "SysRq l: {err}"
    );
    vm.shutdown().unwrap();
}

/// Build dm-linear meta (first 8 MiB) and data (the rest) devices on each
/// disk, and the raid device `r` over them with a hand-written table.
fn hand_made_raid(vm: &mut Vm, kind: &str, disks: usize, extra: &str) -> u64 {
    let mut devs = String::new();
    let mut data_len = 0;
    for i in 0..disks {
        let dev = vm.disk_dev(i).unwrap();
        let size: u64 = vm
            .run_ok(&format!("blockdev --getsz {dev}"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        data_len = size - 16384;
        vm.run_ok(&format!(
            "echo '0 16384 linear {dev} 0' | dmsetup create m{i} && \
             echo '0 {data_len} linear {dev} 16384' | dmsetup create d{i}"
        ))
        .unwrap();
        devs.push_str(&format!(" /dev/mapper/m{i} /dev/mapper/d{i}"));
    }
    vm.run_ok("dmsetup mknodes").unwrap();
    let stripes = disks as u64 - 1;
    let len = data_len * stripes;
    let params = format!("128 region_size 1024 {extra}");
    let params: Vec<&str> = params.split_whitespace().collect();
    vm.run_ok(&format!(
        "echo '0 {len} raid {kind} {} {} {disks}{devs}' | dmsetup create r && dmsetup mknodes",
        params.len(),
        params.join(" ")
    ))
    .unwrap();
    len
}

fn raid_health(vm: &mut Vm) -> (String, String, String) {
    let st = vm.run_ok("dmsetup status r").unwrap();
    let w: Vec<&str> = st.split_whitespace().collect();
    (w[5].to_string(), w[6].to_string(), w[7].to_string())
}

fn wait_in_sync(vm: &mut Vm, legs: usize) {
    let deadline = Instant::now() + Duration::from_secs(120);
    let want = "A".repeat(legs);
    loop {
        let (health, ratio, action) = raid_health(vm);
        let (a, b) = ratio.split_once('/').unwrap();
        if health == want && a == b && action == "idle" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "not in sync: {health} {ratio} {action}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn raid5_resyncs_and_survives_a_hot_removed_disk_then_sees_a_new_one() {
    let mut vm = Vm::builder().disks(&[64 * MIB; 3]).boot().unwrap();
    hand_made_raid(&mut vm, "raid5_ls", 3, "");
    wait_in_sync(&mut vm, 3);
    vm.run_ok("dd if=/dev/urandom of=/tmp/pattern bs=1M count=8 2>/dev/null && dd if=/tmp/pattern of=/dev/mapper/r bs=1M oflag=direct 2>/dev/null").unwrap();
    let want = vm.run_ok("md5sum < /tmp/pattern").unwrap();

    vm.hot_remove_disk(1).unwrap();
    // The kernel fails a leg only when I/O reaches it (measured in the VM).
    vm.run_ok("dd if=/dev/zero of=/dev/mapper/r bs=1M seek=16 count=1 oflag=direct 2>/dev/null")
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    vm.wait_until("dmsetup status r | grep -q ' ADA '", deadline)
        .unwrap();
    let got = vm
        .run_ok("dd if=/dev/mapper/r bs=1M count=8 iflag=direct 2>/dev/null | md5sum")
        .unwrap();
    assert_eq!(got, want, "degraded raid5 must still return the data");

    let idx = vm.hot_add_disk(64 * MIB).unwrap();
    assert_eq!(idx, 3);
    let dev = vm.disk_dev(idx).unwrap();
    assert!(dev.starts_with("/dev/vd"), "{dev}");
    assert_eq!(
        vm.run_ok(&format!("blockdev --getsize64 {dev}"))
            .unwrap()
            .trim(),
        (64 * MIB).to_string()
    );
}

#[test]
fn power_cut_keeps_what_was_synced_and_boots_again_on_the_same_images() {
    let mut vm = Vm::builder().disks(&[32 * MIB]).boot().unwrap();
    let dev = vm.disk_dev(0).unwrap();
    vm.run_ok(&format!(
        "dd if=/dev/urandom of=/tmp/p bs=1M count=4 2>/dev/null && dd if=/tmp/p of={dev} bs=1M oflag=direct conv=fsync 2>/dev/null"
    ))
    .unwrap();
    let want = vm.run_ok("md5sum < /tmp/p").unwrap();
    // A writer still running when the power goes.
    vm.spawn(&format!("while :; do dd if=/dev/urandom of={dev} bs=64k seek=128 count=16 oflag=direct 2>/dev/null; done")).unwrap();
    vm.run_ok("sleep 0.5").unwrap();
    vm.power_cut();
    vm.boot_again().unwrap();
    let dev = vm.disk_dev(0).unwrap();
    let got = vm
        .run_ok(&format!(
            "dd if={dev} bs=1M count=4 iflag=direct 2>/dev/null | md5sum"
        ))
        .unwrap();
    assert_eq!(got, want);
}

#[test]
fn files_travel_in_and_out_unchanged() {
    let mut vm = Vm::builder().boot().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let src = dir.path().join("in.bin");
    std::fs::write(&src, &data).unwrap();
    vm.copy_in(&src, "/tmp/in.bin").unwrap();
    vm.run_ok("cp /tmp/in.bin /tmp/out.bin").unwrap();
    let back = dir.path().join("out.bin");
    vm.copy_out("/tmp/out.bin", &back).unwrap();
    assert_eq!(std::fs::read(&back).unwrap(), data);
}

#[test]
fn an_error_target_under_a_leg_fails_it_and_a_delay_target_does_not() {
    let mut vm = Vm::builder().disks(&[64 * MIB; 3]).boot().unwrap();
    hand_made_raid(&mut vm, "raid5_ls", 3, "");
    wait_in_sync(&mut vm, 3);

    faults::make_slow(&mut vm, "d0", 20).unwrap();
    vm.run_ok("dd if=/dev/urandom of=/dev/mapper/r bs=64k count=16 oflag=direct 2>/dev/null")
        .unwrap();
    let (health, _, _) = raid_health(&mut vm);
    assert_eq!(health, "AAA", "a slow leg stays in the array");
    assert!(vm.run_ok("dmsetup table d0").unwrap().contains(" delay "));

    faults::make_failing(&mut vm, "d2").unwrap();
    vm.run_ok("dd if=/dev/urandom of=/dev/mapper/r bs=64k count=16 oflag=direct 2>/dev/null")
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    vm.wait_until("dmsetup status r | grep -q ' AAD '", deadline)
        .unwrap();
}
