//! Health through the standalone driver on a real kernel: a raid1 leg
//! swapped for an `error` target mid-write is reported and rebuilt onto the
//! spare with the data intact, `describe` shows the rebuild's progress and
//! ETA; `check` counts mismatches (0 on a healthy array, more after a leg is
//! corrupted underneath), `check --repair` fixes them, a scheduled scrub
//! runs by itself; bad requests are refused with a clear message and the
//! `engine` command refuses to act beside a running driver.

use e2e::vm::faults;
use e2e::{Vm, MIB};
use std::time::{Duration, Instant};

const CSI: &str = "dmraid-csi csi --endpoint /run/csi.sock";
const EP: &str = "--endpoint /run/csi.sock";

fn start(vm: &mut Vm, extra: &str) -> u32 {
    e2e::driver::start(vm, "", extra).unwrap()
}

/// The mismatch count in a `dmsetup status` line of a raid target (the word after the sync action).
fn mismatches(status: &str) -> u64 {
    let w: Vec<&str> = status.split_whitespace().collect();
    w[8].parse()
        .unwrap_or_else(|_| panic!("no mismatch count in {status:?}"))
}

fn refused(vm: &mut Vm, cmd: &str) -> String {
    let out = vm.run(cmd).unwrap();
    assert_ne!(out.code, 0, "expected a refusal: {cmd}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn raid1_leg_swapped_for_an_error_target_is_reported_and_rebuilt_onto_the_spare() {
    let mut vm = Vm::builder()
        .disks(&[64 * MIB; 3])
        .with_driver()
        .unwrap()
        .boot()
        .unwrap();
    start(&mut vm, "");
    // A throttled rebuild (2 MiB/s per device) so its progress can be watched.
    vm.run_ok(&format!(
        "{CSI} create v --param raidType=raid1 --param legs=2 --param maxRecoveryRate=2Mi --size 32Mi"
    ))
    .unwrap();
    vm.wait_until(
        "dmsetup status dmraid-v | grep -q ' AA .* idle'",
        Instant::now() + Duration::from_secs(120),
    )
    .unwrap();
    let want = vm
        .run_ok("dd if=/dev/urandom of=/tmp/p bs=1M count=8 2>/dev/null && dd if=/tmp/p of=/dev/mapper/dmraid-v bs=1M oflag=direct 2>/dev/null && md5sum < /tmp/p")
        .unwrap();
    let writer = vm
        .spawn("while :; do dd if=/dev/urandom of=/dev/mapper/dmraid-v bs=64k count=4 seek=$((RANDOM % 100 + 200)) oflag=direct 2>/dev/null || echo WRITE-ERROR; done")
        .unwrap();
    let failed_at = Instant::now();
    faults::make_failing(&mut vm, "dmraid-v+d1").unwrap();
    vm.wait_until(
        "dmraid-csi volumes --endpoint /run/csi.sock | grep -Eq 'leg 1 .*failed|rebuilding'",
        Instant::now() + Duration::from_secs(20),
    )
    .unwrap();
    println!(
        "error target → reported in {:.2} s",
        failed_at.elapsed().as_secs_f64()
    );
    // The rebuild onto the spare, with progress and an ETA in describe.
    vm.wait_until(
        "dmraid-csi describe v --endpoint /run/csi.sock | grep -q 'ETA'",
        Instant::now() + Duration::from_secs(30),
    )
    .unwrap();
    let d = vm.run_ok(&format!("dmraid-csi describe v {EP}")).unwrap();
    println!("{d}");
    assert!(
        d.contains("Progress:") && d.contains("rebuilding leg 1 onto /dev/"),
        "{d}"
    );
    // Bad input while it rebuilds: a check, the engine command beside the driver.
    let e = refused(&mut vm, "dmraid-csi check v");
    assert!(e.contains("not healthy and idle"), "{e}");
    let e = refused(
        &mut vm,
        "dmraid-csi engine --disks '/dev/vd*' --node-id vm show v",
    );
    assert!(e.contains("another dmraid-csi process"), "{e}");
    let e = refused(&mut vm, "dmraid-csi check nosuch");
    assert!(e.contains("nosuch"), "{e}");
    vm.wait_until(
        "dmsetup status dmraid-v | grep -q ' AA .* idle'",
        Instant::now() + Duration::from_secs(120),
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
        vm.run_ok("dd if=/dev/mapper/dmraid-v bs=1M count=8 iflag=direct 2>/dev/null | md5sum")
            .unwrap(),
        want
    );
    vm.wait_until(
        "dmraid-csi volumes --endpoint /run/csi.sock | grep -q healthy",
        Instant::now() + Duration::from_secs(30),
    )
    .unwrap();
}

#[test]
fn check_counts_mismatches_repair_fixes_them_and_a_scheduled_scrub_runs_by_itself() {
    let mut vm = Vm::builder()
        .disks(&[64 * MIB; 2])
        .with_driver()
        .unwrap()
        .boot()
        .unwrap();
    let pid = start(&mut vm, "--scrub-interval 4s");
    vm.run_ok(&format!(
        "{CSI} create v --param raidType=raid1 --param legs=2 --size 32Mi"
    ))
    .unwrap();
    let idle = "dmsetup status dmraid-v | grep -q ' AA .* idle'";
    vm.wait_until(idle, Instant::now() + Duration::from_secs(120))
        .unwrap();
    // The scheduled scrub starts by itself once the volume is healthy.
    vm.wait_until(
        "grep -q 'scheduled check started' /tmp/driver.log",
        Instant::now() + Duration::from_secs(30),
    )
    .unwrap();
    vm.wait_until(idle, Instant::now() + Duration::from_secs(60))
        .unwrap();
    let st = vm.run_ok("dmsetup status dmraid-v").unwrap();
    assert_eq!(
        mismatches(&st),
        0,
        "a healthy array has no mismatches: {st}"
    );

    // Without the schedule from here on, so only the checks asked for run.
    vm.run_ok(&format!("kill -TERM {pid}")).unwrap();
    vm.wait_until(
        &format!("[ ! -e /proc/{pid} ] || grep -q '^State:.*Z' /proc/{pid}/status"),
        Instant::now() + Duration::from_secs(60),
    )
    .unwrap();
    start(&mut vm, "");
    vm.wait_until(idle, Instant::now() + Duration::from_secs(60))
        .unwrap();

    // Corrupt leg 1 underneath the array (through its dm-linear data device).
    vm.run_ok("dd if=/dev/urandom of=/dev/mapper/dmraid-v+d1 bs=1M count=2 seek=4 oflag=direct 2>/dev/null")
        .unwrap();
    let out = vm.run_ok("dmraid-csi check v").unwrap();
    assert!(out.contains("check started"), "{out}");
    vm.wait_until(
        "dmsetup status dmraid-v | grep -q ' idle [1-9]'",
        Instant::now() + Duration::from_secs(60),
    )
    .unwrap();
    let st = vm.run_ok("dmsetup status dmraid-v").unwrap();
    let found = mismatches(&st);
    println!("check after corrupting 2 MiB of leg 1: {found} mismatched sectors");
    assert!(found >= 2048, "{st}");
    vm.wait_until(
        "dmraid-csi volumes --endpoint /run/csi.sock | grep -q 'mismatched sectors found'",
        Instant::now() + Duration::from_secs(10),
    )
    .unwrap();
    let log = vm.run_ok("cat /tmp/driver.log").unwrap();
    assert!(
        log.contains(dmraid_api::EventReason::MismatchesFound.as_str()),
        "{log}"
    );

    vm.run_ok("dmraid-csi check v --repair").unwrap();
    vm.wait_until(
        "dmsetup status dmraid-v | grep -q ' idle '",
        Instant::now() + Duration::from_secs(60),
    )
    .unwrap();
    // A check after the repair finds nothing.
    vm.wait_until(
        "dmraid-csi check v >/dev/null 2>&1",
        Instant::now() + Duration::from_secs(30),
    )
    .unwrap();
    vm.wait_until(
        "dmsetup status dmraid-v | grep -q ' idle 0 '",
        Instant::now() + Duration::from_secs(60),
    )
    .unwrap();
    vm.wait_until(
        "dmraid-csi volumes --endpoint /run/csi.sock | grep -q 'healthy, all legs in sync'",
        Instant::now() + Duration::from_secs(10),
    )
    .unwrap();
}

#[test]
fn a_slow_leg_that_the_kernel_keeps_is_reported_as_a_warning() {
    let mut vm = Vm::builder()
        .disks(&[64 * MIB; 2])
        .with_driver()
        .unwrap()
        .boot()
        .unwrap();
    start(&mut vm, "");
    vm.run_ok(&format!(
        "{CSI} create v --param raidType=raid1 --param legs=2 --param sync=nosync --size 16Mi"
    ))
    .unwrap();
    faults::make_slow(&mut vm, "dmraid-v+d1", 200).unwrap();
    vm.spawn("while :; do dd if=/dev/urandom of=/dev/mapper/dmraid-v bs=4k count=8 seek=$((RANDOM % 1000)) oflag=direct 2>/dev/null; done")
        .unwrap();
    vm.wait_until(
        "dmraid-csi volumes --endpoint /run/csi.sock | grep -q 'leg 1 (disk /dev/vd[a-z]) is slow'",
        Instant::now() + Duration::from_secs(60),
    )
    .unwrap();
    let out = vm.run_ok(&format!("dmraid-csi volumes {EP}")).unwrap();
    println!("{out}");
    assert!(
        out.contains(" ok "),
        "the kernel keeps the leg: a warning, not abnormal: {out}"
    );
    let st = vm.run_ok("dmsetup status dmraid-v").unwrap();
    assert!(st.contains(" AA "), "both legs still in the array: {st}");
    let log = vm.run_ok("cat /tmp/driver.log").unwrap();
    assert!(
        log.contains(dmraid_api::EventReason::SlowLeg.as_str()),
        "{log}"
    );
}

#[test]
fn with_auto_rebuild_off_the_operator_rebuilds_through_the_running_driver() {
    let mut vm = Vm::builder()
        .disks(&[64 * MIB; 3])
        .with_driver()
        .unwrap()
        .boot()
        .unwrap();
    start(&mut vm, "--auto-rebuild false");
    vm.run_ok(&format!(
        "{CSI} create v --param raidType=raid1 --param legs=2 --param sync=nosync --size 16Mi"
    ))
    .unwrap();
    let e = refused(&mut vm, "dmraid-csi rebuild v --leg 0");
    println!("healthy leg: {e}");
    assert!(e.contains("volume v"), "{e}");
    let e = refused(&mut vm, "dmraid-csi rebuild nosuch");
    assert!(e.contains("nosuch"), "{e}");
    faults::make_failing(&mut vm, "dmraid-v+d1").unwrap();
    vm.run_ok(
        "dd if=/dev/urandom of=/dev/mapper/dmraid-v bs=4k count=1 oflag=direct 2>/dev/null; true",
    )
    .unwrap();
    vm.wait_until(
        "dmraid-csi volumes --endpoint /run/csi.sock | grep -q 'leg 1 .*failed'",
        Instant::now() + Duration::from_secs(20),
    )
    .unwrap();
    // Nothing happens by itself.
    std::thread::sleep(Duration::from_secs(3));
    let st = vm.run_ok("dmsetup status dmraid-v").unwrap();
    assert!(st.contains(" AD "), "no rebuild without the operator: {st}");
    let out = vm.run_ok("dmraid-csi rebuild v").unwrap();
    println!("{out}");
    assert!(out.contains("rebuilding raid1 leg 1 onto /dev/vd"), "{out}");
    vm.wait_until(
        "dmsetup status dmraid-v | grep -q ' AA .* idle'",
        Instant::now() + Duration::from_secs(120),
    )
    .unwrap();
}
