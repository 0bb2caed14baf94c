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
    /// `major:minor` of the mounted filesystem's device (for ext4 or xfs
    /// on a block device, that device's number; a bind keeps its source's).
    pub devno: String,
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
    // mountinfo escapes space, tab, newline and backslash as \ooo (a byte,
    // so at most \377; anything above is left as written).
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let value = (b[i] == b'\\')
            .then(|| b.get(i + 1..i + 4))
            .flatten()
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)))
            .map(|d| d.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0')))
            .and_then(|v| u8::try_from(v).ok());
        if let Some(v) = value {
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
                devno: l.get(2)?.to_string(),
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

/// `major:minor` of the block device at `path` (following symlinks, as
/// /dev/mapper names are); an error when it is not a block device.
pub fn devno_of(path: &Path) -> std::io::Result<String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = std::fs::metadata(path)?;
    if !meta.file_type().is_block_device() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} is not a block device", path.display()),
        ));
    }
    Ok(format!(
        "{}:{}",
        libc::major(meta.rdev()),
        libc::minor(meta.rdev())
    ))
}

/// A directory or file held open (`O_PATH`) after checking it is still
/// the path that was resolved: mounting on [`Pinned::target`] mounts on
/// exactly that inode, even if a component is swapped for a symlink after
/// the check (mount(2) resolves /proc/self/fd/N to the open file itself).
#[derive(Debug)]
pub struct Pinned {
    file: std::fs::File,
    path: PathBuf,
}

impl Pinned {
    /// The path that was checked, for messages.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The path to hand mount(2): this process's link to the open file.
    pub fn target(&self) -> PathBuf {
        use std::os::fd::AsRawFd;
        PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()))
    }
}

/// Open `path` without following a final symlink and check that what was
/// opened is a real directory or file whose path is still `path` (a path
/// without symlinks, as [`crate::kernel::paths::confine`] returns).
pub fn pin(path: &Path) -> std::io::Result<Pinned> {
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    let pinned = Pinned {
        file,
        path: path.to_path_buf(),
    };
    // O_PATH|O_NOFOLLOW opens a symlink itself rather than failing.
    if pinned.file.metadata()?.file_type().is_symlink() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("{} became a symlink; not mounting there", path.display()),
        ));
    }
    let now = std::fs::read_link(pinned.target())?;
    if now != path {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!(
                "{} resolves to {} since it was checked; not mounting there",
                path.display(),
                now.display()
            ),
        ));
    }
    Ok(pinned)
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

/// Mount options as mount(8) takes them (a StorageClass's `mountOptions`,
/// each entry possibly comma-separated), split into mount(2) flags and the
/// filesystem's own options: `noatime` or `nosuid` are flags the VFS
/// applies, and a filesystem handed them as data refuses the mount.
pub fn split_options(options: &[String]) -> (libc::c_ulong, String) {
    let mut flags: libc::c_ulong = 0;
    let mut data = Vec::new();
    for opt in options.iter().flat_map(|o| o.split(',')).map(str::trim) {
        let (set, clear) = match opt {
            "" | "defaults" => (0, 0),
            "ro" => (libc::MS_RDONLY, 0),
            "rw" => (0, libc::MS_RDONLY),
            "noatime" => (libc::MS_NOATIME, libc::MS_RELATIME | libc::MS_STRICTATIME),
            "atime" => (0, libc::MS_NOATIME),
            "nodiratime" => (libc::MS_NODIRATIME, 0),
            "diratime" => (0, libc::MS_NODIRATIME),
            "relatime" => (libc::MS_RELATIME, libc::MS_NOATIME | libc::MS_STRICTATIME),
            "norelatime" => (0, libc::MS_RELATIME),
            "strictatime" => (libc::MS_STRICTATIME, libc::MS_NOATIME | libc::MS_RELATIME),
            "lazytime" => (libc::MS_LAZYTIME, 0),
            "nolazytime" => (0, libc::MS_LAZYTIME),
            "nosuid" => (libc::MS_NOSUID, 0),
            "suid" => (0, libc::MS_NOSUID),
            "nodev" => (libc::MS_NODEV, 0),
            "dev" => (0, libc::MS_NODEV),
            "noexec" => (libc::MS_NOEXEC, 0),
            "exec" => (0, libc::MS_NOEXEC),
            "sync" => (libc::MS_SYNCHRONOUS, 0),
            "async" => (0, libc::MS_SYNCHRONOUS),
            "dirsync" => (libc::MS_DIRSYNC, 0),
            other => {
                data.push(other);
                (0, 0)
            }
        };
        flags = (flags & !clear) | set;
    }
    (flags, data.join(","))
}

/// mount(2) a filesystem with mount(8)-style `options` (see [`split_options`]).
pub fn mount(
    source: &Path,
    target: &Pinned,
    fstype: &str,
    read_only: bool,
    options: &[String],
) -> std::io::Result<()> {
    let src = cstr(source)?;
    let tgt = cstr(&target.target())?;
    let target = target.path();
    let fs = CString::new(fstype)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let (mut flags, data_text) = split_options(options);
    let data = CString::new(data_text.as_str())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    if read_only {
        flags |= libc::MS_RDONLY;
    }
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
    let what = if data_text.is_empty() {
        format!("mount {} on {}", source.display(), target.display())
    } else {
        format!(
            "mount {} on {} with {fstype} options {data_text:?} (an option {fstype} does not know is refused)",
            source.display(),
            target.display()
        )
    };
    check(rc, &what)
}

/// Bind-mount `source` on `target`, read-only when asked (bind, then remount ro).
pub fn bind(source: &Pinned, target: &Pinned, read_only: bool) -> std::io::Result<()> {
    let src = cstr(&source.target())?;
    let tgt = cstr(&target.target())?;
    let (source, target) = (source.path(), target.path());
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
        // The pinned fd is the directory under the new bind; the remount
        // must name the bind itself, so reopen the path (now the bind's root).
        let top = match pin(target) {
            Ok(top) => top,
            Err(e) => {
                detach(&cstr(target)?);
                return Err(e);
            }
        };
        let top_c = cstr(&top.target())?;
        let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY;
        // SAFETY: as above.
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                top_c.as_ptr(),
                std::ptr::null(),
                flags,
                std::ptr::null(),
            )
        };
        if let Err(e) = check(rc, &format!("remount {} read-only", target.display())) {
            detach(&top_c);
            return Err(e);
        }
    }
    Ok(())
}

/// Never leave a writable bind where a read-only one was asked for.
fn detach(target: &CString) {
    // SAFETY: valid C string.
    unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
}

/// Unmount `target`, every mount stacked there; not mounted is fine.
pub fn unmount(target: &Path) -> std::io::Result<()> {
    let tgt = cstr(target)?;
    // Bounded: a target that stays mounted after this many is an error.
    for _ in 0..32 {
        if mount_at(target)?.is_none() {
            return Ok(());
        }
        // SAFETY: valid C string.
        // UMOUNT_NOFOLLOW: a symlink put at `target` is not followed out.
        let rc = unsafe { libc::umount2(tgt.as_ptr(), libc::UMOUNT_NOFOLLOW) };
        check(rc, &format!("unmount {}", target.display()))?;
    }
    Err(std::io::Error::other(format!(
        "{} is still mounted after 32 unmounts",
        target.display()
    )))
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
        "ext4" => run_tool("mkfs.ext4", &["-q", "-F", "-E", "nodiscard", &dev]),
        other => Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("cannot make a {other:?} filesystem: ext4 and xfs are supported"),
        )),
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
    fn escapes_above_one_byte_stay_as_written() {
        let text = "36 35 98:0 / /a\\777b\\400\\1 rw - ext4 /dev/x rw\n";
        assert_eq!(
            parse_mountinfo(text)[0].target,
            PathBuf::from("/a\\777b\\400\\1")
        );
        assert_eq!(unescape("\\377"), String::from_utf8_lossy(&[0xff]));
        assert_eq!(unescape("tab\\011end"), "tab\tend");
    }

    #[test]
    fn vfs_options_become_flags_and_the_rest_goes_to_the_filesystem() {
        let opts = |o: &[&str]| split_options(&o.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        assert_eq!(
            opts(&[
                "noatime",
                "nodiratime,discard",
                "errors=remount-ro",
                "nosuid"
            ]),
            (
                libc::MS_NOATIME | libc::MS_NODIRATIME | libc::MS_NOSUID,
                "discard,errors=remount-ro".to_string()
            )
        );
        assert_eq!(opts(&["ro", "rw"]), (0, String::new()));
        assert_eq!(opts(&["relatime", "noatime"]).0, libc::MS_NOATIME);
        assert_eq!(opts(&["", "defaults"]), (0, String::new()));
    }

    #[test]
    fn mkfs_refuses_a_filesystem_it_does_not_make() {
        let e = mkfs(Path::new("/dev/null"), "btrfs").unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidInput);
        assert!(e.to_string().contains("ext4 and xfs"), "{e}");
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
    fn mountinfo_gives_each_mount_its_device_number() {
        let text = "36 35 253:3 / /var/lib/kubelet/st rw - xfs /dev/mapper/dmraid-v rw\n\
                    37 36 0:5 /mapper/dmraid-b /var/lib/kubelet/pods/p/blk rw - devtmpfs udev rw\n";
        let m = parse_mountinfo(text);
        assert_eq!((m[0].devno.as_str(), m[1].devno.as_str()), ("253:3", "0:5"));
    }

    #[test]
    fn a_character_device_or_directory_has_no_block_device_number() {
        assert!(devno_of(Path::new("/dev/null")).is_err());
        assert!(devno_of(Path::new("/")).is_err());
    }

    #[test]
    fn pinning_a_real_directory_gives_a_proc_link_to_it() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().canonicalize().unwrap().join("st");
        std::fs::create_dir(&dir).unwrap();
        let p = pin(&dir).unwrap();
        assert_eq!(std::fs::read_link(p.target()).unwrap(), dir);
    }

    #[test]
    fn pinning_refuses_a_symlink_or_a_path_through_one() {
        let d = tempfile::tempdir().unwrap();
        let base = d.path().canonicalize().unwrap();
        std::fs::create_dir(base.join("real")).unwrap();
        std::os::unix::fs::symlink(base.join("real"), base.join("link")).unwrap();
        // The final component is a symlink.
        assert!(pin(&base.join("link")).is_err());
        // A middle component became a symlink after the path was resolved.
        std::fs::create_dir(base.join("real/v")).unwrap();
        let e = pin(&base.join("link/v")).unwrap_err();
        assert!(e.to_string().contains("since it was checked"), "{e}");
    }

    #[test]
    fn unmounting_what_is_not_mounted_is_fine() {
        let d = tempfile::tempdir().unwrap();
        unmount(d.path()).unwrap();
    }
}
