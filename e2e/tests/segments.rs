//! Legs of several segments on a real kernel: two volumes each hemmed in by
//! another on the same disks (ext4 and xfs), grown online while mounted and
//! written, so each leg's data device becomes a dm-linear of two segments;
//! the files stay intact, `check` finds 0 mismatches, and an orderly restart
//! and a power cut bring the same devices back from the labels alone.

use e2e::{Vm, MIB};
use std::time::Duration;

const CSI: &str = "dmraid-csi csi --endpoint /run/csi.sock";
const K: &str = "/var/lib/kubelet";

/// (volume, fsType, size, grown size)
const VOLS: [(&str, &str, &str, &str); 2] = [
    ("x", "xfs", "320Mi", "416Mi"),
    ("e", "ext4", "64Mi", "160Mi"),
];

fn start(vm: &mut Vm) -> u32 {
    e2e::driver::start(
        vm,
        "",
        "--state-dir /var/lib/dmraid-csi --paths-under /var/lib/kubelet",
    )
    .unwrap()
}

fn stage(vm: &mut Vm, v: &str) {
    vm.run_ok(&format!("{CSI} stage {v} --staging {K}/staging/{v}"))
        .unwrap();
    vm.run_ok(&format!(
        "{CSI} publish {v} --staging {K}/staging/{v} --target {K}/pods/p/{v}"
    ))
    .unwrap();
}

fn unstage(vm: &mut Vm, v: &str) {
    vm.run_ok(&format!("{CSI} unpublish {v} --target {K}/pods/p/{v}"))
        .unwrap();
    vm.run_ok(&format!("{CSI} unstage {v} --staging {K}/staging/{v}"))
        .unwrap();
}

/// md5 of every file on the volume, by name.
fn sums(vm: &mut Vm, v: &str) -> String {
    vm.run_ok(&format!(
        "cd {K}/pods/p/{v} && find . -type f | sort | xargs md5sum"
    ))
    .unwrap()
}

/// The devices of the two grown volumes as the kernel has them: the legs'
/// linear tables as they are (disk numbers and sectors), the arrays' with
/// their legs' device numbers masked (they are new after a restart).
fn tables(vm: &mut Vm) -> String {
    vm.run_ok(
        "dmsetup table | grep -E '^dmraid-(x|e)[:+]' | sort | \
         sed -E '/ raid /s/ [0-9]+:[0-9]+/ _/g'",
    )
    .unwrap()
}

fn wait_in_sync(vm: &mut Vm, v: &str) {
    e2e::raid::wait_in_sync(vm, &format!("dmraid-{v}"), Duration::from_secs(600)).unwrap();
}

#[test]
fn volumes_hemmed_in_by_others_grow_online_in_segments_and_come_back_identical() {
    let mut vm = Vm::builder()
        .disks(&[GIB; 2])
        .with_driver()
        .unwrap()
        .boot()
        .unwrap();
    let pid = start(&mut vm);
    // Each volume, then a small neighbour right after it on both disks.
    for (v, fs, size, _) in VOLS {
        vm.run_ok(&format!(
            "{CSI} create {v} --param raidType=raid1 --param legs=2 --param fsType={fs} --size {size}"
        ))
        .unwrap();
        vm.run_ok(&format!(
            "{CSI} create {v}n --param raidType=raid1 --param legs=2 --param sync=nosync --size 16Mi"
        ))
        .unwrap();
        wait_in_sync(&mut vm, v);
        stage(&mut vm, v);
        vm.run_ok(&format!(
            "dd if=/dev/urandom of={K}/pods/p/{v}/before bs=1M count=8 conv=fsync 2>/dev/null"
        ))
        .unwrap();
    }
    for (v, _, _, grown) in VOLS {
        // A writer on the mounted volume the whole time it grows.
        let writer = vm
            .spawn(&format!(
                "exec sh -c 'i=0; while :; do dd if=/dev/urandom of={K}/pods/p/{v}/w$((i % 32)) bs=64k count=4 conv=fsync 2>/dev/null; i=$((i+1)); done'"
            ))
            .unwrap();
        vm.run_ok("sleep 1").unwrap();
        let before = vm
            .run_ok(&format!(
                "df -k {K}/pods/p/{v} | tail -1 | awk '{{print $2}}'"
            ))
            .unwrap();
        let out = vm
            .run_ok(&format!(
                "{CSI} expand {v} --size {grown} --path {K}/pods/p/{v}"
            ))
            .unwrap();
        assert!(out.contains("capacity_bytes="), "{out}");
        vm.run_ok(&format!("kill {writer}; sleep 0.5; sync"))
            .unwrap();
        let after = vm
            .run_ok(&format!(
                "df -k {K}/pods/p/{v} | tail -1 | awk '{{print $2}}'"
            ))
            .unwrap();
        let (b, a): (u64, u64) = (
            before.trim().parse().unwrap(),
            after.trim().parse().unwrap(),
        );
        assert!(
            a > b + 64 * 1024,
            "{v}: the filesystem grew from {b} KiB to {a} KiB"
        );
        // Each leg's data device maps its first extent, then a second
        // one elsewhere on its disk (the neighbour took the space after).
        for leg in 0..2 {
            let t = vm
                .run_ok(&format!("dmsetup table dmraid-{v}+d{leg}"))
                .unwrap();
            assert_eq!(t.lines().count(), 2, "{v} leg {leg}: {t}");
            assert!(t.lines().all(|l| l.contains(" linear ")), "{t}");
        }
    }
    // A file that fills the filesystem but for 8 MiB, so part of it lies
    // in the grown part; then everything read back.
    let mut want = Vec::new();
    for (v, ..) in VOLS {
        let avail = vm
            .run_ok(&format!(
                "df -m {K}/pods/p/{v} | tail -1 | awk '{{print $4}}'"
            ))
            .unwrap();
        let mib = avail.trim().parse::<u64>().unwrap().saturating_sub(8);
        assert!(mib >= 64, "{v}: {mib} MiB free after the growth");
        vm.run_ok(&format!(
            "dd if=/dev/urandom of={K}/pods/p/{v}/after bs=1M count={mib} conv=fsync 2>/dev/null"
        ))
        .unwrap();
        wait_in_sync(&mut vm, v);
        e2e::raid::check_finds_no_mismatch(&mut vm, v).unwrap();
        want.push(sums(&mut vm, v));
    }
    let devices = tables(&mut vm);
    assert!(devices.contains("dmraid-x+d0"), "{devices}");

    // An orderly restart: the same devices from the labels, the same files.
    for (v, ..) in VOLS {
        unstage(&mut vm, v);
    }
    e2e::driver::stop(&mut vm, pid).unwrap();
    assert!(!vm.run_ok("dmsetup ls").unwrap().contains("dmraid-x"));
    start(&mut vm);
    assert_eq!(tables(&mut vm), devices, "after a restart");
    for (i, (v, ..)) in VOLS.iter().enumerate() {
        stage(&mut vm, v);
        assert_eq!(sums(&mut vm, v), want[i], "{v} after a restart");
    }

    // A power cut with both mounted: the same again after the boot.
    vm.power_cut();
    vm.boot_again().unwrap();
    start(&mut vm);
    assert_eq!(tables(&mut vm), devices, "after a power cut");
    for (i, (v, ..)) in VOLS.iter().enumerate() {
        stage(&mut vm, v);
        assert_eq!(sums(&mut vm, v), want[i], "{v} after a power cut");
        wait_in_sync(&mut vm, v);
        e2e::raid::check_finds_no_mismatch(&mut vm, v).unwrap();
    }
    vm.shutdown().unwrap();
}

const GIB: u64 = 1024 * MIB;

/// The driver killed at each step of an expansion into a second segment
/// (the labels written; the legs' linears grown too): the next start makes
/// the array the size the labels record, the expansion asked again answers
/// at once, and every byte written before and after is there.
#[test]
fn an_expansion_killed_at_each_step_comes_back_grown() {
    for point in ["grow-recorded", "grow-linears"] {
        let mut vm = Vm::builder()
            .disks(&[128 * MIB; 2])
            .with_driver()
            .unwrap()
            .boot()
            .unwrap();
        let pid = e2e::driver::start(&mut vm, &format!("DMRAID_CRASH_AT={point}"), "").unwrap();
        for (v, size) in [("v", "32Mi"), ("vn", "8Mi")] {
            vm.run_ok(&format!(
                "{CSI} create {v} --param raidType=raid1 --param legs=2 --param sync=nosync --size {size} --block"
            ))
            .unwrap();
        }
        let first = e2e::raid::write_pattern(&mut vm, "/dev/mapper/dmraid-v", 32).unwrap();
        let out = vm.run(&format!("{CSI} expand v --size 64Mi")).unwrap();
        assert_ne!(out.code, 0, "{point}: the driver died in the call");
        vm.wait_until(
            &format!("grep -q 'DMRAID_CRASH_AT={point}: aborting' /tmp/driver.log && (test ! -e /proc/{pid} || grep -q ') Z' /proc/{pid}/stat)"),
            std::time::Instant::now() + Duration::from_secs(60),
        )
        .unwrap();
        e2e::driver::start(&mut vm, "", "").unwrap();
        let out = vm.run_ok(&format!("{CSI} expand v --size 64Mi")).unwrap();
        assert!(out.contains("capacity_bytes=67108864"), "{point}: {out}");
        for leg in 0..2 {
            let t = vm
                .run_ok(&format!("dmsetup table dmraid-v+d{leg}"))
                .unwrap();
            assert_eq!(t.lines().count(), 2, "{point} leg {leg}: {t}");
        }
        let size = vm
            .run_ok("blockdev --getsize64 /dev/mapper/dmraid-v")
            .unwrap();
        assert_eq!(size.trim(), "67108864", "{point}");
        assert_eq!(
            e2e::raid::read_md5(&mut vm, "/dev/mapper/dmraid-v", 32).unwrap(),
            first,
            "{point}: the bytes written before"
        );
        let whole = e2e::raid::write_pattern(&mut vm, "/dev/mapper/dmraid-v", 64).unwrap();
        wait_in_sync(&mut vm, "v");
        e2e::raid::check_finds_no_mismatch(&mut vm, "v").unwrap();
        assert_eq!(
            e2e::raid::read_md5(&mut vm, "/dev/mapper/dmraid-v", 64).unwrap(),
            whole,
            "{point}"
        );
        vm.shutdown().unwrap();
    }
}
