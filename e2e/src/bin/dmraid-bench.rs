//! `dmraid-bench`: performance figures, each measured beside its reference
//! in the same VM on the same virtual disks, printed as a Markdown table and
//! written as JSON to `$DMRAID_CACHE/bench/latest.json`. Benchmarks print;
//! they assert nothing (the tests do that).
//!
//!   cargo build --release --workspace --bins && cargo run --release -p e2e --bin dmraid-bench
//!
//! Times inside the VM come from /proc/uptime (10 ms resolution), so the
//! agent's round trips are not counted.

use e2e::apiserver::ApiServer;
use e2e::driver::CSI;
use e2e::vm::release_binary;
use e2e::{Vm, MIB};
use std::time::{Duration, Instant};

const GIB: u64 = 1024 * MIB;

/// A benchmark: adds its rows.
type Bench = fn(&mut Vec<Row>) -> Result<(), String>;

/// One line of the table.
#[derive(Debug, Clone, serde::Serialize)]
struct Row {
    what: String,
    value: f64,
    reference: Option<f64>,
    unit: String,
    ratio: Option<f64>,
    target: String,
    note: String,
}

fn row(
    what: &str,
    value: f64,
    reference: Option<f64>,
    unit: &str,
    target: &str,
    note: &str,
) -> Row {
    Row {
        what: what.into(),
        value,
        reference,
        unit: unit.into(),
        ratio: reference.map(|r| value / r),
        target: target.into(),
        note: note.into(),
    }
}

/// Seconds since boot, in the guest.
fn uptime(vm: &mut Vm) -> Result<f64, String> {
    let t = vm.run_ok("cut -d' ' -f1 /proc/uptime")?;
    t.trim().parse().map_err(|e| format!("uptime {t:?}: {e}"))
}

/// Run `cmd` in the guest and return how long it took there, in seconds.
fn timed(vm: &mut Vm, cmd: &str) -> Result<f64, String> {
    let out = vm.run_ok(&format!(
        "t0=$(cut -d' ' -f1 /proc/uptime); {{ {cmd} ; }} >/dev/null 2>&1 || exit 1; t1=$(cut -d' ' -f1 /proc/uptime); echo \"$t0 $t1\""
    ))?;
    let v: Vec<f64> = out
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    match v.as_slice() {
        [a, b] => Ok(b - a),
        _ => Err(format!("timing {cmd}: {out:?}")),
    }
}

/// Guest seconds until `cond` (a shell test) holds, polling every 50 ms.
fn until(vm: &mut Vm, cond: &str, limit_s: u32) -> Result<f64, String> {
    let out = vm.run_ok(&format!(
        "t0=$(cut -d' ' -f1 /proc/uptime); n=0; until {cond}; do sleep 0.05; n=$((n+1)); [ $n -gt {} ] && exit 1; done; t1=$(cut -d' ' -f1 /proc/uptime); echo \"$t0 $t1\"",
        limit_s * 20
    ))?;
    let v: Vec<f64> = out
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    match v.as_slice() {
        [a, b] => Ok(b - a),
        _ => Err(format!("waiting for {cond}: {out:?}")),
    }
}

/// Guest seconds until `cond` holds, polling every `every_ms`: for waits
/// whose end is timed from the kernel log, so polling steals little of the
/// one vCPU from the work being measured.
fn wait_every(vm: &mut Vm, cond: &str, limit_s: u32, every_ms: u32) -> Result<(), String> {
    let sleep = f64::from(every_ms) / 1000.0;
    let rounds = limit_s * 1000 / every_ms.max(1);
    vm.run_ok(&format!(
        "n=0; until {cond}; do sleep {sleep}; n=$((n+1)); [ $n -gt {rounds} ] && exit 1; done; true"
    ))
    .map(|_| ())
    .map_err(|e| format!("waiting for {cond}: {e}"))
}

/// Put `text` into the kernel log, so the bench's own moments and md's
/// messages are read off one clock (printk's).
fn mark(vm: &mut Vm, text: &str) -> Result<(), String> {
    vm.run_ok(&format!("echo 'dmraid-bench: {text}' > /dev/kmsg"))
        .map(|_| ())
}

/// Empty the kernel log.
fn clear_log(vm: &mut Vm) -> Result<(), String> {
    vm.run_ok("dmesg -c >/dev/null").map(|_| ())
}

/// The kernel log as (printk seconds, text) lines.
fn kernel_log(vm: &mut Vm) -> Result<Vec<(f64, String)>, String> {
    Ok(parse_log(&vm.run_ok("dmesg")?))
}

fn parse_log(text: &str) -> Vec<(f64, String)> {
    text.lines()
        .filter_map(|l| {
            let open = l.find('[')?;
            let close = open + l[open..].find(']')?;
            let t: f64 = l[open + 1..close].trim().parse().ok()?;
            Some((t, l[close + 1..].trim().to_string()))
        })
        .collect()
}

/// Seconds from the first log line containing `from` to the last one
/// containing `to` (after it).
fn span(log: &[(f64, String)], from: &str, to: &str) -> Result<f64, String> {
    let start = log
        .iter()
        .find(|(_, l)| l.contains(from))
        .map(|(t, _)| *t)
        .ok_or_else(|| format!("no {from:?} in the kernel log"))?;
    let end = log
        .iter()
        .rev()
        .find(|(t, l)| l.contains(to) && *t >= start)
        .map(|(t, _)| *t)
        .ok_or_else(|| format!("no {to:?} after {from:?} in the kernel log"))?;
    Ok(end - start)
}

fn start_driver(vm: &mut Vm, extra: &str) -> Result<u32, String> {
    e2e::driver::start(vm, "", extra)
}

fn stop_driver(vm: &mut Vm, pid: u32) -> Result<(), String> {
    e2e::driver::stop(vm, pid)
}

fn in_sync(name: &str) -> String {
    format!("dmsetup status {name} | grep -q idle && ! dmsetup status {name} | awk '{{print $6}}' | grep -q '[^A]'")
}

/// Create `vol` with `params` on a running driver, wait for the initial
/// resync and return md's span of it (from the kernel log).
fn create_and_resync(vm: &mut Vm, vol: &str, params: &str) -> Result<f64, String> {
    clear_log(vm)?;
    vm.run_ok(&format!("{CSI} create {vol} {params} --size 1Gi"))?;
    wait_every(vm, &in_sync(&format!("dmraid-{vol}")), 900, 1000)?;
    span(&kernel_log(vm)?, "resync of RAID array", "resync done")
}

/// A raid1 of two legs, leg 1 made failing, in sync again: for the
/// rebuild benches. Returns the kernel's recovery span and the span from
/// the fault (marked in the log) to the end of the recovery.
fn fail_leg_and_wait_rebuilt(
    vm: &mut Vm,
    vol: &str,
    fault: &str,
) -> Result<(f64, f64, f64), String> {
    let dev = format!("dmraid-{vol}");
    clear_log(vm)?;
    mark(vm, "leg fault")?;
    match fault {
        "pull" => {
            let legs = e2e::raid::leg_disks(vm, vol)?;
            vm.hot_remove_disk(legs[1])?;
        }
        _ => e2e::vm::faults::make_failing(vm, &format!("{dev}+d1"))?,
    }
    vm.run_ok(&format!(
        "dd if=/dev/urandom of=/dev/mapper/{dev} bs=4k count=1 oflag=direct 2>/dev/null; true"
    ))?;
    until(vm, &format!("dmsetup status {dev} | grep -q recover"), 60)?;
    let before = cpu_ticks(vm)?;
    wait_every(vm, &in_sync(&dev), 900, 1000)?;
    let busy = busy_since(vm, before)?;
    let log = kernel_log(vm)?;
    let recovery = span(&log, "recovery of RAID array", "recovery done")?;
    let whole = span(&log, "dmraid-bench: leg fault", "recovery done")?;
    Ok((recovery, whole, busy))
}

/// The guest's CPU time so far, in ticks: (busy, all). Busy is all but
/// idle and iowait (the VM has one vCPU).
fn cpu_ticks(vm: &mut Vm) -> Result<(u64, u64), String> {
    let line = vm.run_ok("head -1 /proc/stat")?;
    let t: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    if t.len() < 5 {
        return Err(format!("/proc/stat: {line:?}"));
    }
    let all: u64 = t.iter().sum();
    Ok((all - t[3] - t[4], all))
}

/// The share of the guest's CPU that was busy since `before`.
fn busy_since(vm: &mut Vm, before: (u64, u64)) -> Result<f64, String> {
    let now = cpu_ticks(vm)?;
    Ok((now.0 - before.0) as f64 / (now.1 - before.1).max(1) as f64)
}

/// `cmd` timed in the guest, with the share of the CPU busy meanwhile.
fn timed_busy(vm: &mut Vm, cmd: &str) -> Result<(f64, f64), String> {
    let before = cpu_ticks(vm)?;
    let t = timed(vm, cmd)?;
    Ok((t, busy_since(vm, before)?))
}

/// LVM's rebuild of a leg of the same shape on the same disks, for the
/// rebuild bench's references: `lvcreate {lv}` of `size_mib` with LVM's
/// defaults, in sync, then `lvchange --rebuild` of its second image's PV
/// twice: at LVM's default rate (none set, so the kernel's 200 MB/s
/// ceiling) and with `--maxrecoveryrate 2g` (md unthrottled: the kernel's
/// best for this shape here). Returns ((seconds, busy) at the default,
/// (seconds, busy) unthrottled). Leaves the disks blank.
type Timed = (f64, f64);
fn lvm_rebuild(
    vm: &mut Vm,
    disks: &[String],
    lv: &str,
    size_mib: u64,
) -> Result<(Timed, Timed), String> {
    let all = disks.join(" ");
    vm.run_ok(&format!(
        "pvcreate -ff -y {all} >/dev/null && vgcreate rb {all} >/dev/null && \
         lvcreate {lv} -L {size_mib}M -n lv -y rb >/dev/null"
    ))?;
    wait_every(vm, &in_sync("rb-lv"), 600, 1000)?;
    // Hidden LVs are listed as "[lv_rimage_1]".
    let pv = vm.run_ok(
        "lvs -a --noheadings -o lv_name,devices rb | awk '$1 == \"[lv_rimage_1]\" {print $2}'",
    )?;
    let pv = pv.trim().split('(').next().unwrap_or("").to_string();
    if !pv.starts_with("/dev/") {
        return Err(format!("LVM's second image: no PV in {pv:?}"));
    }
    let once = |vm: &mut Vm| -> Result<Timed, String> {
        clear_log(vm)?;
        vm.run_ok(&format!("lvm lvchange -y --rebuild {pv} rb/lv >/dev/null"))?;
        until(vm, "dmsetup status rb-lv | grep -q recover", 60)?;
        let before = cpu_ticks(vm)?;
        wait_every(vm, &in_sync("rb-lv"), 900, 1000)?;
        let busy = busy_since(vm, before)?;
        let t = span(&kernel_log(vm)?, "recovery of RAID array", "recovery done")?;
        Ok((t, busy))
    };
    let default = once(vm)?;
    vm.run_ok("lvm lvchange -y --maxrecoveryrate 2g rb/lv >/dev/null")?;
    let unthrottled = once(vm)?;
    vm.run_ok(&format!(
        "vgremove -f rb >/dev/null && pvremove -ff -y {all} >/dev/null && \
         for d in {all}; do dd if=/dev/zero of=$d bs=1M count=1 oflag=direct 2>/dev/null || exit 1; done"
    ))?;
    Ok((default, unthrottled))
}

/// Rebuild of a 1 GiB raid1 and a raid5 leg onto a spare vs dd of the same
/// bytes, with the default rate policy (a two-leg raid1 or a raid5 that
/// lost a leg has no redundancy left: the rebuild runs unhindered). Beside
/// it, on the same disks first: LVM's rebuild of the same shapes, at its
/// default rate and unthrottled (the kernel's best here), and the share of
/// the guest's one vCPU each run kept busy.
fn rebuild(rows: &mut Vec<Row>) -> Result<(), String> {
    let mut vm = Vm::builder()
        .disks(&[GIB + 64 * MIB; 4])
        .preallocated()
        .memory_mb(768)
        .with_driver()?
        .boot()?;
    let disks = (0..4)
        .map(|i| vm.disk_dev(i))
        .collect::<Result<Vec<_>, _>>()?;
    let (lvm1, lvm1_max) = lvm_rebuild(&mut vm, &disks[..2], "--type raid1 -m 1", 1024)?;
    let (lvm5, lvm5_max) = lvm_rebuild(&mut vm, &disks[..3], "--type raid5 -i 2", 1024)?;
    start_driver(&mut vm, "")?;
    let full = create_and_resync(&mut vm, "r1", "--param raidType=raid1 --param legs=2")?;
    let legs = e2e::raid::leg_disks(&mut vm, "r1")?;
    let spare = (0..4).find(|i| !legs.contains(i)).ok_or("no spare")?;
    let (src, dst) = (vm.disk_dev(legs[0])?, vm.disk_dev(spare)?);
    // Past the label area, on the spare's free space. The reference is the
    // disks' limit: the faster of two runs (the host's caching varies).
    let copy =
        format!("dd if={src} of={dst} bs=1M skip=16 seek=16 count=1024 iflag=direct oflag=direct");
    let (d1, b1) = timed_busy(&mut vm, &copy)?;
    let (d2, b2) = timed_busy(&mut vm, &copy)?;
    let (dd, dd_busy) = if d1 <= d2 { (d1, b1) } else { (d2, b2) };
    let (recovery, whole, busy) = fail_leg_and_wait_rebuilt(&mut vm, "r1", "pull")?;
    let policy = ceilings(&mut vm, "r1");
    let pct = |b: f64| format!("{:.0} %", b * 100.0);
    rows.push(row(
        "rebuild 1 GiB raid1 leg onto a spare, default policy",
        recovery,
        Some(dd),
        "s",
        "≤ 1.053 (throughput ≥ 0.95 of dd)",
        &format!(
            "md's recovery start → done (kernel log); reference: dd 1 GiB disk→disk, O_DIRECT, 1 MiB blocks, best of 2; preallocated images; the policy's ceilings: {policy}; the guest's vCPU busy {} (dd: {})",
            pct(busy),
            pct(dd_busy)
        ),
    ));
    rows.push(row(
        "rebuild 1 GiB raid1 leg: driver vs LVM unthrottled (the kernel's best)",
        recovery,
        Some(lvm1_max.0),
        "s",
        "≈ 1 (the driver adds nothing)",
        &format!(
            "LVM: `lvcreate --type raid1 -m 1`, `lvchange --rebuild` of its second PV after `--maxrecoveryrate 2g`, vCPU busy {}; at LVM's default rate (no ceiling set: the kernel's 200 MB/s): {:.2} s, {:.2} of dd, vCPU busy {}",
            pct(lvm1_max.1),
            lvm1.0,
            lvm1.0 / dd,
            pct(lvm1.1)
        ),
    ));
    rows.push(row(
        "disk pulled → leg rebuilt onto the spare, 1 GiB raid1",
        whole,
        Some(dd),
        "s",
        "(context)",
        "the fault → detection, new leg, recovery done (kernel log)",
    ));
    rows.push(row(
        "initial full resync, 1 GiB raid1",
        full,
        Some(dd),
        "s",
        "(context)",
        "md's resync start → done, vs the same dd",
    ));
    // The pulled disk back (its stale copy is freed): a spare for raid5.
    let pulled = (0..4)
        .find(|i| {
            !e2e::raid::leg_disks(&mut vm, "r1")
                .unwrap_or_default()
                .contains(i)
                && *i != spare
        })
        .unwrap_or(legs[1]);
    let _ = vm.replug_disk(pulled);
    vm.run_ok(&format!("{CSI} delete r1"))?;
    std::thread::sleep(Duration::from_secs(3));
    vm.run_ok(&format!(
        "{CSI} create r5 --param raidType=raid5_ls --param legs=3 --param sync=nosync --size 1Gi"
    ))?;
    let (recovery5, _, busy5) = fail_leg_and_wait_rebuilt(&mut vm, "r5", "pull")?;
    let leg_gib = vm
        .run_ok("dmsetup table dmraid-r5+d0 | awk '{print $2}'")?
        .trim()
        .parse::<f64>()
        .map(|s| s * 512.0 / GIB as f64)
        .unwrap_or(0.5);
    rows.push(row(
        "rebuild raid5_ls × 3 leg onto a spare, default policy",
        recovery5,
        Some(dd * leg_gib),
        "s",
        "≤ 1.053 (throughput ≥ 0.95 of dd)",
        &format!(
            "a {leg_gib:.2} GiB leg (reads two legs, writes one); reference: the same dd scaled to the leg; the policy's ceilings: {}; the guest's vCPU busy {}",
            ceilings(&mut vm, "r5"),
            pct(busy5)
        ),
    ));
    rows.push(row(
        "rebuild raid5_ls × 3 leg: driver vs LVM unthrottled (the kernel's best)",
        recovery5,
        Some(lvm5_max.0),
        "s",
        "≈ 1 (the driver adds nothing)",
        &format!(
            "LVM: `lvcreate --type raid5 -i 2` (raid5_ls, 3 devices, 1 GiB), `lvchange --rebuild` of its second PV after `--maxrecoveryrate 2g`, vCPU busy {}; at LVM's default rate: {:.2} s, vCPU busy {}",
            pct(lvm5_max.1),
            lvm5.0,
            pct(lvm5.1)
        ),
    ));
    vm.shutdown()
}

/// A guest shell pipeline printing the driver's log lines about `vol`
/// that contain `what`, colours stripped.
fn driver_log(vol: &str, what: &str) -> String {
    format!(
        "tr -d '\\033' < /tmp/driver.log | sed 's/\\[[0-9;]*m//g' | grep '{what}' | grep 'volume=\"\\?{vol}\"\\? '"
    )
}

/// The recovery ceilings (KiB/s) the rate policy gave `vol`, in order, from
/// the driver's log.
fn ceilings(vm: &mut Vm, vol: &str) -> String {
    let out = vm
        .run_ok(&format!(
            "{} | grep -o 'max_recovery_rate_kib=[^ ]*' | cut -d= -f2 | tr -d '\"' | tr '\\n' ' '; true",
            driver_log(vol, "ceiling retuned")
        ))
        .unwrap_or_default();
    if out.trim().is_empty() {
        "none".into()
    } else {
        out.trim().replace(' ', " → ")
    }
}

/// 1c. A disk pulled and pushed back within --rebuild-delay: its leg
/// catches up from the write-intent bitmap, vs a full rebuild of the same
/// leg in the same VM.
fn catch_up(rows: &mut Vec<Row>) -> Result<(), String> {
    let mut vm = Vm::builder()
        .disks(&[GIB + 64 * MIB; 4])
        .preallocated()
        .memory_mb(768)
        .with_driver()?
        .boot()?;
    start_driver(&mut vm, "--rebuild-delay 600s")?;
    vm.run_ok(&format!(
        "{CSI} create v --param raidType=raid1 --param legs=3 --param sync=nosync --size 1Gi"
    ))?;
    let region: u64 = vm
        .run_ok("dmsetup table dmraid-v")?
        .split_whitespace()
        .skip_while(|w| *w != "region_size")
        .nth(1)
        .and_then(|w| w.parse().ok())
        .unwrap_or(0);
    // Bits of earlier writes cleared first (md clears a bit once its region
    // has been clean for a few daemon_sleep periods).
    std::thread::sleep(Duration::from_secs(20));
    let legs = e2e::raid::leg_disks(&mut vm, "v")?;
    vm.hot_remove_disk(legs[0])?;
    // 16 bursts of 1 MiB spread over the array while the disk is away.
    let bursts = 16u64;
    let mut cmd = String::new();
    for i in 0..bursts {
        cmd.push_str(&format!(
            "dd if=/dev/urandom of=/dev/mapper/dmraid-v bs=1M count=1 seek={} oflag=direct 2>/dev/null; ",
            i * 60 + 1
        ));
    }
    vm.run_ok(&cmd)?;
    let written = bursts * 2048u64.div_ceil(region.max(1));
    until(&mut vm, "grep -q RebuildDelayed /tmp/driver.log", 60)?;
    clear_log(&mut vm)?;
    mark(&mut vm, "replug")?;
    vm.replug_disk(legs[0])?;
    until(&mut vm, "grep -q LegReturned /tmp/driver.log", 120)?;
    wait_every(&mut vm, &in_sync("dmraid-v"), 600, 500)?;
    let log = kernel_log(&mut vm)?;
    let replug_to_sync = span(&log, "dmraid-bench: replug", "recovery done")?;
    let caught = span(&log, "recovery of RAID array", "recovery done")?;
    let line = vm
        .run_ok("grep -o 'catching up [0-9]* of [0-9]* regions' /tmp/driver.log | tail -1; true")?;
    let dirty: f64 = line
        .split_whitespace()
        .nth(2)
        .and_then(|w| w.parse().ok())
        .unwrap_or(f64::NAN);
    // The reference: the same leg rebuilt in full (failed, then an
    // operator's rebuild onto the spare, which waits for no delay).
    clear_log(&mut vm)?;
    e2e::vm::faults::make_failing(&mut vm, "dmraid-v+d0")?;
    vm.run_ok(
        "dd if=/dev/urandom of=/dev/mapper/dmraid-v bs=4k count=1 oflag=direct 2>/dev/null; true",
    )?;
    vm.run_ok("dmraid-csi rebuild v")?;
    until(&mut vm, "dmsetup status dmraid-v | grep -q recover", 120)?;
    wait_every(&mut vm, &in_sync("dmraid-v"), 900, 1000)?;
    let full = span(
        &kernel_log(&mut vm)?,
        "recovery of RAID array",
        "recovery done",
    )?;
    rows.push(row(
        "a pulled disk pushed back within --rebuild-delay: replug → in sync, 1 GiB raid1 × 3",
        replug_to_sync,
        Some(full),
        "s",
        "(seconds, not a rebuild)",
        &format!("md's catch-up alone {caught:.2} s; reference: md's full recovery of the same leg onto the spare"),
    ));
    rows.push(row(
        "regions caught up vs regions written while the disk was away",
        dirty,
        Some(written as f64),
        "regions",
        "≤ 2",
        &format!("{} (region_size {region} sectors)", line.trim()),
    ));
    vm.shutdown()
}

/// 1b. The same rebuild capped by the StorageClass's maxRecoveryRate, and
/// held up by minRecoveryRate against a competing writer.
fn rebuild_rates(rows: &mut Vec<Row>) -> Result<(), String> {
    let mut vm = Vm::builder()
        .disks(&[320 * MIB; 4])
        .memory_mb(768)
        .with_driver()?
        .boot()?;
    // At once: a raid1 of three legs keeps redundancy and would wait.
    start_driver(&mut vm, "--rebuild-delay 0")?;
    // A busy array's rebuild may be throttled down to the floor (md's
    // default: 1000 KiB/s): 128 MiB under the writer bounds that run.
    let cases: [(&str, &str, u64, bool, u32); 6] = [
        (
            "maxRecoveryRate=8Mi",
            "--param maxRecoveryRate=8Mi",
            256,
            false,
            2,
        ),
        (
            "maxRecoveryRate=32Mi",
            "--param maxRecoveryRate=32Mi",
            256,
            false,
            2,
        ),
        (
            "competing writer, default minRecoveryRate",
            "",
            128,
            true,
            2,
        ),
        (
            "competing writer, minRecoveryRate=32Mi",
            "--param minRecoveryRate=32Mi",
            128,
            true,
            2,
        ),
        (
            "raid1 × 3 (keeps redundancy), competing writer, default policy",
            "",
            128,
            true,
            3,
        ),
        (
            "raid1 × 3, competing writer, maxRecoveryRate=32Mi",
            "--param maxRecoveryRate=32Mi",
            128,
            true,
            3,
        ),
    ];
    for (i, (what, param, size_mib, writer, legs_n)) in cases.into_iter().enumerate() {
        let v = format!("c{i}");
        vm.run_ok(&format!(
            "{CSI} create {v} --param raidType=raid1 --param legs={legs_n} --param sync=nosync {param} --size {size_mib}Mi"
        ))?;
        let legs = e2e::raid::leg_disks(&mut vm, &v)?;
        // 1 MiB per round, hopping over the array, one line per round
        // written in /tmp/w-{v}, emptied as the fault is injected.
        let pid = if writer {
            let pid = vm.spawn(&format!(
                "exec sh -c 'i=0; while :; do dd if=/dev/zero of=/dev/mapper/dmraid-{v} bs=64k count=16 seek=$(( i * 37 % {} * 16 )) oflag=direct 2>/dev/null && echo >> /tmp/w-{v}; i=$((i+1)); done'",
                size_mib - 1
            ))?;
            vm.run_ok(&format!("sleep 1; : > /tmp/w-{v}"))?;
            Some(pid)
        } else {
            None
        };
        let (recovery, _, _) = fail_leg_and_wait_rebuilt(&mut vm, &v, "error")?;
        let rate = size_mib as f64 / recovery;
        let mut note = format!("{recovery:.1} s; legs on disks {legs:?}");
        if let Some(pid) = pid {
            // The writer's rounds since the fault, over the fault → done span.
            let rounds: f64 = vm
                .run_ok(&format!("kill {pid}; wc -l < /tmp/w-{v}"))?
                .trim()
                .parse()
                .unwrap_or(0.0);
            let whole = span(
                &kernel_log(&mut vm)?,
                "dmraid-bench: leg fault",
                "recovery done",
            )?;
            note.push_str(&format!(
                "; the writer (1 MiB O_DIRECT rounds): {rounds:.0} MiB, ~{:.1} MiB/s meanwhile; the policy's ceilings: {}",
                rounds / whole.max(0.01),
                ceilings(&mut vm, &v)
            ));
        }
        let (reference, target) = match param.split('=').nth(1) {
            Some(cap) if param.contains("max") => (
                cap.trim_end_matches("Mi").parse().ok(),
                "≈ 1 (the cap holds)",
            ),
            Some(floor) => (
                floor.trim_end_matches("Mi").parse().ok(),
                "≥ 1 (the floor holds)",
            ),
            None => (None, "(context: md's default floor is 1000 KiB/s)"),
        };
        rows.push(row(
            &format!("rebuild {size_mib} MiB raid1 leg, {what}"),
            rate,
            reference,
            "MiB/s",
            target,
            &note,
        ));
        vm.run_ok(&format!("{CSI} delete {v}"))?;
    }
    vm.shutdown()
}

/// 2. Resync after a power cut (bitmap + crash fix) vs a full resync.
fn bitmap_resync(rows: &mut Vec<Row>) -> Result<(), String> {
    let mut vm = Vm::builder()
        .disks(&[600 * MIB; 3])
        .memory_mb(768)
        .with_driver()?
        .boot()?;
    start_driver(&mut vm, "")?;
    let full = create_and_resync(&mut vm, "r5", "--param raidType=raid5_ls --param legs=3")?;
    let table = vm.run_ok("dmsetup table dmraid-r5")?;
    let region: u64 = table
        .split_whitespace()
        .skip_while(|w| *w != "region_size")
        .nth(1)
        .and_then(|w| w.parse().ok())
        .unwrap_or(0);
    let sectors: u64 = vm
        .run_ok("blockdev --getsz /dev/mapper/dmraid-r5")?
        .trim()
        .parse()
        .map_err(|e| format!("{e}"))?;
    // Steady state first: md clears a bitmap bit only after the region has
    // been clean for a few daemon_sleep periods (5 s by default), so bits
    // left by the initial resync would otherwise count as dirty.
    std::thread::sleep(Duration::from_secs(20));
    // 1 % of the array, written in 10 bursts spread over it; the power is cut right after.
    let bursts = 10u64;
    let burst_mib = (sectors / 2048 / 100 / bursts).max(1);
    let stride_mib = sectors / 2048 / bursts;
    let mut cmd = String::new();
    for i in 0..bursts {
        cmd.push_str(&format!(
            "dd if=/dev/urandom of=/dev/mapper/dmraid-r5 bs=1M count={burst_mib} seek={} oflag=direct 2>/dev/null; ",
            i * stride_mib
        ));
    }
    vm.run_ok(&cmd)?;
    let written_regions = if region > 0 {
        // Each burst covers ceil(burst / region) regions of the array (+1 for a straddle).
        bursts * (burst_mib * 2048).div_ceil(region * 2)
    } else {
        0
    };
    vm.power_cut();
    vm.boot_again()?;
    mark(&mut vm, "driver start")?;
    start_driver(&mut vm, "")?;
    wait_every(&mut vm, &in_sync("dmraid-r5"), 600, 250)?;
    let klog = kernel_log(&mut vm)?;
    let resync = span(&klog, "resync of RAID array", "resync done")?;
    let with_start = span(&klog, "dmraid-bench: driver start", "resync done")?;
    let log =
        vm.run_ok("grep -o 'resyncing [0-9]* of [0-9]* regions' /tmp/driver.log | tail -1; true")?;
    let resynced: u64 = log
        .split_whitespace()
        .nth(1)
        .and_then(|w| w.parse().ok())
        .unwrap_or(0);
    rows.push(row(
        "resync after a power cut, 1 % of 1 GiB raid5 dirty",
        resync,
        Some(full),
        "s",
        "≤ 0.1",
        &format!(
            "md's resync start → done (kernel log), both; reference: the full initial resync; {}",
            log.trim()
        ),
    ));
    rows.push(row(
        "driver start → resynced after that power cut",
        with_start,
        Some(full),
        "s",
        "(context)",
        "driver start, labels read, crash fix, array loaded, resync done (kernel log)",
    ));
    rows.push(row(
        "regions resynced vs regions written",
        resynced as f64,
        Some(written_regions.max(1) as f64),
        "regions",
        "≤ 2",
        &format!("region_size {region} sectors (the driver's; ×2 for the stripe geometry)"),
    ));
    vm.shutdown()
}

/// 3. CreateVolume → device ready, vs the bare dmsetup sequence of the same devices.
///
/// The driver claims the first four disks; the bare and floor runs make
/// the same tables on four twins of them (same size, same offsets), so
/// the driver keeps running between samples, as on a node, and the two
/// sides take turns.
fn provisioning(rows: &mut Vec<Row>) -> Result<(), String> {
    let floor_tool = release_binary("dmraid-dm-floor")
        .ok_or("dmraid-dm-floor is not built: cargo build --release --workspace --bins")?;
    let mut vm = Vm::builder()
        .disks(&[GIB + 64 * MIB; 8])
        .memory_mb(768)
        .file(floor_tool, "/usr/bin/dmraid-dm-floor")
        .with_driver()?
        .boot()?;
    let mut driver_disks = Vec::new();
    // `sed` words turning a driver disk's `major:minor` into its twin's.
    let mut twin = String::new();
    for i in 0..4 {
        let (own, other) = (vm.disk_dev(i)?, vm.disk_dev(i + 4)?);
        let devno = |vm: &mut Vm, d: &str| -> Result<String, String> {
            Ok(vm
                .run_ok(&format!("cat /sys/class/block/$(basename {d})/dev"))?
                .trim()
                .to_string())
        };
        let (a, b) = (devno(&mut vm, &own)?, devno(&mut vm, &other)?);
        twin.push_str(&format!(" -e 's# {a} # {b} #g'"));
        driver_disks.push(own);
    }
    let pid = e2e::driver::start_on(
        &mut vm,
        &driver_disks.join(" --disks "),
        "",
        PROVISIONING_DRIVER,
    )?;
    let kinds = [
        ("raid1", 2, "nosync", "--type raid1 -m 1 --nosync"),
        ("raid5_ls", 3, "nosync", "--type raid5 -i 2 --nosync"),
        ("raid6_zr", 4, "default", "--type raid6 -i 2"),
    ];
    let mut drivers = Vec::new();
    // One create before the clock: the first after boot pays for the
    // kernel's cold paths (module code, slab caches), which the floor,
    // run later, would not.
    vm.run_ok(&format!("{CSI} create p-warm --param raidType=raid1 --param legs=2 --param sync=nosync --size 8Mi && {CSI} delete p-warm"))?;
    // Several creates a side, the driver's and the floor's in turn, so a
    // change in the host's speed (a noisy neighbour) falls on both: one
    // sample a side varied 2–5× between runs under emulation.
    let samples: usize = std::env::var("DMRAID_BENCH_CREATES")
        .ok()
        .and_then(|n| n.parse().ok())
        .filter(|n| *n > 0)
        .unwrap_or(7);
    for (t, legs, sync, _) in kinds {
        let v = format!("p-{}", t.replace('_', ""));
        let (mut clis, mut bares, mut insides, mut floors) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut phases = Vec::new();
        for _ in 0..samples {
            let s = create_against_floor(&mut vm, &twin, &v, t, legs, sync)?;
            clis.push(s.cli);
            bares.push(s.bare);
            insides.push(s.inside_ms);
            floors.push(s.floor_ms);
            phases.push((s.inside_ms, s.phases));
        }
        phases.sort_by(|a, b| a.0.total_cmp(&b.0));
        let (inside_ms, inside_all) = median(insides);
        let (floor_ms, floor_all) = median(floors);
        let (driver, cli_all) = median(clis);
        let (bare, bare_all) = median(bares);
        rows.push(row(
            &format!("CreateVolume {t} × {legs} inside the driver vs the same devices by ioctl from one process"),
            inside_ms,
            Some(floor_ms),
            "ms",
            "≤ 1.5",
            &format!(
                "medians of {samples}, the two sides in turn, the driver running throughout; driver (its log) {inside_all} ms, the median's phases: {}; floor (dmraid-dm-floor: create + load + resume of the same tables on twin disks, blanked metadata: a new array as the driver made) {floor_all} ms",
                phases[phases.len() / 2].1
            ),
        ));
        rows.push(row(
            &format!("CreateVolume {t} × {legs}, 1 GiB, sync={sync}"),
            driver,
            Some(bare),
            "s",
            "≤ 1.2",
            &format!("medians of {samples}; driver: CLI → gRPC → labels, devices, raid {cli_all} s; bare: dmsetup create of the same tables on twin disks {bare_all} s"),
        ));
        drivers.push(driver);
    }
    // LVM on the same disks: one volume group over all four, made before
    // the clock starts (as the driver's disks are claimed before), then
    // `lvcreate` of the same RAID type and size until its device exists.
    stop_driver(&mut vm, pid)?;
    let disks = (0..4)
        .map(|i| vm.disk_dev(i))
        .collect::<Result<Vec<_>, _>>()?
        .join(" ");
    vm.run_ok(&format!(
        "pvcreate -ff -y {disks} >/dev/null && vgcreate bench {disks} >/dev/null"
    ))?;
    for ((t, legs, sync, lv), driver) in kinds.into_iter().zip(drivers) {
        let what = format!("CreateVolume {t} × {legs}, 1 GiB, sync={sync}, vs lvcreate");
        let cmd = format!("lvcreate {lv} -L 1G -n lv -y bench && test -b /dev/mapper/bench-lv");
        let Ok(lvm) = timed(&mut vm, &cmd) else {
            // LVM refuses some shapes the kernel takes (raid6 under 3
            // stripes): say what it said instead of a figure.
            let said = vm
                .run(&format!("lvcreate -v {lv} -L 1G -n lv -y bench 2>&1 | grep -i -e required -e error -e invalid -e fail"))
                .map(|o| o.text())
                .unwrap_or_default();
            let said = said.split_whitespace().collect::<Vec<_>>().join(" ");
            rows.push(row(
                &what,
                driver,
                None,
                "s",
                "≤ 0.33 (≥ 3× faster)",
                &format!("`lvcreate {lv} -L 1G` refused: {said}"),
            ));
            continue;
        };
        vm.run_ok("lvremove -f bench/lv >/dev/null")?;
        rows.push(row(
            &what,
            driver,
            Some(lvm),
            "s",
            "≤ 0.33 (≥ 3× faster)",
            &format!("LVM 2.03 in the same VM on the same disks: `lvcreate {lv} -L 1G`; its VG made beforehand; no udev, no daemons"),
        ));
    }
    vm.shutdown()
}

/// The driver's options in the CreateVolume bench: the chart's health
/// round (every 10 s; the tests' 1 s round would run through a create
/// now and then).
const PROVISIONING_DRIVER: &str = "--auto-rebuild false --monitor-interval 10";

/// One create of each side, for [`provisioning`].
struct CreateSample {
    /// The whole CLI call (s).
    cli: f64,
    /// The same tables by `dmsetup create` (s).
    bare: f64,
    /// The create inside the driver, from its log (ms), and its phases.
    inside_ms: f64,
    phases: String,
    /// The same devices by ioctl from one process (ms).
    floor_ms: f64,
}

/// Create `v` through the running driver, then the same devices on the
/// twin disks (`twin`: sed words from a driver disk's `major:minor` to
/// its twin's) by `dmsetup` and by ioctl from one process, each on
/// blanked metadata; `v` is deleted again.
fn create_against_floor(
    vm: &mut Vm,
    twin: &str,
    v: &str,
    t: &str,
    legs: u32,
    sync: &str,
) -> Result<CreateSample, String> {
    let cli = timed(
        vm,
        &format!("{CSI} create {v} --param raidType={t} --param legs={legs} --param sync={sync} --size 1Gi && test -b /dev/mapper/dmraid-{v}"),
    )?;
    let inside = vm
        .run_ok(&format!(
            "{} | tail -1; true",
            driver_log(v, "volume created")
        ))
        .unwrap_or_default();
    let field = |key: &str| {
        inside
            .split(&format!("{key}="))
            .nth(1)
            .map(|r| r.trim_start_matches('"'))
            .map(|r| r.split('"').next().unwrap_or("").trim().to_string())
            .unwrap_or_default()
    };
    let inside_ms: f64 = field("ms").parse().unwrap_or(f64::NAN);
    let phases = field("phases");
    // A linear's table with its disk swapped for the twin.
    let table = |d: &str| format!("$(dmsetup table {d} | sed{twin})");
    let legs_of = format!("$(dmsetup ls | awk '{{print $1}}' | grep '^dmraid-{v}+')");
    // The same devices by hand: linear meta/data pairs, the meta wiped as the driver does, then the raid table.
    let script = vm.run_ok(&format!(
        "for d in {legs_of}; do echo \"dmsetup create bare-${{d#dmraid-}} --table '{}'\"; done; \
         t=\"$(dmsetup table dmraid-{v}) \"; for d in {legs_of}; do mm=$(dmsetup info -c --noheadings -o major,minor $d | tr -d ' '); t=$(echo \"$t\" | sed \"s# $mm # /dev/mapper/bare-${{d#dmraid-}} #g\"); done; \
         echo 'dmsetup mknodes'; \
         for d in $(dmsetup ls | awk '{{print $1}}' | grep '^dmraid-{v}+m'); do echo \"dd if=/dev/zero of=/dev/mapper/bare-${{d#dmraid-}} bs=512k count=1 oflag=direct 2>/dev/null\"; done; \
         echo \"dmsetup create bare-{v} --table '${{t% }}'\"",
        table("$d")
    ))?;
    // The same devices for the floor tool: linears, then the array
    // naming them (`@name`: the device made on an earlier line).
    let floor_input = vm.run_ok(&format!(
        "for d in {legs_of}; do echo \"floor-${{d#dmraid-}} {}\"; done; \
         t=\"$(dmsetup table dmraid-{v}) \"; for d in {legs_of}; do mm=$(dmsetup info -c --noheadings -o major,minor $d | tr -d ' '); t=$(echo \"$t\" | sed \"s# $mm # @floor-${{d#dmraid-}} #g\"); done; \
         echo \"floor-{v} ${{t% }}\"",
        table("$d")
    ))?;
    // The metadata extents blanked on the twin disks, so each side makes
    // a new array as the driver did, not one assembled from the
    // superblocks the run before it left.
    let blank_meta = vm.run_ok(&format!(
        "for d in $(dmsetup ls | awk '{{print $1}}' | grep '^dmraid-{v}+m'); do set -- {}; \
         echo \"dd if=/dev/zero of=/dev/$(basename $(readlink /sys/dev/block/$4)) bs=512 seek=$5 count=1024 conv=notrunc oflag=direct 2>/dev/null\"; done",
        table("$d")
    ))?;
    vm.run_ok(&format!("{CSI} delete {v}"))?;
    vm.write_file("/tmp/bare.sh", script.as_bytes())?;
    vm.write_file("/tmp/blank-meta.sh", blank_meta.as_bytes())?;
    vm.write_file("/tmp/floor.txt", floor_input.as_bytes())?;
    vm.run_ok("sh -e /tmp/blank-meta.sh")?;
    let bare = match timed(vm, "sh -e /tmp/bare.sh && dmsetup mknodes >/dev/null") {
        Ok(t) => t,
        Err(_) => {
            let why = vm
                .run("dmsetup ls; ls -l /dev/mapper; dmesg | tail -5")
                .map(|o| o.text())
                .unwrap_or_default();
            return Err(format!(
                "the bare dmsetup sequence failed:\n{script}\n{why}"
            ));
        }
    };
    // The array first, then its legs (a leg in use cannot be removed).
    vm.run_ok(&format!("dmsetup remove bare-{v} && for d in $(dmsetup ls | awk '{{print $1}}' | grep '^bare-'); do dmsetup remove $d || exit 1; done"))?;
    // The floor: the same devices by ioctl from one process.
    vm.run_ok("sh -e /tmp/blank-meta.sh")?;
    let floor_ms: f64 = vm
        .run_ok("dmraid-dm-floor < /tmp/floor.txt")?
        .trim()
        .parse()
        .map_err(|e| format!("dmraid-dm-floor: {e}"))?;
    vm.run_ok("dmraid-dm-floor --remove < /tmp/floor.txt")?;
    Ok(CreateSample {
        cli,
        bare,
        inside_ms,
        phases,
        floor_ms,
    })
}

/// The median of `samples`, and all of them in order for the note.
fn median(mut samples: Vec<f64>) -> (f64, String) {
    samples.sort_by(|a, b| a.total_cmp(b));
    let all = format!("{samples:.2?}");
    (samples[samples.len() / 2], all)
}

/// 4. Leg fault → VolumeCondition abnormal.
///
/// With the chart's 10 s health round: what is seen sooner comes from
/// device-mapper events.
fn health_latency(rows: &mut Vec<Row>) -> Result<(), String> {
    let mut vm = Vm::builder().disks(&[256 * MIB; 2]).with_driver()?.boot()?;
    start_driver(&mut vm, "--auto-rebuild false --monitor-interval 10")?;
    let mut samples = Vec::new();
    for i in 0..5 {
        let v = format!("h{i}");
        vm.run_ok(&format!("{CSI} create {v} --param raidType=raid1 --param legs=2 --param sync=nosync --size 16Mi"))?;
        e2e::vm::faults::make_failing(&mut vm, &format!("dmraid-{v}+d1"))?;
        let t = until(
            &mut vm,
            &format!("{{ dd if=/dev/urandom of=/dev/mapper/dmraid-{v} bs=4k count=1 oflag=direct 2>/dev/null; dmraid-csi volumes --endpoint /run/csi.sock | grep '^{v} ' | grep -q failed; }}"),
            30,
        )?;
        samples.push(t);
    }
    // The condition is read live from the kernel on each query: most of the
    // figure is the CLI's own start and round trip, timed here alone.
    let query = timed(&mut vm, "dmraid-csi volumes --endpoint /run/csi.sock")?;
    let (m, all) = median(samples);
    rows.push(row(
        "leg fault → VolumeCondition abnormal (median of 5)",
        m,
        None,
        "s",
        "≤ 1 s",
        &format!(
            "error target under a raid1 leg, then write + `dmraid-csi volumes` until it says failed; one such query alone: {query:.2} s; health round 10 s; in order: {all}"
        ),
    ));
    vm.shutdown()
}

/// 4b. Leg fault → Warning Event on a real API server: the node plugin in
/// the VM (chart's 10 s health round), the controller on the host.
fn event_latency(rows: &mut Vec<Row>) -> Result<(), String> {
    use dmraid_api::crd::RaidVolume;
    use dmraid_proto::csi::controller_client::ControllerClient;
    use e2e::controller::{create_request, events_of, Controller};
    use kube::Api;

    let server = ApiServer::start()?;
    let rt = tokio::runtime::Runtime::new().map_err(|e| e.to_string())?;
    let c = rt.block_on(async {
        let c = e2e::kube_util::client(&server.kubeconfig_path()).await?;
        e2e::kube_util::apply_crds(&c).await?;
        Ok::<_, String>(c)
    })?;
    let mut vm = Vm::builder()
        .disks(&[256 * MIB; 2])
        .network()
        .with_driver()?
        .file(server.guest_kubeconfig_path(), "/etc/kubeconfig")
        .boot()?;
    vm.spawn("exec dmraid-csi node --endpoint /run/csi.sock --node-id vm1 --disks '/dev/vd*' --kubeconfig /etc/kubeconfig --monitor-interval 10 --auto-rebuild false 2>/tmp/node.log")?;
    vm.wait_until(
        "dmraid-csi identity --endpoint /run/csi.sock | grep -q 'ready: *true'",
        Instant::now() + Duration::from_secs(120),
    )?;
    let ctl = Controller::start(&server.kubeconfig_path())?;
    let mut csi = rt.block_on(async {
        dmraid_proto::socket::connect(&ctl.socket.display().to_string())
            .await
            .map(ControllerClient::new)
            .map_err(|e| e.to_string())
    })?;
    let volumes: Api<RaidVolume> = Api::all(c.clone());
    let poll = |what: &str, within: Duration, f: &mut dyn FnMut() -> bool| {
        let deadline = Instant::now() + within;
        while !f() {
            if Instant::now() > deadline {
                return Err(format!("{what}: not within {within:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    };
    let mut samples = Vec::new();
    for i in 0..5 {
        let name = format!("pvc-bench-{i}");
        let params = [("raidType", "raid1"), ("legs", "2"), ("sync", "nosync")];
        rt.block_on(csi.create_volume(create_request(&name, &params, "vm1", 16 << 20)))
            .map_err(|e| format!("CreateVolume {name}: {e}\n{}", ctl.log_tail(10)))?;
        poll("the volume healthy", Duration::from_secs(60), &mut || {
            rt.block_on(volumes.get_opt(&name))
                .ok()
                .flatten()
                .and_then(|v| v.status)
                .is_some_and(|s| s.health == "healthy")
        })?;
        e2e::vm::faults::make_failing(&mut vm, &format!("dmraid-{name}+d1"))?;
        let fault = Instant::now();
        vm.run_ok(&format!(
            "dd if=/dev/urandom of=/dev/mapper/dmraid-{name} bs=4k count=1 oflag=direct 2>/dev/null; true"
        ))?;
        poll("a LegFailed event", Duration::from_secs(30), &mut || {
            rt.block_on(events_of(&c, &name))
                .iter()
                .any(|e| e.reason.as_deref() == Some(dmraid_api::EventReason::LegFailed.as_str()))
        })?;
        samples.push(fault.elapsed().as_secs_f64());
    }
    let (m, all) = median(samples);
    rows.push(row(
        "leg fault → Warning LegFailed Event on the API server (median of 5)",
        m,
        None,
        "s",
        "≤ 1 s",
        &format!(
            "error target under a raid1 leg, one write; host clock from the write to the Event listed, polled every 20 ms; health round 10 s; all: {all}"
        ),
    ));
    drop(ctl);
    vm.shutdown()
}

fn rss_kib(vm: &mut Vm, pid: u32) -> Result<f64, String> {
    let s = vm.run_ok(&format!("awk '/VmRSS/ {{print $2}}' /proc/{pid}/status"))?;
    s.trim().parse().map_err(|e| format!("VmRSS {s:?}: {e}"))
}

/// 5 + 6. Node plugin memory with 0/10/50 volumes and activation time of N arrays.
fn memory_and_scaling(rows: &mut Vec<Row>) -> Result<(), String> {
    let mut vm = Vm::builder()
        .disks(&[GIB; 2])
        .memory_mb(1024)
        .with_driver()?
        .boot()?;
    let mut pid = start_driver(&mut vm, "")?;
    let mut made = 0;
    let mut slopes = Vec::new();
    for n in [0usize, 1, 10, 50] {
        while made < n {
            vm.run_ok(&format!("{CSI} create s{made} --param raidType=raid1 --param legs=2 --param sync=nosync --size 8Mi"))?;
            made += 1;
        }
        std::thread::sleep(Duration::from_secs(2));
        let rss = rss_kib(&mut vm, pid)? / 1024.0;
        if n != 1 {
            rows.push(row(
                &format!("node plugin RSS, idle, {n} volumes"),
                rss,
                None,
                "MiB",
                "≤ 30 MiB",
                "standalone (controller + node services)",
            ));
        }
        if n > 0 {
            stop_driver(&mut vm, pid)?;
            let t0 = uptime(&mut vm)?;
            pid = start_driver(&mut vm, "")?;
            let took = uptime(&mut vm)? - t0;
            slopes.push((n, took));
            rows.push(row(
                &format!("start-up with {n} arrays (activate from labels → ready)"),
                took,
                None,
                "s",
                "linear in N",
                "driver start to Probe ready",
            ));
        }
    }
    if let (Some(a), Some(b)) = (slopes.first(), slopes.last()) {
        let slope = (b.1 - a.1) / (b.0 - a.0) as f64;
        rows.push(row(
            "activation slope",
            slope * 1000.0,
            None,
            "ms/array",
            "(report)",
            "between the smallest and the largest N",
        ));
    }
    vm.shutdown()
}

/// Volumes of the scale bench on the first two disks, then on the others.
const SCALE_FIRST: usize = 200;
const SCALE_ALL: usize = 500;
const SCALE_DISKS: usize = 24;

/// Issue 20, point 5: a full server. 24 disks and 500 raid1 volumes on
/// one node: the first 200 on disks vda and vdb (so vda holds a leg of
/// each), the other 300 across the 22 others. Start-up from labels with
/// 0, 200 and 500 arrays, RSS, the cost of one health round, each disk's
/// label against its slot, and the storm when vda is pulled.
fn scale(rows: &mut Vec<Row>) -> Result<(), String> {
    let mut sizes = vec![GIB; SCALE_DISKS];
    sizes[0] = 1700 * MIB;
    sizes[1] = 1700 * MIB;
    let mut vm = Vm::builder()
        .disks(&sizes)
        .memory_mb(2048)
        .command_timeout(Duration::from_secs(600))
        .with_driver()?
        .boot()?;
    let two = "/dev/vda --disks /dev/vdb";
    let all = "'/dev/vd*'";
    // The monitor's own log says how long each round took.
    let env = "RUST_LOG=info,dmraid_node::health::monitor=debug";
    let quiet = "--monitor-interval 10 --rebuild-delay 0";
    let startup = |vm: &mut Vm, globs: &str| -> Result<(u32, f64), String> {
        let t0 = uptime(vm)?;
        let pid = e2e::driver::start_on(vm, globs, env, quiet)?;
        Ok((pid, uptime(vm)? - t0))
    };
    let (pid, empty) = startup(&mut vm, two)?;
    let create = |vm: &mut Vm, from: usize, to: usize| -> Result<f64, String> {
        let t0 = uptime(vm)?;
        for batch in (from..to).collect::<Vec<_>>().chunks(50) {
            let (a, b) = (batch[0], batch[batch.len() - 1]);
            vm.run_ok(&format!(
                "i={a}; while [ $i -le {b} ]; do {CSI} create s$i --param raidType=raid1 --param legs=2 --param sync=nosync --size 4Mi >/dev/null || exit 1; i=$((i+1)); done"
            ))?;
        }
        Ok(uptime(vm)? - t0)
    };
    let first = create(&mut vm, 0, SCALE_FIRST)?;
    stop_driver(&mut vm, pid)?;
    let (pid, at_first) = startup(&mut vm, all)?;
    let rest = create(&mut vm, SCALE_FIRST, SCALE_ALL)?;
    rows.push(row(
        &format!("{SCALE_ALL} raid1 volumes created, one CLI call each"),
        (first + rest) / SCALE_ALL as f64 * 1000.0,
        None,
        "ms/volume",
        "(report)",
        &format!(
            "{SCALE_FIRST} on 2 disks in {first:.0} s, then {} on 24 in {rest:.0} s",
            SCALE_ALL - SCALE_FIRST
        ),
    ));
    let idle_from: u64 = vm
        .run_ok("wc -c < /tmp/driver.log")?
        .trim()
        .parse()
        .unwrap_or(0);
    std::thread::sleep(Duration::from_secs(35));
    let rss = rss_kib(&mut vm, pid)? / 1024.0;
    rows.push(row(
        &format!("node plugin RSS, idle, {SCALE_ALL} volumes on {SCALE_DISKS} disks"),
        rss,
        Some(40.0),
        "MiB",
        "≤ 40 MiB",
        "standalone (controller + node services)",
    ));
    let rounds = round_ms(&mut vm, idle_from)?;
    let typical = middle(&rounds);
    rows.push(row(
        &format!("one health round, {SCALE_ALL} volumes, idle"),
        typical,
        None,
        "ms",
        "(report)",
        &format!(
            "median of {} rounds (the monitor's log; also the dmraid_health_round_seconds gauge); {:.1} ms per volume",
            rounds.len(),
            typical / SCALE_ALL as f64
        ),
    ));
    // Labels against their slot: the fullest disk (vda, a leg of 200).
    let label_bytes = |vm: &mut Vm, dev: &str| -> Result<u64, String> {
        let out = vm.run_ok(&format!(
            "for off in 0 524288; do dd if={dev} bs=4096 skip=$((off/4096)) count=1 2>/dev/null | od -An -tu8 -j12 -N8 | tr -d ' \\n'; echo -n ' '; dd if={dev} bs=4096 skip=$((off/4096)) count=1 2>/dev/null | od -An -tu4 -j20 -N4 | tr -d ' \\n'; echo; done"
        ))?;
        // (sequence, body length) of both copies: the newer one counts.
        let copies: Vec<(u64, u64)> = out
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace().map(|w| w.parse::<u64>().ok());
                Some((w.next()??, w.next()??))
            })
            .collect();
        copies
            .iter()
            .max_by_key(|c| c.0)
            .map(|c| c.1 + 64)
            .ok_or_else(|| format!("no label copy on {dev}: {out:?}"))
    };
    let a = label_bytes(&mut vm, "/dev/vda")?;
    let c = label_bytes(&mut vm, "/dev/vdc")?;
    // Each leg is a metadata and a data linear on its disk.
    let legs_c: u64 = vm
        .run_ok("dmsetup table | grep -c \" linear $(cat /sys/block/vdc/dev) \"; true")?
        .trim()
        .parse::<u64>()
        .unwrap_or(0)
        / 2;
    let slot = 512.0 * 1024.0;
    let per_volume = a as f64 / SCALE_FIRST as f64;
    rows.push(row(
        &format!("label of a disk holding a leg of {SCALE_FIRST} volumes"),
        a as f64 / 1024.0,
        Some(slot / 1024.0),
        "KiB",
        "fits its 512 KiB slot",
        &format!(
            "{per_volume:.0} bytes per volume (its record and 2 extents): about {:.0} volumes ({:.0} extents) fit one disk's slot; beyond that a create is refused naming the disk. A disk with ~{legs_c} legs: {:.1} KiB",
            slot / per_volume,
            2.0 * slot / per_volume,
            c as f64 / 1024.0
        ),
    ));
    // Start-up from the labels alone: SIGTERM stops every array not in
    // use, so the next start makes all of them again.
    let t0 = uptime(&mut vm)?;
    stop_driver(&mut vm, pid)?;
    let stopped = uptime(&mut vm)? - t0;
    rows.push(row(
        &format!("orderly stop (SIGTERM) with {SCALE_ALL} arrays"),
        stopped,
        None,
        "s",
        "(report)",
        "every array stopped, then each disk's label marks them clean in one write",
    ));
    let (pid, at_all) = startup(&mut vm, all)?;
    for (n, t) in [(0, empty), (SCALE_FIRST, at_first), (SCALE_ALL, at_all)] {
        rows.push(row(
            &format!(
                "start-up with {n} arrays on {} disks (labels → every array made → ready)",
                if n == SCALE_ALL { SCALE_DISKS } else { 2 }
            ),
            t,
            None,
            "s",
            "(report)",
            "driver start to Probe ready; the arrays stopped by the previous SIGTERM",
        ));
    }
    rows.push(row(
        "start-up slope",
        (at_all - empty) / SCALE_ALL as f64 * 1000.0,
        None,
        "ms/array",
        "(report)",
        &format!(
            "between 0 and {SCALE_ALL} arrays; {:.1} ms/array between 0 and {SCALE_FIRST}",
            (at_first - empty) / SCALE_FIRST as f64 * 1000.0
        ),
    ));
    std::thread::sleep(Duration::from_secs(12));
    // The storm: vda, holding a leg of s0..s199, is pulled. A watcher in
    // the guest notes when the disk is gone from sysfs and waits, polling
    // lightly, until every array is in sync again; when each volume was
    // reported (its first warning condition) and each rebuild started are
    // read from the driver's log afterwards, by its timestamps. (A watcher
    // that grepped the log every 100 ms, and a host polling the guest
    // every 50 ms, competed for the guest's one vCPU with the driver they
    // timed.)
    let log_at: u64 = vm
        .run_ok("wc -c < /tmp/driver.log")?
        .trim()
        .parse()
        .unwrap_or(0);
    let after = format!(
        "tail -c +{} /tmp/driver.log | tr -d '\\033' | sed 's/\\[[0-9;]*m//g'",
        log_at + 1
    );
    // The guest's busybox `date` has no %N: the watcher keeps
    // /proc/uptime, and at the end waits for the wall clock's second to
    // turn (within a `date` call, tens of ms here) to tie the two clocks.
    // An array whose leg's disk is gone reads `AA idle` until md fails
    // the leg (on its next I/O): the in-sync wait starts once the driver
    // has started every rebuild.
    let started = format!("{after} | grep -c 'rebuild started onto a spare'");
    let watcher = format!(
        "now() {{ cut -d' ' -f1 /proc/uptime; }}; \
         while [ -e /sys/block/vda ]; do sleep 0.05; done; t0=$(now); \
         while [ $({started}) -lt {SCALE_FIRST} ]; do sleep 2; done; \
         while dmsetup status | grep ' raid ' | grep -qv ' AA .* idle '; do sleep 2; done; t3=$(now); \
         a=$(date -u +%s); while [ \"$(date -u +%s)\" = \"$a\" ]; do :; done; u=$(now); \
         echo \"$t0 $t3 $a $u\" > /tmp/storm.out"
    );
    vm.write_file("/tmp/storm.sh", watcher.as_bytes())?;
    vm.spawn("exec sh /tmp/storm.sh")?;
    vm.hot_remove_disk(0)?;
    // Asked every 2 s: each question is a process in the guest.
    let until = Instant::now() + Duration::from_secs(1800);
    while vm.run("[ -s /tmp/storm.out ]")?.code != 0 {
        if Instant::now() > until {
            return Err("the storm's arrays were not all in sync within 30 min".into());
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    let t: Vec<f64> = vm
        .run_ok("cat /tmp/storm.out")?
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let [t0, t3, wall, up] = t[..] else {
        return Err(format!("storm watcher: {t:?}"));
    };
    // Uptime to the log's wall clock: at uptime `up` the second `wall + 1` began.
    let offset = wall + 1.0 - up;
    let (t0, t3) = (t0 + offset, t3 + offset);
    let reported = vm.run_ok(&format!(
        "{after} | grep 'WARN' | grep 'volume condition changed'; true"
    ))?;
    let mut first: std::collections::BTreeMap<String, f64> = Default::default();
    for line in reported.lines() {
        let (Some(at), Some(v)) = (
            log_epoch(line),
            line.split_whitespace().find(|w| w.starts_with("volume=")),
        ) else {
            continue;
        };
        first.entry(v.to_string()).or_insert(at);
    }
    if first.len() < SCALE_FIRST {
        return Err(format!(
            "only {} of {SCALE_FIRST} volumes were reported degraded",
            first.len()
        ));
    }
    let t1 = first.values().cloned().fold(0.0, f64::max);
    let starts: Vec<f64> = vm
        .run_ok(&format!(
            "{after} | grep 'rebuild started onto a spare'; true"
        ))?
        .lines()
        .filter_map(log_epoch)
        .collect();
    if starts.len() < SCALE_FIRST {
        return Err(format!(
            "only {} of {SCALE_FIRST} rebuilds started",
            starts.len()
        ));
    }
    let t2 = starts.iter().cloned().fold(0.0, f64::max);
    let during = round_ms(&mut vm, log_at)?;
    let gaps = round_gaps(&mut vm, log_at)?;
    rows.push(row(
        &format!("disk holding a leg of {SCALE_FIRST} volumes pulled: every one reported"),
        t1 - t0,
        Some(2.0),
        "s",
        "≤ 2 s",
        "from the disk leaving sysfs to the last volume's warning condition (the kernel's uevent wakes the monitor; the round interval is 10 s)",
    ));
    rows.push(row(
        &format!("… every one of the {SCALE_FIRST} rebuilds started"),
        t2 - t0,
        None,
        "s",
        "(report)",
        &format!("--rebuild-delay 0; a round replaces legs for as long as its report took (at least 1 s), then reports again; all in sync {:.0} s after the pull", t3 - t0),
    ));
    rows.push(row(
        "… health rounds during the storm",
        during.iter().cloned().fold(0.0, f64::max),
        None,
        "ms",
        "no round starved",
        &format!(
            "longest of {} rounds (median {:.0} ms); longest gap between two rounds {:.1} s",
            during.len(),
            middle(&during),
            gaps
        ),
    ));
    let _ = pid;
    vm.shutdown()
}

/// Seconds since the epoch of a driver log line's timestamp
/// (`2026-12-07T12:10:52.280488Z ...`, UTC).
fn log_epoch(line: &str) -> Option<f64> {
    let stamp = line.split_whitespace().next()?.strip_suffix('Z')?;
    let (date, time) = stamp.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.split(':');
    let (h, min, sec): (f64, f64, f64) = (
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
    );
    // Days from the civil date (Howard Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days as f64 * 86_400.0 + h * 3600.0 + min * 60.0 + sec)
}

/// The durations (ms) of the health rounds the driver logged after byte
/// `from` of its log.
fn round_ms(vm: &mut Vm, from: u64) -> Result<Vec<f64>, String> {
    let out = vm.run_ok(&format!(
        "tail -c +{} /tmp/driver.log | tr -d '\\033' | sed 's/\\[[0-9;]*m//g' | grep 'health round' | grep -o 'ms=[^ ]*' | cut -d= -f2 | tr -d '\"'; true",
        from + 1
    ))?;
    Ok(out.lines().filter_map(|l| l.trim().parse().ok()).collect())
}

/// The longest time (s) between the starts of two health rounds logged
/// after byte `from` of the driver's log (its timestamps).
fn round_gaps(vm: &mut Vm, from: u64) -> Result<f64, String> {
    let out = vm.run_ok(&format!(
        "tail -c +{} /tmp/driver.log | tr -d '\\033' | sed 's/\\[[0-9;]*m//g' | grep 'health round' | cut -c12-26; true",
        from + 1
    ))?;
    // HH:MM:SS.ffffff, the end of each round.
    let secs: Vec<f64> = out
        .lines()
        .filter_map(|l| {
            let mut p = l.trim().split(':');
            let h: f64 = p.next()?.parse().ok()?;
            let m: f64 = p.next()?.parse().ok()?;
            let s: f64 = p.next()?.parse().ok()?;
            Some(h * 3600.0 + m * 60.0 + s)
        })
        .collect();
    Ok(secs.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max))
}

/// 5b. Controller memory, idle against a real API server.
fn controller_memory(rows: &mut Vec<Row>) -> Result<(), String> {
    let server = ApiServer::start()?;
    let bin =
        release_binary("dmraid-csi-controller").ok_or("release dmraid-csi-controller not built")?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let mut child = std::process::Command::new(bin)
        .arg("--endpoint")
        .arg(dir.path().join("c.sock"))
        .arg("--kubeconfig")
        .arg(server.kubeconfig_path())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| e.to_string())?;
    std::thread::sleep(Duration::from_secs(3));
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id()))
        .map_err(|e| e.to_string())?;
    let _ = child.kill();
    let _ = child.wait();
    let kib: f64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .ok_or("no VmRSS")?;
    rows.push(row(
        "controller RSS, idle",
        kib / 1024.0,
        None,
        "MiB",
        "≤ 50 MiB",
        "connected to a real kube-apiserver",
    ));
    Ok(())
}

/// The data path bench's array size.
const DP_SIZE_MIB: u64 = 512;
/// The span fio works over: the same first 384 MiB of every device, the
/// raw disk's included.
const FIO_SPAN: &str = "384M";
/// Seconds fio measures each workload for, after 1 s of ramp.
const FIO_RUNTIME: u32 = 3;
/// Times each workload is run on one array, the rounds spread over the
/// array's turn: short samples, many of them, against a host whose speed
/// varies (another VM may share its two cores).
const SAMPLES: usize = 2;

/// A fio workload: label, fio's `rw`, block size, and the figure reported.
struct Workload {
    label: &'static str,
    rw: &'static str,
    bs: &'static str,
    unit: &'static str,
}

const WORKLOADS: [Workload; 4] = [
    Workload {
        label: "seq read 1M",
        rw: "read",
        bs: "1M",
        unit: "MiB/s",
    },
    Workload {
        label: "seq write 1M",
        rw: "write",
        bs: "1M",
        unit: "MiB/s",
    },
    Workload {
        label: "rand read 4k",
        rw: "randread",
        bs: "4k",
        unit: "IOPS",
    },
    Workload {
        label: "rand write 4k",
        rw: "randwrite",
        bs: "4k",
        unit: "IOPS",
    },
];

/// The shapes compared: the driver's RAID type and legs, and `lvcreate`'s
/// options for the same array. LVM refuses raid6 under 3 stripes, so raid6
/// is compared with 5 legs on both sides.
const SHAPES: [(&str, u32, &str); 3] = [
    ("raid1", 2, "--type raid1 -m 1"),
    ("raid5_ls", 3, "--type raid5 -i 2"),
    ("raid6_zr", 5, "--type raid6 -i 3"),
];

/// One fio job on `dev` (direct I/O, libaio, iodepth 16, 1 s ramp, then
/// `FIO_RUNTIME` s measured over the first `FIO_SPAN`): MiB/s or IOPS as
/// `w.unit` says. fio runs in the background with a deadline, so an I/O
/// that never completes is reported with the blocked tasks' stacks and the
/// arrays' status instead of stalling the guest agent.
fn fio(vm: &mut Vm, dev: &str, w: &Workload) -> Result<f64, String> {
    let limit = FIO_RUNTIME + 60;
    let out = vm.run_ok(&format!(
        "fio --name=bench --filename={dev} --direct=1 --ioengine=libaio --iodepth=16 \
         --rw={} --bs={} --size={FIO_SPAN} --time_based --runtime={FIO_RUNTIME} --ramp_time=1 \
         --randrepeat=0 --output-format=json > /tmp/fio.out 2>&1 & p=$!; n=0; \
         while [ -e /proc/$p ] && ! grep -q '^State:.*Z' /proc/$p/status; do \
           sleep 0.5; n=$((n+1)); [ $n -gt {} ] || continue; \
           echo w > /proc/sysrq-trigger; echo \"fio did not finish in {limit} s\" >&2; \
           dmsetup status >&2; dmesg | tail -100 >&2; exit 1; \
         done; cat /tmp/fio.out",
        w.rw,
        w.bs,
        limit * 2
    ))?;
    parse_fio(&out, w).map_err(|e| format!("fio {} on {dev}: {e}", w.label))
}

/// The figure `w` asks for from fio's JSON report of one job.
fn parse_fio(out: &str, w: &Workload) -> Result<f64, String> {
    // fio may print a warning line before the report.
    let json = &out[out.find('{').ok_or("no JSON report")?..];
    let v: serde_json::Value = serde_json::from_str(json).map_err(|e| e.to_string())?;
    let job = &v["jobs"][0];
    if job["error"].as_i64().unwrap_or(0) != 0 {
        return Err(format!("error {}", job["error"]));
    }
    let side = if w.rw.contains("read") {
        &job["read"]
    } else {
        &job["write"]
    };
    let figure = match w.unit {
        "IOPS" => side["iops"].as_f64(),
        _ => side["bw_bytes"].as_f64().map(|b| b / MIB as f64),
    };
    figure.ok_or_else(|| format!("no {} figure in the report", w.unit))
}

/// `SAMPLES` rounds of every workload on `dev`: the samples of each
/// workload, in `WORKLOADS` order.
fn fio_all(vm: &mut Vm, dev: &str) -> Result<Vec<Vec<f64>>, String> {
    let mut samples = vec![Vec::new(); WORKLOADS.len()];
    for _ in 0..SAMPLES {
        for (i, w) in WORKLOADS.iter().enumerate() {
            samples[i].push(fio(vm, dev, w)?);
        }
    }
    Ok(samples)
}

/// The median of `v` (the mean of the middle two for an even count).
fn middle(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Samples for a note, rounded: "2096 2051".
fn listed(v: &[f64]) -> String {
    v.iter()
        .map(|x| format!("{x:.0}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// An array's settings as the kernel has them: the raid target's type and
/// parameters from `dmsetup table` (the device list left out), and what
/// the kernel log says since it was cleared: md's layout (`algorithm N`)
/// and the stripe cache dm-raid sets for raid4/5/6 when the table asks
/// for another size than md's (`N stripe cache entries`; without
/// `stripe_cache` both are 256 and nothing is printed).
fn array_settings(vm: &mut Vm, dev: &str) -> Result<String, String> {
    let table = vm.run_ok(&format!("dmsetup table {dev}"))?;
    let md = vm.run_ok(
        "dmesg | grep -o -e '[0-9]* stripe cache entries$' -e 'algorithm [0-9]*' | sort -u | tr '\\n' ' '; true",
    )?;
    Ok(format!("`{}` {}", raid_params(&table), md.trim())
        .trim()
        .to_string())
}

/// `<type> <#params> <params...>` and the leg count of a raid table line
/// (`start length raid <type> <#params> <params...> <#legs> <devs...>`).
fn raid_params(line: &str) -> String {
    let w: Vec<&str> = line.split_whitespace().collect();
    let n: usize = w.get(4).and_then(|n| n.parse().ok()).unwrap_or(0);
    let end = (5 + n).min(w.len());
    let params = w.get(3..end).map(|p| p.join(" ")).unwrap_or_default();
    format!("{params}, {} legs", w.get(end).unwrap_or(&"?"))
}

/// The figures of one array: its settings and the samples of each workload.
struct Measured {
    settings: String,
    figures: Vec<Vec<f64>>,
}

/// The write-intent bitmap's cost: per region size, the table's settings
/// and 4k random write IOPS samples.
type BitmapFigures = Vec<(&'static str, String, Vec<f64>)>;

/// raid1 region sizes whose write cost is measured.
const REGIONS: [&str; 3] = ["512Ki", "2Mi", "64Mi"];
/// Rounds of the region sizes' 4k random writes.
const BITMAP_ROUNDS: usize = 3;

/// The driver's side: start it on every disk, make each shape with its
/// defaults, measure, delete; with `bitmap`, then raid1 by regionSize too.
/// Stops the driver at the end: it holds its claimed disks open
/// exclusively, and LVM takes the same disks next.
fn driver_phase(vm: &mut Vm, bitmap: bool) -> Result<(Vec<Measured>, BitmapFigures), String> {
    // The chart's health round (10 s), not the tests' 1 s.
    let pid = start_driver(vm, "--monitor-interval 10 --auto-rebuild false")?;
    let mut shapes = Vec::new();
    for (t, legs, _) in SHAPES {
        let v = format!("dp-{}", t.replace('_', ""));
        let dev = format!("dmraid-{v}");
        clear_log(vm)?;
        // The driver's defaults: the initial resync runs (raid6 refuses
        // nosync anyway); measured once it is done.
        vm.run_ok(&format!(
            "{CSI} create {v} --param raidType={t} --param legs={legs} --size {DP_SIZE_MIB}Mi"
        ))?;
        wait_every(vm, &in_sync(&dev), 280, 1000)?;
        let settings = array_settings(vm, &dev)?;
        eprintln!("bench: datapath: driver {t} × {legs}: {settings}");
        let figures = fio_all(vm, &format!("/dev/mapper/{dev}"))?;
        vm.run_ok(&format!("{CSI} delete {v}"))?;
        shapes.push(Measured { settings, figures });
    }
    let mut regions = Vec::new();
    if bitmap {
        // All three at once, measured in turns (the order rotating each
        // round), so the host's drift weighs on each alike.
        let mut devs = Vec::new();
        for region in REGIONS {
            let v = format!("dp-region{}", region.to_lowercase());
            let dev = format!("dmraid-{v}");
            clear_log(vm)?;
            vm.run_ok(&format!(
                "{CSI} create {v} --param raidType=raid1 --param legs=2 --param sync=nosync --param regionSize={region} --size {DP_SIZE_MIB}Mi"
            ))?;
            wait_every(vm, &in_sync(&dev), 280, 1000)?;
            regions.push((region, array_settings(vm, &dev)?, Vec::new()));
            devs.push((v, dev));
        }
        for round in 0..BITMAP_ROUNDS {
            for k in 0..devs.len() {
                let j = (k + round) % devs.len();
                let iops = fio(vm, &format!("/dev/mapper/{}", devs[j].1), &WORKLOADS[3])?;
                regions[j].2.push(iops);
            }
        }
        for (v, _) in devs {
            vm.run_ok(&format!("{CSI} delete {v}"))?;
        }
    }
    stop_driver(vm, pid)?;
    Ok((shapes, regions))
}

/// LVM's side on the same disks: one volume group over all of them, each
/// shape by `lvcreate` with LVM's defaults, measured, removed; a shape LVM
/// refuses is what it said. Leaves the disks blank for the driver (LVM's
/// label and metadata, like the driver's labels, live in the first MiB).
fn lvm_phase(vm: &mut Vm, disks: &[String]) -> Result<Vec<Result<Measured, String>>, String> {
    let all = disks.join(" ");
    vm.run_ok(&format!(
        "pvcreate -ff -y {all} >/dev/null && vgcreate bench {all} >/dev/null"
    ))?;
    let mut shapes = Vec::new();
    for (t, legs, lv) in SHAPES {
        clear_log(vm)?;
        // LVM's defaults: no --nosync, so its initial sync runs too.
        let made = vm.run(&format!(
            "lvcreate {lv} -L {DP_SIZE_MIB}M -n lv -y bench >/dev/null && test -b /dev/mapper/bench-lv"
        ))?;
        if made.code != 0 {
            let said = String::from_utf8_lossy(&made.stderr);
            let said = said.split_whitespace().collect::<Vec<_>>().join(" ");
            eprintln!("bench: datapath: lvcreate {lv} refused: {said}");
            shapes.push(Err(format!("`lvcreate {lv}` refused: {said}")));
            continue;
        }
        wait_every(vm, &in_sync("bench-lv"), 280, 1000)?;
        let settings = array_settings(vm, "bench-lv")?;
        eprintln!("bench: datapath: LVM {t} × {legs}: {settings}");
        let figures = fio_all(vm, "/dev/mapper/bench-lv")?;
        vm.run_ok("lvremove -f bench/lv >/dev/null")?;
        shapes.push(Ok(Measured { settings, figures }));
    }
    vm.run_ok(&format!(
        "vgremove -f bench >/dev/null && pvremove -ff -y {all} >/dev/null && \
         for d in {all}; do dd if=/dev/zero of=$d bs=1M count=1 oflag=direct 2>/dev/null || exit 1; done"
    ))?;
    Ok(shapes)
}

/// 7. The data path, the driver's arrays vs LVM RAID.
///
/// fio on the driver's arrays (its defaults) and on LVM RAID of the same
/// shapes (LVM's defaults) on the same preallocated disks in one VM, in the
/// order driver, LVM, LVM, driver so that a drift of the host's speed
/// (another VM on it) weighs on both sides alike; each side's figure is the
/// median of its samples. One raw disk is the floor. Then the write-intent
/// bitmap's cost on raid1 4k random writes by regionSize.
fn datapath(rows: &mut Vec<Row>) -> Result<(), String> {
    let mut vm = Vm::builder()
        // Room for the bitmap bench's three 512 MiB raid1 at once.
        .disks(&[1152 * MIB; 5])
        .preallocated()
        .without_event_idx()
        .memory_mb(1024)
        .with_fio()?
        .with_driver()?
        .boot()?;
    let disks = (0..5)
        .map(|i| vm.disk_dev(i))
        .collect::<Result<Vec<_>, _>>()?;
    let (driver1, bitmap) = driver_phase(&mut vm, true)?;
    let lvm1 = lvm_phase(&mut vm, &disks)?;
    let lvm2 = lvm_phase(&mut vm, &disks)?;
    let (driver2, _) = driver_phase(&mut vm, false)?;
    // The floor: one disk alone, then a raid1 with no metadata devices (no
    // bitmap, nothing resynced) on two of the disks, by hand.
    let raw = fio_all(&mut vm, &disks[0])?;
    vm.run_ok(&format!(
        "dmsetup create nobitmap --table '0 {} raid raid1 1 0 2 - {} - {}' && dmsetup mknodes",
        DP_SIZE_MIB * 2048,
        disks[0],
        disks[1]
    ))?;
    let no_bitmap = (0..BITMAP_ROUNDS)
        .map(|_| fio(&mut vm, "/dev/mapper/nobitmap", &WORKLOADS[3]))
        .collect::<Result<Vec<_>, _>>()?;
    vm.run_ok("dmsetup remove nobitmap")?;

    for (s, (t, legs, lv)) in SHAPES.into_iter().enumerate() {
        let (d1, d2) = (&driver1[s], &driver2[s]);
        for (i, w) in WORKLOADS.iter().enumerate() {
            let driver = [d1.figures[i].clone(), d2.figures[i].clone()].concat();
            let mut note = format!(
                "median of {n}; fio libaio, direct, iodepth 16, {FIO_RUNTIME} s over {FIO_SPAN} of a {DP_SIZE_MIB} MiB array; driver runs 1 / 2: {} / {}",
                listed(&d1.figures[i]),
                listed(&d2.figures[i]),
                n = driver.len(),
            );
            let reference = match (&lvm1[s], &lvm2[s]) {
                (Ok(l1), Ok(l2)) => {
                    note.push_str(&format!(
                        "; LVM runs 1 / 2: {} / {}",
                        listed(&l1.figures[i]),
                        listed(&l2.figures[i])
                    ));
                    if i == 0 {
                        note.push_str(&format!(
                            "; driver: {}; LVM (`lvcreate {lv}`): {}",
                            d1.settings, l1.settings
                        ));
                    }
                    Some(middle(
                        &[l1.figures[i].clone(), l2.figures[i].clone()].concat(),
                    ))
                }
                (Err(refused), _) | (_, Err(refused)) => {
                    note.push_str(&format!("; {refused}"));
                    None
                }
            };
            note.push_str(&format!(
                "; raw disk alone: {:.0} {}",
                middle(&raw[i]),
                w.unit
            ));
            rows.push(row(
                &format!("{t} × {legs}, {}: driver vs LVM", w.label),
                middle(&driver),
                reference,
                w.unit,
                "≥ 1.0",
                &note,
            ));
        }
    }
    for (i, w) in WORKLOADS.iter().enumerate() {
        rows.push(row(
            &format!("raw disk alone, {}", w.label),
            middle(&raw[i]),
            None,
            w.unit,
            "(the floor)",
            &format!(
                "one preallocated virtio disk, cache=none, the same fio job; samples {}",
                listed(&raw[i])
            ),
        ));
    }
    for (region, settings, iops) in bitmap {
        rows.push(row(
            &format!("raid1 × 2, rand write 4k, regionSize={region} vs no bitmap"),
            middle(&iops),
            Some(middle(&no_bitmap)),
            "IOPS",
            "(context)",
            &format!(
                "median of {}: {}; the driver's raid1, sync=nosync, the three region sizes in turns: {settings}; reference: a raid1 table with no metadata devices on the same disks, later",
                iops.len(),
                listed(&iops)
            ),
        ));
    }
    rows.push(row(
        "raid1 × 2, rand write 4k, no bitmap (dmsetup by hand)",
        middle(&no_bitmap),
        None,
        "IOPS",
        "(context)",
        &format!(
            "`raid1 1 0` with `- <disk>` legs: no superblock, no bitmap (the driver always has both); samples {}",
            listed(&no_bitmap)
        ),
    ));
    vm.shutdown()
}

fn main() {
    let mut rows = Vec::new();
    let started = Instant::now();
    let benches: [(&str, Bench); 11] = [
        ("provisioning", provisioning),
        ("health latency", health_latency),
        ("event latency", event_latency),
        ("memory and scaling", memory_and_scaling),
        ("controller memory", controller_memory),
        ("bitmap resync", bitmap_resync),
        ("rebuild", rebuild),
        ("rebuild rates", rebuild_rates),
        ("catch up", catch_up),
        ("datapath", datapath),
        ("scale", scale),
    ];
    let only: Vec<String> = std::env::args().skip(1).collect();
    let names: Vec<&str> = benches.iter().map(|(n, _)| *n).collect();
    for (name, f) in benches {
        // A name picks itself alone ("rebuild" is not "rebuild rates"),
        // a part of one picks every bench it is a part of.
        let picked = only
            .iter()
            .any(|o| name == o || (!names.contains(&o.as_str()) && name.contains(o.as_str())));
        if !only.is_empty() && !picked {
            continue;
        }
        eprintln!("bench: {name} ...");
        if let Err(e) = f(&mut rows) {
            eprintln!("bench: {name} failed: {e}");
            rows.push(row(name, f64::NAN, None, "", "", &format!("FAILED: {e}")));
        }
    }
    println!("| measurement | value | reference | ratio | target | how |");
    println!("|---|---|---|---|---|---|");
    for r in &rows {
        println!(
            "| {} | {:.3} {} | {} | {} | {} | {} |",
            r.what,
            r.value,
            r.unit,
            r.reference
                .map(|v| format!("{v:.3} {}", r.unit))
                .unwrap_or_else(|| "-".into()),
            r.ratio
                .map(|v| format!("{v:.2}"))
                .unwrap_or_else(|| "-".into()),
            r.target,
            r.note
        );
    }
    let dir = e2e::apiserver::tools_dir().with_file_name("bench");
    let _ = std::fs::create_dir_all(&dir);
    let json = serde_json::json!({
        "date": format!("{:?}", std::time::SystemTime::now()),
        "machine": "2 cores, QEMU TCG (software emulation), Debian cloud kernel 6.1",
        "seconds": started.elapsed().as_secs(),
        "rows": rows,
    });
    let path = dir.join("latest.json");
    match std::fs::write(
        &path,
        serde_json::to_string_pretty(&json).unwrap_or_default(),
    ) {
        Ok(()) => eprintln!("bench: results in {}", path.display()),
        Err(e) => eprintln!("bench: cannot write {}: {e}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fios_json_report() {
        let out = r#"note: a warning first
{"fio version": "fio-3.33", "jobs": [{"jobname": "bench", "error": 0,
 "read": {"bw_bytes": 104857600, "iops": 100.0},
 "write": {"bw_bytes": 4096000, "iops": 1000.0}}]}"#;
        assert_eq!(parse_fio(out, &WORKLOADS[0]).unwrap(), 100.0);
        assert_eq!(parse_fio(out, &WORKLOADS[3]).unwrap(), 1000.0);
        assert!(parse_fio("fio: no such file", &WORKLOADS[0]).is_err());
    }

    #[test]
    fn a_log_timestamp_reads_as_seconds_since_the_epoch() {
        let at = log_epoch("2026-12-07T12:10:52.280488Z  INFO dmraid_node: x").unwrap();
        // date -u -d 2026-12-07T12:10:52Z +%s
        assert!((at - 1_796_645_452.280_488).abs() < 1e-3, "{at}");
        assert_eq!(log_epoch("12:10:52 no date"), None);
    }

    #[test]
    fn middle_is_the_median() {
        assert_eq!(middle(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(middle(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(middle(&[]).is_nan());
    }

    #[test]
    fn raid_params_leave_out_the_devices() {
        let line =
            "0 1048576 raid raid5_ls 3 128 region_size 4096 3 254:0 254:1 254:2 254:3 254:4 254:5";
        assert_eq!(raid_params(line), "raid5_ls 3 128 region_size 4096, 3 legs");
    }
}
