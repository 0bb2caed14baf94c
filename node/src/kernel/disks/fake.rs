//! `FakeDisks`: the in-memory fake, for unit tests only.

use super::*;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// In-memory disks for unit tests: shared buffers, hot-remove and add.
#[derive(Clone, Default)]
pub struct FakeDisks {
    disks: Arc<Mutex<BTreeMap<PathBuf, (u64, FakeDisk)>>>,
    next_seq: Arc<std::sync::atomic::AtomicU64>,
    /// Disks another user holds (an exclusive open fails), and devices the
    /// fake's discovery reports as skipped, with the reason.
    busy: Arc<Mutex<BTreeMap<PathBuf, String>>>,
    /// Disks pulled at their next open: present when asked, gone when
    /// opened (a hot-remove between a presence check and the open).
    vanishing: Arc<Mutex<std::collections::BTreeSet<PathBuf>>>,
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
        // Compared as slices (memcmp even in a debug build): a byte-wise
        // `any` over a 64 MiB fake disk was three quarters of the unit
        // tests' time.
        const ZERO: [u8; BLOCK] = [0; BLOCK];
        let tmp = tempfile::tempfile()?;
        let bytes = self.data.lock().unwrap_or_else(|e| e.into_inner()).clone();
        tmp.set_len(bytes.len() as u64)?;
        for (i, block) in bytes.chunks(BLOCK).enumerate() {
            if block != &ZERO[..block.len()] {
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

    /// Unplug a disk the moment it is next opened: it reads as present
    /// until then, and that open finds it gone.
    pub fn vanish_on_open(&self, path: &str) {
        self.vanishing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(PathBuf::from(path));
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
    // Stable, and distinct for the paths the tests use (the sum of the
    // path's bytes: two anagrams would share one).
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
        let mut disks = self.disks.lock().unwrap_or_else(|e| e.into_inner());
        if self
            .vanishing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(path)
        {
            disks.remove(path);
        }
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
