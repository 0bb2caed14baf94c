//! The newest label state wins on every disk order: power is cut right
//! after a create, and the newest label copy of the leg disk read first is
//! then damaged, so that disk falls back to its older copy, which still says
//! the create was in flight. The other disk says it finished. The driver
//! must keep the volume (the finished state wins), not roll it back and
//! free its extents as a half-made create.

use e2e::{Vm, MIB};

use e2e::driver::CSI;
/// The second label copy starts half-way into the 1 MiB label area.
const SLOT_B: u64 = 512 * 1024;

/// The sequence number in the label copy at `offset` of `dev`.
fn seq(vm: &mut Vm, dev: &str, offset: u64) -> u64 {
    vm.run_ok(&format!(
        "dd if={dev} bs=1 skip={} count=8 2>/dev/null | od -An -tu8",
        offset + 12
    ))
    .unwrap()
    .trim()
    .parse()
    .unwrap_or(0)
}

#[test]
fn a_damaged_newest_label_copy_never_rolls_back_a_finished_create() {
    let mut vm = Vm::builder()
        .disks(&[64 * MIB; 2])
        .with_driver()
        .unwrap()
        .boot()
        .unwrap();
    e2e::driver::start(&mut vm, "", "").unwrap();
    vm.run_ok(&format!(
        "{CSI} create v --param raidType=raid1 --param legs=2 --size 16Mi"
    ))
    .unwrap();
    let want = e2e::raid::write_pattern(&mut vm, "/dev/mapper/dmraid-v", 4).unwrap();
    vm.power_cut();
    vm.boot_again().unwrap();
    // The first disk read: damage its newest copy (a torn sector).
    let dev = "/dev/vda";
    let newest = if seq(&mut vm, dev, SLOT_B) > seq(&mut vm, dev, 0) {
        SLOT_B
    } else {
        0
    };
    vm.run_ok(&format!(
        "printf 'torn-sector!' | dd of={dev} bs=1 seek={} conv=notrunc 2>/dev/null; sync",
        newest + 100
    ))
    .unwrap();
    let older = vm
        .run_ok("dmraid-csi disks --disks /dev/vda --disks /dev/vdb")
        .unwrap();
    println!("{older}");
    e2e::driver::start(&mut vm, "", "").unwrap();
    let volumes = vm
        .run_ok("dmraid-csi volumes --endpoint /run/csi.sock")
        .unwrap();
    assert!(volumes.contains("\nv "), "the volume is kept:\n{volumes}");
    let log = vm.run_ok("cat /tmp/driver.log").unwrap();
    assert!(!log.contains("rolling it back"), "{log}");
    let got = e2e::raid::read_md5(&mut vm, "/dev/mapper/dmraid-v", 4).unwrap();
    assert_eq!(got, want);
}

/// A present disk whose two label copies are both damaged is named as
/// such, not reported as "disk missing"; the driver never writes a label
/// over it (it cannot know what the disk holds), and the volume serves from
/// its other leg.
#[test]
fn a_disk_whose_label_copies_are_both_damaged_is_named_and_left_alone() {
    let mut vm = Vm::builder()
        .disks(&[64 * MIB; 2])
        .with_driver()
        .unwrap()
        .boot()
        .unwrap();
    let pid = e2e::driver::start(&mut vm, "", "").unwrap();
    vm.run_ok(&format!(
        "{CSI} create v --param raidType=raid1 --param legs=2 --size 16Mi"
    ))
    .unwrap();
    let want = e2e::raid::write_pattern(&mut vm, "/dev/mapper/dmraid-v", 4).unwrap();
    e2e::driver::stop(&mut vm, pid).unwrap();
    vm.run_ok("dmsetup remove_all").unwrap();
    for slot in [0, SLOT_B] {
        vm.run_ok(&format!(
            "printf 'torn-sector!' | dd of=/dev/vdb bs=1 seek={} conv=notrunc 2>/dev/null; sync",
            slot + 100
        ))
        .unwrap();
    }
    let damaged = vm.run_ok("sha256sum /dev/vdb").unwrap();
    let listed = vm
        .run_ok("dmraid-csi disks --disks /dev/vda --disks /dev/vdb")
        .unwrap();
    println!("{listed}");
    e2e::driver::start(&mut vm, "", "").unwrap();
    let volumes = vm
        .run_ok("dmraid-csi volumes --endpoint /run/csi.sock")
        .unwrap();
    println!("{volumes}");
    assert!(
        volumes.contains("disk /dev/vdb is here but its label is unreadable"),
        "{volumes}"
    );
    assert!(!volumes.contains("disk missing"), "{volumes}");
    let got = e2e::raid::read_md5(&mut vm, "/dev/mapper/dmraid-v", 4).unwrap();
    assert_eq!(got, want, "the volume serves from its other leg");
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(
        vm.run_ok("sha256sum /dev/vdb").unwrap(),
        damaged,
        "nothing written over the disk with the unreadable label"
    );
}
