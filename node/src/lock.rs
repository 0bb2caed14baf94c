//! One dmraid-csi process at a time acts on a machine's disks: the driver
//! and the `engine` command take an exclusive `flock` on `lock` in the
//! state directory (both default to /var/lib/dmraid-csi; `DMRAID_LOCK`
//! names another file), so the command cannot rewrite labels under a
//! running driver.

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
}
