//! The array engine: claimed disks and their labels, volumes made of
//! dm-linear meta/data pairs under a dm-raid target, created, deleted,
//! re-activated from the labels alone at start-up, and deactivated with a
//! clean-shutdown marker so a crash is recognised and repaired (DESIGN
//! "After a crash").
//!
//! Ordering keeps the labels the truth: extents are recorded (incomplete)
//! before devices are made and marked complete after; devices are removed
//! before extents are freed. A crash at any step is finished or rolled back
//! by the next `create_volume` or `activate_all`.

use crate::allocator::{self, DiskSpace};
use crate::disks::{DiskInfo, Disks};
use crate::dm::{self, DeviceMapper, Target};
use crate::error::Error;
use crate::labels::{self, DiskLabel, Extent, ExtentState, Role, SyncIo, VolumeRecord};
use crate::signature;
use dmraid_api::capacity::{leg_for_size, META_EXTENT};
use dmraid_api::superblock;
use dmraid_api::table::{LegDevs, RaidTable};
use dmraid_api::units::{Bytes, Sectors};
use dmraid_api::{RaidSpec, RaidStatus};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

/// Bytes zeroed at the start of a new metadata extent: the dm-raid
/// superblock (4 KiB) and the whole bitmap (≤ 4 KiB + 256 KiB), so a reused
/// extent never looks like an old array.
const META_WIPE: u64 = 512 * 1024;

/// Bytes zeroed at the start of each new data extent (at least one chunk):
/// the array's head, where filesystem signatures live, so a new volume on
/// reused extents never shows the deleted volume's filesystem (NodeStage
/// would mount it instead of making a new one).
const DATA_WIPE: u64 = 1024 * 1024;

/// What the labels record of a volume (the spec blob).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VolumeSpec {
    /// The validated StorageClass spec.
    pub spec: RaidSpec,
    /// Bytes asked for.
    pub requested: u64,
    /// Sectors of each leg's data extent.
    pub leg_data: u64,
    /// The CSI name it was made for, where that is not the id itself
    /// (standalone hashes long or odd names into ids): a request for
    /// another name whose id collides is refused, never handed this volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// One leg of a volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LegInfo {
    /// Position in the array.
    pub leg: u32,
    /// The disk it lives on; `None` when that disk is missing.
    pub disk: Option<PathBuf>,
}

/// A volume as the node sees it.
#[derive(Debug, Clone, Serialize)]
pub struct VolumeInfo {
    /// Volume id.
    pub id: String,
    /// Spec and sizes.
    pub spec: VolumeSpec,
    /// Usable bytes.
    pub capacity: u64,
    /// Where each leg lives.
    pub legs: Vec<LegInfo>,
    /// The array's block device.
    pub device: String,
    /// The kernel's status, when the array is active.
    pub status: Option<RaidStatus>,
    /// After an unclean shutdown: (dirty regions found, regions) being resynced.
    pub unclean: Option<(u64, u64)>,
    /// After an unclean shutdown while degraded (parity): regions that may
    /// be inconsistent until the check that runs once redundancy is back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_hole: Option<u64>,
    /// After an unclean shutdown whose crash fix the driver refused (a
    /// superblock layout or feature it does not know): why. The kernel
    /// started the array as it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crash_fix_refused: Option<String>,
    /// When a leg's disk is missing: disks that are here but whose label
    /// cannot be read, (path, why), since the leg may be on one of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<(String, String)>,
    /// Legs the monitor found slow: (leg, ms per I/O, typical ms per I/O of the others).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub slow_legs: Vec<SlowLeg>,
    /// Seconds left of a running resync, rebuild or scrub, as the monitor
    /// estimates it from the sync rate (None: nothing running or no rate yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<u64>,
}

/// A slow leg: (leg, ms per I/O, typical ms per I/O of the other legs).
pub type SlowLeg = (u32, u64, u64);

/// A claimed disk, for the node's report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskReport {
    /// Device path.
    pub path: PathBuf,
    /// Label UUID.
    pub id: String,
    /// Bytes.
    pub size: u64,
    /// Bytes not in any extent.
    pub free: u64,
    /// Lengths of the free gaps.
    pub gaps: Vec<Sectors>,
    /// Whether the disk is there now.
    pub present: bool,
}

/// The operator's claim settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// This node's name, written into every label.
    pub node: String,
    /// Disk paths or globs the node may claim.
    pub globs: Vec<String>,
    /// Overwrite disks that carry a foreign signature.
    pub wipe: bool,
}

struct Claimed {
    info: DiskInfo,
    loaded: labels::Loaded,
}

impl Claimed {
    fn label(&self) -> &DiskLabel {
        self.loaded
            .label
            .as_ref()
            .expect("claimed disks always carry a label")
    }
}

/// The engine. Cheap to share; operations on one volume serialise.
pub struct Engine {
    dm: Arc<dyn DeviceMapper>,
    disks: Arc<dyn Disks>,
    cfg: EngineConfig,
    claimed: Mutex<Vec<Claimed>>,
    busy: Mutex<BTreeSet<String>>,
    /// Held from reading the free space to recording what was taken from
    /// it, so two operations never place extents on the same sectors.
    alloc: Mutex<()>,
    unclean: Mutex<BTreeMap<String, (u64, u64)>>,
    etas: Mutex<BTreeMap<String, u64>>,
    slow: Mutex<BTreeMap<String, Vec<SlowLeg>>>,
    /// Disks here whose label cannot be read (both copies damaged, a newer
    /// format): a volume missing a leg may be missing it because of one.
    unreadable: Mutex<BTreeMap<PathBuf, String>>,
    /// Parity arrays started after an unclean shutdown while degraded:
    /// regions that may be inconsistent, until a check runs.
    write_hole: Mutex<BTreeMap<String, u64>>,
    /// Arrays started without the crash fix, which refused their
    /// superblocks: why.
    crash_fix_refused: Mutex<BTreeMap<String, String>>,
    /// Bumped each time a disk is claimed (or claimed again after being
    /// away), so the monitor knows to activate what it brought.
    claims: std::sync::atomic::AtomicU64,
    /// Set and signalled when extents are given up, for the wiper thread.
    wipe_wake: Arc<(Mutex<bool>, std::sync::Condvar)>,
    /// Per volume whose class sets no `maxRecoveryRate`: the recovery
    /// ceiling (KiB/s) the rebuild policy put in its table.
    rates: Mutex<BTreeMap<String, u64>>,
    /// Disks that were away and are claimed again (label UUIDs): their
    /// legs' linears still map the device that vanished, so the next
    /// activation reloads them and the array (which re-adds the legs).
    returned: Mutex<BTreeSet<String>>,
    /// Uuids of every disk this process has claimed: one found again is a
    /// disk that was away (even if another disk took its name meanwhile).
    seen: Mutex<BTreeSet<String>>,
    /// Legs given back to a running array since the monitor last asked:
    /// (volume, legs, the write-intent bitmap's (dirty, regions) then).
    readded: Mutex<Vec<ReAdded>>,
}

/// Legs whose disk came back, given back to their running array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReAdded {
    /// The volume.
    pub id: String,
    /// The legs, and their disks.
    pub legs: Vec<(u32, PathBuf)>,
    /// (dirty, regions) of the write-intent bitmap of a leg that stayed:
    /// what md catches the returned legs up on (None: not readable).
    pub dirty: Option<(u64, u64)>,
}

/// The recovery ceiling (KiB/s) of a sync nothing holds back.
pub use dmraid_api::table::UNLIMITED_RECOVERY_RATE as UNLIMITED_RATE;

/// Bytes of the smallest disk worth claiming: a label and one leg.
pub fn smallest_disk() -> u64 {
    (labels::LABEL_AREA.0 + META_EXTENT.0 + 8) * 512
}

/// Sectors zeroed per step of a wipe (64 MiB).
const WIPE_STEP: Sectors = Sectors(131_072);

/// Whether record `a` of a volume is newer than `b`, as a total order so
/// the disks' records merge the same whatever order they are read in: the
/// higher replacement generation, then a finished create over one in
/// flight, then the spec itself (equal keys are copies of one state).
fn newer(a: &VolumeRecord, b: &VolumeRecord) -> bool {
    (a.generation, a.complete, a.spec.to_string()) > (b.generation, b.complete, b.spec.to_string())
}

/// Whether a tombstone names this record: its uid, or its id for a
/// deletion made while all its disks were away (sparing a volume of the
/// same id created after that deletion).
fn deleted(tombstones: &BTreeMap<String, u64>, id: &str, r: &VolumeRecord) -> bool {
    (!r.uid.is_empty() && tombstones.contains_key(&r.uid))
        || tombstones
            .get(&labels::id_tombstone(id))
            .is_some_and(|when| r.created < *when)
}

/// Give up every extent of volume `id` on this label (to be wiped before
/// anyone gets it again) and forget its record.
fn retire(label: &mut DiskLabel, id: &str) {
    for e in label.extents.iter_mut().filter(|e| e.volume == id) {
        e.state = ExtentState::Wiping;
    }
    label.volumes.remove(id);
}

/// Held while an operation on a volume runs; a second one gets `Busy`.
pub struct VolumeLock<'a> {
    engine: &'a Engine,
    id: String,
}

impl Drop for VolumeLock<'_> {
    fn drop(&mut self) {
        lock(&self.engine.busy).remove(&self.id);
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Crash-consistency test hook: when `DMRAID_CRASH_AT` names this point the
/// process aborts right here, leaving disks and devices as a `kill -9` at
/// that instant would. Points: `leg-recorded` (a replacement leg is in the
/// labels, nothing loaded yet), `rebuild-loaded` (the array runs with
/// `rebuild`, the steady table not loaded yet).
fn crash_point(name: &str) {
    if std::env::var("DMRAID_CRASH_AT").is_ok_and(|v| v == name) {
        eprintln!("DMRAID_CRASH_AT={name}: aborting here");
        std::process::abort();
    }
}

/// A volume id the engine accepts: 1–100 of `[A-Za-z0-9._-]`.
pub fn check_id(id: &str) -> Result<(), Error> {
    let ok = !id.is_empty()
        && id.len() <= 100
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::BadId(id.to_string()))
    }
}

/// The running kernel's release (uname -r), for log lines about kernel
/// behaviour.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// Device-mapper name of the array of volume `id`.
pub fn array_name(id: &str) -> String {
    format!("dmraid-{id}")
}

fn leg_name(id: &str, leg: u32, role: Role) -> String {
    let r = match role {
        Role::Meta => 'm',
        Role::Data => 'd',
    };
    // '+' cannot appear in a volume id, so no leg name is another volume's array name.
    format!("dmraid-{id}+{r}{leg}")
}

fn new_uuid() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            format!("{t:032x}")
        })
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or_default()
}

impl Engine {
    /// An engine over these devices; call [`Engine::claim_disks`] next.
    pub fn new(dm: Arc<dyn DeviceMapper>, disks: Arc<dyn Disks>, cfg: EngineConfig) -> Self {
        Engine {
            dm,
            disks,
            cfg,
            claimed: Mutex::new(Vec::new()),
            busy: Mutex::new(BTreeSet::new()),
            alloc: Mutex::new(()),
            unclean: Mutex::new(BTreeMap::new()),
            crash_fix_refused: Mutex::new(BTreeMap::new()),
            etas: Mutex::new(BTreeMap::new()),
            slow: Mutex::new(BTreeMap::new()),
            write_hole: Mutex::new(BTreeMap::new()),
            unreadable: Mutex::new(BTreeMap::new()),
            claims: std::sync::atomic::AtomicU64::new(0),
            wipe_wake: Arc::new((Mutex::new(false), std::sync::Condvar::new())),
            rates: Mutex::new(BTreeMap::new()),
            returned: Mutex::new(BTreeSet::new()),
            seen: Mutex::new(BTreeSet::new()),
            readded: Mutex::new(Vec::new()),
        }
    }

    fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
        move |source| Error::Io {
            path: path.display().to_string(),
            source,
        }
    }

    /// Claim the disks the operator's globs match: adopt our own labels,
    /// label blank disks, refuse foreign signatures unless wiping. Returns
    /// one error per disk that was refused; the others are claimed.
    pub fn claim_disks(&self) -> Result<Vec<Error>, Error> {
        let found = self
            .disks
            .discover(&self.cfg.globs)
            .map_err(|source| Error::Io {
                path: self.cfg.globs.join(","),
                source,
            })?;
        let mut problems: Vec<Error> = found
            .skipped
            .into_iter()
            .map(|s| Error::Claim(format!("{} not claimed: {}", s.path.display(), s.reason)))
            .collect();
        let mut added = false;
        // Only what is still matched can still be unreadable.
        lock(&self.unreadable).retain(|p, _| found.disks.iter().any(|d| &d.path == p));
        let mut claimed = lock(&self.claimed);
        // Disks claimed before this pass: one of them claimed again is a
        // disk that went away and came back.
        let known: BTreeSet<String> = {
            let mut seen = lock(&self.seen);
            seen.extend(claimed.iter().map(|c| c.label().disk_uuid.clone()));
            seen.clone()
        };
        for info in found.disks {
            if claimed.iter().any(|c| c.info == info) {
                continue;
            }
            // No capacity: a disk the kernel is taking apart (pulled, its
            // node not yet gone) or a reader without media. Neither is a
            // disk to claim, nor a new disk in the old one's place.
            if info.size == 0 {
                continue;
            }
            // The path or number now names another disk (a new one took a
            // removed one's name): what was claimed there is gone, and its
            // label must not be taken for the new disk's.
            claimed.retain(|c| {
                (c.info.path != info.path && c.info.devno != info.devno)
                    || self.disks.present(&c.info)
            });
            let loaded = match self.claim_one(&info) {
                Ok(loaded) => {
                    lock(&self.unreadable).remove(&info.path);
                    loaded
                }
                Err(e) => {
                    if let Error::Label { source, .. } = &e {
                        lock(&self.unreadable).insert(info.path.clone(), source.to_string());
                    }
                    problems.push(e);
                    continue;
                }
            };
            let uuid = loaded.label.as_ref().map(|l| l.disk_uuid.clone());
            if let Some(twin) = claimed.iter().find(|c| {
                Some(&c.label().disk_uuid) == uuid.as_ref() && self.disks.present(&c.info)
            }) {
                problems.push(Error::Claim(format!(
                    "{} carries the same disk label as {} (a copy of that disk?); refusing to claim it",
                    info.path.display(),
                    twin.info.path.display()
                )));
                continue;
            }
            // The same disk back under another name: forget the old entry.
            claimed.retain(|c| Some(&c.label().disk_uuid) != uuid.as_ref());
            if let Some(uuid) = uuid.filter(|u| known.contains(u)) {
                tracing::info!(disk = %info.path.display(), %uuid, "a disk that was away is back");
                lock(&self.returned).insert(uuid);
            }
            claimed.push(Claimed { info, loaded });
            added = true;
        }
        drop(claimed);
        if added {
            self.claims
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            // A disk back from being away may hold volumes deleted meanwhile.
            if let Err(e) = self.forget_deleted() {
                problems.push(e);
            }
        }
        Ok(problems)
    }

    /// Adopt a disk that carries our label, or label a new one: only a disk
    /// nobody else holds (an exclusive open) and that carries no signature
    /// libblkid knows, unless the operator asked to wipe, and then exactly
    /// those signatures are erased.
    fn claim_one(&self, info: &DiskInfo) -> Result<labels::Loaded, Error> {
        let path = &info.path;
        let label_err = |source| Error::Label {
            path: path.display().to_string(),
            source,
        };
        let smallest = smallest_disk();
        if info.size < smallest {
            return Err(Error::Claim(format!(
                "{} not claimed: it is {}, smaller than a label and one leg ({})",
                path.display(),
                Bytes(info.size),
                Bytes(smallest)
            )));
        }
        let mut dev = self.disks.open(path).map_err(Self::io_err(path))?;
        let mut loaded = labels::read(&mut dev).map_err(label_err)?;
        if let Some(label) = &loaded.label {
            if label.node != self.cfg.node {
                return Err(Error::Claim(format!(
                    "{} is claimed by node {:?}, not {:?}; refusing to take it over",
                    path.display(),
                    label.node,
                    self.cfg.node
                )));
            }
            return Ok(loaded);
        }
        drop(dev);
        // A new disk: hold it exclusively from the probe to the label write.
        let mut dev = self
            .disks
            .open_exclusive(path)
            .map_err(|e| Error::Claim(format!("{} not claimed: {e}", path.display())))?;
        let found = dev.signatures(false).map_err(Self::io_err(path))?;
        if !found.is_empty() {
            if !self.cfg.wipe {
                return Err(Error::Claim(format!(
                    "{} not claimed: it carries {}; pass --wipe-disks to erase those signatures",
                    path.display(),
                    signature::describe(&found)
                )));
            }
            let wiped = dev.signatures(true).map_err(Self::io_err(path))?;
            tracing::warn!(disk = %path.display(), wiped = %signature::describe(&wiped), "--wipe-disks: erased the signatures on a disk before claiming it");
        }
        let label = labels::new_label(new_uuid(), &self.cfg.node, now());
        labels::write(&mut dev, &mut loaded, &label).map_err(label_err)?;
        Ok(loaded)
    }

    /// How many times disks were claimed so far (the monitor activates
    /// what a newly claimed disk brings).
    pub fn claim_count(&self) -> u64 {
        self.claims.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The claimed disks: (path, size bytes, free bytes, label).
    pub fn disks(&self) -> Vec<(PathBuf, u64, u64, String)> {
        lock(&self.claimed)
            .iter()
            .map(|c| {
                let space = DiskSpace::new(
                    &c.label().disk_uuid,
                    Bytes(c.info.size).sectors(),
                    &c.label().extents,
                );
                (
                    c.info.path.clone(),
                    c.info.size,
                    space.free() * 512,
                    c.label().disk_uuid.clone(),
                )
            })
            .collect()
    }

    /// Every claimed disk with its free gaps and whether it is present now.
    pub fn disk_report(&self) -> Vec<DiskReport> {
        lock(&self.claimed)
            .iter()
            .map(|c| {
                let space = DiskSpace::new(
                    &c.label().disk_uuid,
                    Bytes(c.info.size).sectors(),
                    &c.label().extents,
                );
                DiskReport {
                    path: c.info.path.clone(),
                    id: c.label().disk_uuid.clone(),
                    size: c.info.size,
                    free: space.free() * 512,
                    gaps: space
                        .gaps()
                        .into_iter()
                        .map(|(_, len)| Sectors(len))
                        .collect(),
                    present: self.disks.present(&c.info),
                }
            })
            .collect()
    }

    /// The allocator's view of every claimed disk that is present.
    fn spaces(&self) -> Vec<DiskSpace> {
        self.spaces_where(|_| true)
    }

    /// The space new legs may take: on disks whose label can record
    /// another leg (a full label's disk is skipped, and its free space is
    /// not offered as capacity).
    fn spaces_for_legs(&self) -> Vec<DiskSpace> {
        self.spaces_where(|c| c.loaded.has_room_for_a_leg())
    }

    /// `place`'s refusal, naming the disks skipped because their label
    /// cannot record another leg.
    fn no_room(&self, e: allocator::NoRoom) -> Error {
        let full: Vec<String> = lock(&self.claimed)
            .iter()
            .filter(|c| self.disks.present(&c.info) && !c.loaded.has_room_for_a_leg())
            .map(|c| c.info.path.display().to_string())
            .collect();
        if full.is_empty() {
            return e.into();
        }
        Error::NoRoom(allocator::NoRoom(format!(
            "{}; not counted: {} (its label records as many volumes as its {} KiB slot holds)",
            e.0,
            full.join(", "),
            labels::SLOT_BYTES / 1024
        )))
    }

    fn spaces_where(&self, keep: impl Fn(&Claimed) -> bool) -> Vec<DiskSpace> {
        lock(&self.claimed)
            .iter()
            .filter(|c| self.disks.present(&c.info) && keep(c))
            .map(|c| {
                DiskSpace::new(
                    &c.label().disk_uuid,
                    Bytes(c.info.size).sectors(),
                    &c.label().extents,
                )
                .in_domain(&c.info.domain)
                .named(&c.info.path.display().to_string())
            })
            .collect()
    }

    /// Record the monitor's estimate of the time left of a volume's sync (None clears it).
    pub fn set_eta(&self, id: &str, seconds: Option<u64>) {
        let mut etas = lock(&self.etas);
        match seconds {
            Some(s) => {
                etas.insert(id.to_string(), s);
            }
            None => {
                etas.remove(id);
            }
        }
    }

    /// Each leg's data device I/O counters (I/Os, ms), in leg order.
    pub fn leg_io(&self, id: &str, legs: u32) -> Vec<Option<(u64, u64)>> {
        (0..legs)
            .map(|l| {
                self.dm
                    .io_stats(&leg_name(id, l, Role::Data))
                    .ok()
                    .flatten()
            })
            .collect()
    }

    /// Record the legs the monitor found slow (empty clears).
    pub fn set_slow_legs(&self, id: &str, slow: Vec<SlowLeg>) {
        let mut all = lock(&self.slow);
        if slow.is_empty() {
            all.remove(id);
        } else {
            all.insert(id.to_string(), slow);
        }
    }

    /// Start a scrub: `check` counts mismatches between legs, `repair` also
    /// rewrites them. Refused while the array is degraded, syncing or
    /// already scrubbing, and for raid0 (nothing to compare).
    pub fn scrub(&self, id: &str, repair: bool) -> Result<VolumeInfo, Error> {
        let _guard = self.lock_volume(id)?;
        let v = self.volume(id)?;
        let what = if repair { "repair" } else { "check" };
        if v.spec
            .spec
            .raid_type
            .tolerated_failures(v.legs.len() as u32, v.spec.spec.copies())
            == 0
        {
            return Err(Error::Precondition(format!(
                "volume {id} is {}: without redundancy there is nothing to {what}",
                v.spec.spec.raid_type
            )));
        }
        let Some(st) = &v.status else {
            return Err(Error::Precondition(format!(
                "volume {id} is not active on this node"
            )));
        };
        if !st.healthy() {
            return Err(Error::Precondition(format!(
                "volume {id} is not healthy and idle (legs {:?}, action {:?}): a {what} needs every leg in sync; retry when the resync or rebuild has finished",
                st.legs, st.action
            )));
        }
        self.dm.message(&array_name(id), what)?;
        let when = now();
        self.edit_volume_labels(id, |label| {
            if let Some(r) = label.volumes.get_mut(id) {
                r.last_check = when;
            }
        })?;
        self.volume(id)
    }

    /// Seconds since the epoch of the volume's last check, or of its
    /// creation when it was never checked (0 when neither is recorded).
    pub fn checked_at(&self, id: &str) -> u64 {
        lock(&self.claimed)
            .iter()
            .filter_map(|c| c.label().volumes.get(id))
            .map(|r| r.last_check.max(r.created))
            .max()
            .unwrap_or(0)
    }

    /// Note the device-mapper events seen so far (see
    /// [`crate::dm::DeviceMapper::arm_events`]).
    pub fn arm_events(&self) -> Result<(), Error> {
        Ok(self.dm.arm_events()?)
    }

    /// Block until a device-mapper event since the last
    /// [`Engine::arm_events`] or `timeout`; true when woken by an event.
    pub fn wait_for_event(&self, timeout: std::time::Duration) -> Result<bool, Error> {
        Ok(self.dm.wait_for_event(timeout)?)
    }

    /// Free gaps per claimed, present disk, for capacity answers.
    pub fn free_gaps(&self) -> Vec<Vec<Sectors>> {
        self.spaces_for_legs()
            .iter()
            .map(|d| d.gaps().into_iter().map(|(_, len)| Sectors(len)).collect())
            .collect()
    }

    fn lock_volume(&self, id: &str) -> Result<VolumeLock<'_>, Error> {
        check_id(id)?;
        if !lock(&self.busy).insert(id.to_string()) {
            return Err(Error::Busy(id.to_string()));
        }
        Ok(VolumeLock {
            engine: self,
            id: id.to_string(),
        })
    }

    /// Rewrite the label of every claimed disk for which `f` changes it.
    fn edit_labels(&self, f: impl FnMut(&mut DiskLabel)) -> Result<(), Error> {
        self.edit_labels_with(f, |_, _| Ok(()))
    }

    /// [`Self::edit_labels`], and on each disk whose label changes,
    /// `before(disk uuid, disk)` writes there once the label on it is known
    /// to be the one this process read (the space the new label hands out
    /// is ours), before the new label goes down; the label's sync makes
    /// those writes durable too. Every new label is checked against its
    /// slot before any is written, and the disks are written in parallel.
    fn edit_labels_with(
        &self,
        f: impl FnMut(&mut DiskLabel),
        before: impl Fn(&str, &mut Box<dyn crate::disks::BlockIo>) -> std::io::Result<()> + Sync,
    ) -> Result<(), Error> {
        self.edit_labels_where(|_| true, f, before)
    }

    /// [`Self::edit_labels`] for an edit that touches only `id`: the labels
    /// that do not mention it are not even copied (a node with hundreds of
    /// volumes edits one volume's record many times a round).
    fn edit_volume_labels(&self, id: &str, f: impl FnMut(&mut DiskLabel)) -> Result<(), Error> {
        self.edit_labels_where(
            |l| l.volumes.contains_key(id) || l.extents.iter().any(|e| e.volume == id),
            f,
            |_, _| Ok(()),
        )
    }

    fn edit_labels_where(
        &self,
        only: impl Fn(&DiskLabel) -> bool,
        mut f: impl FnMut(&mut DiskLabel),
        before: impl Fn(&str, &mut Box<dyn crate::disks::BlockIo>) -> std::io::Result<()> + Sync,
    ) -> Result<(), Error> {
        let mut claimed = lock(&self.claimed);
        let mut edits = BTreeMap::new();
        for (i, c) in claimed.iter().enumerate() {
            if !self.disks.present(&c.info) || !only(c.label()) {
                continue;
            }
            let mut label = c.label().clone();
            f(&mut label);
            if &label == c.label() {
                continue;
            }
            labels::check(&label, c.loaded.disk()).map_err(|source| Error::Label {
                path: c.info.path.display().to_string(),
                source,
            })?;
            edits.insert(i, label);
        }
        let write = |c: &mut Claimed, label: DiskLabel| -> Result<(), Error> {
            let path = c.info.path.clone();
            let _disk_lock = self.disks.lock_label(&path).map_err(Self::io_err(&path))?;
            let mut dev = self.disks.open(&path).map_err(Self::io_err(&path))?;
            let uuid = label.disk_uuid.clone();
            let written = labels::write_with(&mut dev, &mut c.loaded, &label, |d| before(&uuid, d));
            if let Err(labels::LabelError::Stale { .. }) = &written {
                Self::reload_label(&mut dev, c);
            }
            written.map_err(|source| Error::Label {
                path: path.display().to_string(),
                source,
            })
        };
        let mut work: Vec<(&mut Claimed, DiskLabel)> = claimed
            .iter_mut()
            .enumerate()
            .filter_map(|(i, c)| edits.remove(&i).map(|l| (c, l)))
            .collect();
        if work.len() <= 1 {
            return work.pop().map_or(Ok(()), |(c, l)| write(c, l));
        }
        // One disk's sync need not wait for another's.
        std::thread::scope(|s| {
            let handles: Vec<_> = work
                .into_iter()
                .map(|(c, l)| s.spawn(|| write(c, l)))
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join().unwrap_or_else(|_| {
                        Err(Error::Precondition("a label writer panicked".into()))
                    })
                })
                .collect::<Vec<_>>()
                .into_iter()
                .collect::<Result<(), Error>>()
        })
    }

    /// After another process wrote `c`'s label: cache what is on the disk
    /// now, so the caller's next attempt builds on it. The cache is kept as
    /// it was (and every write stays refused) when the disk no longer holds
    /// this node's label of this disk.
    fn reload_label(dev: &mut Box<dyn crate::disks::BlockIo>, c: &mut Claimed) {
        let path = c.info.path.display().to_string();
        match labels::read_within(dev, Bytes(c.info.size).sectors()) {
            Ok(labels::Loaded {
                label: Some(fresh), ..
            }) if fresh.disk_uuid != c.label().disk_uuid || fresh.node != c.label().node => {
                tracing::warn!(disk = %path, node = %fresh.node, uuid = %fresh.disk_uuid, "this disk was relabelled by another process; not adopting its label")
            }
            Ok(fresh) if fresh.label.is_some() => {
                tracing::warn!(disk = %path, seq = fresh.seq, "another process wrote this disk's label; re-read it");
                c.loaded = fresh;
            }
            Ok(_) => {
                tracing::warn!(disk = %path, "this disk's label was erased by another process")
            }
            Err(error) => tracing::warn!(disk = %path, %error, "cannot re-read this disk's label"),
        }
    }

    /// The volume's record and, per leg, (disk, meta start, data start) when its disk is here.
    #[allow(clippy::type_complexity)]
    fn find(&self, id: &str) -> Option<(VolumeRecord, BTreeMap<u32, (DiskInfo, u64, u64)>)> {
        let (record, legs, _) = self.resolve(id);
        record.map(|r| (r, legs))
    }

    /// The volume's record and legs from the present disks' labels. Where
    /// two disks both hold a leg (one was away while the leg was replaced
    /// and is back), the one whose record has the higher generation holds
    /// it; the others are returned as stale (disk uuid, leg).
    #[allow(clippy::type_complexity)]
    fn resolve(
        &self,
        id: &str,
    ) -> (
        Option<VolumeRecord>,
        BTreeMap<u32, (DiskInfo, u64, u64)>,
        Vec<(String, u32)>,
    ) {
        let claimed = lock(&self.claimed);
        let mut record: Option<VolumeRecord> = None;
        let mut holders: BTreeMap<u32, Vec<(u64, usize, u64, u64)>> = BTreeMap::new();
        for (i, c) in claimed.iter().enumerate() {
            if !self.disks.present(&c.info) {
                continue;
            }
            let generation = c.label().volumes.get(id).map_or(0, |r| r.generation);
            if let Some(r) = c.label().volumes.get(id) {
                if record.as_ref().is_none_or(|have| newer(r, have)) {
                    record = Some(r.clone());
                }
            }
            let mut meta = BTreeMap::new();
            let mut data = BTreeMap::new();
            for e in c
                .label()
                .extents
                .iter()
                .filter(|e| e.volume == id && e.state == ExtentState::Active)
            {
                match e.role {
                    Role::Meta => meta.insert(e.leg, e.start),
                    Role::Data => data.insert(e.leg, e.start),
                };
            }
            for (leg, m) in meta {
                if let Some(d) = data.get(&leg) {
                    holders.entry(leg).or_default().push((generation, i, m, *d));
                }
            }
        }
        let mut legs = BTreeMap::new();
        let mut stale = Vec::new();
        for (leg, mut hs) in holders {
            // Highest generation first; on a tie the first claimed disk.
            hs.sort_by_key(|(g, i, _, _)| (std::cmp::Reverse(*g), *i));
            let (_, i, m, d) = hs[0];
            legs.insert(leg, (claimed[i].info.clone(), m, d));
            for (_, j, _, _) in &hs[1..] {
                stale.push((claimed[*j].label().disk_uuid.clone(), leg));
            }
        }
        (record, legs, stale)
    }

    fn spec_of(record: &VolumeRecord) -> Result<VolumeSpec, Error> {
        serde_json::from_value(record.spec.clone()).map_err(|e| {
            Error::Precondition(format!("volume spec in the disk label does not parse: {e}"))
        })
    }

    /// Volume ids recorded in the labels.
    pub fn volume_ids(&self) -> Vec<String> {
        let claimed = lock(&self.claimed);
        let mut ids: BTreeSet<String> = BTreeSet::new();
        for c in claimed.iter() {
            ids.extend(c.label().volumes.keys().cloned());
        }
        ids.into_iter().collect()
    }

    /// Create (or find, when the same request was made before) a volume.
    pub fn create_volume(&self, id: &str, spec: &RaidSpec, size: u64) -> Result<VolumeInfo, Error> {
        self.create_named(id, None, spec, size)
    }

    /// [`Engine::create_volume`] for the CSI name `name`, recorded with the
    /// volume: the same id asked for under another name is refused.
    pub fn create_named(
        &self,
        id: &str,
        name: Option<&str>,
        spec: &RaidSpec,
        size: u64,
    ) -> Result<VolumeInfo, Error> {
        let _guard = self.lock_volume(id)?;
        spec.validate()?;
        let leg = leg_for_size(spec, Bytes(size))?;
        let wanted = VolumeSpec {
            spec: spec.clone(),
            requested: size,
            leg_data: leg.0,
            name: name.filter(|n| *n != id).map(str::to_string),
        };
        // Everything the kernel would refuse is refused before anything is written.
        let dummy: Vec<Option<LegDevs>> = (0..spec.legs)
            .map(|_| {
                Some(LegDevs {
                    meta: "0:0".into(),
                    data: "0:0".into(),
                })
            })
            .collect();
        RaidTable::build(spec, leg, dummy, true, &[])?;

        let found = self.find(id);
        if found.is_none() {
            if let Some(detail) = self.where_it_was(id) {
                return Err(Error::DisksMissing {
                    id: id.to_string(),
                    detail,
                });
            }
        }
        if let Some((record, _)) = found {
            let have = Self::spec_of(&record)?;
            // A name that looks like an id is its own id: it must not
            // reach the volume another name was hashed to.
            if let (Some(owner), Some(asked)) = (&have.name, name) {
                if owner != asked {
                    return Err(Error::NameTaken {
                        id: id.to_string(),
                        name: asked.to_string(),
                        owner: owner.clone(),
                    });
                }
            }
            let same = have.spec == wanted.spec
                && have.requested == wanted.requested
                && have.leg_data == wanted.leg_data;
            if !same {
                return Err(Error::AlreadyExists(id.to_string()));
            }
            if record.complete {
                self.activate_volume(id, false)?;
                return self.volume(id);
            }
            // A create that crashed half-way: undo it and start again.
            self.teardown(id)?;
            self.free_extents(id)?;
        }

        let started = std::time::Instant::now();
        let mut phases: Vec<(&str, std::time::Duration)> = Vec::new();
        let mut lap = {
            let mut last = started;
            move |phases: &mut Vec<(&'static str, std::time::Duration)>, what: &'static str| {
                let now = std::time::Instant::now();
                phases.push((what, now - last));
                last = now;
            }
        };
        let uid = new_uuid();
        let alloc = lock(&self.alloc);
        let spaces = self.spaces_for_legs();
        let placements = allocator::place(&spaces, spec.legs, 0, META_EXTENT, leg, &[])
            .map_err(|e| self.no_room(e))?;
        // Data extents not known to read as zeroes (never wiped since the
        // disk was claimed): a `nosync` array must not start over them.
        let unzeroed: Vec<&allocator::Placement> = {
            let claimed = lock(&self.claimed);
            placements
                .iter()
                .filter(|p| {
                    !claimed.iter().any(|c| {
                        c.label().disk_uuid == p.disk
                            && allocator::ranges_cover(&c.label().zeroed, (p.data_start, leg.0))
                    })
                })
                .collect()
        };
        let blob = serde_json::to_value(&wanted).map_err(|e| Error::Precondition(e.to_string()))?;
        // Blank metadata: the kernel must see a new array, never an old superblock.
        // Blank data head: a new volume has no filesystem, whatever was there before.
        // `nosync` skips the initial resync: it is safe only when every
        // leg reads the same (zeroes) from the start, else parity and
        // mirrors disagree and a rebuild writes garbage; data extents not
        // known to read as zeroes are zeroed whole.
        let data_wipe = DATA_WIPE.max(spec.chunk_size.0).min(leg.0 * 512);
        let nosync = spec.sync == dmraid_api::params::SyncPolicy::Nosync;
        let blank = |disk: &str, dev: &mut Box<dyn crate::disks::BlockIo>| {
            for p in placements.iter().filter(|p| p.disk == disk) {
                dev.write_zeroes(p.meta_start * 512, META_WIPE)?;
                let whole = nosync && unzeroed.iter().any(|u| std::ptr::eq(*u, p));
                if whole {
                    tracing::info!(volume = %id, disk = %disk, "nosync on space not known to be zeroed: zeroing the data extent first");
                }
                let len = if whole { leg.0 * 512 } else { data_wipe };
                dev.write_zeroes(p.data_start * 512, len)?;
            }
            Ok(())
        };
        self.edit_labels_with(
            |label| {
                for p in placements.iter().filter(|p| p.disk == label.disk_uuid) {
                    allocator::ranges_remove(
                        &mut label.zeroed,
                        (p.meta_start, META_EXTENT.0 + leg.0),
                    );
                    label.extents.push(Extent {
                        volume: id.into(),
                        leg: p.leg,
                        role: Role::Meta,
                        start: p.meta_start,
                        len: META_EXTENT.0,
                        state: ExtentState::Active,
                    });
                    label.extents.push(Extent {
                        volume: id.into(),
                        leg: p.leg,
                        role: Role::Data,
                        start: p.data_start,
                        len: leg.0,
                        state: ExtentState::Active,
                    });
                    label.volumes.insert(
                        id.into(),
                        VolumeRecord {
                            spec: blob.clone(),
                            clean_shutdown: false,
                            complete: false,
                            generation: 0,
                            uid: uid.clone(),
                            created: now(),
                            last_check: 0,
                        },
                    );
                }
            },
            blank,
        )?;
        drop(alloc);
        lap(&mut phases, "place, blank and record");
        if spec.sync != dmraid_api::params::SyncPolicy::Nosync {
            // The initial resync starts as fast as the disks go; the
            // monitor holds it back while the volume is busy.
            self.full_speed(id, spec);
        }
        self.activate_volume(id, true)?;
        lap(&mut phases, "devices");
        self.edit_volume_labels(id, |label| {
            if let Some(r) = label.volumes.get_mut(id) {
                r.complete = true;
            }
        })?;
        lap(&mut phases, "record complete");
        let info = self.volume(id);
        lap(&mut phases, "status");
        // Where a create's time goes, for the CreateVolume bench.
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
        let detail = phases
            .iter()
            .map(|(what, d)| format!("{what} {:.1} ms", ms(*d)))
            .collect::<Vec<_>>()
            .join(", ");
        tracing::info!(volume = %id, ms = format!("{:.1}", ms(started.elapsed())), phases = %detail, "volume created");
        info
    }

    /// For a volume no present disk holds: where it was, if this node ever
    /// made it (a claimed disk that is away names it, or its array is still
    /// loaded), in words; None when it was never made here.
    pub fn where_it_was(&self, id: &str) -> Option<String> {
        let claimed = lock(&self.claimed);
        // Deleted since (a present disk's tombstone names it): not missing.
        let mut tombstones = BTreeMap::new();
        for c in claimed.iter().filter(|c| self.disks.present(&c.info)) {
            tombstones.extend(c.label().deleted.clone());
        }
        let away: Vec<String> = claimed
            .iter()
            .filter(|c| !self.disks.present(&c.info))
            .filter(|c| {
                c.label()
                    .volumes
                    .get(id)
                    .is_some_and(|r| !deleted(&tombstones, id, r))
            })
            .map(|c| c.info.path.display().to_string())
            .collect();
        drop(claimed);
        if !away.is_empty() {
            return Some(format!("disks missing: {}", away.join(", ")));
        }
        let live = self.dm.info(&array_name(id)).ok().flatten().is_some();
        live.then(|| {
            format!(
                "its array {} is still loaded while none of its disks is present (disks missing)",
                array_name(id)
            )
        })
    }

    /// Make the volume's devices live from its labels; `new_array`: first activation.
    fn activate_volume(&self, id: &str, new_array: bool) -> Result<(), Error> {
        let (record, legs) = self
            .find(id)
            .ok_or_else(|| Error::NotFound(id.to_string()))?;
        let vs = Self::spec_of(&record)?;
        let name = array_name(id);
        let live = self.dm.info(&name)?.is_some_and(|i| i.live_table);
        // Legs on a disk that went away and came back: their linears still
        // map the vanished device, whatever their table text says.
        let returned: BTreeSet<u32> = {
            let back = lock(&self.returned);
            legs.iter()
                .filter(|(_, (disk, _, _))| {
                    self.uuid_of(&disk.path).is_ok_and(|u| back.contains(&u))
                })
                .map(|(leg, _)| *leg)
                .collect()
        };
        let current = if live {
            self.dm
                .table(&name)?
                .first()
                .and_then(|t| RaidTable::parse(&t.line()).ok())
        } else {
            None
        };
        // A live array keeps the recovery ceiling the rebuild policy gave it.
        if let Some(rate) = current.as_ref().and_then(|t| t.max_recovery_rate) {
            if vs.spec.max_recovery_rate.is_none() {
                lock(&self.rates).entry(id.to_string()).or_insert(rate);
            }
        }
        let devs = self.leg_devs(id, &vs, &legs, &returned)?;
        let steady = self.with_rate(
            id,
            &vs,
            RaidTable::build(&vs.spec, Sectors(vs.leg_data), devs.clone(), new_array, &[])?,
        );
        // A replacement leg whose metadata the kernel never wrote (the driver
        // died between recording it and loading `rebuild`) still needs
        // `rebuild`: without it the kernel refuses the array.
        let blank = if new_array {
            Vec::new()
        } else {
            self.blank_meta_legs(&legs)
        };
        if !blank.is_empty() {
            tracing::warn!(volume = %id, legs = ?blank, "legs without dm-raid metadata: rebuilding them");
            let rebuilding = self.with_rate(
                id,
                &vs,
                RaidTable::build(&vs.spec, Sectors(vs.leg_data), devs, false, &blank)?,
            );
            return self.load_rebuild(id, &blank, &rebuilding, &steady, live);
        }
        let target = [Target::new(0, steady.length.0, "raid", steady.params())];
        if live {
            let dirty = if returned.is_empty() {
                None
            } else {
                self.bitmap_dirty(&legs, &returned)
            };
            // `nosync` only matters to a new array: a live one made with it
            // is the same array without it.
            let same = current.as_ref().is_some_and(|c| {
                let mut c = c.clone();
                c.sync = steady.sync;
                c == steady
            });
            if !same {
                dm::reload(self.dm.as_ref(), &name, &target)?;
            } else if !returned.is_empty() {
                // The same table, suspended and resumed: dm-raid's second
                // resume revives each failed leg whose superblock reads
                // again, and md recovers only the regions the write-intent
                // bitmap kept dirty while it was away. A new table would
                // not: a degraded array's bitmap loads as out of date and
                // the leg is recovered in full (README, "What the kernel really does").
                self.dm.suspend(&name)?;
                self.dm.resume(&name)?;
            }
            if !returned.is_empty() {
                tracing::info!(volume = %id, legs = ?returned, dirty = ?dirty, "legs back with their disk: they catch up from the write-intent bitmap");
                lock(&self.readded).push(ReAdded {
                    id: id.to_string(),
                    legs: returned
                        .iter()
                        .filter_map(|l| legs.get(l).map(|(d, _, _)| (*l, d.path.clone())))
                        .collect(),
                    dirty,
                });
            }
            return Ok(());
        }
        dm::activate(
            self.dm.as_ref(),
            &name,
            Some(&format!("DMRAID-{id}")),
            &target,
        )?;
        Ok(())
    }

    /// `table` with the rebuild policy's recovery ceiling, where the
    /// volume's class sets none.
    fn with_rate(&self, id: &str, vs: &VolumeSpec, mut table: RaidTable) -> RaidTable {
        if vs.spec.max_recovery_rate.is_none() {
            if let Some(rate) = lock(&self.rates).get(id) {
                table.max_recovery_rate = Some((*rate).max(table.min_recovery_rate.unwrap_or(0)));
            }
        }
        table
    }

    /// A sync about to start runs unhindered (where the class sets no ceiling).
    fn full_speed(&self, id: &str, spec: &RaidSpec) {
        if spec.max_recovery_rate.is_none() {
            lock(&self.rates).insert(id.to_string(), UNLIMITED_RATE);
        }
    }

    /// The recovery ceiling (KiB/s) the policy set for a volume, if any.
    pub fn recovery_rate(&self, id: &str) -> Option<u64> {
        lock(&self.rates).get(id).copied()
    }

    /// Set the recovery ceiling (KiB/s; None: the kernel's default) of a
    /// volume whose class sets none, and reload its live table with it: md
    /// goes on from its resync or recovery checkpoint. Returns whether the
    /// table changed. A class's `maxRecoveryRate` is never overridden.
    pub fn set_recovery_rate(&self, id: &str, kib: Option<u64>) -> Result<bool, Error> {
        let _guard = self.lock_volume(id)?;
        let (record, _) = self
            .find(id)
            .ok_or_else(|| Error::NotFound(id.to_string()))?;
        let vs = Self::spec_of(&record)?;
        if vs.spec.max_recovery_rate.is_some() {
            return Ok(false);
        }
        match kib {
            Some(k) => lock(&self.rates).insert(id.to_string(), k),
            None => lock(&self.rates).remove(id),
        };
        let name = array_name(id);
        if !self.dm.info(&name)?.is_some_and(|i| i.live_table) {
            return Ok(false);
        }
        let Some(mut table) = self
            .dm
            .table(&name)?
            .first()
            .and_then(|t| RaidTable::parse(&t.line()).ok())
        else {
            return Ok(false);
        };
        let want = kib.map(|k| k.max(table.min_recovery_rate.unwrap_or(0)));
        if table.max_recovery_rate == want {
            return Ok(false);
        }
        table.max_recovery_rate = want;
        dm::reload(
            self.dm.as_ref(),
            &name,
            &[Target::new(0, table.length.0, "raid", table.params())],
        )?;
        Ok(true)
    }

    /// Application I/Os completed on the volume's array device (the
    /// kernel's own resync and rebuild I/O runs below it and is not
    /// counted). None where the system does not say.
    pub fn array_io(&self, id: &str) -> Option<u64> {
        self.dm
            .io_stats(&array_name(id))
            .ok()
            .flatten()
            .map(|(ios, _)| ios)
    }

    /// The legs given back to running arrays since the last call.
    pub fn take_readded(&self) -> Vec<ReAdded> {
        std::mem::take(&mut *lock(&self.readded))
    }

    /// (dirty, regions) of the on-disk write-intent bitmap of the first
    /// leg not in `skip` that has one: md sets a bit before it writes a
    /// region and, while a leg is missing, keeps it set.
    fn bitmap_dirty(
        &self,
        legs: &BTreeMap<u32, (DiskInfo, u64, u64)>,
        skip: &BTreeSet<u32>,
    ) -> Option<(u64, u64)> {
        legs.iter()
            .filter(|(l, _)| !skip.contains(l))
            .find_map(|(_, (disk, meta, _))| {
                let (_, head) = self.meta_head(&disk.path, *meta).ok()?;
                superblock::dirty_regions(&head).ok()
            })
    }

    /// The head of a leg's metadata extent (superblock, bitmap header and
    /// bits) and the open disk it was read from.
    fn meta_head(
        &self,
        path: &std::path::Path,
        meta: u64,
    ) -> Result<(Box<dyn crate::disks::BlockIo>, Vec<u8>), Error> {
        let mut dev = self.disks.open(path).map_err(Self::io_err(path))?;
        let mut head =
            vec![0u8; superblock::BITMAP_OFFSET + superblock::BITMAP_HEADER + 256 * 1024];
        dev.seek(SeekFrom::Start(meta * 512))
            .map_err(Self::io_err(path))?;
        dev.read_exact(&mut head).map_err(Self::io_err(path))?;
        Ok((dev, head))
    }

    /// Forget the disks that came back once every volume saw them.
    fn settle_returned(&self) {
        lock(&self.returned).clear();
    }

    /// The meta/data linears of every leg whose disk is here (made or
    /// reloaded to the labels' extents), `None` for the others. Legs in
    /// `fresh` are reloaded even when their table reads the same (their
    /// disk vanished and came back: the old mapping holds a dead device).
    fn leg_devs(
        &self,
        id: &str,
        vs: &VolumeSpec,
        legs: &BTreeMap<u32, (DiskInfo, u64, u64)>,
        fresh: &BTreeSet<u32>,
    ) -> Result<Vec<Option<LegDevs>>, Error> {
        let mut devs = Vec::new();
        for leg in 0..vs.spec.legs {
            let Some((disk, meta, data)) = legs.get(&leg) else {
                devs.push(None);
                continue;
            };
            let linear = |role: Role, len: u64, start: u64| {
                let name = leg_name(id, leg, role);
                let table = [Target::new(
                    0,
                    len,
                    "linear",
                    format!("{} {start}", disk.devno),
                )];
                if fresh.contains(&leg) && self.dm.info(&name)?.is_some() {
                    dm::reload(self.dm.as_ref(), &name, &table)
                } else {
                    dm::activate(self.dm.as_ref(), &name, None, &table)
                }
            };
            let m = linear(Role::Meta, META_EXTENT.0, *meta)?;
            let d = linear(Role::Data, vs.leg_data, *data)?;
            devs.push(Some(LegDevs {
                meta: m.devno(),
                data: d.devno(),
            }));
        }
        Ok(devs)
    }

    /// Legs whose metadata extent holds no dm-raid superblock, when some
    /// other leg has one (all blank is a new array, not a rebuild). A leg
    /// whose disk cannot be read is left to the kernel to judge.
    fn blank_meta_legs(&self, legs: &BTreeMap<u32, (DiskInfo, u64, u64)>) -> Vec<u32> {
        let mut blank = Vec::new();
        let mut written = 0;
        for (leg, (disk, meta, _)) in legs {
            let mut head = vec![0u8; 4096];
            let read = self.disks.open(&disk.path).and_then(|mut dev| {
                dev.seek(SeekFrom::Start(meta * 512))?;
                dev.read_exact(&mut head)
            });
            match read {
                Ok(()) if superblock::parse_superblock(&head).is_ok() => written += 1,
                Ok(()) => blank.push(*leg),
                Err(_) => written += 1,
            }
        }
        if written == 0 {
            Vec::new()
        } else {
            blank
        }
    }

    /// Load `rebuilding` (the table with `rebuild` for `legs`), check that the
    /// kernel took those legs, then load `steady`, the same table without
    /// `rebuild`, so no later activation starts the recovery over (DESIGN
    /// "Replacing a leg"). md goes on from its recovery checkpoint across
    /// the second load.
    fn load_rebuild(
        &self,
        id: &str,
        legs: &[u32],
        rebuilding: &RaidTable,
        steady: &RaidTable,
        live: bool,
    ) -> Result<(), Error> {
        let name = array_name(id);
        let target = |t: &RaidTable| [Target::new(0, t.length.0, "raid", t.params())];
        if live {
            dm::reload(self.dm.as_ref(), &name, &target(rebuilding))?;
        } else {
            dm::activate(
                self.dm.as_ref(),
                &name,
                Some(&format!("DMRAID-{id}")),
                &target(rebuilding),
            )?;
        }
        crash_point("rebuild-loaded");
        // Read twice: the first status after a load can be stale (VM-NOTES).
        let _ = self.dm.status(&name)?;
        let taken = self
            .dm
            .status(&name)?
            .first()
            .and_then(|t| RaidStatus::parse(&t.params).ok());
        if let Some(leg) = legs.iter().find(|l| {
            taken
                .as_ref()
                .is_some_and(|s| s.dead_legs().contains(&(**l as usize)))
        }) {
            return Err(Error::Precondition(format!(
                "the kernel did not take the new leg {leg} of {id} (still D); see dmesg"
            )));
        }
        dm::reload(self.dm.as_ref(), &name, &target(steady))?;
        Ok(())
    }

    /// Grow a volume to at least `size` bytes: each data extent grows in
    /// place (the labels first), the data linears and then the array are
    /// reloaded with the new length, and the kernel resyncs only the new
    /// region. Smaller or equal sizes return the volume as it is.
    pub fn expand_volume(&self, id: &str, size: u64) -> Result<VolumeInfo, Error> {
        let _guard = self.lock_volume(id)?;
        let (record, legs) = self
            .find(id)
            .ok_or_else(|| Error::NotFound(id.to_string()))?;
        let mut vs = Self::spec_of(&record)?;
        let new_leg = leg_for_size(&vs.spec, Bytes(size))?;
        if new_leg.0 <= vs.leg_data {
            return self.volume(id);
        }
        if legs.len() < vs.spec.legs as usize {
            return Err(Error::Precondition(format!(
                "volume {id} is degraded ({} of {} legs present); rebuild it before growing it",
                legs.len(),
                vs.spec.legs
            )));
        }
        let alloc = lock(&self.alloc);
        let spaces = self.spaces();
        for (leg, (disk, _, data)) in &legs {
            let uuid = self.uuid_of(&disk.path)?;
            let space = spaces
                .iter()
                .find(|s| s.id == uuid)
                .ok_or_else(|| Error::NotFound(uuid.clone()))?;
            if !allocator::can_grow(space, *data, vs.leg_data, new_leg.0) {
                return Err(Error::Precondition(format!(
                    "leg {leg} of {id} on {} cannot grow in place to {} (the space after it is taken); moving extents is not supported yet",
                    disk.path.display(),
                    Bytes(new_leg.0 * 512)
                )));
            }
        }
        // The array must be able to take the new size before anything changes.
        let dummy: Vec<Option<LegDevs>> = (0..vs.spec.legs)
            .map(|_| {
                Some(LegDevs {
                    meta: "0:0".into(),
                    data: "0:0".into(),
                })
            })
            .collect();
        RaidTable::build(&vs.spec, new_leg, dummy, false, &[])?;
        let old = vs.leg_data;
        vs.leg_data = new_leg.0;
        vs.requested = size;
        let blob = serde_json::to_value(&vs).map_err(|e| Error::Precondition(e.to_string()))?;
        self.edit_labels(|label| {
            for e in label.extents.iter_mut().filter(|e| {
                e.volume == id
                    && e.role == Role::Data
                    && e.len == old
                    && e.state == ExtentState::Active
            }) {
                // The grown part is the volume's now, no longer free zeroes.
                allocator::ranges_remove(&mut label.zeroed, (e.start + old, new_leg.0 - old));
                e.len = new_leg.0;
            }
            if let Some(r) = label.volumes.get_mut(id) {
                r.spec = blob.clone();
            }
        })?;
        drop(alloc);
        for (leg, (disk, _, data)) in &legs {
            dm::reload(
                self.dm.as_ref(),
                &leg_name(id, *leg, Role::Data),
                &[Target::new(
                    0,
                    new_leg.0,
                    "linear",
                    format!("{} {data}", disk.devno),
                )],
            )?;
        }
        self.activate_volume(id, false)?;
        self.volume(id)
    }

    /// Replace a failed or missing leg: a new meta/data pair on a disk no
    /// other leg uses (or on `disk`), `rebuild <leg>` loaded live, and as
    /// soon as the kernel has taken the new leg the same table again without
    /// `rebuild`, so a later activation does not rebuild twice (DESIGN
    /// "Replacing a leg"). The old extents are kept as Retiring until the
    /// array is in sync ([`Engine::reap_retired`]), then wiped.
    pub fn replace_leg(
        &self,
        id: &str,
        leg: Option<u32>,
        disk: Option<PathBuf>,
    ) -> Result<VolumeInfo, Error> {
        let _guard = self.lock_volume(id)?;
        let (record, legs) = self
            .find(id)
            .ok_or_else(|| Error::NotFound(id.to_string()))?;
        let vs = Self::spec_of(&record)?;
        let name = array_name(id);
        if !self.dm.info(&name)?.is_some_and(|i| i.live_table) {
            return Err(Error::Precondition(format!(
                "volume {id} is not active; activate it first"
            )));
        }
        let line = self
            .dm
            .status(&name)?
            .first()
            .map(|t| t.params.clone())
            .unwrap_or_default();
        let status = RaidStatus::parse(&line)?;
        let failed: Vec<u32> = (0..vs.spec.legs)
            .filter(|l| !legs.contains_key(l) || status.dead_legs().contains(&(*l as usize)))
            .collect();
        let lost: BTreeSet<usize> = failed.iter().map(|l| *l as usize).collect();
        let survival = dmraid_api::redundancy::survival(&vs.spec, &lost);
        if survival.lost {
            let which = match &survival.lost_set {
                Some(set) => format!(
                    "every copy of legs {} is gone",
                    set.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
                None => format!(
                    "{} legs are gone and {} survives {}",
                    lost.len(),
                    vs.spec.raid_type,
                    vs.spec
                        .raid_type
                        .tolerated_failures(vs.spec.legs, vs.spec.copies())
                ),
            };
            return Err(Error::Precondition(format!(
                "volume {id} cannot be rebuilt: {which}, so there is nothing to rebuild from (data lost); bring the missing disks back or restore the volume from a backup"
            )));
        }
        let leg = match leg {
            Some(l) if l >= vs.spec.legs => {
                return Err(Error::Precondition(format!(
                    "volume {id} has legs 0..{}; there is no leg {l}",
                    vs.spec.legs - 1
                )))
            }
            Some(l) if !failed.contains(&l) => {
                return Err(Error::Precondition(format!(
                    "leg {l} of {id} is healthy; nothing to rebuild"
                )))
            }
            Some(l) => l,
            None => *failed
                .first()
                .ok_or_else(|| Error::Precondition(format!("volume {id} has no failed leg")))?,
        };
        if vs.spec.raid_type.is_parity()
            && status.action == Some(dmraid_api::status::SyncAction::Resync)
            && status.synced < status.total
        {
            return Err(Error::Precondition(format!(
                "volume {id} is still resyncing ({:.0}%): parity is not complete, a rebuild now could rebuild garbage; wait for the resync",
                status.ratio() * 100.0
            )));
        }
        let mut avoid = Vec::new();
        for (disk_info, _, _) in legs.values() {
            avoid.push(self.uuid_of(&disk_info.path)?);
        }
        let alloc = lock(&self.alloc);
        let mut spaces = self.spaces_for_legs();
        if let Some(want) = &disk {
            let uuid = self.uuid_of(want)?;
            spaces.retain(|s| s.id == uuid);
        }
        let placement =
            allocator::place(&spaces, 1, leg, META_EXTENT, Sectors(vs.leg_data), &avoid)
                .map_err(|e| self.no_room(e))?
                .remove(0);
        let generation = record.generation + 1;
        // The metadata is blanked before the label that names it goes down
        // (and only once the label shows the space is ours): a crash in
        // between leaves free sectors zeroed, and once named, a blank
        // extent tells activation that this leg still needs `rebuild`.
        let blank = |disk: &str, dev: &mut Box<dyn crate::disks::BlockIo>| {
            if disk == placement.disk {
                dev.write_zeroes(placement.meta_start * 512, META_WIPE)?;
            }
            Ok(())
        };
        self.edit_labels_with(
            |label| {
                for e in label
                    .extents
                    .iter_mut()
                    .filter(|e| e.volume == id && e.leg == leg && e.state == ExtentState::Active)
                {
                    e.state = ExtentState::Retiring;
                }
                if label.disk_uuid == placement.disk {
                    label.extents.push(Extent {
                        volume: id.into(),
                        leg,
                        role: Role::Meta,
                        start: placement.meta_start,
                        len: META_EXTENT.0,
                        state: ExtentState::Active,
                    });
                    label.extents.push(Extent {
                        volume: id.into(),
                        leg,
                        role: Role::Data,
                        start: placement.data_start,
                        len: vs.leg_data,
                        state: ExtentState::Active,
                    });
                    label
                        .volumes
                        .entry(id.to_string())
                        .or_insert_with(|| record.clone());
                }
                // Every present disk moves on; one that is away keeps the old
                // number, so if it comes back its copy of the leg loses.
                if let Some(r) = label.volumes.get_mut(id) {
                    r.generation = generation;
                }
            },
            blank,
        )?;
        drop(alloc);
        crash_point("leg-recorded");
        // The rebuild starts as fast as the disks go; the monitor holds it
        // back while the volume is busy.
        self.full_speed(id, &vs.spec);
        let loaded = (|| {
            let (_, legs) = self
                .find(id)
                .ok_or_else(|| Error::NotFound(id.to_string()))?;
            let devs = self.leg_devs(id, &vs, &legs, &BTreeSet::new())?;
            let rebuilding = self.with_rate(
                id,
                &vs,
                RaidTable::build(&vs.spec, Sectors(vs.leg_data), devs.clone(), false, &[leg])?,
            );
            let steady = self.with_rate(
                id,
                &vs,
                RaidTable::build(&vs.spec, Sectors(vs.leg_data), devs, false, &[])?,
            );
            self.load_rebuild(id, &[leg], &rebuilding, &steady, true)
        })();
        if let Err(e) = loaded {
            self.undo_replacement(id, leg, &placement);
            return Err(e);
        }
        self.volume(id)
    }

    /// The kernel refused a replacement leg: give the new extents up (to be
    /// wiped) and make the old leg the volume's again, so the labels never
    /// name a leg the array does not have.
    fn undo_replacement(&self, id: &str, leg: u32, placement: &allocator::Placement) {
        // The leg's linears may already map the new extents; the array
        // holds that leg failed and sends it no I/O, and the next
        // activation maps them from the labels again.
        let undone = self.edit_labels(|label| {
            for e in label
                .extents
                .iter_mut()
                .filter(|e| e.volume == id && e.leg == leg)
            {
                let new = label.disk_uuid == placement.disk
                    && (e.start == placement.meta_start || e.start == placement.data_start);
                if new && e.state == ExtentState::Active {
                    e.state = ExtentState::Wiping;
                } else if e.state == ExtentState::Retiring {
                    e.state = ExtentState::Active;
                }
            }
        });
        match undone {
            Ok(()) => {
                tracing::warn!(volume = %id, leg, "the kernel refused the replacement leg: its extents are given up and the old leg kept")
            }
            Err(e) => {
                tracing::error!(volume = %id, leg, error = %e, "undoing a refused replacement leg failed")
            }
        }
        self.wake_wiper();
    }

    /// Free the extents of replaced legs once the array is back in sync.
    /// Returns how many extents were freed.
    pub fn reap_retired(&self, id: &str) -> Result<usize, Error> {
        // Legs a returning disk still holds but another disk took over are
        // never used again: retire them, to be freed like replaced legs.
        let (_, _, stale) = self.resolve(id);
        if !stale.is_empty() {
            tracing::warn!(volume = %id, legs = ?stale, "a returning disk holds legs replaced while it was away; retiring its copies");
            self.edit_volume_labels(id, |label| {
                for e in label.extents.iter_mut().filter(|e| {
                    e.volume == id
                        && e.state == ExtentState::Active
                        && stale.contains(&(label.disk_uuid.clone(), e.leg))
                }) {
                    e.state = ExtentState::Retiring;
                }
            })?;
        }
        // The common case, every health round for every volume: nothing
        // retiring, nothing to read or write.
        let retiring = lock(&self.claimed).iter().any(|c| {
            c.label()
                .extents
                .iter()
                .any(|e| e.volume == id && e.state == ExtentState::Retiring)
        });
        if !retiring {
            return Ok(0);
        }
        let v = self.volume(id)?;
        if !v.status.as_ref().is_some_and(|s| s.healthy()) {
            return Ok(0);
        }
        let mut freed = 0;
        self.edit_volume_labels(id, |label| {
            for e in label
                .extents
                .iter_mut()
                .filter(|e| e.volume == id && e.state == ExtentState::Retiring)
            {
                e.state = ExtentState::Wiping;
                freed += 1;
            }
        })?;
        if freed > 0 {
            self.wake_wiper();
        }
        Ok(freed)
    }

    fn uuid_of(&self, path: &std::path::Path) -> Result<String, Error> {
        lock(&self.claimed)
            .iter()
            .find(|c| c.info.path == path)
            .map(|c| c.label().disk_uuid.clone())
            .ok_or_else(|| Error::NotFound(path.display().to_string()))
    }

    /// Remove the volume's devices (array first, then legs). Missing devices are fine.
    fn teardown(&self, id: &str) -> Result<(), Error> {
        let name = array_name(id);
        if let Some(info) = self.dm.info(&name)? {
            if info.open_count > 0 {
                return Err(Error::Precondition(format!(
                    "volume {id} is in use ({} openers: mounted or open); unstage it first",
                    info.open_count
                )));
            }
            self.dm.remove(&name)?;
        }
        lock(&self.rates).remove(id);
        let prefix = format!("dmraid-{id}+");
        for dev in self.dm.names()? {
            if dev.starts_with(&prefix) {
                self.dm.remove(&dev)?;
            }
        }
        Ok(())
    }

    /// Free the volume's extents on every present disk and remember it as
    /// deleted there, so a disk that is away now frees its part when it
    /// comes back ([`Engine::forget_deleted`]).
    fn free_extents(&self, id: &str) -> Result<(), Error> {
        let uids: Vec<String> = lock(&self.claimed)
            .iter()
            .filter(|c| self.disks.present(&c.info))
            .filter_map(|c| c.label().volumes.get(id).map(|r| r.uid.clone()))
            .filter(|u| !u.is_empty())
            .collect();
        let when = now();
        self.edit_labels(|label| {
            retire(label, id);
            label.add_tombstones(uids.iter().map(|u| (u.clone(), when)));
        })?;
        self.wake_wiper();
        Ok(())
    }

    /// Zero every extent marked Wiping on the present disks, then free it
    /// (and remember it reads as zeroes). Resumes what a crash
    /// interrupted: the mark stays in the labels until the wipe is done.
    /// Returns how many extents were freed.
    pub fn wipe_pending(&self) -> Result<usize, Error> {
        let pending: Vec<(PathBuf, String, u64, u64)> = lock(&self.claimed)
            .iter()
            .filter(|c| self.disks.present(&c.info))
            .flat_map(|c| {
                c.label()
                    .extents
                    .iter()
                    .filter(|e| e.state == ExtentState::Wiping)
                    .map(|e| {
                        (
                            c.info.path.clone(),
                            c.label().disk_uuid.clone(),
                            e.start,
                            e.len,
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
        let pause = std::env::var("DMRAID_WIPE_PAUSE_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .map(std::time::Duration::from_millis);
        for (path, uuid, start, len) in &pending {
            let mut dev = self.disks.open(path).map_err(Self::io_err(path))?;
            let mut at = 0;
            while at < *len {
                let n = WIPE_STEP.0.min(len - at);
                dev.zero_range((start + at) * 512, n * 512)
                    .map_err(Self::io_err(path))?;
                at += n;
                if let Some(p) = pause {
                    // Test hook: a slow wipe, so a power cut lands in it.
                    std::thread::sleep(p);
                }
            }
            self.edit_labels(|label| {
                if &label.disk_uuid != uuid {
                    return;
                }
                let before = label.extents.len();
                label.extents.retain(|e| {
                    !(e.state == ExtentState::Wiping && e.start == *start && e.len == *len)
                });
                if label.extents.len() < before {
                    allocator::ranges_add(&mut label.zeroed, (*start, *len));
                }
            })?;
            tracing::info!(disk = %path.display(), start, sectors = len, "extent wiped and freed");
        }
        Ok(pending.len())
    }

    /// Run [`Engine::wipe_pending`] in the background from now on: at once,
    /// whenever extents are given up, and every minute.
    pub fn start_wiper(self: &Arc<Self>) {
        let engine = Arc::downgrade(self);
        std::thread::spawn(move || loop {
            let Some(e) = engine.upgrade() else { return };
            if let Err(err) = e.wipe_pending() {
                tracing::error!(error = %err, "wiping freed extents failed; retrying in a minute");
            }
            let (flag, cv) = &*e.wipe_wake;
            let woken = lock(flag);
            let (mut woken, _) = cv
                .wait_timeout_while(woken, std::time::Duration::from_secs(60), |w| !*w)
                .unwrap_or_else(|e| e.into_inner());
            *woken = false;
        });
    }

    fn wake_wiper(&self) {
        let (flag, cv) = &*self.wipe_wake;
        *lock(flag) = true;
        cv.notify_all();
    }

    /// Free what present disks still hold of volumes deleted while they
    /// were away (their uid is in some present label's tombstones), and
    /// spread the tombstones to every present label. Returns the volume
    /// records dropped.
    pub fn forget_deleted(&self) -> Result<usize, Error> {
        let (tombstones, stale): (BTreeMap<String, u64>, usize) = {
            let claimed = lock(&self.claimed);
            let present: Vec<&Claimed> = claimed
                .iter()
                .filter(|c| self.disks.present(&c.info))
                .collect();
            let mut all = BTreeMap::new();
            for c in &present {
                for (uid, when) in &c.label().deleted {
                    let t = all.entry(uid.clone()).or_insert(*when);
                    *t = (*t).max(*when);
                }
            }
            let stale = present
                .iter()
                .flat_map(|c| c.label().volumes.iter())
                .filter(|(id, r)| deleted(&all, id, r))
                .count();
            (all, stale)
        };
        if tombstones.is_empty() {
            return Ok(0);
        }
        if stale > 0 {
            tracing::warn!(
                records = stale,
                "a returning disk holds volumes deleted while it was away; freeing them"
            );
        }
        self.edit_labels(|label| {
            let dead: Vec<String> = label
                .volumes
                .iter()
                .filter(|(id, r)| deleted(&tombstones, id, r))
                .map(|(id, _)| id.clone())
                .collect();
            for id in &dead {
                retire(label, id);
            }
            label.add_tombstones(tombstones.clone());
        })?;
        self.wake_wiper();
        Ok(stale)
    }

    /// Delete a volume: devices first, then its extents. Unknown ids succeed (idempotent).
    pub fn delete_volume(&self, id: &str) -> Result<(), Error> {
        self.delete(id, false)
    }

    /// Delete a volume the caller knows was made (its RaidVolume status or
    /// the standalone state says so): when none of its disks is here, the
    /// deletion is recorded by id, so its extents are freed whenever its
    /// disks come back, even after a restart that forgot them.
    pub fn delete_made_volume(&self, id: &str) -> Result<(), Error> {
        self.delete(id, true)
    }

    fn delete(&self, id: &str, made: bool) -> Result<(), Error> {
        let _guard = self.lock_volume(id)?;
        if self.find(id).is_none() {
            // Devices without labels may remain from a crash: remove them too.
            self.teardown(id)?;
            // Only disks that are away hold it: remember the deletion on
            // the present ones ([`Engine::forget_deleted`]).
            let uids: Vec<String> = lock(&self.claimed)
                .iter()
                .filter_map(|c| c.label().volumes.get(id).map(|r| r.uid.clone()))
                .filter(|u| !u.is_empty())
                .collect();
            if uids.is_empty() && !made {
                return Ok(());
            }
            let when = now();
            let mut keys = uids;
            keys.push(labels::id_tombstone(id));
            tracing::info!(volume = %id, "deleted while its disks are away: its extents are freed when they return");
            return self.edit_labels(|label| {
                label.add_tombstones(keys.iter().map(|k| (k.clone(), when)));
            });
        }
        self.teardown(id)?;
        self.free_extents(id)
    }

    /// Start-up, and whenever a disk is claimed: re-create every array from
    /// the labels alone (a running one is reloaded when its table lacks a
    /// leg whose disk is back). Half-made volumes are rolled back; volumes
    /// without a clean-shutdown marker get the crash fix first. Returns one
    /// error per volume that failed.
    pub fn activate_all(&self) -> Vec<(String, Error)> {
        let mut failures = Vec::new();
        for id in self.volume_ids() {
            let result = (|| -> Result<(), Error> {
                let _guard = self.lock_volume(&id)?;
                let Some((record, legs)) = self.find(&id) else {
                    // Only disks that are away hold it: it waits for them.
                    return match self.where_it_was(&id) {
                        Some(detail) => Err(Error::DisksMissing {
                            id: id.clone(),
                            detail,
                        }),
                        None => Ok(()),
                    };
                };
                if !record.complete {
                    // No present disk knows a finished create (the merge
                    // above prefers one): the create died half-way.
                    tracing::warn!(volume = %id, "a create that did not finish before a crash: rolling it back");
                    self.teardown(&id)?;
                    return self.free_extents(&id);
                }
                // Legs whose disks are away, more than the level survives
                // (both disks of a raid10 mirror): the kernel would refuse
                // the table, and nothing is written to the disks that are
                // here (no crash fix, no label change) until they return.
                let spec = Self::spec_of(&record)?.spec;
                let away: BTreeSet<usize> = (0..spec.legs)
                    .filter(|l| !legs.contains_key(l))
                    .map(|l| l as usize)
                    .collect();
                if dmraid_api::redundancy::survival(&spec, &away).lost {
                    return Err(Error::DisksMissing {
                        id: id.clone(),
                        detail: format!(
                            "the disks of its legs {} are away, more than {} survives",
                            away.iter()
                                .map(ToString::to_string)
                                .collect::<Vec<_>>()
                                .join(", "),
                            spec.raid_type
                        ),
                    });
                }
                let clean = {
                    let claimed = lock(&self.claimed);
                    claimed
                        .iter()
                        .filter_map(|c| c.label().volumes.get(&id))
                        .all(|r| r.clean_shutdown)
                };
                let already_live = self
                    .dm
                    .info(&array_name(&id))?
                    .is_some_and(|i| i.live_table);
                let mut patched = None;
                if !clean && !already_live {
                    match self.repair_after_crash(&legs) {
                        Ok((found, originals)) => {
                            // Every kernel the suites run (6.1, 6.12) drops
                            // the bitmap's dirty bits after a crash (the
                            // power_cut suite asserts it on each): the fix
                            // applies on all of them.
                            tracing::info!(volume = %id, dirty = found.0, regions = found.1, kernel = %kernel_release(), "unclean shutdown: array_resync_offset set to 0 so the kernel resyncs the dirty regions");
                            lock(&self.unclean).insert(id.clone(), found);
                            patched = Some((found, originals));
                        }
                        // Nothing was written: the kernel starts it as it
                        // is (what it does for everyone else), and the
                        // volume says why the fix was not applied.
                        Err(Error::Precondition(why)) => {
                            tracing::warn!(volume = %id, reason = %why, "unclean shutdown: crash fix refused, starting the array as the kernel finds it");
                            lock(&self.crash_fix_refused).insert(id.clone(), why);
                        }
                        Err(e) => return Err(e),
                    }
                }
                self.edit_volume_labels(&id, |label| {
                    if let Some(r) = label.volumes.get_mut(&id) {
                        r.clean_shutdown = false;
                        // A copy a crash left "in flight" learns the create finished.
                        if !r.complete && r.uid == record.uid {
                            tracing::info!(volume = %id, disk = %label.disk_uuid, "label copy still said the create was in flight; marked complete");
                            r.complete = true;
                        }
                    }
                })?;
                match (self.activate_volume(&id, false), patched) {
                    (Err(e), Some((found, originals)))
                        if Self::spec_of(&record)?.spec.raid_type.is_parity() =>
                    {
                        self.start_with_write_hole(&id, e, found, &originals)
                    }
                    (result, _) => result,
                }
            })();
            let result = result.and_then(|_| self.reap_retired(&id).map(|_| ()));
            if let Err(e) = result {
                failures.push((id, e));
            }
        }
        self.settle_returned();
        failures
    }

    /// A parity array that lost power while degraded (a leg missing, or
    /// one being rebuilt): the kernel refuses it with array_resync_offset 0
    /// ("cannot start dirty degraded array", measured on 6.1), because the
    /// stripes written at the crash cannot be checked without every leg
    /// (the RAID5/6 write hole). Policy: put the superblocks back as they
    /// were, start the array without the resync, say how many regions may
    /// be inconsistent, and check the whole array once redundancy is back
    /// (the monitor does). Never leave it offline for this.
    fn start_with_write_hole(
        &self,
        id: &str,
        refused: Error,
        (dirty, regions): (u64, u64),
        originals: &[(PathBuf, u64, Vec<u8>)],
    ) -> Result<(), Error> {
        tracing::warn!(volume = %id, error = %refused, dirty, regions, "the kernel refused the dirty degraded array: starting it without the resync; the regions written at the crash are checked once redundancy is back");
        for (path, meta, head) in originals {
            let mut dev = self.disks.open(path).map_err(Self::io_err(path))?;
            dev.seek(SeekFrom::Start(meta * 512))
                .map_err(Self::io_err(path))?;
            dev.write_all(head).map_err(Self::io_err(path))?;
            dev.sync_data().map_err(Self::io_err(path))?;
        }
        let name = array_name(id);
        if !self.dm.info(&name)?.is_some_and(|i| i.live_table) {
            self.teardown(id)?;
        }
        self.activate_volume(id, false)?;
        lock(&self.unclean).remove(id);
        lock(&self.write_hole).insert(id.to_string(), dirty);
        Ok(())
    }

    /// The monitor started the check a write hole waits for: forget it.
    pub fn write_hole_checked(&self, id: &str) -> Option<u64> {
        lock(&self.write_hole).remove(id)
    }

    /// The kernel keeps saying "clean" after a crash and drops the bitmap's
    /// dirty bits (VM-NOTES); set array_resync_offset to 0 in every leg's
    /// superblock so it resyncs exactly the dirty regions. Returns (dirty,
    /// regions) and each patched superblock as it was (disk, meta start,
    /// 4 KiB), to put back if the kernel refuses the array.
    #[allow(clippy::type_complexity)]
    fn repair_after_crash(
        &self,
        legs: &BTreeMap<u32, (DiskInfo, u64, u64)>,
    ) -> Result<((u64, u64), Vec<(PathBuf, u64, Vec<u8>)>), Error> {
        let mut originals = Vec::new();
        let mut worst = (0, 0);
        // Every leg's superblock is read and checked before any is written:
        // one the driver may not edit (a layout or feature it does not know)
        // leaves them all as they were.
        let mut patched = Vec::new();
        for (disk, meta, _) in legs.values() {
            let path = &disk.path;
            let (dev, mut head) = self.meta_head(path, *meta)?;
            if superblock::parse_superblock(&head).is_err() {
                // Never written (the array never came up): nothing to repair.
                continue;
            }
            if let Ok(d) = superblock::dirty_regions(&head) {
                worst = worst.max(d);
            }
            originals.push((path.clone(), *meta, head[..4096].to_vec()));
            superblock::set_array_resync_offset_zero(&mut head).map_err(|e| {
                Error::Precondition(format!(
                    "the crash fix cannot edit the dm-raid superblock on {} (kernel {}): {e}",
                    path.display(),
                    kernel_release()
                ))
            })?;
            patched.push((path, *meta, head, dev));
        }
        for (path, meta, head, mut dev) in patched {
            dev.seek(SeekFrom::Start(meta * 512))
                .map_err(Self::io_err(path))?;
            dev.write_all(&head[..4096]).map_err(Self::io_err(path))?;
            dev.sync_data().map_err(Self::io_err(path))?;
        }
        Ok((worst, originals))
    }

    /// Orderly shutdown: stop every array that is not in use and mark it
    /// clean. Arrays in use stay up (and unmarked: their next activation
    /// repairs them as after a crash, which is safe). Returns ids left up.
    pub fn deactivate_all(&self) -> Vec<(String, Error)> {
        let mut left = Vec::new();
        let mut stopped = BTreeSet::new();
        for id in self.volume_ids() {
            let ok = (|| -> Result<(), Error> {
                // An operation in flight (a reconcile, a rebuild step) ends
                // first: an orderly stop waits for it a little.
                let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
                let _guard = loop {
                    match self.lock_volume(&id) {
                        Err(Error::Busy(_)) if std::time::Instant::now() < deadline => {
                            std::thread::sleep(std::time::Duration::from_millis(100))
                        }
                        other => break other?,
                    }
                };
                self.teardown(&id)
            })();
            match ok {
                Ok(()) => {
                    stopped.insert(id);
                }
                Err(e) => left.push((id, e)),
            }
        }
        // One label write a disk for all of them (a stop cut short leaves
        // the rest unmarked: repaired as after a crash, which is safe).
        let marked = self.edit_labels(|label| {
            for (id, r) in label.volumes.iter_mut() {
                if stopped.contains(id) {
                    r.clean_shutdown = true;
                }
            }
        });
        if let Err(e) = marked {
            tracing::warn!(error = %e, volumes = stopped.len(), "arrays stopped but not marked clean: their next activation repairs them as after a crash");
        }
        left
    }

    /// A volume's record, legs and live status.
    pub fn volume(&self, id: &str) -> Result<VolumeInfo, Error> {
        let (record, legs) = self
            .find(id)
            .ok_or_else(|| Error::NotFound(id.to_string()))?;
        let vs = Self::spec_of(&record)?;
        let legs_wanted = vs.spec.legs as usize;
        let capacity = dmraid_api::capacity::array_sectors(&vs.spec, Sectors(vs.leg_data))?
            .bytes()
            .0;
        let name = array_name(id);
        let status = match self.dm.info(&name)? {
            Some(i) if i.live_table => self
                .dm
                .status(&name)?
                .first()
                .and_then(|t| RaidStatus::parse(&t.params).ok()),
            _ => None,
        };
        Ok(VolumeInfo {
            id: id.to_string(),
            capacity,
            legs: (0..vs.spec.legs)
                .map(|l| LegInfo {
                    leg: l,
                    disk: legs.get(&l).map(|(d, _, _)| d.path.clone()),
                })
                .collect(),
            spec: vs,
            device: format!("/dev/mapper/{name}"),
            status,
            unclean: lock(&self.unclean).get(id).copied(),
            write_hole: lock(&self.write_hole).get(id).copied(),
            crash_fix_refused: lock(&self.crash_fix_refused).get(id).cloned(),
            unreadable: if legs.len() < legs_wanted {
                lock(&self.unreadable)
                    .iter()
                    .map(|(p, why)| (p.display().to_string(), why.clone()))
                    .collect()
            } else {
                Vec::new()
            },
            eta_seconds: lock(&self.etas).get(id).copied(),
            slow_legs: lock(&self.slow).get(id).cloned().unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests;
