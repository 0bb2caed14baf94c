//! Deleted data never reaches the next tenant: a raid5 volume filled with a
//! pattern is deleted, the node loses power while its extents are being
//! wiped, the wipe resumes after boot, and a new volume made on the same
//! extents (read as a raw block device, as a `volumeMode: Block` claim
//! would) holds no byte of the pattern.

use e2e::{Vm, MIB};
use std::time::{Duration, Instant};

use e2e::driver::CSI;
const SECRET: &str = "TENANT-A-SECRET";

#[test]
fn a_deleted_volume_is_wiped_before_its_extents_serve_another_even_across_a_power_cut() {
    let mut vm = Vm::builder()
        .disks(&[128 * MIB; 3])
        .with_driver()
        .unwrap()
        .boot()
        .unwrap();
    // A slow wipe (1.5 s between 64 MiB steps) so the power cut lands in it.
    e2e::driver::start(&mut vm, "DMRAID_WIPE_PAUSE_MS=1500", "").unwrap();
    // 80 MiB per leg of 127 free: a second such volume fits only on these extents.
    vm.run_ok(&format!(
        "{CSI} create old --param raidType=raid5_ls --param legs=3 --size 160Mi"
    ))
    .unwrap();
    vm.run_ok(&format!(
        "yes {SECRET} | dd of=/dev/mapper/dmraid-old bs=1M count=160 iflag=fullblock oflag=direct 2>/dev/null; sync"
    ))
    .unwrap();
    let written = vm
        .run_ok(&format!("grep -a -c {SECRET} /dev/mapper/dmraid-old"))
        .unwrap();
    assert!(written.trim().parse::<u64>().unwrap() > 1000, "{written}");
    vm.run_ok(&format!("{CSI} delete old")).unwrap();
    vm.power_cut();
    vm.boot_again().unwrap();
    let listing = vm.run_ok("dmraid-csi disks --disks '/dev/vd*'").unwrap();
    eprintln!("after the power cut:\n{listing}");
    assert!(
        listing.contains("wiping"),
        "the cut landed mid-wipe: extents still marked:\n{listing}"
    );
    e2e::driver::start(&mut vm, "", "").unwrap();
    vm.wait_until(
        "! dmraid-csi disks --disks '/dev/vd*' | grep -q wiping",
        Instant::now() + Duration::from_secs(120),
    )
    .unwrap();
    let log = vm.run_ok("cat /tmp/driver.log").unwrap();
    assert!(log.contains("extent wiped and freed"), "{log}");
    vm.run_ok(&format!(
        "{CSI} create new --param raidType=raid5_ls --param legs=3 --size 160Mi"
    ))
    .unwrap();
    let leaked = vm
        .run_ok(&format!(
            "grep -a -c {SECRET} /dev/mapper/dmraid-new || true"
        ))
        .unwrap();
    assert_eq!(
        leaked.trim(),
        "0",
        "the deleted volume's bytes are readable"
    );
}
