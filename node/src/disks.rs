//! Block devices: finding the disks an operator named, their size and
//! device number, and opening them for label I/O. A real implementation on
//! /dev and an in-memory fake for the engine's unit tests.

use crate::labels::SyncIo;
use std::collections::BTreeMap;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// A disk opened for reading and writing its label and metadata extents.
pub trait BlockIo: Read + Write + Seek + SyncIo + Send {}
impl<T: Read + Write + Seek + SyncIo + Send> BlockIo for T {}

impl SyncIo for Box<dyn BlockIo> {
    fn sync_data(&mut self) -> std::io::Result<()> {
        (**self).sync_data()
    }
}

/// A disk the operator's globs matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskInfo {
    /// The path as the operator's glob matched it.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// `major:minor`, how tables name it.
    pub devno: String,
    /// The kernel's `diskseq`: a new number each time a disk appears, so a
    /// disk hot-added under a removed one's name and number is told apart
    /// (0 where the kernel has none, e.g. a regular file).
    pub seq: u64,
}

/// Every touch of a block device the engine makes.
pub trait Disks: Send + Sync {
    /// Disks matching the operator's globs (deduplicated by device number).
    fn discover(&self, globs: &[String]) -> std::io::Result<Vec<DiskInfo>>;
    /// Open a disk for label and metadata I/O.
    fn open(&self, path: &Path) -> std::io::Result<Box<dyn BlockIo>>;
    /// Whether this very disk is still there: its path exists and holds the
    /// same device instance (a hot-removed disk vanishes; a disk added later
    /// may take its name and number, but not its `seq`).
    fn present(&self, disk: &DiskInfo) -> bool;
    /// Hold other processes off this disk's label until the lock is
    /// dropped (none by default: only real devices are shared).
    fn lock_label(&self, path: &Path) -> std::io::Result<crate::lock::DiskLock> {
        let _ = path;
        Ok(crate::lock::DiskLock::none())
    }
}

/// Real block devices (regular files work too, for tinkering).
pub struct RealDisks;

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

fn devno_of(path: &Path) -> std::io::Result<String> {
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

impl Disks for RealDisks {
    fn discover(&self, globs: &[String]) -> std::io::Result<Vec<DiskInfo>> {
        let mut out: Vec<DiskInfo> = Vec::new();
        for pattern in globs {
            let paths = glob::glob(pattern).map_err(|e| {
                std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    format!("disk glob {pattern:?}: {e}"),
                )
            })?;
            for path in paths.flatten() {
                let f = std::fs::File::open(&path)?;
                let devno = devno_of(&path)?;
                if out.iter().any(|d| d.devno == devno && devno != "0:0") {
                    continue;
                }
                out.push(DiskInfo {
                    size: size_of(&f)?,
                    seq: diskseq_of(&devno),
                    devno,
                    path,
                });
            }
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    fn open(&self, path: &Path) -> std::io::Result<Box<dyn BlockIo>> {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?;
        // Reads must see the disk, not this host's cache of it: the kernel
        // writes dm-raid metadata through the dm devices, past this
        // device's page cache, so drop the clean pages an earlier open left
        // (everything written here is synced, so nothing dirty is lost).
        use std::os::fd::AsRawFd;
        // SAFETY: the descriptor is open for the whole call; posix_fadvise
        // touches no memory of ours.
        let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc));
        }
        Ok(Box::new(f))
    }

    fn present(&self, disk: &DiskInfo) -> bool {
        devno_of(&disk.path).is_ok_and(|d| d == disk.devno) && diskseq_of(&disk.devno) == disk.seq
    }

    fn lock_label(&self, path: &Path) -> std::io::Result<crate::lock::DiskLock> {
        crate::lock::disk(path, std::time::Duration::from_secs(10))
    }
}

/// In-memory disks for unit tests: shared buffers, hot-remove and add.
#[derive(Clone, Default)]
pub struct FakeDisks {
    disks: Arc<Mutex<BTreeMap<PathBuf, (u64, FakeDisk)>>>,
    next_seq: Arc<std::sync::atomic::AtomicU64>,
}

type FakeDisk = Arc<Mutex<Vec<u8>>>;

struct FakeHandle {
    data: Arc<Mutex<Vec<u8>>>,
    pos: u64,
}

impl Read for FakeHandle {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let d = self.data.lock().unwrap_or_else(|e| e.into_inner());
        let start = (self.pos as usize).min(d.len());
        let n = buf.len().min(d.len() - start);
        buf[..n].copy_from_slice(&d[start..start + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for FakeHandle {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut d = self.data.lock().unwrap_or_else(|e| e.into_inner());
        let start = self.pos as usize;
        if start + buf.len() > d.len() {
            return Err(std::io::Error::other("write past the end of the fake disk"));
        }
        d[start..start + buf.len()].copy_from_slice(buf);
        self.pos += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Seek for FakeHandle {
    fn seek(&mut self, p: std::io::SeekFrom) -> std::io::Result<u64> {
        let len = self.data.lock().unwrap_or_else(|e| e.into_inner()).len() as i64;
        let to = match p {
            std::io::SeekFrom::Start(s) => s as i64,
            std::io::SeekFrom::End(o) => len + o,
            std::io::SeekFrom::Current(o) => self.pos as i64 + o,
        };
        if to < 0 {
            return Err(std::io::Error::other("seek before start"));
        }
        self.pos = to as u64;
        Ok(self.pos)
    }
}

impl SyncIo for FakeHandle {
    fn sync_data(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl FakeDisks {
    /// No disks.
    pub fn new() -> Self {
        Self::default()
    }

    /// Plug in a zeroed disk of `size` bytes at `path`.
    pub fn add(&self, path: &str, size: usize) {
        self.plug(path, vec![0; size]);
    }

    /// Plug in a disk holding `bytes` at `path` (a disk that comes back),
    /// with a new sequence number as the kernel gives it.
    pub fn plug(&self, path: &str, bytes: Vec<u8>) {
        let seq = self
            .next_seq
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        self.disks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(PathBuf::from(path), (seq, Arc::new(Mutex::new(bytes))));
    }

    /// Unplug a disk.
    pub fn remove(&self, path: &str) {
        self.disks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(Path::new(path));
    }

    /// A copy of a disk's bytes.
    pub fn bytes(&self, path: &str) -> Vec<u8> {
        self.disks.lock().unwrap_or_else(|e| e.into_inner())[Path::new(path)]
            .1
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Overwrite bytes of a disk at `offset`.
    pub fn poke(&self, path: &str, offset: usize, data: &[u8]) {
        let disks = self.disks.lock().unwrap_or_else(|e| e.into_inner());
        let mut d = disks[Path::new(path)]
            .1
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        d[offset..offset + data.len()].copy_from_slice(data);
    }
}

fn fake_devno(path: &Path) -> String {
    // Stable and distinct: 8:<index> by name order is enough for tests.
    let n: u32 = path.to_string_lossy().bytes().map(u32::from).sum();
    format!("8:{n}")
}

impl Disks for FakeDisks {
    fn discover(&self, globs: &[String]) -> std::io::Result<Vec<DiskInfo>> {
        let disks = self.disks.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for (path, (seq, data)) in disks.iter() {
            let matched = globs.iter().any(|g| {
                glob::Pattern::new(g)
                    .map(|p| p.matches_path(path))
                    .unwrap_or(false)
            });
            if matched {
                out.push(DiskInfo {
                    path: path.clone(),
                    size: data.lock().unwrap_or_else(|e| e.into_inner()).len() as u64,
                    devno: fake_devno(path),
                    seq: *seq,
                });
            }
        }
        Ok(out)
    }

    fn open(&self, path: &Path) -> std::io::Result<Box<dyn BlockIo>> {
        let disks = self.disks.lock().unwrap_or_else(|e| e.into_inner());
        let data = disks.get(path).map(|d| d.1.clone()).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!("{} is gone", path.display()),
            )
        })?;
        Ok(Box::new(FakeHandle { data, pos: 0 }))
    }

    fn present(&self, disk: &DiskInfo) -> bool {
        self.disks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&disk.path)
            .is_some_and(|(seq, _)| *seq == disk.seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_discover_expands_globs_over_files() {
        let dir = tempfile::tempdir().unwrap();
        for n in ["a.img", "b.img", "c.txt"] {
            let f = std::fs::File::create(dir.path().join(n)).unwrap();
            f.set_len(1 << 20).unwrap();
        }
        let found = RealDisks
            .discover(&[format!("{}/*.img", dir.path().display())])
            .unwrap();
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].size, 1 << 20);
        let mut h = RealDisks.open(&found[0].path).unwrap();
        h.write_all(b"hello").unwrap();
        h.sync_data().unwrap();
        assert_eq!(&std::fs::read(&found[0].path).unwrap()[..5], b"hello");
        assert!(
            RealDisks.discover(&["[".into()]).is_err(),
            "a bad glob is an error"
        );
    }

    #[test]
    fn fake_disks_behave_like_files() {
        let f = FakeDisks::new();
        f.add("/dev/vdb", 4096);
        f.add("/dev/vdc", 4096);
        let found = f.discover(&["/dev/vd[b-z]".into()]).unwrap();
        assert_eq!(found.len(), 2);
        assert!(found.iter().all(|d| f.present(d)));
        let mut h = f.open(Path::new("/dev/vdb")).unwrap();
        h.seek(std::io::SeekFrom::Start(100)).unwrap();
        h.write_all(b"xy").unwrap();
        assert_eq!(&f.bytes("/dev/vdb")[100..102], b"xy");
        f.remove("/dev/vdb");
        assert!(!f.present(&found[0]));
        assert!(f.open(Path::new("/dev/vdb")).is_err());
        // Another disk under the same name is not the one that left.
        f.add("/dev/vdb", 4096);
        assert!(!f.present(&found[0]));
    }
}
