//! Guest-side dm-raid helpers for the kernel tests: dm-linear meta/data
//! pairs on the VM's disks, tables rendered by `dmraid_api` and loaded with
//! `dmsetup`, status read back and parsed by `dmraid_api`. Everything the
//! tests assert comes from what the kernel reports.

use crate::Vm;
use dmraid_api::capacity::META_EXTENT;
use dmraid_api::table::{LegDevs, RaidTable};
use dmraid_api::units::Sectors;
use dmraid_api::RaidStatus;
use std::time::{Duration, Instant};

/// One leg's dm-linear devices on disk `disk`: meta = the first
/// `META_EXTENT` sectors, data = the next `data` sectors.
pub fn make_leg(
    vm: &mut Vm,
    prefix: &str,
    leg: usize,
    disk: usize,
    data: Sectors,
) -> Result<LegDevs, String> {
    let dev = vm.disk_dev(disk)?;
    let meta = format!("{prefix}m{leg}");
    let dat = format!("{prefix}d{leg}");
    vm.run_ok(&format!(
        "echo '0 {m} linear {dev} 0' | dmsetup create {meta} && \
         echo '0 {d} linear {dev} {m}' | dmsetup create {dat} && dmsetup mknodes",
        m = META_EXTENT.0,
        d = data.0
    ))?;
    Ok(LegDevs {
        meta: devno(vm, &meta)?,
        data: devno(vm, &dat)?,
    })
}

/// `major:minor` of a dm device, the way tables name devices.
pub fn devno(vm: &mut Vm, name: &str) -> Result<String, String> {
    let out = vm.run_ok(&format!(
        "dmsetup info -c --noheadings -o major,minor --separator : {name}"
    ))?;
    Ok(out.trim().to_string())
}

/// Zero a leg's metadata so the next load sees a brand-new array.
pub fn wipe_meta(vm: &mut Vm, prefix: &str, leg: usize) -> Result<(), String> {
    vm.run_ok(&format!(
        "dd if=/dev/zero of=/dev/mapper/{prefix}m{leg} bs=1M count=4 oflag=direct 2>/dev/null"
    ))
    .map(|_| ())
}

/// Create device `name` with `table`. Returns the kernel's refusal (stderr + dmesg tail) as Err.
pub fn create(vm: &mut Vm, name: &str, table: &RaidTable) -> Result<(), String> {
    let line = table.render();
    let out = vm.run(&format!(
        "echo '{line}' | dmsetup create {name} && dmsetup mknodes"
    ))?;
    if out.code == 0 {
        return Ok(());
    }
    let dmesg = vm.run_ok("dmesg | tail -n 5").unwrap_or_default();
    // A failed create can leave an empty device behind.
    let _ = vm.run(&format!("dmsetup remove {name}"));
    Err(format!("{}{}", String::from_utf8_lossy(&out.stderr), dmesg))
}

/// Remove a device.
pub fn remove(vm: &mut Vm, name: &str) -> Result<(), String> {
    vm.run_ok(&format!("dmsetup remove {name}")).map(|_| ())
}

/// The array's status, read twice (the first read after a load can be stale, as measured in the VM).
pub fn status(vm: &mut Vm, name: &str) -> Result<RaidStatus, String> {
    let _ = vm.run_ok(&format!("dmsetup status {name}"))?;
    let line = vm.run_ok(&format!("dmsetup status {name}"))?;
    RaidStatus::parse(line.trim()).map_err(|e| e.to_string())
}

/// Wait until the array is idle with every leg in sync.
pub fn wait_in_sync(vm: &mut Vm, name: &str, timeout: Duration) -> Result<RaidStatus, String> {
    let deadline = Instant::now() + timeout;
    loop {
        let st = status(vm, name)?;
        if st.healthy() {
            return Ok(st);
        }
        if Instant::now() > deadline {
            return Err(format!("{name} not in sync after {timeout:?}: {st:?}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Write `mib` MiB of a random pattern at the start of `dev`; returns its md5.
pub fn write_pattern(vm: &mut Vm, dev: &str, mib: u32) -> Result<String, String> {
    vm.run_ok(&format!(
        "dd if=/dev/urandom of=/tmp/pattern bs=1M count={mib} 2>/dev/null && \
         dd if=/tmp/pattern of={dev} bs=1M oflag=direct conv=fsync 2>/dev/null && md5sum < /tmp/pattern"
    ))
}

/// Run a `check` of the driver's volume `vol` and wait until it ends with
/// 0 mismatched sectors (an error names what the status said otherwise).
pub fn check_finds_no_mismatch(vm: &mut Vm, vol: &str) -> Result<(), String> {
    vm.run_ok(&format!("dmsetup message dmraid-{vol} 0 check"))?;
    vm.wait_until(
        &format!("dmsetup status dmraid-{vol} | grep -q ' idle 0 '"),
        Instant::now() + Duration::from_secs(120),
    )
    .map_err(|e| {
        let st = vm
            .run_ok(&format!("dmsetup status dmraid-{vol}"))
            .unwrap_or_default();
        format!("{e}; status: {}", st.trim())
    })
}

/// md5 of the first `mib` MiB of `dev`.
pub fn read_md5(vm: &mut Vm, dev: &str, mib: u32) -> Result<String, String> {
    vm.run_ok(&format!(
        "dd if={dev} bs=1M count={mib} iflag=direct 2>/dev/null | md5sum"
    ))
}

/// The VM disks (by index) that hold a leg of the driver's volume `vol`,
/// as the kernel sees it (the dm-linear legs' dependencies), in disk order.
pub fn leg_disks(vm: &mut Vm, vol: &str) -> Result<Vec<usize>, String> {
    let deps = vm.run_ok(&format!(
        "for d in $(dmsetup ls | awk '{{print $1}}' | grep '^dmraid-{vol}+'); do dmsetup deps -o devname $d; done"
    ))?;
    let mut out = Vec::new();
    for i in 0..vm.disk_count() {
        let Ok(dev) = vm.disk_dev(i) else { continue };
        let name = dev.trim_start_matches("/dev/");
        if deps.contains(&format!("({name})")) {
            out.push(i);
        }
    }
    Ok(out)
}
