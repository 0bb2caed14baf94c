//! The standalone driver end to end in the VM, through the real binary and a
//! real gRPC client (`dmraid-csi csi ...`): create, stage, publish, write,
//! unpublish, unstage, orderly stop, power off, boot, re-activation from the
//! labels, stage again and read back; block mode; idempotence and refusals,
//! among them symlinked or occupied staging and target paths.

use e2e::{Vm, MIB};

const CSI: &str = "dmraid-csi csi --endpoint /run/csi.sock";
const K: &str = "/var/lib/kubelet";

fn start(vm: &mut Vm) -> u32 {
    e2e::driver::start(
        vm,
        "",
        "--state-dir /var/lib/dmraid-csi --paths-under /var/lib/kubelet",
    )
    .unwrap()
}

fn stop(vm: &mut Vm, pid: u32) {
    e2e::driver::stop(vm, pid).unwrap();
}

fn code(vm: &mut Vm, cmd: &str) -> String {
    let out = vm.run(cmd).unwrap();
    assert_ne!(out.code, 0, "expected a refusal: {cmd}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn standalone_volumes_live_through_stage_publish_reboot_and_delete() {
    let mut vm = Vm::builder()
        .disks(&[512 * MIB; 4])
        .with_driver()
        .unwrap()
        .boot()
        .unwrap();
    let pid = start(&mut vm);
    let vols = [
        (
            "r1",
            "--param raidType=raid1 --param legs=2",
            "32Mi",
            "ext4",
        ),
        (
            "r5",
            "--param raidType=raid5_ls --param sync=nosync --param fsType=xfs",
            "320Mi",
            "xfs",
        ),
        ("r6", "--param raidType=raid6_zr", "32Mi", "ext4"),
        (
            "r10",
            "--param raidType=raid10 --param legs=4",
            "32Mi",
            "ext4",
        ),
    ];
    let mut sums = std::collections::BTreeMap::new();
    for (name, params, size, fs) in vols {
        let out = vm
            .run_ok(&format!("{CSI} create {name} {params} --size {size}"))
            .unwrap();
        assert!(out.contains(&format!("volume_id={name}")), "{out}");
        // Same request: same volume. Different size: ALREADY_EXISTS.
        vm.run_ok(&format!("{CSI} create {name} {params} --size {size}"))
            .unwrap();
        assert!(
            code(&mut vm, &format!("{CSI} create {name} {params} --size 8Mi"))
                .contains("AlreadyExists")
        );
        let st = format!("{K}/staging/{name}");
        let tg = format!("{K}/pods/p/{name}");
        vm.run_ok(&format!("{CSI} stage {name} --staging {st}"))
            .unwrap();
        vm.run_ok(&format!("{CSI} stage {name} --staging {st}"))
            .unwrap();
        assert!(vm
            .run_ok(&format!("grep ' {st} ' /proc/mounts"))
            .unwrap()
            .contains(fs));
        vm.run_ok(&format!(
            "{CSI} publish {name} --staging {st} --target {tg}"
        ))
        .unwrap();
        let sum = vm.run_ok(&format!("dd if=/dev/urandom of={tg}/pattern bs=1M count=4 2>/dev/null && sync && md5sum < {tg}/pattern")).unwrap();
        sums.insert(name, sum.split_whitespace().next().unwrap().to_string());
        let stats = vm
            .run_ok(&format!("{CSI} stats {name} --path {tg}"))
            .unwrap();
        assert!(stats.contains("abnormal=false"), "{stats}");
        assert!(stats.contains("BYTES: total="), "{stats}");
        // In use: delete refused.
        assert!(code(&mut vm, &format!("{CSI} delete {name}")).contains("FailedPrecondition"));
        vm.run_ok(&format!("{CSI} unpublish {name} --target {tg}"))
            .unwrap();
        vm.run_ok(&format!("{CSI} unstage {name} --staging {st}"))
            .unwrap();
    }
    // Block mode: a device node at the target, used raw.
    vm.run_ok(&format!(
        "{CSI} create blk --param raidType=raid1 --size 16Mi --block"
    ))
    .unwrap();
    vm.run_ok(&format!(
        "{CSI} stage blk --staging {K}/staging/blk --block"
    ))
    .unwrap();
    vm.run_ok(&format!(
        "{CSI} publish blk --target {K}/pods/p/blk --block"
    ))
    .unwrap();
    let want = vm.run_ok(&format!("dd if=/dev/urandom of=/tmp/b bs=1M count=2 2>/dev/null; dd if=/tmp/b of={K}/pods/p/blk bs=1M oflag=direct 2>/dev/null; md5sum < /tmp/b")).unwrap();
    assert_eq!(
        vm.run_ok(&format!(
            "dd if={K}/pods/p/blk bs=1M count=2 iflag=direct 2>/dev/null | md5sum"
        ))
        .unwrap(),
        want
    );
    vm.run_ok(&format!("{CSI} unpublish blk --target {K}/pods/p/blk"))
        .unwrap();

    // Refusals with the right codes, nothing changed.
    assert!(code(
        &mut vm,
        &format!("{CSI} stage nosuch --staging {K}/staging/x")
    )
    .contains("NotFound"));
    assert!(code(
        &mut vm,
        &format!("{CSI} publish r1 --staging {K}/staging/r1 --target /tmp/outside")
    )
    .contains("InvalidArgument"));
    assert!(code(
        &mut vm,
        &format!("{CSI} create bad --param raidType=raid5_ls --param chunkSize=48Ki --size 8Mi")
    )
    .contains("chunkSize"));
    assert!(code(
        &mut vm,
        &format!("{CSI} create huge --param raidType=raid5_ls --size 4Gi")
    )
    .contains("ResourceExhausted"));
    let volumes = vm
        .run_ok("dmraid-csi volumes --endpoint /run/csi.sock")
        .unwrap();
    assert_eq!(volumes.lines().count(), 6, "{volumes}");
    assert!(!volumes.contains("bad") && !volumes.contains("huge"));

    // Orderly stop, power off, boot: the arrays come back from the labels.
    stop(&mut vm, pid);
    assert!(!vm.run_ok("dmsetup ls").unwrap().contains("dmraid-r1"));
    vm.shutdown().unwrap();
    vm.boot_again().unwrap();
    start(&mut vm);
    for (name, _, _, _) in vols {
        let st = format!("{K}/staging/{name}");
        vm.run_ok(&format!("{CSI} stage {name} --staging {st}"))
            .unwrap();
        let got = vm.run_ok(&format!("md5sum < {st}/pattern")).unwrap();
        assert_eq!(
            got.split_whitespace().next().unwrap(),
            sums[name],
            "{name}: data after reboot"
        );
        let get = vm.run_ok(&format!("{CSI} get {name}")).unwrap();
        assert!(get.contains("abnormal=false"), "{get}");
        vm.run_ok(&format!("{CSI} unstage {name} --staging {st}"))
            .unwrap();
        vm.run_ok(&format!("{CSI} delete {name}")).unwrap();
        vm.run_ok(&format!("{CSI} delete {name}")).unwrap();
        vm.run_ok(&format!("[ ! -e /var/lib/dmraid-csi/volumes/{name}.yaml ]"))
            .unwrap();
    }
    assert!(
        !vm.run_ok("dmsetup ls").unwrap().contains("dmraid-r"),
        "arrays and extents freed"
    );
}

#[test]
fn mount_options_read_only_publish_and_stacked_mounts_behave_as_mount_8_would() {
    let mut vm = Vm::builder()
        .disks(&[64 * MIB; 2])
        .with_driver()
        .unwrap()
        .boot()
        .unwrap();
    start(&mut vm);
    vm.run_ok(&format!(
        "{CSI} create m --param raidType=raid1 --param legs=2 --size 16Mi"
    ))
    .unwrap();
    let st = format!("{K}/staging/m");
    let tg = format!("{K}/pods/p/m");
    let mountinfo = |vm: &mut Vm, path: &str| {
        vm.run_ok(&format!("grep ' {path} ' /proc/self/mountinfo || true"))
            .unwrap()
    };
    // StorageClass mountOptions: VFS flags become mount(2) flags, the rest
    // goes to ext4 (which would refuse `noatime` as one of its own).
    vm.run_ok(&format!(
        "{CSI} stage m --staging {st} --mount-flag noatime --mount-flag nodiratime,nosuid --mount-flag errors=remount-ro"
    ))
    .unwrap();
    let m = mountinfo(&mut vm, &st);
    for want in ["noatime", "nodiratime", "nosuid", "errors=remount-ro"] {
        assert!(m.contains(want), "{want} missing: {m}");
    }
    vm.run_ok(&format!("{CSI} unstage m --staging {st}"))
        .unwrap();
    // An option ext4 does not know: refused, named, nothing mounted.
    let err = code(
        &mut vm,
        &format!("{CSI} stage m --staging {st} --mount-flag noatime,bogus_option"),
    );
    assert!(err.contains("bogus_option"), "{err}");
    assert_eq!(mountinfo(&mut vm, &st), "");
    // Read-only publish: the pod's view refuses writes.
    vm.run_ok(&format!("{CSI} stage m --staging {st}")).unwrap();
    vm.run_ok(&format!(
        "{CSI} publish m --staging {st} --target {tg} --readonly"
    ))
    .unwrap();
    let m = mountinfo(&mut vm, &tg);
    assert!(m.contains(" ro,") || m.contains(" ro "), "{m}");
    assert_ne!(vm.run(&format!("touch {tg}/x")).unwrap().code, 0);
    // Stacked mounts at the target (a second bind by someone else): unpublish
    // leaves nothing mounted there.
    vm.run_ok(&format!("mount --bind {st} {tg}")).unwrap();
    vm.run_ok(&format!("{CSI} unpublish m --target {tg}"))
        .unwrap();
    assert_eq!(mountinfo(&mut vm, &tg), "");
    vm.run_ok(&format!("{CSI} unstage m --staging {st}"))
        .unwrap();
    assert_eq!(mountinfo(&mut vm, &st), "");
}

#[test]
fn symlinked_and_occupied_paths_are_refused_and_slash_is_untouched() {
    let mut vm = Vm::builder()
        .disks(&[64 * MIB; 2])
        .with_driver()
        .unwrap()
        .boot()
        .unwrap();
    start(&mut vm);
    vm.run_ok(&format!(
        "{CSI} create s --param raidType=raid1 --param legs=2 --size 16Mi"
    ))
    .unwrap();
    let mounts_at = |vm: &mut Vm, path: &str| {
        vm.run_ok(&format!(
            "awk '$5 == \"{path}\"' /proc/self/mountinfo | wc -l"
        ))
        .unwrap()
        .trim()
        .to_string()
    };
    let slash = mounts_at(&mut vm, "/");
    vm.run_ok(&format!(
        "mkdir -p {K}/staging {K}/pods/p /tmp/elsewhere && ln -s / {K}/staging/slash && ln -s /tmp/elsewhere {K}/staging/away && ln -s /tmp {K}/out && ln -s /tmp/elsewhere {K}/pods/p/away"
    ))
    .unwrap();
    // A staging path that is a symlink (to / or elsewhere), or that passes
    // through one out of the kubelet's directory: refused, nothing mounted.
    for (st, why) in [
        (format!("{K}/staging/slash"), "symlink"),
        (format!("{K}/staging/away"), "symlink"),
        (format!("{K}/out/s"), "not below"),
    ] {
        let err = code(&mut vm, &format!("{CSI} stage s --staging {st}"));
        assert!(
            err.contains("InvalidArgument") && err.contains(why),
            "{st}: {err}"
        );
    }
    assert_eq!(mounts_at(&mut vm, "/"), slash, "nothing mounted over /");
    assert_eq!(mounts_at(&mut vm, "/tmp/elsewhere"), "0");
    assert_eq!(mounts_at(&mut vm, "/tmp/s"), "0");

    // Staged for real; a publish target that is a symlink out: refused.
    let st = format!("{K}/staging/s");
    vm.run_ok(&format!("{CSI} stage s --staging {st}")).unwrap();
    let err = code(
        &mut vm,
        &format!("{CSI} publish s --staging {st} --target {K}/pods/p/away"),
    );
    assert!(err.contains("InvalidArgument"), "{err}");
    assert_eq!(mounts_at(&mut vm, "/tmp/elsewhere"), "0");

    // Something else mounted at the target: named, not taken for the volume.
    let tg = format!("{K}/pods/p/other");
    vm.run_ok(&format!("mkdir -p {tg} && mount -t tmpfs other-fs {tg}"))
        .unwrap();
    let err = code(
        &mut vm,
        &format!("{CSI} publish s --staging {st} --target {tg}"),
    );
    assert!(
        err.contains("AlreadyExists") && err.contains("other-fs"),
        "{err}"
    );
    // Stats and expand on that path, or on a path outside, are refused too.
    let err = code(&mut vm, &format!("{CSI} stats s --path {tg}"));
    assert!(
        err.contains("NotFound") && err.contains("other-fs"),
        "{err}"
    );
    let err = code(&mut vm, &format!("{CSI} stats s --path /tmp"));
    assert!(err.contains("InvalidArgument"), "{err}");
    vm.run_ok(&format!("umount {tg}")).unwrap();
    vm.run_ok(&format!("{CSI} unstage s --staging {st}"))
        .unwrap();
}
