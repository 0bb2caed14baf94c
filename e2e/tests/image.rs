//! The container image built without a container engine (scripts/image.sh):
//! a valid OCI layout whose config runs the driver, and whose root
//! filesystem runs both binaries and the mkfs tools under chroot.

use std::path::{Path, PathBuf};
use std::process::Command;

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn blob(dir: &Path, digest: &str) -> PathBuf {
    dir.join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

fn sh(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_oci_archive_runs_the_driver() {
    let script = e2e::repo_root().join("scripts/image.sh");
    let archive = sh(Command::new("bash")
        .arg(&script)
        .args(["--no-build", "example.org/dmraid-csi:test"]));
    let archive = PathBuf::from(archive.trim());
    let dir = tempfile::tempdir().unwrap();
    let layout = dir.path().join("oci");
    std::fs::create_dir(&layout).unwrap();
    sh(Command::new("tar")
        .arg("-xf")
        .arg(&archive)
        .arg("-C")
        .arg(&layout));
    assert_eq!(
        json(&layout.join("oci-layout"))["imageLayoutVersion"],
        "1.0.0"
    );
    let index = json(&layout.join("index.json"));
    let m = &index["manifests"][0];
    assert_eq!(
        m["annotations"]["io.containerd.image.name"],
        "example.org/dmraid-csi:test"
    );
    let manifest = json(&blob(&layout, m["digest"].as_str().unwrap()));
    let config = json(&blob(
        &layout,
        manifest["config"]["digest"].as_str().unwrap(),
    ));
    assert_eq!(config["config"]["Entrypoint"][0], "/usr/bin/dmraid-csi");
    // Every blob's digest matches its content.
    for d in [
        m["digest"].as_str().unwrap(),
        manifest["config"]["digest"].as_str().unwrap(),
        manifest["layers"][0]["digest"].as_str().unwrap(),
    ] {
        let sum = sh(Command::new("sha256sum").arg(blob(&layout, d)));
        assert!(d.ends_with(sum.split_whitespace().next().unwrap()), "{d}");
    }
    let rootfs = dir.path().join("rootfs");
    std::fs::create_dir(&rootfs).unwrap();
    let layer = blob(&layout, manifest["layers"][0]["digest"].as_str().unwrap());
    sh(Command::new("tar")
        .arg("-xzf")
        .arg(&layer)
        .arg("-C")
        .arg(&rootfs));
    let entry = config["config"]["Entrypoint"][0].as_str().unwrap();
    let v = sh(Command::new("chroot")
        .arg(&rootfs)
        .arg(entry)
        .arg("--version"));
    assert!(v.starts_with("dmraid-csi "), "{v}");
    let v = sh(Command::new("chroot")
        .arg(&rootfs)
        .args(["/usr/bin/dmraid-csi-controller", "--version"]));
    assert!(v.starts_with("dmraid-csi-controller "), "{v}");
    for tool in [
        ["/usr/sbin/mkfs.ext4", "-V"],
        ["/usr/sbin/mkfs.xfs", "-V"],
        ["/usr/sbin/dmsetup", "--version"],
    ] {
        let out = Command::new("chroot")
            .arg(&rootfs)
            .args(tool)
            .output()
            .unwrap();
        // dmsetup --version exits 1 without the kernel driver; it must still run.
        assert!(
            out.status.code().is_some()
                && !String::from_utf8_lossy(&out.stderr).contains("not found"),
            "{tool:?}: {out:?}"
        );
    }
    println!(
        "{}: {} bytes",
        archive.display(),
        std::fs::metadata(&archive).unwrap().len()
    );
}
