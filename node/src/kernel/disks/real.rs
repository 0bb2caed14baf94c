//! `RealDisks`: block devices through /dev, sysfs and ioctls (regular files
//! work too, for tinkering), the cache of what their presence was last
//! read as, and `BlockIo` on an open file (BLKZEROOUT, or a punched hole).

use super::eligibility::{facts, refusal, uses};
use super::{BlockIo, Discovery, DiskInfo, Disks, Skipped};
use crate::kernel::signature::{self, Found};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

impl BlockIo for std::fs::File {
    fn signatures(&mut self, wipe: bool) -> std::io::Result<Vec<Found>> {
        if wipe {
            signature::wipe(self)
        } else {
            signature::probe(self)
        }
    }

    /// BLKZEROOUT on a block device: the kernel sends WRITE ZEROES, which
    /// a device may serve by unmapping only where it guarantees zeroes
    /// afterwards, and writes zeroes itself where the device has no such
    /// command. (A plain BLKDISCARD guarantees nothing, and since Linux
    /// 4.12 no device reports `discard_zeroes_data`, so BLKZEROOUT is the
    /// one call that is both fast where it can be and always correct.) On
    /// an image file, a punched hole.
    fn write_zeroes(&mut self, offset: u64, len: u64) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::FileTypeExt;
        if len == 0 {
            return Ok(());
        }
        let fd = self.as_raw_fd();
        if self.metadata()?.file_type().is_block_device() {
            // BLKZEROOUT = _IO(0x12, 127), argument: u64 [start, len] in bytes.
            const BLKZEROOUT: libc::c_ulong = 0x127f;
            let range: [u64; 2] = [offset, len];
            // SAFETY: the fd is open; the kernel reads two u64 from `range`.
            let rc = unsafe { libc::ioctl(fd, BLKZEROOUT as _, range.as_ptr()) };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
        } else {
            // SAFETY: plain syscall on an open fd.
            let rc = unsafe {
                libc::fallocate(
                    fd,
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    offset as libc::off_t,
                    len as libc::off_t,
                )
            };
            if rc != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

/// Real block devices (regular files work too, for tinkering).
pub struct RealDisks;

/// How long a disk's presence, once read, stands: a health round asks it
/// for every disk of every volume, several times (tens of thousands of
/// sysfs reads a round at 500 volumes on 24 disks). A pulled disk's uevent
/// wakes the round 200 ms later, past this, and every claim pass (which
/// lists the disks first) forgets what was read, so a disk that just
/// appeared is never taken for absent (`--test rebuild` caught that).
const PRESENCE_FRESH: std::time::Duration = std::time::Duration::from_millis(100);

/// Per path: when it was read, and the `major:minor` and `diskseq` then.
#[allow(clippy::type_complexity)]
static PRESENCE: Mutex<BTreeMap<PathBuf, (std::time::Instant, Option<(String, u64)>)>> =
    Mutex::new(BTreeMap::new());

fn size_of(f: &std::fs::File) -> std::io::Result<u64> {
    use std::os::unix::fs::FileTypeExt;
    use std::os::unix::io::AsRawFd;
    let meta = f.metadata()?;
    if !meta.file_type().is_block_device() {
        return Ok(meta.len());
    }
    let mut size: u64 = 0;
    // BLKGETSIZE64 = _IOR(0x12, 114, size_t)
    const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
    // SAFETY: the fd is open and `size` is a valid u64 the ioctl writes into.
    let rc = unsafe { libc::ioctl(f.as_raw_fd(), BLKGETSIZE64 as _, &mut size as *mut u64) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(size)
}

/// A block device's `major:minor`.
pub fn devno_of(path: &Path) -> std::io::Result<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path)?;
    let rdev = meta.rdev();
    Ok(format!("{}:{}", libc::major(rdev), libc::minor(rdev)))
}

/// The kernel's disk sequence number of a block device (Linux 5.15+), 0
/// when there is none. Partitions report their disk's.
fn diskseq_of(devno: &str) -> u64 {
    std::fs::read_to_string(format!("/sys/dev/block/{devno}/diskseq"))
        .or_else(|_| std::fs::read_to_string(format!("/sys/dev/block/{devno}/../diskseq")))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// One matched path: a disk the driver may claim, or why not.
fn examine(path: &Path, exact: bool, uses: &BTreeMap<String, String>) -> Result<DiskInfo, String> {
    use std::os::unix::fs::FileTypeExt;
    let meta = std::fs::metadata(path).map_err(|e| format!("cannot be read: {e}"))?;
    if meta.file_type().is_file() {
        // An image file, for tinkering and host tests: no sysfs facts.
        let f = std::fs::File::open(path).map_err(|e| format!("cannot be opened: {e}"))?;
        let devno = "0:0".to_string();
        return Ok(DiskInfo {
            path: path.to_path_buf(),
            size: size_of(&f).map_err(|e| format!("size unknown: {e}"))?,
            seq: 0,
            domain: path.display().to_string(),
            devno,
        });
    }
    if !meta.file_type().is_block_device() {
        return Err("not a block device".into());
    }
    let devno = devno_of(path).map_err(|e| format!("cannot be read: {e}"))?;
    let f = facts(&devno, uses).map_err(|e| format!("not in sysfs: {e}"))?;
    if let Some(why) = refusal(&f, exact) {
        return Err(why);
    }
    Ok(DiskInfo {
        path: path.to_path_buf(),
        size: f.size,
        seq: diskseq_of(&devno),
        domain: f.domain,
        devno,
    })
}

/// Whether a glob pattern names one path exactly (no wildcard).
pub fn is_exact(pattern: &str) -> bool {
    !pattern.contains(['*', '?', '['])
}

impl Disks for RealDisks {
    fn discover(&self, globs: &[String]) -> std::io::Result<Discovery> {
        // A listing of the disks is the moment disks come and go for the
        // engine (every claim pass starts here): what was read of their
        // presence before stands no more.
        PRESENCE.lock().unwrap_or_else(|e| e.into_inner()).clear();
        let uses = uses();
        let mut out = Discovery::default();
        for pattern in globs {
            let paths = glob::glob(pattern).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("disk glob {pattern:?}: {e}"),
                )
            })?;
            let exact = is_exact(pattern);
            for path in paths {
                let path = match path {
                    Ok(p) => p,
                    Err(e) => {
                        out.skipped.push(Skipped {
                            path: e.path().to_path_buf(),
                            reason: format!("cannot be read: {}", e.error()),
                        });
                        continue;
                    }
                };
                if out.skipped.iter().any(|s| s.path == path)
                    || out.disks.iter().any(|d| d.path == path)
                {
                    continue;
                }
                match examine(&path, exact, &uses) {
                    Ok(d) if d.devno != "0:0" && out.disks.iter().any(|o| o.devno == d.devno) => {}
                    Ok(d) => out.disks.push(d),
                    Err(reason) => out.skipped.push(Skipped { path, reason }),
                }
            }
        }
        out.disks.sort_by(|a, b| a.path.cmp(&b.path));
        out.skipped.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    fn open(&self, path: &Path) -> std::io::Result<Box<dyn BlockIo>> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?;
        drop_cache(&f)?;
        Ok(Box::new(f))
    }

    fn open_exclusive(&self, path: &Path) -> std::io::Result<Box<dyn BlockIo>> {
        use std::os::unix::fs::OpenOptionsExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_EXCL)
            .open(path)
            .map_err(|e| {
                if e.raw_os_error() == Some(libc::EBUSY) {
                    std::io::Error::new(
                        e.kind(),
                        "in use: the kernel refuses an exclusive open (mounted, held by a dm or md device, or claimed by another process)",
                    )
                } else {
                    e
                }
            })?;
        drop_cache(&f)?;
        Ok(Box::new(f))
    }

    fn forget_presence(&self) {
        PRESENCE.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    fn present(&self, disk: &DiskInfo) -> bool {
        let now = std::time::Instant::now();
        let mut seen = PRESENCE.lock().unwrap_or_else(|e| e.into_inner());
        let here = match seen.get(&disk.path) {
            Some((at, here)) if now.duration_since(*at) < PRESENCE_FRESH => here.clone(),
            _ => {
                let here = devno_of(&disk.path).ok().map(|d| {
                    let seq = diskseq_of(&d);
                    (d, seq)
                });
                seen.insert(disk.path.clone(), (now, here.clone()));
                here
            }
        };
        here.is_some_and(|(devno, seq)| devno == disk.devno && seq == disk.seq)
    }

    fn lock_label(&self, path: &Path) -> std::io::Result<crate::lock::DiskLock> {
        crate::lock::disk(path, std::time::Duration::from_secs(10))
    }
}

/// Reads must see the disk, not this host's cache of it: the kernel writes
/// dm-raid metadata through the dm devices, past this device's page cache,
/// so drop the clean pages an earlier open left (everything written here
/// is synced, so nothing dirty is lost).
fn drop_cache(f: &std::fs::File) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is open for the whole call; posix_fadvise
    // touches no memory of ours.
    let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc));
    }
    Ok(())
}
