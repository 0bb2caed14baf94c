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

mod eligibility;
#[cfg(test)]
mod fake;
mod real;

pub use eligibility::{refusal, DeviceFacts};
#[cfg(test)]
pub use fake::FakeDisks;
pub use real::{devno_of, is_exact, RealDisks};

use crate::engine::labels::SyncIo;
use crate::kernel::signature::Found;
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

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
    /// Forget what was read of the disks' presence, so the next
    /// [`Disks::present`] reads it again ([`Disks::discover`] does this
    /// too). Nothing to forget by default.
    fn forget_presence(&self) {}
    /// Hold other processes off this disk's label until the lock is
    /// dropped (none by default: only real devices are shared).
    fn lock_label(&self, path: &Path) -> std::io::Result<crate::lock::DiskLock> {
        let _ = path;
        Ok(crate::lock::DiskLock::none())
    }
}

#[cfg(test)]
mod tests;
