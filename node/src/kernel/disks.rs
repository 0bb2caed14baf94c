//! Block devices: finding the disks an operator named, deciding which of
//! them the driver may touch, their size and device number, and opening
//! them for label I/O. A real implementation on /dev and sysfs and an
//! in-memory fake for the engine's unit tests.
//!
//! The driver claims whole disks only: a partition only when the operator
//! names it exactly (never through a glob), and never a device that is a
//! dm/md/loop/zram/ram device, read-only, mounted (itself or a partition of
//! it), used as swap, or held by another device (dm, md, bcache: sysfs
//! `holders`). Each device a glob matched and the driver leaves alone is
//! reported with the reason, and one device that cannot be read never stops
//! the others from being claimed.

use crate::engine::labels::SyncIo;
use crate::kernel::signature::{self, Found};
use std::collections::BTreeMap;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// A disk opened for reading and writing its label and metadata extents.
pub trait BlockIo: Read + Write + Seek + SyncIo + Send {
    /// Every signature libblkid finds on the device; with `wipe`, erase
    /// them (like `wipefs -a`) and return what was erased.
    fn signatures(&mut self, wipe: bool) -> std::io::Result<Vec<Found>>;
    /// Make `len` bytes at `offset` read as zeroes, durably.
    fn zero_range(&mut self, offset: u64, len: u64) -> std::io::Result<()> {
        self.write_zeroes(offset, len)?;
        self.sync_data()
    }
    /// Make `len` bytes at `offset` read as zeroes; durable at the next sync.
    fn write_zeroes(&mut self, offset: u64, len: u64) -> std::io::Result<()>;
}

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

impl SyncIo for Box<dyn BlockIo> {
    fn sync_data(&mut self) -> std::io::Result<()> {
        (**self).sync_data()
    }
}

/// A disk the operator's globs matched and the driver may claim.
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
    /// The failure domain: the whole disk's `major:minor` (the device's own
    /// for a whole disk), so two partitions of one disk never hold two legs.
    pub domain: String,
}

/// A device a glob matched that the driver leaves alone, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    /// The path as the glob matched it.
    pub path: PathBuf,
    /// Why, in an operator's words.
    pub reason: String,
}

/// What the operator's globs matched.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Discovery {
    /// Devices the driver may claim (deduplicated by device number).
    pub disks: Vec<DiskInfo>,
    /// Devices it leaves alone, each with its reason.
    pub skipped: Vec<Skipped>,
}

/// Every touch of a block device the engine makes.
pub trait Disks: Send + Sync {
    /// The devices the operator's globs match, sorted into those the
    /// driver may claim and those it must leave alone. An error only for
    /// a glob that does not parse.
    fn discover(&self, globs: &[String]) -> std::io::Result<Discovery>;
    /// Open a disk for label and metadata I/O.
    fn open(&self, path: &Path) -> std::io::Result<Box<dyn BlockIo>>;
    /// Open a disk nobody else has open exclusively, and hold it so while
    /// the handle lives (O_EXCL on a block device: the kernel refuses it,
    /// EBUSY, while the disk is mounted, a dm or md device is built on it,
    /// or another process claimed it). For claiming a new disk.
    fn open_exclusive(&self, path: &Path) -> std::io::Result<Box<dyn BlockIo>>;
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

/// What sysfs and the mount tables say of one block device: the facts the
/// claim decision ([`refusal`]) rests on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceFacts {
    /// Kernel name (`vda`, `nvme0n1p1`, `dm-3`).
    pub name: String,
    /// The whole disk's kernel name when this is a partition.
    pub partition_of: Option<String>,
    /// The whole disk's `major:minor` (this device's for a whole disk).
    pub domain: String,
    /// The kernel marks it read-only.
    pub read_only: bool,
    /// Devices built on it or on its partitions: (kernel name, dm name).
    pub holders: Vec<(String, Option<String>)>,
    /// Its partitions' kernel names.
    pub partitions: Vec<String>,
    /// Where it or one of its partitions is mounted or used as swap:
    /// (kernel name, mount point or "swap").
    pub in_use: Vec<(String, String)>,
    /// Size in bytes.
    pub size: u64,
}

/// Kernel name prefixes of devices that are not disks: the driver builds
/// on disks, never on another layer of the block stack.
const VIRTUAL: &[(&str, &str)] = &[
    ("dm-", "a device-mapper device"),
    ("md", "an md RAID device"),
    ("loop", "a loop device"),
    ("zram", "a zram device"),
    ("ram", "a RAM disk"),
    ("nbd", "a network block device"),
];

/// Why the driver must not claim this device, or None when it may. `exact`:
/// the operator named this path, no glob.
pub fn refusal(f: &DeviceFacts, exact: bool) -> Option<String> {
    if let Some((_, what)) = VIRTUAL.iter().find(|(p, _)| f.name.starts_with(p)) {
        return Some(format!("{} is {what}, not a disk", f.name));
    }
    if let Some((dev, at)) = f.in_use.first() {
        return Some(if *dev == f.name {
            format!("{} is in use ({at})", f.name)
        } else {
            format!("its partition {dev} is in use ({at})")
        });
    }
    let foreign: Vec<String> = f
        .holders
        .iter()
        .filter(|(_, dm)| !dm.as_deref().is_some_and(|n| n.starts_with("dmraid-")))
        .map(|(k, dm)| match dm {
            Some(n) => format!("{k} ({n})"),
            None => k.clone(),
        })
        .collect();
    if !foreign.is_empty() {
        return Some(format!(
            "held by {}: another device is built on it",
            foreign.join(", ")
        ));
    }
    if f.read_only {
        return Some(format!("{} is read-only", f.name));
    }
    if let Some(disk) = &f.partition_of {
        if !exact {
            return Some(format!(
                "a partition of {disk} matched by a glob: the driver claims whole disks; name a partition exactly to claim it"
            ));
        }
    }
    if !f.partitions.is_empty() {
        return Some(format!(
            "has partitions ({}): a partitioned disk belongs to something else",
            f.partitions.join(", ")
        ));
    }
    None
}

fn read_trim(p: &Path) -> Option<String> {
    std::fs::read_to_string(p)
        .ok()
        .map(|s| s.trim().to_string())
}

/// Mounted devices and swap: `major:minor` -> where.
fn uses() -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") {
        for line in text.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            if f.len() > 4 {
                out.entry(f[2].to_string())
                    .or_insert_with(|| format!("mounted at {}", f[4]));
            }
        }
    }
    if let Ok(text) = std::fs::read_to_string("/proc/swaps") {
        for line in text.lines().skip(1) {
            if let Some(dev) = line.split_whitespace().next() {
                if let Ok(d) = devno_of(Path::new(dev)) {
                    out.insert(d, "swap".into());
                }
            }
        }
    }
    out
}

fn holders_of(sys: &Path) -> Vec<(String, Option<String>)> {
    let Ok(dir) = std::fs::read_dir(sys.join("holders")) else {
        return Vec::new();
    };
    dir.flatten()
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let dm = read_trim(&Path::new("/sys/class/block").join(&name).join("dm/name"));
            (name, dm)
        })
        .collect()
}

/// The facts of the block device with number `devno`, from sysfs.
fn facts(devno: &str, uses: &BTreeMap<String, String>) -> std::io::Result<DeviceFacts> {
    let sys = std::fs::canonicalize(format!("/sys/dev/block/{devno}"))?;
    let name = sys
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let is_partition = sys.join("partition").exists();
    let whole = if is_partition {
        sys.parent().map(Path::to_path_buf).unwrap_or(sys.clone())
    } else {
        sys.clone()
    };
    let mut f = DeviceFacts {
        partition_of: is_partition.then(|| {
            whole
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        }),
        domain: read_trim(&whole.join("dev")).unwrap_or_else(|| devno.to_string()),
        read_only: read_trim(&sys.join("ro")).as_deref() == Some("1"),
        holders: holders_of(&sys),
        size: read_trim(&sys.join("size"))
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
            * 512,
        name: name.clone(),
        ..DeviceFacts::default()
    };
    if let Some(at) = uses.get(devno) {
        f.in_use.push((name.clone(), at.clone()));
    }
    if !is_partition {
        for e in std::fs::read_dir(&sys)?.flatten() {
            let p = e.path();
            if !p.join("partition").exists() {
                continue;
            }
            let part = e.file_name().to_string_lossy().into_owned();
            if let Some(at) = read_trim(&p.join("dev")).and_then(|d| uses.get(&d).cloned()) {
                f.in_use.push((part.clone(), at));
            }
            f.holders.extend(holders_of(&p));
            f.partitions.push(part);
        }
        f.partitions.sort();
    }
    Ok(f)
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

#[cfg(test)]
pub use fake::FakeDisks;

/// The in-memory fake, for unit tests only.
#[cfg(test)]
mod fake {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// In-memory disks for unit tests: shared buffers, hot-remove and add.
    #[derive(Clone, Default)]
    pub struct FakeDisks {
        disks: Arc<Mutex<BTreeMap<PathBuf, (u64, FakeDisk)>>>,
        next_seq: Arc<std::sync::atomic::AtomicU64>,
        /// Disks another user holds (an exclusive open fails), and devices the
        /// fake's discovery reports as skipped, with the reason.
        busy: Arc<Mutex<BTreeMap<PathBuf, String>>>,
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

    impl BlockIo for FakeHandle {
        /// The real libblkid over a sparse copy of the fake disk's bytes (a
        /// wipe is copied back), so the claim decisions are tested on what
        /// libblkid really reports.
        fn signatures(&mut self, wipe: bool) -> std::io::Result<Vec<Found>> {
            use std::os::unix::fs::FileExt;
            const BLOCK: usize = 4096;
            let tmp = tempfile::tempfile()?;
            let bytes = self.data.lock().unwrap_or_else(|e| e.into_inner()).clone();
            tmp.set_len(bytes.len() as u64)?;
            for (i, block) in bytes.chunks(BLOCK).enumerate() {
                if block.iter().any(|b| *b != 0) {
                    tmp.write_all_at(block, (i * BLOCK) as u64)?;
                }
            }
            let mut file = tmp;
            let found = <std::fs::File as BlockIo>::signatures(&mut file, wipe)?;
            if wipe {
                let mut after = vec![0u8; bytes.len()];
                file.read_exact_at(&mut after, 0)?;
                *self.data.lock().unwrap_or_else(|e| e.into_inner()) = after;
            }
            Ok(found)
        }

        fn write_zeroes(&mut self, offset: u64, len: u64) -> std::io::Result<()> {
            let mut d = self.data.lock().unwrap_or_else(|e| e.into_inner());
            let end = offset
                .checked_add(len)
                .filter(|e| *e <= d.len() as u64)
                .ok_or_else(|| std::io::Error::other("zeroing past the end of the fake disk"))?;
            d[offset as usize..end as usize].fill(0);
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

        /// Another user holds this disk open exclusively (mounted, a dm
        /// device on it): the fake's discovery skips it with `reason` and an
        /// exclusive open fails.
        pub fn hold(&self, path: &str, reason: &str) {
            self.busy
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(PathBuf::from(path), reason.to_string());
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
        fn discover(&self, globs: &[String]) -> std::io::Result<Discovery> {
            let disks = self.disks.lock().unwrap_or_else(|e| e.into_inner());
            let busy = self.busy.lock().unwrap_or_else(|e| e.into_inner());
            let mut out = Discovery::default();
            for (path, (seq, data)) in disks.iter() {
                let matched = globs.iter().any(|g| {
                    glob::Pattern::new(g)
                        .map(|p| p.matches_path(path))
                        .unwrap_or(false)
                });
                if !matched {
                    continue;
                }
                if let Some(reason) = busy.get(path) {
                    out.skipped.push(Skipped {
                        path: path.clone(),
                        reason: reason.clone(),
                    });
                    continue;
                }
                out.disks.push(DiskInfo {
                    path: path.clone(),
                    size: data.lock().unwrap_or_else(|e| e.into_inner()).len() as u64,
                    devno: fake_devno(path),
                    seq: *seq,
                    domain: fake_devno(path),
                });
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

        fn open_exclusive(&self, path: &Path) -> std::io::Result<Box<dyn BlockIo>> {
            if let Some(reason) = self
                .busy
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(path)
            {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::ResourceBusy,
                    format!("in use: {reason}"),
                ));
            }
            self.open(path)
        }

        fn present(&self, disk: &DiskInfo) -> bool {
            self.disks
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&disk.path)
                .is_some_and(|(seq, _)| *seq == disk.seq)
        }
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
            .unwrap()
            .disks;
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
        let found = f.discover(&["/dev/vd[b-z]".into()]).unwrap().disks;
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
