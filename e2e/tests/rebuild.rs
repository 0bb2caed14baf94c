//! Replacing a lost leg on the real kernel through the engine: raid5_ls on 4
//! legs plus a spare disk; one leg's disk is hot-removed, the engine puts a
//! new meta/data pair on the spare with `rebuild`, the array recovers, the
//! flag is dropped, the old extents are freed once in sync, data intact.
//! And a pulled disk pushed back after its leg was rebuilt elsewhere.

use dmraid_api::RaidStatus;
use e2e::{driver, raid};
use e2e::{Vm, MIB};
use std::time::{Duration, Instant};

fn status(vm: &mut Vm) -> RaidStatus {
    let _ = vm.run_ok("dmsetup status dmraid-v").unwrap();
    RaidStatus::parse(vm.run_ok("dmsetup status dmraid-v").unwrap().trim()).unwrap()
}

fn wait_healthy(vm: &mut Vm) -> RaidStatus {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let st = status(vm);
        if st.healthy() {
            return st;
        }
        assert!(Instant::now() < deadline, "never in sync: {st:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn raid5_leg_lost_to_a_removed_disk_is_rebuilt_on_the_spare() {
    let mut vm = Vm::builder()
        .disks(&[64 * MIB; 5])
        .with_driver()
        .unwrap()
        .boot()
        .unwrap();
    let e = "dmraid-csi engine --disks '/dev/vd*' --node-id vm";
    let shown = vm
        .run_ok(&format!(
            "{e} create v --param raidType=raid5_ls --param legs=4 --size 48Mi"
        ))
        .unwrap();
    wait_healthy(&mut vm);
    let want = raid::write_pattern(&mut vm, "/dev/mapper/dmraid-v", 16).unwrap();
    // The disk that is not in the volume is the spare; pull a leg's disk.
    let mut leg_disk = None;
    for i in 0..5 {
        let dev = vm.disk_dev(i).unwrap();
        if shown.contains(&format!("\"{dev}\"")) && leg_disk.is_none() {
            leg_disk = Some(i);
        }
    }
    let victim = leg_disk.unwrap();
    // A healthy leg is refused.
    let refused = vm.run(&format!("{e} rebuild v --leg 0")).unwrap();
    assert_ne!(refused.code, 0);
    assert!(String::from_utf8_lossy(&refused.stderr).contains("healthy"));

    vm.hot_remove_disk(victim).unwrap();
    vm.run_ok("dd if=/dev/urandom of=/dev/mapper/dmraid-v bs=64k seek=400 count=8 oflag=direct 2>/dev/null").unwrap();
    let degraded = status(&mut vm);
    assert_eq!(degraded.dead_legs().len(), 1, "{degraded:?}");

    let out = vm.run_ok(&format!("{e} rebuild v")).unwrap();
    assert!(
        !out.contains("\"disk\": null"),
        "every leg has a disk again: {out}"
    );
    // The table keeps `rebuild` until the array is in sync.
    let table = vm.run_ok("dmsetup table dmraid-v").unwrap();
    assert!(table.contains(" rebuild "), "{table}");
    let st = wait_healthy(&mut vm);
    assert_eq!(st.legs.len(), 4);
    assert_eq!(
        raid::read_md5(&mut vm, "/dev/mapper/dmraid-v", 16).unwrap(),
        want
    );
    vm.run_ok("dmsetup message dmraid-v 0 check").unwrap();
    assert_eq!(wait_healthy(&mut vm).mismatches, Some(0));
    // In sync: the next activation frees the replaced leg's extents and does not rebuild again.
    let before = vm.run_ok(&format!("{e} disks")).unwrap();
    vm.run_ok(&format!("{e} activate")).unwrap();
    assert!(status(&mut vm).healthy());
    let table = vm.run_ok("dmsetup table dmraid-v").unwrap();
    assert!(
        !table.contains("rebuild"),
        "in sync, an activation loads the table without `rebuild`: {table}"
    );
    let after = vm.run_ok(&format!("{e} disks")).unwrap();
    assert_eq!(
        before, after,
        "the lost disk is gone, so nothing on the present disks changes"
    );
}

/// A disk pulled, its leg rebuilt on the spare, newer data written, the
/// driver stopped, then the same disk pushed back with its old label and the
/// driver started: the disk must not take its leg back (its copy is stale),
/// its extents are freed, and it serves the next rebuild as a spare.
#[test]
fn a_disk_that_comes_back_after_its_leg_was_rebuilt_elsewhere_is_reused_not_trusted() {
    let mut vm = Vm::builder()
        .disks(&[64 * MIB; 3])
        .with_driver()
        .unwrap()
        .boot()
        .unwrap();
    let start = |vm: &mut Vm| driver::start(vm, "", "").unwrap();
    let pid = start(&mut vm);
    let csi = "dmraid-csi csi --endpoint /run/csi.sock";
    vm.run_ok(&format!(
        "{csi} create v --param raidType=raid1 --param legs=2 --size 16Mi"
    ))
    .unwrap();
    vm.run_ok("dmraid-csi volumes --endpoint /run/csi.sock --wait")
        .unwrap();
    raid::write_pattern(&mut vm, "/dev/mapper/dmraid-v", 8).unwrap();
    let healthy = "dmsetup status dmraid-v | grep -q ' AA .* idle'";
    let pulled = raid::leg_disks(&mut vm, "v").unwrap()[0];
    vm.hot_remove_disk(pulled).unwrap();
    // 16 MiB of raid1 rebuild in well under a second: wait for its end in the log.
    let rebuilt =
        |n: u32| format!("[ $(grep -c RebuildFinished /tmp/driver.log) -ge {n} ] && {healthy}");
    vm.wait_until(&rebuilt(1), Instant::now() + Duration::from_secs(120))
        .unwrap();
    // Newer data: the pulled disk's copy is now stale.
    let want = raid::write_pattern(&mut vm, "/dev/mapper/dmraid-v", 8).unwrap();
    // Orderly stop, the disk back, start: the labels disagree on leg 0.
    driver::stop(&mut vm, pid).unwrap();
    vm.replug_disk(pulled).unwrap();
    let dev = vm.disk_dev(pulled).unwrap();
    start(&mut vm);
    vm.wait_until(healthy, Instant::now() + Duration::from_secs(60))
        .unwrap();
    assert!(
        !raid::leg_disks(&mut vm, "v").unwrap().contains(&pulled),
        "the stale copy was taken back"
    );
    assert_eq!(
        raid::read_md5(&mut vm, "/dev/mapper/dmraid-v", 8).unwrap(),
        want
    );
    // Its copy is retired and freed: as much room as the blank disk it was.
    // Room per disk: the returned one has more than the two holding a leg.
    let free = vm
        .run_ok("dmraid-csi disks --disks '/dev/vd*' | awk 'NR>1{print $1, $3}'")
        .unwrap();
    let room = |line: &str| {
        dmraid_api::quantity::parse_size("free", line.split_whitespace().nth(1).unwrap_or("?"))
            .map(|b| b.0)
            .unwrap_or_else(|e| panic!("{line}: {e}"))
    };
    let back = free
        .lines()
        .find(|l| l.starts_with(&format!("{dev} ")))
        .unwrap();
    for l in free.lines().filter(|l| !l.starts_with(&format!("{dev} "))) {
        assert!(
            room(back) > room(l),
            "the stale copy still takes room:\n{free}"
        );
    }
    // The other leg's disk goes: the returned disk is the only one with room.
    let other = raid::leg_disks(&mut vm, "v")
        .unwrap()
        .into_iter()
        .find(|d| *d != pulled)
        .unwrap();
    vm.hot_remove_disk(other).unwrap();
    vm.wait_until(&rebuilt(2), Instant::now() + Duration::from_secs(120))
        .unwrap();
    assert!(raid::leg_disks(&mut vm, "v").unwrap().contains(&pulled));
    assert_eq!(
        raid::read_md5(&mut vm, "/dev/mapper/dmraid-v", 8).unwrap(),
        want
    );
    raid::check_finds_no_mismatch(&mut vm, "v").unwrap();
    println!("room per disk once the stale copy was freed:\n{free}");
}

/// A volume deleted while one of its disks is away: when that disk comes
/// back, its part of the deleted volume is freed, not brought back as a
/// ghost, and a new volume of the same name is left alone.
#[test]
fn a_disk_away_while_its_volume_was_deleted_frees_its_part_when_it_comes_back() {
    let mut vm = Vm::builder()
        .disks(&[64 * MIB; 3])
        .with_driver()
        .unwrap()
        .boot()
        .unwrap();
    driver::start(&mut vm, "", "--auto-rebuild false").unwrap();
    let csi = "dmraid-csi csi --endpoint /run/csi.sock";
    let create = format!("{csi} create v --param raidType=raid1 --param legs=2 --size 16Mi");
    vm.run_ok(&create).unwrap();
    let away = raid::leg_disks(&mut vm, "v").unwrap()[1];
    vm.hot_remove_disk(away).unwrap();
    vm.run_ok(&format!("{csi} delete v")).unwrap();
    // The same name again, on the two disks that are here.
    vm.run_ok(&create).unwrap();
    let legs = raid::leg_disks(&mut vm, "v").unwrap();
    vm.replug_disk(away).unwrap();
    let dev = vm.disk_dev(away).unwrap();
    vm.wait_until(
        "grep -q 'deleted while it was away' /tmp/driver.log",
        Instant::now() + Duration::from_secs(30),
    )
    .unwrap();
    let disks = vm.run_ok("dmraid-csi disks --disks '/dev/vd*'").unwrap();
    let line = disks
        .lines()
        .find(|l| l.starts_with(&format!("{dev} ")))
        .unwrap_or_else(|| panic!("{disks}"));
    // SIZE and FREE: a blank 64 MiB disk keeps all but its label free.
    assert!(
        line.contains(" 63Mi "),
        "the deleted volume's part freed:\n{disks}"
    );
    assert_eq!(raid::leg_disks(&mut vm, "v").unwrap(), legs);
    let volumes = vm
        .run_ok("dmraid-csi volumes --endpoint /run/csi.sock")
        .unwrap();
    assert_eq!(
        volumes.lines().filter(|l| l.starts_with("v ")).count(),
        1,
        "{volumes}"
    );
}
