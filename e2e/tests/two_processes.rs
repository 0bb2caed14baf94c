//! Two driver processes with different state directories over the same
//! disks (a second install, a forgotten standalone driver): label writes are
//! compare-and-swap, so the second one's write from a stale view is refused
//! instead of overwriting the first one's allocation, and its retry places
//! its volume beside the first, never over it.

use e2e::{Vm, MIB};
use std::time::{Duration, Instant};

const A: &str = "dmraid-csi csi --endpoint /run/csi.sock";
const B: &str = "dmraid-csi csi --endpoint /run/b.sock";

/// (start, length) of every dm-linear segment under the volume's legs, per disk.
fn extents(vm: &mut Vm, vol: &str) -> Vec<(String, u64, u64)> {
    let t = vm
        .run_ok(&format!(
            "for d in $(dmsetup ls | awk '{{print $1}}' | grep '^dmraid-{vol}+'); do dmsetup table $d; done"
        ))
        .unwrap();
    t.lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            (w.len() == 5 && w[2] == "linear").then(|| {
                (
                    w[3].to_string(),
                    w[4].parse().unwrap(),
                    w[1].parse().unwrap(),
                )
            })
        })
        .collect()
}

#[test]
fn a_second_process_over_the_same_disks_never_overwrites_the_firsts_labels() {
    let mut vm = Vm::builder()
        .disks(&[96 * MIB; 3])
        .with_driver()
        .unwrap()
        .boot()
        .unwrap();
    e2e::driver::start(&mut vm, "", "").unwrap();
    vm.spawn("exec dmraid-csi standalone --endpoint /run/b.sock --disks '/dev/vd*' --node-id vm --state-dir /var/lib/second --monitor-interval 1 2>>/tmp/second.log")
        .unwrap();
    vm.wait_until(
        "dmraid-csi identity --endpoint /run/b.sock | grep -q 'ready: *true'",
        Instant::now() + Duration::from_secs(120),
    )
    .unwrap();
    vm.run_ok(&format!(
        "{A} create a --param raidType=raid1 --param legs=2 --size 16Mi"
    ))
    .unwrap();
    let want = e2e::raid::write_pattern(&mut vm, "/dev/mapper/dmraid-a", 8).unwrap();
    // The second process still holds the labels as they were before "a".
    let first = vm
        .run(&format!(
            "{B} create b --param raidType=raid1 --param legs=2 --size 16Mi"
        ))
        .unwrap();
    let err = String::from_utf8_lossy(&first.stderr).into_owned();
    assert_ne!(first.code, 0, "a write from a stale view went through");
    assert!(err.contains("another dmraid-csi process"), "{err}");
    // Each refusal re-reads the disk it hit; a retry builds on what is there.
    let deadline = Instant::now() + Duration::from_secs(60);
    while vm
        .run(&format!(
            "{B} create b --param raidType=raid1 --param legs=2 --size 16Mi"
        ))
        .unwrap()
        .code
        != 0
    {
        assert!(Instant::now() < deadline, "the retry never succeeded");
    }
    let listing = vm.run_ok("dmraid-csi disks --disks '/dev/vd*'").unwrap();
    println!("{listing}");
    let a = extents(&mut vm, "a");
    let b = extents(&mut vm, "b");
    assert_eq!((a.len(), b.len()), (4, 4), "{a:?} {b:?}");
    for (da, sa, la) in &a {
        for (db, sb, lb) in &b {
            assert!(
                da != db || sa + la <= *sb || sb + lb <= *sa,
                "extents overlap: {da} {sa}+{la} and {db} {sb}+{lb}"
            );
        }
    }
    let got = e2e::raid::read_md5(&mut vm, "/dev/mapper/dmraid-a", 8).unwrap();
    assert_eq!(got, want, "the first process's volume is intact");
}
