//! Disk selection on a node shaped like real hardware: a boot disk with a
//! GPT holding a mounted FAT ESP and an ext4 partition, a disk under a
//! hand-made dm device, a disk with an md 1.0 superblock at its end, a
//! ZFS-labelled disk and a disk too small for one leg, all matched by the
//! driver's globs (`/dev/vd*` and a by-id style glob whose links include
//! the partitions, as udev makes them). None of them is claimed or written
//! (sha256 of every byte before and after), each skip is logged with its
//! reason and listed by `dmraid-csi disks`, and the blank disks beside
//! them are claimed and carry a volume.

use e2e::{Vm, MIB};

use e2e::driver::CSI;
const GLOBS: &str = "--disks '/dev/vd*' --disks '/dev/disk/by-id/virtio-*'";

/// sha256 of every byte of each device.
fn sums(vm: &mut Vm, devs: &[&str]) -> Vec<String> {
    devs.iter()
        .map(|d| {
            vm.run_ok(&format!("sha256sum {d} | cut -d' ' -f1"))
                .unwrap()
        })
        .collect()
}

#[test]
fn only_blank_whole_disks_are_claimed_and_nothing_else_is_written() {
    // vda: boot disk, vdb: under a dm device, vdc: md 1.0, vdd: ZFS,
    // vde: too small, vdf..vdh: blank.
    let mut vm = Vm::builder()
        .disks(&[
            128 * MIB,
            64 * MIB,
            64 * MIB,
            64 * MIB,
            MIB,
            96 * MIB,
            96 * MIB,
            96 * MIB,
        ])
        .with_driver()
        .unwrap()
        .boot()
        .unwrap();
    // The boot disk: GPT, an ESP (FAT) mounted at /boot/efi, an ext4 root.
    vm.run_ok("printf 'label: gpt\\n,32M,U\\n,\\n' | sfdisk -q /dev/vda")
        .unwrap();
    vm.run_ok("mkfs.vfat /dev/vda1 >/dev/null && mkfs.ext4 -q /dev/vda2")
        .unwrap();
    vm.run_ok("mkdir -p /boot/efi && mount -t vfat /dev/vda1 /boot/efi && echo grub > /boot/efi/EFI.txt && sync")
        .unwrap();
    // A disk another device is built on.
    vm.run_ok("dmsetup create foreign --table \"0 8192 linear /dev/vdb 2048\"")
        .unwrap();
    // A disk that was an md RAID 1.0 member (superblock at its end).
    vm.run_ok("mdadm --create /dev/md9 --metadata=1.0 --level=1 --raid-devices=2 /dev/vdc missing --run --force >/dev/null 2>&1 && mdadm --stop /dev/md9 >/dev/null 2>&1 && mdadm --examine /dev/vdc | grep -q 'Version : 1.0'")
        .unwrap();
    // A ZFS pool member: uberblock magics in the rings of the front labels.
    vm.run_ok(
        "for l in 0 256; do for n in 0 1 2 3 4 5 6 7; do \
         printf '\\014\\261\\272\\000\\000\\000\\000\\000' | dd of=/dev/vdd bs=1 seek=$(( (l + 128 + n) * 1024 )) conv=notrunc 2>/dev/null; \
         done; done; sync",
    )
    .unwrap();
    // by-id links as udev makes them, partitions included.
    vm.run_ok(
        "mkdir -p /dev/disk/by-id && for d in a b c d e f g h; do ln -sf ../../vd$d /dev/disk/by-id/virtio-d$d; done \
         && ln -sf ../../vda1 /dev/disk/by-id/virtio-da-part1 && ln -sf ../../vda2 /dev/disk/by-id/virtio-da-part2",
    )
    .unwrap();
    let foreign = ["/dev/vda", "/dev/vdb", "/dev/vdc", "/dev/vdd", "/dev/vde"];
    let before = sums(&mut vm, &foreign);

    let listing = vm.run_ok(&format!("dmraid-csi disks {GLOBS}")).unwrap();
    eprintln!("{listing}");
    let line = |dev: &str| {
        listing
            .lines()
            .find(|l| l.starts_with(&format!("{dev} ")))
            .unwrap_or_else(|| panic!("{dev} is not listed:\n{listing}"))
            .to_string()
    };
    let expect = [
        (
            "/dev/vda",
            "partition vda1 is in use (mounted at /boot/efi)",
        ),
        ("/dev/vda1", "in use (mounted at /boot/efi)"),
        ("/dev/vda2", "matched by a glob"),
        ("/dev/disk/by-id/virtio-da-part2", "matched by a glob"),
        ("/dev/vdb", "held by dm-0 (foreign)"),
        ("/dev/vdc", "linux_raid_member"),
        ("/dev/vdd", "zfs_member"),
    ];
    for (dev, why) in expect {
        assert!(line(dev).contains(why), "{dev}: {}", line(dev));
    }
    for dev in ["/dev/vdf", "/dev/vdg", "/dev/vdh"] {
        assert!(
            line(dev).contains("blank: will be claimed"),
            "{}",
            line(dev)
        );
    }

    e2e::driver::start(&mut vm, "", GLOBS).unwrap();
    vm.run_ok(&format!(
        "{CSI} create v --param raidType=raid5_ls --param legs=3 --size 96Mi"
    ))
    .unwrap();
    let log = vm.run_ok("cat /tmp/driver.log").unwrap();
    for (dev, why) in [
        ("/dev/vda", "mounted at /boot/efi"),
        ("/dev/vda2", "matched by a glob"),
        ("/dev/vdb", "held by dm-0"),
        ("/dev/vdc", "linux_raid_member"),
        ("/dev/vdd", "zfs_member"),
        ("/dev/vde", "smaller than a label and one leg"),
    ] {
        assert!(
            log.lines()
                .any(|l| l.contains(&format!("{dev} not claimed")) && l.contains(why)),
            "no log line for {dev} ({why}):\n{log}"
        );
    }
    // The volume's legs are the three blank disks.
    let mut legs = e2e::raid::leg_disks(&mut vm, "v").unwrap();
    legs.sort_unstable();
    assert_eq!(legs, [5, 6, 7], "legs on vdf, vdg, vdh");
    vm.run_ok("dd if=/dev/urandom of=/dev/mapper/dmraid-v bs=1M count=8 oflag=direct 2>/dev/null")
        .unwrap();
    vm.run_ok("sync").unwrap();
    assert_eq!(
        sums(&mut vm, &foreign),
        before,
        "a foreign disk was written"
    );
    vm.run_ok("grep -q grub /boot/efi/EFI.txt && mdadm --examine /dev/vdc >/dev/null && dmsetup table foreign")
        .unwrap();
}
