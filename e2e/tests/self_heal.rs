//! Self-healing in the standalone driver: raid5_ls on 4 legs plus a spare;
//! a leg's disk is hot-removed while a writer runs; the driver reports the
//! failure, rebuilds onto the spare by itself, and the volume is healthy
//! again with the data intact.

use e2e::{Vm, MIB};
use std::time::{Duration, Instant};

const CSI: &str = "dmraid-csi csi --endpoint /run/csi.sock";

#[test]
fn a_removed_disk_is_reported_and_the_leg_rebuilt_onto_the_spare_by_itself() {
    let mut vm = Vm::builder()
        .disks(&[96 * MIB; 5])
        .with_driver()
        .unwrap()
        .boot()
        .unwrap();
    vm.run_ok("ifconfig lo 127.0.0.1 up").unwrap();
    e2e::driver::start(&mut vm, "", "--metrics-addr 127.0.0.1:9808").unwrap();
    vm.run_ok(&format!(
        "{CSI} create v --param raidType=raid5_ls --param legs=4 --size 48Mi"
    ))
    .unwrap();
    vm.run_ok("dmraid-csi volumes --endpoint /run/csi.sock --wait")
        .unwrap();
    let want = vm
        .run_ok("dd if=/dev/urandom of=/tmp/p bs=1M count=16 2>/dev/null && dd if=/tmp/p of=/dev/mapper/dmraid-v bs=1M oflag=direct 2>/dev/null && md5sum < /tmp/p")
        .unwrap();
    // Which disks hold legs: the fifth is the spare.
    let victim = e2e::raid::leg_disks(&mut vm, "v").unwrap().first().copied();
    let writer = vm
        .spawn("while :; do dd if=/dev/urandom of=/dev/mapper/dmraid-v bs=64k count=4 seek=$((RANDOM % 100 + 400)) oflag=direct 2>/dev/null || echo WRITE-ERROR; done")
        .unwrap();
    let removed = Instant::now();
    vm.hot_remove_disk(victim.unwrap()).unwrap();
    // The failure is reported (or already being healed) within seconds.
    // The whole rebuild of this small volume can take a few seconds, a
    // few `volumes` calls under emulation: the monitor's Event says it
    // too.
    vm.wait_until(
        "dmraid-csi volumes --endpoint /run/csi.sock | grep -Eq 'failed|missing|rebuilding' || grep -q LegFailed /tmp/driver.log",
        Instant::now() + Duration::from_secs(20),
    )
    .unwrap();
    let seen = removed.elapsed();
    // Healed by itself: every leg in sync, on the spare.
    vm.wait_until(
        "dmsetup status dmraid-v | grep -q ' AAAA ' && dmsetup status dmraid-v | grep -q idle",
        Instant::now() + Duration::from_secs(180),
    )
    .unwrap();
    vm.run_ok(&format!("kill {writer}")).unwrap();
    let log = vm
        .run_ok(&format!("cat /tmp/bg-{writer}.log; cat /tmp/driver.log"))
        .unwrap();
    assert!(
        !log.contains("WRITE-ERROR"),
        "the writer never saw an error:\n{log}"
    );
    assert!(log.contains("rebuild started onto a spare"), "{log}");
    assert_eq!(
        vm.run_ok("dd if=/dev/mapper/dmraid-v bs=1M count=16 iflag=direct 2>/dev/null | md5sum")
            .unwrap(),
        want
    );
    let volumes = vm
        .run_ok("dmraid-csi volumes --endpoint /run/csi.sock")
        .unwrap();
    assert!(volumes.contains("healthy"), "{volumes}");
    // The monitor's metrics saw the rebuild.
    vm.wait_until(
        "wget -qO- http://127.0.0.1:9808/metrics | grep -q 'dmraid_rebuild_bytes_total{volume=\"v\"} [1-9]'",
        Instant::now() + Duration::from_secs(20),
    )
    .unwrap();
    let text = vm
        .run_ok("wget -qO- http://127.0.0.1:9808/metrics")
        .unwrap();
    assert!(
        text.contains("dmraid_volume_legs{volume=\"v\",state=\"in_sync\"} 4"),
        "{text}"
    );
    println!(
        "failure visible after {:.1} s (includes the hot-remove itself)",
        seen.as_secs_f64()
    );
}

/// The driver, rebuilding at once: a raid6 that lost one leg keeps
/// redundancy and would otherwise wait --rebuild-delay for the disk.
fn start_driver(vm: &mut Vm) -> u32 {
    e2e::driver::start(vm, "", "--rebuild-delay 0").unwrap()
}

fn leg_disk(vm: &mut Vm, skip: &[usize]) -> usize {
    e2e::raid::leg_disks(vm, "v")
        .unwrap()
        .into_iter()
        .find(|i| !skip.contains(i))
        .expect("a disk holding a leg")
}

#[test]
fn raid6_heals_two_losses_one_on_a_spare_one_on_a_disk_added_later_and_a_killed_driver_does_not_rebuild_twice(
) {
    let mut vm = Vm::builder()
        .disks(&[64 * MIB; 5])
        .with_driver()
        .unwrap()
        .boot()
        .unwrap();
    let pid = start_driver(&mut vm);
    // 4 legs + 1 spare; recovery throttled so the driver can be killed mid-rebuild.
    vm.run_ok(&format!("{CSI} create v --param raidType=raid6_zr --param legs=4 --param maxRecoveryRate=4Mi --size 32Mi")).unwrap();
    vm.run_ok("dmraid-csi volumes --endpoint /run/csi.sock --wait")
        .unwrap();
    let want = vm
        .run_ok("dd if=/dev/urandom of=/tmp/p bs=1M count=8 2>/dev/null && dd if=/tmp/p of=/dev/mapper/dmraid-v bs=1M oflag=direct 2>/dev/null && md5sum < /tmp/p")
        .unwrap();

    // First loss: rebuilt onto the spare; kill the driver while it recovers.
    let first = leg_disk(&mut vm, &[]);
    vm.hot_remove_disk(first).unwrap();
    vm.run_ok("dd if=/dev/urandom of=/dev/mapper/dmraid-v bs=64k seek=200 count=4 oflag=direct 2>/dev/null").unwrap();
    vm.wait_until(
        "dmsetup status dmraid-v | grep -q recover",
        Instant::now() + Duration::from_secs(30),
    )
    .unwrap();
    let progress = |vm: &mut Vm| -> u64 {
        let st = vm.run_ok("dmsetup status dmraid-v").unwrap();
        st.split_whitespace()
            .nth(6)
            .and_then(|r| r.split('/').next()?.parse().ok())
            .unwrap_or(0)
    };
    // The driver loads `rebuild N` and keeps it until the array is in
    // sync. Killed now, the restarted driver finds that table live and must
    // leave it: a load of any table would make md log one more "recovery"
    // line, and one with `rebuild` would start the recovery over.
    assert!(vm
        .run_ok("dmsetup table dmraid-v")
        .unwrap()
        .contains(" rebuild "));
    let count = "dmesg | grep -c 'recovery of RAID array' || true";
    let before_kill = vm.run_ok(count).unwrap();
    let at_kill = progress(&mut vm);
    vm.run_ok(&format!("kill -9 {pid}")).unwrap();
    start_driver(&mut vm);
    let after_restart = progress(&mut vm);
    vm.wait_until(
        "dmsetup status dmraid-v | grep -q ' AAAA .* idle'",
        Instant::now() + Duration::from_secs(180),
    )
    .unwrap();
    assert_eq!(
        vm.run_ok(count).unwrap(),
        before_kill,
        "the restarted driver must not start a second rebuild"
    );
    assert!(
        after_restart >= at_kill,
        "recovery went back after the restart: {at_kill} -> {after_restart}"
    );
    // In sync: the restarted driver loads the table without `rebuild`.
    vm.wait_until(
        "! dmsetup table dmraid-v | grep -q rebuild",
        Instant::now() + Duration::from_secs(30),
    )
    .unwrap();

    // Second loss with no spare left: reported, then healed by a disk added later.
    let second = leg_disk(&mut vm, &[first]);
    vm.hot_remove_disk(second).unwrap();
    vm.run_ok("dd if=/dev/urandom of=/dev/mapper/dmraid-v bs=64k seek=300 count=4 oflag=direct 2>/dev/null").unwrap();
    vm.wait_until(
        "grep -q 'cannot rebuild yet' /tmp/driver.log",
        Instant::now() + Duration::from_secs(30),
    )
    .unwrap();
    let volumes = vm
        .run_ok("dmraid-csi volumes --endpoint /run/csi.sock")
        .unwrap();
    assert!(volumes.contains("DEGRADED"), "{volumes}");
    vm.hot_add_disk(64 * MIB).unwrap();
    vm.wait_until(
        "dmsetup status dmraid-v | grep -q ' AAAA .* idle'",
        Instant::now() + Duration::from_secs(180),
    )
    .unwrap();
    assert_eq!(
        vm.run_ok("dd if=/dev/mapper/dmraid-v bs=1M count=8 iflag=direct 2>/dev/null | md5sum")
            .unwrap(),
        want
    );
    e2e::raid::check_finds_no_mismatch(&mut vm, "v").unwrap();
}

/// Free bytes of each present disk, as `dmraid-csi disks` reports them.
fn free_per_disk(vm: &mut Vm) -> Vec<String> {
    let out = vm.run_ok("dmraid-csi disks --disks '/dev/vd*'").unwrap();
    let mut free: Vec<String> = out
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(2).map(str::to_string))
        .collect();
    free.sort();
    free
}

#[test]
fn crash_points_of_a_leg_replacement_each_end_in_one_rebuild_and_no_leaked_extents() {
    for point in ["leg-recorded", "rebuild-loaded"] {
        let mut vm = Vm::builder()
            .disks(&[64 * MIB; 4])
            .with_driver()
            .unwrap()
            .boot()
            .unwrap();
        // raid1 on 2 legs, 2 spares: a second allocation would show.
        let pid = e2e::driver::start(&mut vm, &format!("DMRAID_CRASH_AT={point}"), "").unwrap();
        vm.run_ok(&format!(
            "{CSI} create v --param raidType=raid1 --param legs=2 --param maxRecoveryRate=4Mi --size 16Mi"
        ))
        .unwrap();
        vm.run_ok("dmraid-csi volumes --endpoint /run/csi.sock --wait")
            .unwrap();
        let want = vm
            .run_ok("dd if=/dev/urandom of=/tmp/p bs=1M count=8 2>/dev/null && dd if=/tmp/p of=/dev/mapper/dmraid-v bs=1M oflag=direct 2>/dev/null && md5sum < /tmp/p")
            .unwrap();
        let lost = leg_disk(&mut vm, &[]);
        vm.hot_remove_disk(lost).unwrap();
        // The driver dies at the point, as a kill -9 there would leave it.
        vm.wait_until(
            &format!("grep -q 'DMRAID_CRASH_AT={point}: aborting' /tmp/driver.log && (test ! -e /proc/{pid} || grep -q ') Z' /proc/{pid}/stat)"),
            Instant::now() + Duration::from_secs(60),
        )
        .unwrap();
        let table = vm.run_ok("dmsetup table dmraid-v").unwrap();
        assert_eq!(
            table.contains(" rebuild "),
            point == "rebuild-loaded",
            "{point}: {table}"
        );
        start_driver(&mut vm);
        vm.wait_until(
            "dmsetup status dmraid-v | grep -q ' AA .* idle'",
            Instant::now() + Duration::from_secs(180),
        )
        .unwrap();
        // Once in sync, the table without `rebuild`.
        vm.wait_until(
            "! dmsetup table dmraid-v | grep -q rebuild",
            Instant::now() + Duration::from_secs(30),
        )
        .map_err(|e| {
            format!(
                "{point}: {e}: {}",
                vm.run_ok("dmsetup table dmraid-v").unwrap_or_default()
            )
        })
        .unwrap();
        // An uninterrupted replacement logs one "recovery" line (the
        // `rebuild` load), or two where a restart loaded the table again
        // mid-recovery; a second rebuild would add more.
        let recoveries: u32 = vm
            .run_ok("dmesg | grep -c 'recovery of RAID array' || true")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(
            (1..=2).contains(&recoveries),
            "{point}: {recoveries} recoveries"
        );
        assert_eq!(
            vm.run_ok("dd if=/dev/mapper/dmraid-v bs=1M count=8 iflag=direct 2>/dev/null | md5sum")
                .unwrap(),
            want,
            "{point}"
        );
        // One spare took the leg, the other is untouched: the two leg disks
        // have the same room left and the spare another (a second leg
        // allocated on it would make all three the same).
        let free = free_per_disk(&mut vm);
        let mut distinct = free.clone();
        distinct.dedup();
        let log = vm.run_ok("cat /tmp/driver.log").unwrap();
        assert!(
            free.len() == 3 && distinct.len() == 2,
            "{point}: free per disk {free:?}\n{log}"
        );
        println!("{point}: {recoveries} recovery lines, free per disk {free:?}");
    }
}
