//! What the engine relies on device-mapper to do, as one body that runs on
//! the fake (a unit test) and on the kernel (`dmraid-csi dm-contract` in
//! the VM, `--test dm_contract`), so the fake cannot drift from the kernel
//! unseen: missing devices, create, load and resume, tables read back as
//! loaded, reload, suspend, the raid tables the engine renders and the
//! status lines the kernel answers for them, remove.

use super::{activate, reload, DeviceMapper, DmError, Target};
use dmraid_api::table::{LegDevs, RaidTable};
use dmraid_api::units::Sectors;
use dmraid_api::{RaidSpec, RaidStatus};

/// Sectors before the first extent the contract maps on its disk.
const BASE: u64 = 2048;
/// A leg's metadata and data extents.
const META: u64 = 8192;
const LEG: u64 = 16384;
/// Sectors of the disk the contract uses: five legs of extents after
/// `BASE` (a raid1 of two, a raid5 of three). The metadata extents must
/// read as zeroes before the run (new arrays).
pub const DISK_SECTORS: u64 = BASE + 5 * (META + LEG);

/// Device names the contract makes, under one prefix.
const PREFIX: &str = "dmraid-contract";

/// Run the contract on `dm` with extents of the block device `disk`
/// (`major:minor`). Returns the checks that held, in order; the first that
/// does not is the error, saying what the device-mapper answered.
pub fn run(dm: &dyn DeviceMapper, disk: &str) -> Result<Vec<String>, String> {
    let mut held = Vec::new();
    let mut check = |what: &str, ok: bool, said: String| {
        if ok {
            held.push(what.to_string());
            Ok(())
        } else {
            Err(format!("{what}: {said}"))
        }
    };
    let name = format!("{PREFIX}-lin");
    let linear = |start: u64, len: u64, at: u64| {
        Target::new(start, len, "linear", format!("{disk} {}", BASE + at))
    };

    // A missing device.
    let info = dm.info(&name).map_err(|e| e.to_string())?;
    check(
        "a missing device has no info",
        info.is_none(),
        format!("{info:?}"),
    )?;
    let table = dm.table(&name);
    check(
        "a missing device's table is NotFound",
        matches!(table, Err(DmError::NotFound(_))),
        format!("{table:?}"),
    )?;
    let removed = dm.remove(&name);
    check(
        "removing a missing device is NotFound",
        matches!(removed, Err(DmError::NotFound(_))),
        format!("{removed:?}"),
    )?;

    // Create, load, resume, read back.
    let made = dm.create(&name, None).map_err(|e| e.to_string())?;
    check(
        "a new device has no live table and is not suspended",
        !made.live_table && !made.suspended && made.devno() != "0:0",
        format!("{made:?}"),
    )?;
    let again = dm.create(&name, None);
    check(
        "creating a name twice is refused",
        again.is_err(),
        format!("{again:?}"),
    )?;
    let names = dm.names().map_err(|e| e.to_string())?;
    check(
        "names() lists it",
        names.contains(&name),
        format!("{names:?}"),
    )?;
    let two = [linear(0, 64, 0), linear(64, 32, 128)];
    dm.load(&name, &two).map_err(|e| e.to_string())?;
    let before = dm.table(&name).map_err(|e| e.to_string())?;
    check(
        "a loaded table is not live before the resume",
        before.is_empty(),
        format!("{before:?}"),
    )?;
    let live = dm.resume(&name).map_err(|e| e.to_string())?;
    check(
        "resume makes it live",
        live.live_table && !live.suspended,
        format!("{live:?}"),
    )?;
    let back = dm.table(&name).map_err(|e| e.to_string())?;
    check(
        "a table of two segments reads back as loaded, in order",
        back == two,
        format!("{back:?}"),
    )?;
    let status = dm.status(&name).map_err(|e| e.to_string())?;
    check(
        "a linear's status is one empty line a target",
        status.len() == 2
            && status
                .iter()
                .all(|t| t.params.is_empty() && t.kind == "linear"),
        format!("{status:?}"),
    )?;

    // Reload, suspend, activate.
    let one = [linear(0, 96, 0)];
    reload(dm, &name, &one).map_err(|e| e.to_string())?;
    let back = dm.table(&name).map_err(|e| e.to_string())?;
    check(
        "reload swaps the live table",
        back == one,
        format!("{back:?}"),
    )?;
    dm.suspend(&name).map_err(|e| e.to_string())?;
    let info = dm.info(&name).map_err(|e| e.to_string())?;
    check(
        "suspend shows in the info",
        info.as_ref().is_some_and(|i| i.suspended),
        format!("{info:?}"),
    )?;
    let info = dm.resume(&name).map_err(|e| e.to_string())?;
    check(
        "resume without a new table resumes",
        !info.suspended && info.live_table,
        format!("{info:?}"),
    )?;
    let info = activate(dm, &name, None, &one).map_err(|e| e.to_string())?;
    check(
        "activate with the live table keeps it",
        info.live_table && dm.table(&name).map_err(|e| e.to_string())? == one,
        format!("{info:?}"),
    )?;
    dm.remove(&name).map_err(|e| e.to_string())?;
    let info = dm.info(&name).map_err(|e| e.to_string())?;
    check("remove removes", info.is_none(), format!("{info:?}"))?;

    // The arrays the engine renders, and what the status says of them.
    raid(dm, disk, &mut check, "raid1", 2, 0)?;
    raid(dm, disk, &mut check, "raid5_ls", 3, 2)?;
    Ok(held)
}

/// A new `nosync` array of `legs` meta/data pairs starting at pair
/// `first`, as the engine renders it: made, read back, its status, removed
/// with its legs.
fn raid(
    dm: &dyn DeviceMapper,
    disk: &str,
    check: &mut impl FnMut(&str, bool, String) -> Result<(), String>,
    kind: &str,
    legs: u32,
    first: u64,
) -> Result<(), String> {
    let spec = RaidSpec::from_pairs(&[
        ("raidType", kind),
        ("legs", &legs.to_string()),
        ("sync", "nosync"),
    ])
    .map_err(|e| e.to_string())?;
    let mut devs = Vec::new();
    let mut made = Vec::new();
    for leg in 0..u64::from(legs) {
        let at = BASE + (first + leg) * (META + LEG);
        let mut pair = Vec::new();
        for (role, start, len) in [("m", at, META), ("d", at + META, LEG)] {
            let name = format!("{PREFIX}-{kind}+{role}{leg}");
            let t = [Target::new(0, len, "linear", format!("{disk} {start}"))];
            pair.push(
                activate(dm, &name, None, &t)
                    .map_err(|e| e.to_string())?
                    .devno(),
            );
            made.push(name);
        }
        devs.push(Some(LegDevs {
            meta: pair[0].clone(),
            data: pair[1].clone(),
        }));
    }
    let table =
        RaidTable::build(&spec, Sectors(LEG), devs, true, &[]).map_err(|e| e.to_string())?;
    let name = format!("{PREFIX}-{kind}");
    let target = [Target::new(0, table.length.0, "raid", table.params())];
    activate(dm, &name, None, &target).map_err(|e| e.to_string())?;
    made.insert(0, name.clone());
    let back = dm.table(&name).map_err(|e| e.to_string())?;
    let parsed = back.first().and_then(|t| RaidTable::parse(&t.line()).ok());
    // The kernel drops `nosync` from a table it reads back: the same array
    // without it.
    let mut want = table.clone();
    want.sync = parsed.as_ref().map_or(want.sync, |p| p.sync);
    check(
        &format!("{kind}: the table reads back as rendered"),
        parsed.as_ref() == Some(&want),
        format!("{back:?}"),
    )?;
    // md counts sync progress in sectors of one leg. A new array may first
    // say otherwise for a moment (6.12: `aa 0/16384 idle` on the first
    // reads): what holds is that it settles there, at once on 6.1.
    let health = "A".repeat(legs as usize);
    let want = format!("{kind} {legs} {health} {LEG}/{LEG} idle 0 0 -");
    let mut reads = Vec::new();
    let line = loop {
        let status = dm.status(&name).map_err(|e| e.to_string())?;
        let line = status.first().map(|t| t.params.clone()).unwrap_or_default();
        reads.push(line.clone());
        if line == want || reads.len() == 50 {
            break line;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    };
    check(
        &format!(
            "{kind}: a new nosync array's status settles in sync ({} reads; the first {:?})",
            reads.len(),
            reads[0]
        ),
        line == want,
        format!("{line:?} after 5 s, expected {want:?}"),
    )?;
    let parsed = RaidStatus::parse(&line).map_err(|e| e.to_string())?;
    check(
        &format!("{kind}: its status parses as in sync"),
        parsed.synced == parsed.total && parsed.dead_legs().is_empty(),
        format!("{parsed:?}"),
    )?;
    for n in &made {
        dm.remove(n).map_err(|e| format!("remove {n}: {e}"))?;
    }
    Ok(())
}
