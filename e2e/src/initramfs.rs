//! The VM's initramfs: the cached base archive from
//! `e2e/scripts/provision.sh` (busybox, dmsetup, mkfs tools, modules, /init)
//! followed by a small second archive with this run's binaries (the guest
//! agent and the driver). The kernel unpacks concatenated cpio archives in
//! order, so only the small part is rebuilt per run.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the provisioned pieces are: `$DMRAID_CACHE/vm`.
pub fn vm_dir() -> PathBuf {
    let cache = std::env::var_os("DMRAID_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            PathBuf::from(home).join(".cache/dmraid-csi")
        });
    // The kernel e2e/scripts/provision.sh provisioned for $DMRAID_KERNEL
    // (6.1 by default; 6.12, or a package name).
    match std::env::var("DMRAID_KERNEL")
        .ok()
        .filter(|k| !k.is_empty())
    {
        Some(k) if k != "6.1" => cache.join(format!("vm-{k}")),
        _ => cache.join("vm"),
    }
}

/// The kernel image, or an error telling which script provisions it.
pub fn kernel() -> Result<PathBuf, String> {
    let k = vm_dir().join("kernel/vmlinuz");
    if k.exists() {
        Ok(k)
    } else {
        Err(format!(
            "{} is missing: run scripts/install.sh (it runs e2e/scripts/provision.sh; \
             for another kernel, DMRAID_KERNEL={} e2e/scripts/provision.sh)",
            k.display(),
            std::env::var("DMRAID_KERNEL").unwrap_or_else(|_| "6.1".into())
        ))
    }
}

fn cpio(dir: &Path, out: &Path) -> Result<(), String> {
    let status = Command::new("sh")
        .arg("-c")
        .arg("cd \"$1\" && find . -print | cpio -o -H newc --quiet > \"$2\"")
        .arg("sh")
        .arg(dir)
        .arg(out)
        .status()
        .map_err(|e| format!("cpio: {e} (run scripts/install.sh)"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("cpio of {} failed", dir.display()))
    }
}

/// The base archive, rebuilt when the provisioned tree is newer.
fn base_cpio() -> Result<PathBuf, String> {
    let base = vm_dir().join("base");
    let init = base.join("init");
    if !init.exists() {
        return Err(format!(
            "{} is missing: run scripts/install.sh (it runs e2e/scripts/provision.sh)",
            init.display()
        ));
    }
    let out = vm_dir().join("base.cpio");
    let stale = match (
        std::fs::metadata(&out),
        std::fs::metadata(base.join("modules.order")),
    ) {
        (Ok(o), Ok(b)) => o.modified().ok() < b.modified().ok(),
        _ => true,
    };
    if stale {
        // Several test threads (and processes) may get here at once: each
        // builds its own file aside and renames it into place.
        static BUILDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = BUILDS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let tmp = vm_dir().join(format!("base.cpio.{}.{n}", std::process::id()));
        cpio(&base, &tmp)?;
        std::fs::rename(&tmp, &out).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// Shared libraries `bin` loads, as `ldd` lists them.
fn libraries(bin: &Path) -> Vec<PathBuf> {
    let Ok(out) = Command::new("ldd").arg(bin).output() else {
        return Vec::new();
    };
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let l = l.trim();
            let path = match l.split_once("=>") {
                Some((_, rest)) => rest.split_whitespace().next()?,
                None => l.split_whitespace().next()?,
            };
            path.starts_with('/').then(|| PathBuf::from(path))
        })
        .collect()
}

/// Build `dir/initrd` from the base archive plus `files` (host path → guest path).
pub fn build(dir: &Path, files: &[(PathBuf, String)]) -> Result<PathBuf, String> {
    let base = base_cpio()?;
    let stage = dir.join("extra");
    for (host, guest) in files {
        let dst = stage.join(guest.trim_start_matches('/'));
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        std::fs::copy(host, &dst).map_err(|e| format!("copy {}: {e}", host.display()))?;
        for lib in libraries(host) {
            let dst = stage.join(lib.strip_prefix("/").unwrap_or(&lib));
            if !dst.exists()
                && !vm_dir()
                    .join("base")
                    .join(lib.strip_prefix("/").unwrap_or(&lib))
                    .exists()
            {
                if let Some(parent) = dst.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
                }
                std::fs::copy(&lib, &dst).map_err(|e| format!("copy {}: {e}", lib.display()))?;
            }
        }
    }
    let extra = dir.join("extra.cpio");
    cpio(&stage, &extra)?;
    let initrd = dir.join("initrd");
    let mut out = std::fs::File::create(&initrd).map_err(|e| e.to_string())?;
    for part in [&base, &extra] {
        let mut f = std::fs::File::open(part).map_err(|e| e.to_string())?;
        std::io::copy(&mut f, &mut out).map_err(|e| e.to_string())?;
    }
    Ok(initrd)
}
