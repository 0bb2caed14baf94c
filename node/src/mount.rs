//! Filesystems and mounts for the CSI Node service: make a filesystem on a
//! blank array, mount, bind-mount, unmount, and read mount state and usage.
//! mount(2)/umount2(2)/statvfs(3) are called directly; mkfs and the grow
//! tools are run as programs.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A mount as /proc/self/mountinfo lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountEntry {
    /// Root of the mount within its filesystem (`/` for a whole filesystem).
    pub root: String,
    /// Where it is mounted.
    pub target: PathBuf,
    /// Filesystem type.
    pub fstype: String,
    /// Source device.
    pub source: String,
    /// Mount options (`rw`, `ro`, ...).
    pub options: String,
}

fn unescape(s: &str) -> String {
    // mountinfo escapes space, tab, newline and backslash as \ooo.
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parse /proc/self/mountinfo text.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let l: Vec<&str> = left.split(' ').collect();
            let r: Vec<&str> = right.split(' ').collect();
            Some(MountEntry {
                root: unescape(l.get(3)?),
                target: PathBuf::from(unescape(l.get(4)?)),
                options: l.get(5)?.to_string(),
                fstype: r.first()?.to_string(),
                source: unescape(r.get(1)?),
            })
        })
        .collect()
}

/// The mount at exactly `target`, the last one if stacked.
pub fn mount_at(target: &Path) -> std::io::Result<Option<MountEntry>> {
    let text = std::fs::read_to_string("/proc/self/mountinfo")?;
    Ok(parse_mountinfo(&text)
        .into_iter()
        .rev()
        .find(|m| m.target == target))
}

fn cstr(p: &Path) -> std::io::Result<CString> {
    CString::new(p.as_os_str().as_encoded_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
}

fn check(rc: libc::c_int, what: &str) -> std::io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        let e = std::io::Error::last_os_error();
        Err(std::io::Error::new(e.kind(), format!("{what}: {e}")))
    }
}

/// mount(2) a filesystem.
pub fn mount(
    source: &Path,
    target: &Path,
    fstype: &str,
    read_only: bool,
    options: &str,
) -> std::io::Result<()> {
    let src = cstr(source)?;
    let tgt = cstr(target)?;
    let fs = CString::new(fstype)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let data = CString::new(options)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let flags = if read_only { libc::MS_RDONLY } else { 0 };
    // SAFETY: all pointers are valid NUL-terminated strings for the call.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            fs.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    check(
        rc,
        &format!("mount {} on {}", source.display(), target.display()),
    )
}

/// Bind-mount `source` on `target`, read-only when asked (bind, then remount ro).
pub fn bind(source: &Path, target: &Path, read_only: bool) -> std::io::Result<()> {
    let src = cstr(source)?;
    let tgt = cstr(target)?;
    // SAFETY: valid C strings; null fstype and data are allowed for bind mounts.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    };
    check(
        rc,
        &format!("bind {} on {}", source.display(), target.display()),
    )?;
    if read_only {
        let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
        // SAFETY: as above.
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                tgt.as_ptr(),
                std::ptr::null(),
                flags,
                std::ptr::null(),
            )
        };
        check(rc, &format!("remount {} read-only", target.display()))?;
    }
    Ok(())
}

/// Unmount `target`; not mounted is fine.
pub fn unmount(target: &Path) -> std::io::Result<()> {
    if mount_at(target)?.is_none() {
        return Ok(());
    }
    let tgt = cstr(target)?;
    // SAFETY: valid C string.
    let rc = unsafe { libc::umount2(tgt.as_ptr(), 0) };
    check(rc, &format!("unmount {}", target.display()))
}

/// Run a tool, with its stderr in the error.
pub fn run_tool(program: &str, args: &[&str]) -> std::io::Result<()> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| std::io::Error::new(e.kind(), format!("{program}: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// Make a filesystem of `fstype` (ext4 or xfs) on `device`.
pub fn mkfs(device: &Path, fstype: &str) -> std::io::Result<()> {
    let dev = device.to_string_lossy();
    match fstype {
        "xfs" => run_tool("mkfs.xfs", &["-q", "-f", "-K", &dev]),
        _ => run_tool("mkfs.ext4", &["-q", "-F", "-E", "nodiscard", &dev]),
    }
}

/// Grow a mounted filesystem to its device.
pub fn grow(device: &Path, mount_path: &Path, fstype: &str) -> std::io::Result<()> {
    match fstype {
        "xfs" => run_tool("xfs_growfs", &[&mount_path.to_string_lossy()]),
        _ => run_tool("resize2fs", &[&device.to_string_lossy()]),
    }
}

/// (total, used, available).
pub type Usage = (u64, u64, u64);

/// Bytes and inodes of the filesystem at `path`.
pub fn usage(path: &Path) -> std::io::Result<(Usage, Usage)> {
    let p = cstr(path)?;
    // SAFETY: statvfs fills the zeroed struct; p is a valid C string.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    check(
        unsafe { libc::statvfs(p.as_ptr(), &mut s) },
        &format!("statvfs {}", path.display()),
    )?;
    let f = s.f_frsize as u64;
    let bytes = (
        s.f_blocks as u64 * f,
        (s.f_blocks - s.f_bfree) as u64 * f,
        s.f_bavail as u64 * f,
    );
    let inodes = (
        s.f_files as u64,
        (s.f_files - s.f_ffree) as u64,
        s.f_favail as u64,
    );
    Ok((bytes, inodes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo_with_escapes() {
        let text = "36 35 98:0 / /mnt/with\\040space rw,noatime master:1 - ext4 /dev/mapper/dmraid-v rw,errors=continue\n\
                    37 36 98:0 /sub /var/lib/kubelet/pods/x rw shared:2 - xfs /dev/vdb ro\n";
        let m = parse_mountinfo(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].target, PathBuf::from("/mnt/with space"));
        assert_eq!(
            (
                m[0].fstype.as_str(),
                m[0].source.as_str(),
                m[0].options.as_str()
            ),
            ("ext4", "/dev/mapper/dmraid-v", "rw,noatime")
        );
        assert_eq!(m[1].root, "/sub");
    }

    #[test]
    fn usage_of_a_real_directory() {
        let d = tempfile::tempdir().unwrap();
        let ((total, used, avail), (inodes, _, _)) = usage(d.path()).unwrap();
        assert!(total > 0 && used <= total && avail <= total && inodes > 0);
        assert!(usage(Path::new("/no/such/path"))
            .unwrap_err()
            .to_string()
            .contains("/no/such/path"));
    }

    #[test]
    fn unmounting_what_is_not_mounted_is_fine() {
        let d = tempfile::tempdir().unwrap();
        unmount(d.path()).unwrap();
    }
}
