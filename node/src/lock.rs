//! One dmraid-csi process at a time acts on a machine's disks: the driver
//! and the `engine` command take an exclusive `flock` on `lock` in the
//! state directory (both default to /var/lib/dmraid-csi; `DMRAID_LOCK`
//! names another file), so the command cannot rewrite labels under a
//! running driver.
//!
//! The state-directory lock does not stop a second process with another
//! state directory over the same disks, so each label rewrite also holds
//! [`DiskLock`] on the disk itself for its read-compare-write.

use std::io::{Read, Seek, Write};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

/// Held for the life of the process.
pub struct ProcessLock {
    _file: std::fs::File,
}

/// The lock file's path for a state directory.
pub fn path(state_dir: &Path) -> PathBuf {
    std::env::var_os("DMRAID_LOCK")
        .map(PathBuf::from)
        .unwrap_or_else(|| state_dir.join("lock"))
}

/// Take the lock at `path` without waiting; the error names the holder.
pub fn take(path: &Path) -> Result<ProcessLock, String> {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| format!("cannot open the lock file {}: {e}", path.display()))?;
    // SAFETY: flock on a file descriptor we own.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc != 0 {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        return Err(format!(
            "another dmraid-csi process (pid {}) is acting on this machine's disks (lock {}); stop it first, or use the running driver's commands (`dmraid-csi volumes`, `dmraid-csi check`)",
            holder.trim(),
            path.display()
        ));
    }
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = write!(file, "{}", std::process::id());
    Ok(ProcessLock { _file: file })
}

/// An exclusive advisory lock on one disk, held while its label is read,
/// compared and rewritten. Released on drop.
///
/// It is a `flock` on the device node's inode: every process that opens
/// the same node (or a symlink to it, as /dev/disk/by-id/... are) sees it,
/// but a process reaching the disk through another node for the same
/// device (a container's own `mknod`, another machine on a shared SAN)
/// does not; there only the label's compare-and-swap guards the label.
pub struct DiskLock {
    _file: Option<std::fs::File>,
}

impl DiskLock {
    /// No lock, for disks no other process can open (in-memory ones).
    pub fn none() -> Self {
        DiskLock { _file: None }
    }
}

/// Lock the disk at `path`, waiting up to `wait` while another process
/// holds it (a label rewrite takes milliseconds).
pub fn disk(path: &Path, wait: std::time::Duration) -> std::io::Result<DiskLock> {
    // Read-only: the lock needs no write access, and closing a descriptor
    // that was never writable makes udev re-probe nothing.
    let file = std::fs::File::open(path)?;
    let deadline = std::time::Instant::now() + wait;
    loop {
        // SAFETY: flock on a file descriptor we own.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(DiskLock { _file: Some(file) });
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EWOULDBLOCK) => {}
            _ => return Err(e),
        }
        if std::time::Instant::now() >= deadline {
            return Err(std::io::Error::new(
                std::io::ErrorKind::WouldBlock,
                format!(
                    "another process has held the label lock on {} for {wait:?}; is a second dmraid-csi using this disk?",
                    path.display()
                ),
            ));
        }
        // flock has no timed wait; poll until the holder lets go or the deadline passes.
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_is_refused_with_the_first_ones_pid() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("lock");
        let first = take(&p).unwrap();
        let err = take(&p).err().expect("second lock must fail");
        assert!(
            err.contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        drop(first);
        take(&p).expect("free again once dropped");
    }

    #[test]
    fn a_disk_lock_keeps_a_second_opener_out_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("disk.img");
        std::fs::write(&p, [0u8; 512]).unwrap();
        let first = disk(&p, std::time::Duration::ZERO).unwrap();
        // flock conflicts between two opens of one inode, in one process as in two.
        let err = disk(&p, std::time::Duration::from_millis(20))
            .err()
            .expect("second lock must wait and fail");
        assert_eq!(err.kind(), std::io::ErrorKind::WouldBlock);
        assert!(err.to_string().contains("second dmraid-csi"), "{err}");
        drop(first);
        disk(&p, std::time::Duration::ZERO).expect("free again once dropped");
    }
}
