//! The device-mapper contract on the real kernel: the checks the node's
//! unit tests run on the fake (`the_fake_keeps_the_kernels_contract`), run
//! here by `dmraid-csi dm-contract` on a scratch disk, so a difference
//! between the fake and the kernel fails one side or the other.

use e2e::{Vm, MIB};

#[test]
fn the_kernel_keeps_the_contract_the_fake_is_held_to() {
    let mut vm = Vm::builder()
        .disks(&[64 * MIB])
        .with_driver()
        .unwrap()
        .boot()
        .unwrap();
    let disk = vm.disk_dev(0).unwrap();
    vm.run_ok(&format!(
        "dd if=/dev/zero of={disk} bs=1M count=64 oflag=direct 2>/dev/null"
    ))
    .unwrap();
    let out = vm
        .run(&format!("dmraid-csi dm-contract --disk {disk}"))
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.code, 0, "{said}");
    assert!(
        said.lines().filter(|l| l.starts_with("held: ")).count() >= 20,
        "{said}"
    );
    // Nothing left behind.
    let left = vm.run_ok("dmsetup ls").unwrap();
    assert!(!left.contains("dmraid-contract"), "{left}");
    vm.shutdown().unwrap();
}
