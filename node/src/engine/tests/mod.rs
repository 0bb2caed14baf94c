//! The engine's decisions, on fake devices: ordering, idempotence, crash
//! repair, refusals.

use super::*;
use crate::kernel::disks::FakeDisks;
use crate::kernel::dm::FakeDm;

const MIB: usize = 1 << 20;

fn params(kv: &[(&str, &str)]) -> RaidSpec {
    RaidSpec::from_pairs(kv).unwrap()
}

fn setup(n: usize, size: usize) -> (Arc<FakeDm>, FakeDisks, Engine) {
    let dm = Arc::new(FakeDm::new());
    let disks = FakeDisks::new();
    for i in 0..n {
        disks.add(&format!("/dev/vd{}", (b'b' + i as u8) as char), size);
    }
    let e = engine(&dm, &disks);
    (dm, disks, e)
}

fn engine(dm: &Arc<FakeDm>, disks: &FakeDisks) -> Engine {
    let e = Engine::new(
        dm.clone(),
        Arc::new(disks.clone()),
        EngineConfig {
            node: "node-a".into(),
            globs: vec!["/dev/vd*".into()],
            wipe: false,
        },
    );
    assert!(e.claim_disks().unwrap().is_empty());
    e
}

/// The bytes of a `size`-byte image file after `mkfs` ran on it.
fn formatted(mkfs: &str, args: &[&str], size: usize) -> Vec<u8> {
    let t = tempfile::NamedTempFile::new().unwrap();
    t.as_file().set_len(size as u64).unwrap();
    let out = std::process::Command::new(mkfs)
        .args(args)
        .arg(t.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{mkfs}: {out:?}");
    std::fs::read(t.path()).unwrap()
}

fn engine_over(disks: &FakeDisks, globs: &[&str], wipe: bool) -> Engine {
    Engine::new(
        Arc::new(FakeDm::new()),
        Arc::new(disks.clone()),
        EngineConfig {
            node: "n".into(),
            globs: globs.iter().map(|g| g.to_string()).collect(),
            wipe,
        },
    )
}

/// (disk, byte offset) of each leg's data extent, from the live linears.
fn data_heads(e: &Engine, dm: &FakeDm, id: &str) -> Vec<(String, usize)> {
    let v = e.volume(id).unwrap();
    v.legs
        .iter()
        .map(|l| {
            let t = dm.table(&leg_name(id, l.leg, Role::Data)).unwrap();
            let start: u64 = t[0]
                .params
                .split_whitespace()
                .nth(1)
                .unwrap()
                .parse()
                .unwrap();
            (
                l.disk.as_ref().unwrap().display().to_string(),
                Sectors(start).bytes().0 as usize,
            )
        })
        .collect()
}

/// Every extent on every claimed disk, as (disk, start, end, owner).
fn all_extents(e: &Engine) -> Vec<(String, u64, u64, String)> {
    lock(&e.claimed)
        .iter()
        .flat_map(|c| {
            let disk = c.label().disk_uuid.to_string();
            c.label()
                .extents
                .iter()
                .map(move |x| {
                    (
                        disk.clone(),
                        x.start.0,
                        (x.start + x.len).0,
                        format!("{}/{}/{:?}", x.volume, x.leg, x.role),
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// (disk path, byte offset) of every metadata extent of `id` in the labels.
fn meta_extents(e: &Engine, id: &str) -> Vec<(String, usize)> {
    lock(&e.claimed)
        .iter()
        .flat_map(|c| {
            c.label()
                .extents
                .iter()
                .filter(|x| {
                    x.volume == id && x.role == Role::Meta && x.state == ExtentState::Active
                })
                .map(|x| {
                    (
                        c.info.path.display().to_string(),
                        x.start.bytes().0 as usize,
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Write what the kernel writes when it takes a leg: a dm-raid superblock.
fn kernel_writes_superblock(disks: &FakeDisks, at: &(String, usize)) {
    let mut sb = vec![0u8; 148];
    sb[0..4].copy_from_slice(b"DmRd");
    sb[4..8].copy_from_slice(&1u32.to_le_bytes());
    sb[40..48].copy_from_slice(&u64::MAX.to_le_bytes());
    sb[64..72].copy_from_slice(&u64::MAX.to_le_bytes());
    disks.poke(&at.0, at.1, &sb);
}

/// raid1 "m" on two of three disks, its leg 0 disk pulled and the leg
/// rebuilt on the third. Returns the pulled disk's path and bytes.
fn replaced_leg_0(dm: &FakeDm, disks: &FakeDisks, e: &Engine) -> (String, Vec<u8>) {
    let v = e
        .create_volume("m", &params(&[("raidType", "raid1")]), 8 * MIB as u64)
        .unwrap();
    let lost = v.legs[0].disk.clone().unwrap().display().to_string();
    let bytes = disks.bytes(&lost);
    disks.remove(&lost);
    dm.set_status("dmraid-m", "raid1 2 DA 16384/16384 idle 0");
    e.replace_leg("m", Some(0), None).unwrap();
    dm.set_status("dmraid-m", "raid1 2 AA 16384/16384 idle 0");
    (lost, bytes)
}

fn leg_paths(e: &Engine, id: &str) -> Vec<String> {
    e.volume(id)
        .unwrap()
        .legs
        .iter()
        .map(|l| {
            l.disk
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        })
        .collect()
}

/// Three disks and a raid1 volume `v`: its leg 1's disk and that disk's bytes.
fn raid1_v_and_its_leg_1_disk() -> (Arc<FakeDm>, FakeDisks, Engine, String, Vec<u8>) {
    let (dm, disks, e) = setup(3, 64 * MIB);
    let s = params(&[("raidType", "raid1")]);
    let v = e.create_volume("v", &s, 8 * MIB as u64).unwrap();
    let away = v.legs[1].disk.clone().unwrap().display().to_string();
    let bytes = disks.bytes(&away);
    (dm, disks, e, away, bytes)
}

/// (start, len) in bytes of every data extent of volume `id`.
fn data_extents(e: &Engine, id: &str) -> Vec<(String, usize, usize)> {
    lock(&e.claimed)
        .iter()
        .flat_map(|c| {
            c.label()
                .extents
                .iter()
                .filter(|x| x.volume == id && x.role == Role::Data)
                .map(|x| {
                    (
                        c.info.path.display().to_string(),
                        x.start.bytes().0 as usize,
                        x.len.bytes().0 as usize,
                    )
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

mod activate;
mod claim;
mod rebuild;
mod volume;
mod wipe;
