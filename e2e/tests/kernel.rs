//! The kernel-behaviour suite: `dmraid_api`'s model checked against the real
//! dm-raid target (Debian's 6.1 cloud kernel in QEMU). Tables are rendered by
//! `api`; every assertion is on what the kernel reports.

use dmraid_api::params::RaidSpec;
use dmraid_api::raid_type::{RaidType, ALL};
use dmraid_api::status::LegState;
use dmraid_api::table::{LegDevs, RaidTable};
use dmraid_api::units::Sectors;
use e2e::raid::{self, create, remove, status, wait_in_sync};
use e2e::vm::faults;
use e2e::{Vm, MIB};
use std::time::Duration;

/// 8 MiB of data per leg: resyncs in a second or two under emulation.
const LEG: Sectors = Sectors(16384);

fn spec(kv: &[(&str, &str)]) -> RaidSpec {
    RaidSpec::from_pairs(kv).unwrap()
}

fn legs(vm: &mut Vm, n: usize) -> Vec<LegDevs> {
    (0..n)
        .map(|i| raid::make_leg(vm, "", i, i, LEG).unwrap())
        .collect()
}

fn some(l: &[LegDevs], n: usize) -> Vec<Option<LegDevs>> {
    l[..n].iter().cloned().map(Some).collect()
}

#[test]
fn every_raid_type_creates_resyncs_and_keeps_data() {
    let mut vm = Vm::builder().disks(&[16 * MIB; 5]).boot().unwrap();
    let all = legs(&mut vm, 5);
    for kind in ALL {
        let n = kind.min_legs() as usize;
        for i in 0..n {
            raid::wipe_meta(&mut vm, "", i).unwrap();
        }
        let s = spec(&[("raidType", kind.name()), ("legs", &n.to_string())]);
        let t = RaidTable::build(&s, LEG, some(&all, n), true, &[]).unwrap();
        create(&mut vm, "r", &t)
            .unwrap_or_else(|e| panic!("{kind}: kernel refused {}: {e}", t.render()));
        let st = wait_in_sync(&mut vm, "r", Duration::from_secs(120)).unwrap();
        assert_eq!(st.raid_type, kind);
        assert_eq!(st.legs, vec![LegState::InSync; n], "{kind}");
        let size: u64 = vm
            .run_ok("blockdev --getsz /dev/mapper/r")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(size, t.length.0, "{kind}: array length");
        let want = raid::write_pattern(&mut vm, "/dev/mapper/r", 4).unwrap();
        assert_eq!(
            raid::read_md5(&mut vm, "/dev/mapper/r", 4).unwrap(),
            want,
            "{kind}"
        );
        remove(&mut vm, "r").unwrap();
    }
}

#[test]
fn tables_api_refuses_are_refused_by_the_kernel_too() {
    let mut vm = Vm::builder().disks(&[16 * MIB; 4]).boot().unwrap();
    let l = legs(&mut vm, 4);
    let devs3: String = l[..3]
        .iter()
        .map(|d| format!(" {} {}", d.meta, d.data))
        .collect();
    let devs4: String = l
        .iter()
        .map(|d| format!(" {} {}", d.meta, d.data))
        .collect();
    let len = LEG.0 * 2;
    // Each line breaks one rule api enforces; each must fail to load.
    let bad = [
        (
            "chunk not a power of two",
            format!("0 {len} raid raid5_ls 1 96 3{devs3}"),
        ),
        (
            "chunk below 8 sectors",
            format!("0 {len} raid raid5_ls 1 4 3{devs3}"),
        ),
        (
            "region below chunk",
            format!("0 {len} raid raid5_ls 3 256 region_size 128 3{devs3}"),
        ),
        (
            "region not a power of two",
            format!("0 {len} raid raid5_ls 3 128 region_size 1000 3{devs3}"),
        ),
        (
            "sync with nosync",
            format!("0 {len} raid raid5_ls 3 128 sync nosync 3{devs3}"),
        ),
        (
            "nosync with rebuild",
            format!("0 {len} raid raid5_ls 4 128 nosync rebuild 1 3{devs3}"),
        ),
        (
            "stripe_cache on raid1",
            format!(
                "0 {LEG} raid raid1 3 0 stripe_cache 256 3{devs3}",
                LEG = LEG.0
            ),
        ),
        (
            "write_mostly on raid5",
            format!("0 {len} raid raid5_ls 3 128 write_mostly 1 3{devs3}"),
        ),
        (
            "#raid_params miscounted",
            format!("0 {len} raid raid5_ls 2 128 region_size 1024 3{devs3}"),
        ),
        (
            "length not divisible by data stripes",
            format!("0 {} raid raid5_ls 1 128 3{devs3}", len - 1),
        ),
        (
            "raid6 nosync on a new set",
            format!("0 {len} raid raid6_zr 2 128 nosync 4{devs4}"),
        ),
    ];
    let mut report = String::from("| rule | kernel |\n|---|---|\n");
    for (rule, line) in &bad {
        for i in 0..4 {
            raid::wipe_meta(&mut vm, "", i).unwrap();
        }
        let out = vm
            .run(&format!("echo '{line}' | dmsetup create r"))
            .unwrap();
        let _ = vm.run("dmsetup remove r");
        report.push_str(&format!(
            "| {rule} | {} |\n",
            if out.code == 0 { "ACCEPTED" } else { "refused" }
        ));
        assert_ne!(
            out.code, 0,
            "kernel accepted a table api refuses ({rule}): {line}"
        );
    }
    println!("{report}");
}

#[test]
fn each_type_survives_its_tolerated_failures_and_reloads_with_missing_legs() {
    let mut vm = Vm::builder().disks(&[16 * MIB; 5]).boot().unwrap();
    let all = legs(&mut vm, 5);
    // (type, legs, positions to fail)
    let cases: [(RaidType, usize, &[usize]); 4] = [
        (RaidType::Raid1, 3, &[0, 2]),
        (RaidType::Raid5_ls, 4, &[2]),
        (RaidType::Raid6_zr, 5, &[1, 3]),
        // near layout, 2 copies, 4 legs: mirrors are (0,1) and (2,3): one each.
        (RaidType::Raid10, 4, &[0, 3]),
    ];
    for (kind, n, fail) in cases {
        for i in 0..n {
            vm.run_ok(&format!("dmsetup table d{i} | grep -q linear || (dmsetup remove d{i} && dmsetup remove m{i})")).ok();
        }
        let all = &all;
        for i in 0..n {
            raid::wipe_meta(&mut vm, "", i).unwrap();
        }
        let s = spec(&[("raidType", kind.name()), ("legs", &n.to_string())]);
        let t = RaidTable::build(&s, LEG, some(all, n), true, &[]).unwrap();
        create(&mut vm, "r", &t).unwrap();
        wait_in_sync(&mut vm, "r", Duration::from_secs(120)).unwrap();
        let want = raid::write_pattern(&mut vm, "/dev/mapper/r", 4).unwrap();
        for &f in fail {
            faults::make_failing(&mut vm, &format!("d{f}")).unwrap();
        }
        vm.run_ok(
            "dd if=/dev/urandom of=/dev/mapper/r bs=64k seek=100 count=8 oflag=direct 2>/dev/null",
        )
        .unwrap();
        let st = status(&mut vm, "r").unwrap();
        assert_eq!(st.dead_legs(), fail.to_vec(), "{kind}: {st:?}");
        assert!(!st.data_lost(2) || kind == RaidType::Raid10, "{kind}");
        assert_eq!(
            raid::read_md5(&mut vm, "/dev/mapper/r", 4).unwrap(),
            want,
            "{kind} degraded"
        );
        // Reload with the failed legs passed as `- -`, as after losing the disks.
        remove(&mut vm, "r").unwrap();
        let mut degraded = some(all, n);
        for &f in fail {
            degraded[f] = None;
        }
        let t2 = RaidTable::build(&s, LEG, degraded, false, &[]).unwrap();
        create(&mut vm, "r", &t2).unwrap_or_else(|e| panic!("{kind}: {}: {e}", t2.render()));
        assert_eq!(
            raid::read_md5(&mut vm, "/dev/mapper/r", 4).unwrap(),
            want,
            "{kind} reloaded with - -"
        );
        remove(&mut vm, "r").unwrap();
        // Put the failed data legs back to linear for the next type.
        for &f in fail {
            let dev = vm.disk_dev(f).unwrap();
            vm.run_ok(&format!(
                "echo '0 {} linear {dev} 8192' | dmsetup reload d{f} && dmsetup resume d{f}",
                LEG.0
            ))
            .unwrap();
        }
    }
}

#[test]
fn a_failed_leg_is_replaced_with_rebuild_and_the_flag_dropped_after() {
    let mut vm = Vm::builder().disks(&[16 * MIB; 5]).boot().unwrap();
    let all = legs(&mut vm, 5);
    for i in 0..5 {
        raid::wipe_meta(&mut vm, "", i).unwrap();
    }
    let s = spec(&[("raidType", "raid5_ls"), ("legs", "4")]);
    let t = RaidTable::build(&s, LEG, some(&all, 4), true, &[]).unwrap();
    create(&mut vm, "r", &t).unwrap();
    wait_in_sync(&mut vm, "r", Duration::from_secs(120)).unwrap();
    let want = raid::write_pattern(&mut vm, "/dev/mapper/r", 6).unwrap();
    faults::make_failing(&mut vm, "d2").unwrap();
    vm.run_ok(
        "dd if=/dev/urandom of=/dev/mapper/r bs=64k seek=200 count=4 oflag=direct 2>/dev/null",
    )
    .unwrap();
    assert_eq!(status(&mut vm, "r").unwrap().dead_legs(), vec![2]);

    // New meta/data pair (on disk 4) in position 2, `rebuild 2`, swapped in live.
    let mut new_legs = some(&all, 4);
    new_legs[2] = Some(all[4].clone());
    let rebuilding = RaidTable::build(&s, LEG, new_legs.clone(), false, &[2]).unwrap();
    vm.run_ok(&format!(
        "echo '{}' | dmsetup reload r && dmsetup suspend r && dmsetup resume r",
        rebuilding.render()
    ))
    .unwrap();
    let st = status(&mut vm, "r").unwrap();
    assert!(
        st.legs[2] != LegState::Dead && st.dead_legs().is_empty(),
        "the new leg is taken: {st:?}"
    );
    wait_in_sync(&mut vm, "r", Duration::from_secs(120)).unwrap();
    // Drop the rebuild flag so a later activation does not rebuild again.
    let steady = RaidTable::build(&s, LEG, new_legs, false, &[]).unwrap();
    vm.run_ok(&format!(
        "echo '{}' | dmsetup reload r && dmsetup suspend r && dmsetup resume r",
        steady.render()
    ))
    .unwrap();
    let st = status(&mut vm, "r").unwrap();
    assert!(st.healthy(), "no second recovery: {st:?}");
    let loaded = vm.run_ok("dmsetup table r").unwrap();
    assert_eq!(
        RaidTable::parse(loaded.trim()).unwrap(),
        steady,
        "the kernel holds the wanted table"
    );
    assert_eq!(raid::read_md5(&mut vm, "/dev/mapper/r", 6).unwrap(), want);
    vm.run_ok("dmsetup message r 0 check").unwrap();
    let st = wait_in_sync(&mut vm, "r", Duration::from_secs(120)).unwrap();
    assert_eq!(st.mismatches, Some(0));
}

/// The sync translation, row by row, against the kernel: for each case the
/// table is loaded (resync throttled so it can be seen), and the health
/// chars and action right after load are compared with `api::sync`. The
/// observed table is printed and written to `$DMRAID_CACHE/reports/`.
#[test]
fn sync_translation_matches_the_kernel() {
    use dmraid_api::sync::{all_cases, translate, Flags};
    use dmraid_api::table::SyncFlag;
    let mut vm = Vm::builder().disks(&[16 * MIB; 4]).boot().unwrap();
    let all = legs(&mut vm, 4);
    let mut report = String::from(
        "| type | flags | metadata | new | api says | kernel | health | action | agree |\n|---|---|---|---|---|---|---|---|---|\n",
    );
    let mut disagreements = Vec::new();
    for (kind, n) in [
        (RaidType::Raid0, 2),
        (RaidType::Raid1, 2),
        (RaidType::Raid5_ls, 3),
        (RaidType::Raid6_zr, 4),
        (RaidType::Raid10, 4),
    ] {
        let s = spec(&[("raidType", kind.name()), ("legs", &n.to_string())]);
        for case in all_cases(kind) {
            for i in 0..n {
                raid::wipe_meta(&mut vm, "", i).unwrap();
            }
            if !case.new_array && case.metadata {
                // An existing, clean array: made, synced, stopped.
                let t = RaidTable::build(&s, LEG, some(&all, n), true, &[]).unwrap();
                create(&mut vm, "r", &t).unwrap();
                wait_in_sync(&mut vm, "r", Duration::from_secs(120)).unwrap();
                remove(&mut vm, "r").unwrap();
            }
            let mut t = RaidTable::build(&s, LEG, some(&all, n), false, &[]).unwrap();
            t.sync = match case.flags {
                Flags::Sync | Flags::SyncAndNosync | Flags::SyncAndRebuild => Some(SyncFlag::Sync),
                Flags::Nosync | Flags::NosyncAndRebuild => Some(SyncFlag::Nosync),
                _ => None,
            };
            let mut line = t.render();
            if case.flags == Flags::SyncAndNosync {
                line = line.replacen(" sync", " sync nosync", 1);
                let count: usize = line.split_whitespace().nth(4).unwrap().parse().unwrap();
                line = line.replacen(&format!(" {count} "), &format!(" {} ", count + 1), 1);
            }
            if matches!(
                case.flags,
                Flags::Rebuild | Flags::SyncAndRebuild | Flags::NosyncAndRebuild
            ) {
                t.rebuild = vec![1];
                t.sync = if case.flags == Flags::Rebuild {
                    None
                } else {
                    t.sync
                };
                line = t.render();
            }
            // Throttle any resync so it is still running when status is read.
            let mut t2 = RaidTable::parse(&line).unwrap();
            if kind != RaidType::Raid0 {
                t2.max_recovery_rate = Some(256);
            }
            if !case.metadata {
                for leg in t2.legs.iter_mut().flatten() {
                    leg.meta = "-".into();
                }
                t2.region_size = None;
            }
            let mut line = t2.render();
            if case.flags == Flags::SyncAndNosync {
                let words: Vec<&str> = line.split_whitespace().collect();
                let count: usize = words[4].parse().unwrap();
                line = line
                    .replacen(
                        &format!("raid {} {count} ", kind.name()),
                        &format!("raid {} {} ", kind.name(), count + 1),
                        1,
                    )
                    .replacen(" sync ", " sync nosync ", 1);
            }
            let out = vm
                .run(&format!("echo '{line}' | dmsetup create r"))
                .unwrap();
            let accepted = out.code == 0;
            let (health, action) = if accepted {
                let st = status(&mut vm, "r").unwrap();
                let h: String = st
                    .legs
                    .iter()
                    .map(|l| match l {
                        LegState::InSync => 'A',
                        LegState::Syncing => 'a',
                        LegState::Dead => 'D',
                        LegState::Missing => '-',
                    })
                    .collect();
                (h, st.action.map(|a| a.name()).unwrap_or("-").to_string())
            } else {
                ("-".into(), "-".into())
            };
            let _ = vm.run("dmsetup remove r");
            let expected = translate(case);
            let (says, agree) = match (&expected, accepted) {
                (Ok(e), true) => {
                    let want_action = if e.full_resync {
                        "resync"
                    } else if e.recovers_leg {
                        "recover"
                    } else {
                        "idle"
                    };
                    let ok = e.health(n, 1) == health && want_action == action;
                    (format!("{} {want_action}", e.health(n, 1)), ok)
                }
                (Ok(_), false) => ("load".into(), false),
                (Err(_), _) => ("refuse".into(), true),
            };
            report.push_str(&format!(
                "| {kind} | {:?} | {} | {} | {says} | {} | {health} | {action} | {} |\n",
                case.flags,
                case.metadata,
                case.new_array,
                if accepted { "loads" } else { "refuses" },
                if agree { "yes" } else { "NO" }
            ));
            if !agree {
                disagreements.push(format!(
                    "{case:?}: api {says}, kernel {health} {action} ({line})"
                ));
            }
        }
    }
    println!("{report}");
    let dir = e2e::initramfs::vm_dir().join("../reports");
    let _ = std::fs::create_dir_all(&dir);
    let _ = std::fs::write(dir.join("sync-translation.md"), &report);
    assert!(
        disagreements.is_empty(),
        "api and the kernel disagree:\n{}\n{report}",
        disagreements.join("\n")
    );
}

/// The dm-raid superblock of each leg, as this kernel writes it, is the
/// layout the crash fix edits (`dmraid_api::superblock`, the 1.9.0 one):
/// every field at the offset the driver reads it from, no feature or
/// reshape flag it does not know; and the same bytes with an unknown flag
/// are refused. Run on each kernel the test command runs, so a kernel that
/// changes the layout fails here before the driver edits its superblocks.
#[test]
fn the_superblock_this_kernel_writes_is_the_layout_the_crash_fix_knows() {
    use dmraid_api::superblock::{check_editable, parse_superblock, set_array_resync_offset_zero};
    let mut vm = Vm::builder().disks(&[16 * MIB; 3]).boot().unwrap();
    let kernel = vm.run_ok("uname -r").unwrap().trim().to_string();
    let all = legs(&mut vm, 3);
    let s = spec(&[
        ("raidType", "raid5_ls"),
        ("legs", "3"),
        ("chunkSize", "64Ki"),
    ]);
    let t = RaidTable::build(&s, LEG, some(&all, 3), true, &[]).unwrap();
    create(&mut vm, "r", &t).unwrap();
    wait_in_sync(&mut vm, "r", Duration::from_secs(120)).unwrap();
    // The superblocks as the kernel leaves them on a clean stop.
    remove(&mut vm, "r").unwrap();
    for leg in 0..3 {
        let hex = vm
            .run_ok(&format!(
                "dd if=/dev/mapper/m{leg} bs=4096 count=1 2>/dev/null | od -An -v -tx1"
            ))
            .unwrap();
        let mut b: Vec<u8> = hex
            .split_whitespace()
            .map(|h| u8::from_str_radix(h, 16).unwrap())
            .collect();
        assert_eq!(b.len(), 4096);
        let sb = parse_superblock(&b).unwrap();
        println!("kernel {kernel}, leg {leg}: {sb:?}");
        check_editable(&sb).unwrap_or_else(|e| panic!("kernel {kernel}: {e}"));
        let x = sb.v190.clone().unwrap();
        assert_eq!((sb.num_devices, sb.array_position), (3, leg as u32));
        assert_eq!(
            (sb.level, sb.stripe_sectors),
            (5, 128),
            "raid5, 64 KiB chunks"
        );
        assert_eq!(x.sectors, LEG.0, "each leg's data sectors");
        assert_eq!(x.array_sectors, t.length.0, "the array's sectors");
        assert_eq!((x.data_offset, x.flags, x.incompat_features), (0, 0, 0));
        assert_eq!(x.reshape_position, u64::MAX, "no reshape: MaxSector");
        assert_eq!(
            (x.new_level, x.new_layout, x.new_stripe_sectors),
            (5, sb.layout, 128)
        );
        assert_eq!(sb.array_resync_offset, u64::MAX, "in sync: MaxSector");
        // The same superblock with a flag the driver does not know: refused,
        // the buffer untouched.
        b[144] |= 0x80;
        let before = b.clone();
        let e = set_array_resync_offset_zero(&mut b)
            .unwrap_err()
            .to_string();
        assert!(e.contains("incompat"), "{e}");
        assert_eq!(b, before);
    }
}
