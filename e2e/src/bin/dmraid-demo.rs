//! `scripts/run.sh`'s demo: the standalone driver on its embedded default,
//! inside the test VM (the host kernel has no device-mapper). It creates a
//! real raid5 volume through the CSI socket, mounts it, writes a file,
//! shows health, pulls a disk out and shows the failure being reported.

use e2e::{Vm, MIB};
use std::time::{Duration, Instant};

fn step(vm: &mut Vm, what: &str, cmd: &str) -> Result<String, String> {
    println!("\n$ {what}");
    let out = vm.run_ok(cmd)?;
    print!("{out}");
    Ok(out)
}

fn main() -> Result<(), String> {
    println!("booting a VM (Debian cloud kernel, 4 virtio disks of 256 MiB) ...");
    let started = Instant::now();
    let mut vm = Vm::builder().disks(&[256 * MIB; 4]).with_driver()?.boot()?;
    println!("booted in {:.1} s", started.elapsed().as_secs_f64());
    e2e::driver::start(&mut vm, "", "")?;
    let csi = "dmraid-csi csi --endpoint /run/csi.sock";
    step(
        &mut vm,
        "dmraid-csi identity",
        "dmraid-csi identity --endpoint /run/csi.sock",
    )?;
    step(
        &mut vm,
        "CreateVolume: raid5_ls over 3 disks, 64 MiB",
        &format!("{csi} create demo --param raidType=raid5_ls --param legs=3 --size 64Mi"),
    )?;
    step(&mut vm, "NodeStageVolume (mkfs.ext4, mount) + NodePublishVolume", &format!(
        "{csi} stage demo --staging /var/lib/kubelet/staging/demo && {csi} publish demo --staging /var/lib/kubelet/staging/demo --target /var/lib/kubelet/pods/demo/vol && df -h /var/lib/kubelet/pods/demo/vol"
    ))?;
    step(&mut vm, "write a file", "dd if=/dev/urandom of=/var/lib/kubelet/pods/demo/vol/data bs=1M count=8 2>/dev/null && sync && md5sum /var/lib/kubelet/pods/demo/vol/data")?;
    let deadline = Instant::now() + Duration::from_secs(120);
    vm.wait_until("dmsetup status dmraid-demo | grep -q ' idle '", deadline)?;
    step(
        &mut vm,
        "dmraid-csi volumes",
        "dmraid-csi volumes --endpoint /run/csi.sock",
    )?;
    step(
        &mut vm,
        "dmsetup table / status (what the kernel holds)",
        "dmsetup table dmraid-demo; dmsetup status dmraid-demo",
    )?;
    // A disk that holds a leg: the volume's legs as the labels say.
    let victim = e2e::raid::leg_disks(&mut vm, "demo")?
        .first()
        .copied()
        .ok_or("no disk holds a leg of demo")?;
    let dev = vm.disk_dev(victim)?;
    println!("\n# hot-removing {dev} (it holds a leg) from the VM ...");
    vm.hot_remove_disk(victim)?;
    vm.run_ok("dd if=/dev/urandom of=/var/lib/kubelet/pods/demo/vol/more bs=1M count=2 conv=fsync 2>/dev/null")?;
    vm.wait_until(
        "dmsetup status dmraid-demo | grep -q D",
        Instant::now() + Duration::from_secs(30),
    )?;
    step(
        &mut vm,
        "dmraid-csi volumes (after the disk is gone)",
        "dmraid-csi volumes --endpoint /run/csi.sock",
    )?;
    step(
        &mut vm,
        "the data is still there",
        "md5sum /var/lib/kubelet/pods/demo/vol/data",
    )?;
    vm.shutdown()?;
    println!(
        "\ndone: a real dm-raid volume was created, used, degraded and reported, in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
