//! The array engine: claimed disks and their labels, volumes made of
//! dm-linear meta/data pairs under a dm-raid target, created, deleted,
//! re-activated from the labels alone at start-up, and deactivated with a
//! clean-shutdown marker so a crash is recognised and repaired (DESIGN
//! "After a crash").
//!
//! Ordering keeps the labels the truth: extents are recorded (incomplete)
//! before devices are made and marked complete once the array's table is
//! loaded, before it goes live (nothing of it on the disks yet); devices are removed
//! before extents are freed. A crash at any step is finished or rolled back
//! by the next `create_volume` or `activate_all`.

mod activate;
mod busy;
pub use busy::{parse_id, VolumeLock};
pub mod allocator;
mod claim;
mod leg;
pub use leg::{LegPlace, Segment};
pub mod labels;
mod rebuild;
mod record;
pub mod stack;
mod volume;
mod wipe;

use crate::error::Error;
use crate::kernel::disks::{DiskInfo, Disks};
use crate::kernel::dm::{self, DeviceMapper, Target};
use crate::kernel::signature;
use allocator::DiskSpace;
use dmraid_api::capacity::{leg_for_size, META_EXTENT};
use dmraid_api::superblock;
use dmraid_api::table::{LegDevs, RaidTable};
use dmraid_api::units::{Bytes, Sectors};
use dmraid_api::{RaidSpec, RaidStatus};
use labels::{DiskLabel, Extent, ExtentState, Role, SyncIo, VolumeRecord};
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
    /// Its create has not finished (in flight, or cut short by a crash and
    /// rolled back at the next start or retry): no one was told of it yet.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub creating: bool,
    /// A delete is taking it apart: its devices may already be gone.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub deleting: bool,
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
    /// Volumes a delete is taking apart: the monitor passes over them.
    deleting: Mutex<BTreeSet<String>>,
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
    /// Volumes whose table was reloaded while a resync or rebuild ran: md
    /// goes on with it as a "requested" sync that dm-raid reports as
    /// `repair`. Until it ends, the volume's status says what it really
    /// is (never a scrub its operator did not ask for).
    resumed: Mutex<BTreeMap<String, dmraid_api::status::SyncAction>>,
    /// Volumes whose running resync a reload of ours swapped the table
    /// under, with the position (sectors) it stood at: the next status
    /// reads tell whether it went on from there or started over.
    resync_reloaded: Mutex<BTreeMap<String, u64>>,
    /// This kernel starts a resync over at sector 0 when the array's
    /// table is reloaded (6.12, frozen or not; 6.1 goes on from the
    /// position frozen): the rate policy then reloads no running resync
    /// (`crate::health::rate`). Assumed at start-up for a kernel other
    /// than 6.1 ([`resync_survives_reload`]), or seen.
    reload_restarts_resync: std::sync::atomic::AtomicBool,
    /// Volumes whose live table still carries `rebuild` (a replacement
    /// leg, or a blank one at activation): the table without it is loaded
    /// once the array is in sync ([`Engine::load_steady`]).
    rebuild_live: Mutex<BTreeSet<String>>,
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
    (labels::LABEL_AREA + META_EXTENT + Sectors(8)).bytes().0
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

/// The record as the present legs can hold it. The labels of a volume's
/// disks are written one by one, so a crash in an expansion can leave a
/// record of the new size beside a leg that has not grown: the volume is
/// then the size every present leg has (its filesystem was not grown
/// yet: that waits for the expansion's answer), and the expansion, asked
/// again, grows the legs that are short.
fn cut_short(id: &str, mut r: VolumeRecord, legs: &BTreeMap<u32, LegPlace>) -> VolumeRecord {
    let Some(shortest) = legs.values().map(LegPlace::data_len).min() else {
        return r;
    };
    let recorded = r.spec.get("legData").and_then(serde_json::Value::as_u64);
    if let Some(recorded) = recorded.filter(|l| shortest.0 < *l) {
        tracing::warn!(volume = %id, recorded, shortest = shortest.0, "a leg is shorter than its record (an expansion cut short): the volume keeps the size every leg has until it is expanded again");
        r.spec["legData"] = shortest.0.into();
    }
    r
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

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Crash-consistency test hook: when `DMRAID_CRASH_AT` names this point the
/// process aborts right here, leaving disks and devices as a `kill -9` at
/// that instant would. Points: every layer boundary of a device stack
/// (`linear-live`: the legs' linears live, the array not yet loaded;
/// `raid-loaded`: the array's table loaded, not live, a create not yet
/// recorded as finished; `raid-live`: the array live, a create recorded
/// as finished),
/// `leg-recorded` (a replacement leg is in the labels, nothing loaded yet),
/// `rebuild-loaded` (the array runs with `rebuild`, the steady table not
/// loaded yet), `grow-recorded` and `grow-linears` (an expansion).
pub(crate) fn crash_point(name: &str) {
    if std::env::var("DMRAID_CRASH_AT").is_ok_and(|v| v == name) {
        eprintln!("DMRAID_CRASH_AT={name}: aborting here");
        std::process::abort();
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

/// Whether a resync goes on from where it was across a table reload of
/// ours (frozen first) on the kernel `release` (`uname -r`): measured on
/// 6.1; 6.12 starts it over at sector 0 however the reload is made
/// (README, "What the kernel really does"). Kernels not measured are
/// taken to be like 6.12.
pub fn resync_survives_reload(release: &str) -> bool {
    release.trim().starts_with("6.1.")
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
            deleting: Mutex::new(BTreeSet::new()),
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
            resumed: Mutex::new(BTreeMap::new()),
            resync_reloaded: Mutex::new(BTreeMap::new()),
            reload_restarts_resync: std::sync::atomic::AtomicBool::new(false),
            rebuild_live: Mutex::new(BTreeSet::new()),
        }
    }

    fn io_err(path: &std::path::Path) -> impl FnOnce(std::io::Error) -> Error + '_ {
        move |source| Error::Io {
            path: path.display().to_string(),
            source,
        }
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

    /// Note the device-mapper events seen so far (see
    /// [`crate::kernel::dm::DeviceMapper::arm_events`]).
    pub fn arm_events(&self) -> Result<(), Error> {
        Ok(self.dm.arm_events()?)
    }

    /// Block until a device-mapper event since the last
    /// [`Engine::arm_events`], a disk added or removed, or `timeout`.
    pub fn wait_for_event(
        &self,
        timeout: std::time::Duration,
    ) -> Result<crate::kernel::dm::Wake, Error> {
        Ok(self.dm.wait_for_event(timeout)?)
    }

    /// Free gaps per claimed, present disk, for capacity answers.
    pub fn free_gaps(&self) -> Vec<Vec<Sectors>> {
        self.spaces_for_legs()
            .iter()
            .map(|d| d.gaps().into_iter().map(|(_, len)| len).collect())
            .collect()
    }

    /// The volume's record and where each leg lives, for the legs whose disk is here.
    fn find(&self, id: &str) -> Option<(VolumeRecord, BTreeMap<u32, LegPlace>)> {
        let (record, legs, _) = self.resolve(id);
        record.map(|r| (cut_short(id, r, &legs), legs))
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
        BTreeMap<u32, LegPlace>,
        Vec<(String, u32)>,
    ) {
        let claimed = lock(&self.claimed);
        let mut record: Option<VolumeRecord> = None;
        let mut holders: BTreeMap<u32, Vec<(u64, usize, Sectors, Vec<Segment>)>> = BTreeMap::new();
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
            let mut data: BTreeMap<u32, Vec<Segment>> = BTreeMap::new();
            for e in c
                .label()
                .extents
                .iter()
                .filter(|e| e.volume == id && e.state == ExtentState::Active)
            {
                match e.role {
                    Role::Meta => {
                        meta.insert(e.leg, e.start);
                    }
                    Role::Data => data.entry(e.leg).or_default().push(Segment {
                        offset: e.offset,
                        start: e.start,
                        len: e.len,
                    }),
                }
            }
            for (leg, m) in meta {
                if let Some(mut segs) = data.remove(&leg) {
                    segs.sort_by_key(|s| s.offset);
                    holders
                        .entry(leg)
                        .or_default()
                        .push((generation, i, m, segs));
                }
            }
        }
        let mut legs = BTreeMap::new();
        let mut stale = Vec::new();
        for (leg, mut hs) in holders {
            // Highest generation first; on a tie the first claimed disk.
            hs.sort_by_key(|(g, i, _, _)| (std::cmp::Reverse(*g), *i));
            let (_, i, meta, data) = hs.swap_remove(0);
            legs.insert(
                leg,
                LegPlace {
                    disk: claimed[i].info.clone(),
                    meta,
                    data,
                },
            );
            for (_, j, _, _) in &hs {
                stale.push((claimed[*j].label().disk_uuid.to_string(), leg));
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

    fn uuid_of(&self, path: &std::path::Path) -> Result<String, Error> {
        lock(&self.claimed)
            .iter()
            .find(|c| c.info.path == path)
            .map(|c| c.label().disk_uuid.to_string())
            .ok_or_else(|| Error::NotFound(path.display().to_string()))
    }

    /// A volume's record, legs and live status.
    pub fn volume(&self, id: &str) -> Result<VolumeInfo, Error> {
        let (record, legs) = self
            .find(id)
            .ok_or_else(|| Error::NotFound(id.to_string()))?;
        let vs = Self::spec_of(&record)?;
        let legs_wanted = vs.spec.legs as usize;
        let recorded = dmraid_api::capacity::array_sectors(&vs.spec, Sectors(vs.leg_data))?;
        let name = array_name(id);
        let live = match self.dm.info(&name)? {
            Some(i) if i.live_table => self.dm.status(&name)?,
            _ => Vec::new(),
        };
        let status = live
            .first()
            .and_then(|t| RaidStatus::parse(&t.params).ok())
            .map(|st| self.as_resumed(id, st));
        // What the device has now: mid-expansion the labels already say the
        // new size while the array still has the old one, and a status
        // published then must not say the volume has grown.
        let capacity = match live.iter().map(|t| t.length).sum::<u64>() {
            0 => recorded,
            sectors => Sectors(sectors),
        }
        .bytes()
        .0;
        Ok(VolumeInfo {
            id: id.to_string(),
            capacity,
            legs: (0..vs.spec.legs)
                .map(|l| LegInfo {
                    leg: l,
                    disk: legs.get(&l).map(|p| p.disk.path.clone()),
                })
                .collect(),
            spec: vs,
            device: format!("/dev/mapper/{name}"),
            status,
            creating: !record.complete,
            deleting: lock(&self.deleting).contains(id),
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
