//! The label area at the start of every claimed disk: who owns the disk and
//! which extents of it belong to which volume leg. The labels are the
//! source of truth on a node: after a reboot the arrays are rebuilt from
//! them alone.
//!
//! Layout: the first [`LABEL_AREA`] of the disk holds two slots (A at 0, B
//! at half). Each slot is a 64-byte header — magic, format version,
//! sequence number, body length, CRC32C of the body and of the header — and
//! a JSON body. A write goes to the slot holding the older (or an invalid)
//! copy and is synced before it counts; a read takes the newest copy that
//! verifies. A torn write can only damage the slot being written, so the
//! previous state is never lost (stratisd's metadata areas work the same way).
//! A copy counts only if its extents also make sense for the disk (after the
//! label area, within the disk, disjoint): a checksum proves the bytes are
//! what was written, not that what was written is right. A write first
//! re-reads the slots and refuses if another process wrote since
//! (compare-and-swap); holding writers off in between is the caller's job.

use dmraid_api::units::{Bytes, Sectors};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom, Write};

/// Sectors reserved for the label at the start of each disk (1 MiB).
pub const LABEL_AREA: Sectors = Sectors(2048);
/// Bytes of one of the two label copies.
pub const SLOT_BYTES: u64 = LABEL_AREA.bytes().0 / 2;
const HEADER: usize = 64;
/// Identifies our label slots.
pub const MAGIC: &[u8; 8] = b"DMRCSI\x00L";
/// The newest label format this code reads (it writes [`format_of`]).
pub const FORMAT_VERSION: u32 = 2;

/// The format a label is written in: 2 when a leg has several data
/// segments (an extent with an offset, which format 1 cannot express and a
/// format-1 driver must refuse), else 1, which every driver reads.
pub fn format_of(label: &DiskLabel) -> u32 {
    if label.extents.iter().any(|e| !e.offset.is_zero()) {
        2
    } else {
        1
    }
}

/// Flushing written data to stable storage; a no-op for in-memory buffers.
pub trait SyncIo {
    /// Make everything written so far durable.
    fn sync_data(&mut self) -> std::io::Result<()>;
}

impl SyncIo for std::fs::File {
    fn sync_data(&mut self) -> std::io::Result<()> {
        std::fs::File::sync_data(self)
    }
}

impl SyncIo for std::io::Cursor<Vec<u8>> {
    fn sync_data(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What an extent holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// dm-raid superblock and bitmap.
    Meta,
    /// Data.
    Data,
}

/// An extent's life stage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ExtentState {
    /// In use by the array.
    #[default]
    Active,
    /// A replacement leg being rebuilt.
    Rebuilding,
    /// A replaced leg, wiped once the array is in sync.
    Retiring,
    /// Given up by its volume, being zeroed: neither free nor anyone's,
    /// and counted as used, until the wipe finishes (a crash resumes it).
    Wiping,
}

/// A run of sectors owned by one leg of one volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extent {
    /// Volume id.
    pub volume: String,
    /// Leg position in the array.
    pub leg: u32,
    /// Metadata or data.
    pub role: Role,
    /// First sector on the disk.
    pub start: Sectors,
    /// Length in sectors.
    pub len: Sectors,
    /// Where this extent starts in its leg's data device, in sectors: a
    /// leg whose data grew where the space after it was taken has several
    /// data extents on its disk (segments), mapped in this order. 0 for a
    /// metadata extent and a leg's first segment, and then not written, so
    /// a label whose legs are one segment each is format 1.
    #[serde(default, skip_serializing_if = "Sectors::is_zero")]
    pub offset: Sectors,
    /// Life stage.
    #[serde(default)]
    pub state: ExtentState,
}

/// What the label records of one volume with extents on this disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeRecord {
    /// The engine's description of the volume (spec, size, ...), opaque here.
    pub spec: serde_json::Value,
    /// Set on orderly deactivation, cleared on activation: missing at
    /// activation means the node crashed with the array active.
    pub clean_shutdown: bool,
    /// False while a create is in flight (a crash leaves it false).
    pub complete: bool,
    /// Bumped on every present disk each time one of the volume's legs is
    /// replaced. A disk that was away meanwhile comes back with a lower
    /// number, and where it and another disk both hold a leg, the higher
    /// number wins (labels written before this field read as 0).
    #[serde(default)]
    pub generation: u64,
    /// A random id given at creation: tells this volume from an earlier one
    /// of the same name (labels written before it read as empty).
    #[serde(default)]
    pub uid: String,
    /// When it was created (seconds since the epoch; 0 in labels written
    /// before this field): a deletion recorded by id spares a volume of the
    /// same id created after it.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub created: u64,
    /// When its last check (scrub) started, seconds since the epoch (0:
    /// never), so the monthly check keeps its rhythm across restarts.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub last_check: u64,
    /// The layers of its device stack, bottom first (`linear`, `raid`);
    /// empty in labels written before it was recorded, which means the
    /// same. A driver that finds a layer it does not know refuses the
    /// volume rather than activate part of it. A driver that writes any
    /// other stack must also raise the label format, so drivers that do
    /// not read this field refuse the disk instead of activating the
    /// volume without its other layers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stack: Vec<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The tombstone key of a deletion recorded by volume id, for a volume
/// whose disks were all away (its uid unknown).
pub fn id_tombstone(id: &str) -> String {
    format!("id:{id}")
}

/// The contents of a disk's label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskLabel {
    /// This disk's identity, stable across device renames.
    pub disk_uuid: dmraid_api::DiskUuid,
    /// The node that claimed it.
    pub node: String,
    /// When it was claimed (seconds since the epoch).
    pub created: u64,
    /// Volumes with extents here.
    pub volumes: BTreeMap<String, VolumeRecord>,
    /// Every allocated extent.
    pub extents: Vec<Extent>,
    /// Volumes deleted on this node (uid -> seconds since the epoch), so a
    /// disk that was away at the deletion gives its extents up when it
    /// comes back. The newest [`MAX_TOMBSTONES`] are kept.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub deleted: BTreeMap<String, u64>,
    /// Free sector ranges `(start, len)` known to read as zeroes (wiped
    /// after their volume went), sorted and disjoint. A volume placed on
    /// them needs no zeroing; anything else free may hold a disk's old
    /// contents.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub zeroed: Vec<(u64, u64)>,
}

/// How many deleted volumes a label remembers.
pub const MAX_TOMBSTONES: usize = 512;

impl DiskLabel {
    /// Remember deleted volumes, keeping the newest [`MAX_TOMBSTONES`].
    pub fn add_tombstones(&mut self, tombstones: impl IntoIterator<Item = (String, u64)>) {
        for (uid, when) in tombstones {
            if !uid.is_empty() {
                let t = self.deleted.entry(uid).or_insert(when);
                *t = (*t).max(when);
            }
        }
        while self.deleted.len() > MAX_TOMBSTONES {
            let oldest = self
                .deleted
                .iter()
                .min_by_key(|(uid, when)| (**when, (*uid).clone()))
                .map(|(uid, _)| uid.clone());
            match oldest {
                Some(uid) => self.deleted.remove(&uid),
                None => break,
            };
        }
    }
}

/// Why a label could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum LabelError {
    /// I/O on the disk failed.
    #[error("label I/O: {0}")]
    Io(#[from] std::io::Error),
    /// A label written by a newer dmraid-csi.
    #[error("label format version {0} is newer than this driver understands ({FORMAT_VERSION}); upgrade dmraid-csi, the label was not touched")]
    NewerFormat(u32),
    /// Our slots are there but no copy is usable; says why for each.
    #[error("no copy of the label is usable ({0}); refusing to guess")]
    Corrupt(String),
    /// The label does not fit its slot.
    #[error(
        "its label would grow to {bytes} bytes ({volumes} volumes, {extents} extents), over its {SLOT_BYTES}-byte slot: this disk holds as many volumes as its label can record; put new volumes on other disks (add disks to node.disks) or delete volumes on this one"
    )]
    TooBig {
        /// The encoded label's size.
        bytes: usize,
        /// Volumes and extents it would record.
        volumes: usize,
        extents: usize,
    },
    /// The body does not serialise.
    #[error("label body: {0}")]
    Body(String),
    /// A label that would not read back (its extents are wrong); not written.
    #[error("refusing to write a label that would not read back: {0}")]
    Invalid(String),
    /// Someone else wrote the label since it was read; nothing was written.
    #[error("the label on this disk changed under us (sequence {found}, expected {expected}): another dmraid-csi process is using this disk")]
    Stale {
        /// The sequence number this writer last read.
        expected: u64,
        /// The sequence number on the disk now.
        found: u64,
    },
}

/// Check what a checksum cannot: every extent lies after the label area
/// and within the disk's `disk` sectors, and no two overlap. A label that
/// fails is as untrustworthy as a damaged one (its allocations would hand
/// out the label area, sectors past the end, or one leg's sectors twice).
pub fn validate(label: &DiskLabel, disk: Sectors) -> Result<(), String> {
    let mut spans = Vec::with_capacity(label.extents.len());
    for e in &label.extents {
        let name = || {
            format!(
                "extent of volume {} leg {} ({:?}, {} sectors at {})",
                e.volume, e.leg, e.role, e.len.0, e.start.0
            )
        };
        let Some(end) = e.start.checked_add(e.len) else {
            return Err(format!("{} ends past the largest sector number", name()));
        };
        if e.start < LABEL_AREA {
            return Err(format!(
                "{} lies inside the label area (the first {} sectors)",
                name(),
                LABEL_AREA.0
            ));
        }
        if end > disk {
            return Err(format!(
                "{} lies past the disk's end ({} sectors)",
                name(),
                disk.0
            ));
        }
        if !e.len.is_zero() {
            spans.push((e.start, end, e));
        }
    }
    spans.sort_unstable_by_key(|&(start, end, _)| (start, end));
    for pair in spans.windows(2) {
        let ((_, end, a), (start, _, b)) = (pair[0], pair[1]);
        if start < end {
            return Err(format!(
                "extents of volume {} leg {} and volume {} leg {} overlap at sector {}",
                a.volume, a.leg, b.volume, b.leg, start.0
            ));
        }
    }
    Ok(())
}

struct Slot {
    seq: u64,
    label: DiskLabel,
    len: usize,
}

enum SlotRead {
    Blank,
    /// Our magic, but not a usable copy: why.
    Invalid(String),
    Newer(u32),
    Valid(Slot),
}

const SLOT_NAMES: [&str; 2] = ["A", "B"];

fn read_slot<D: Read + Seek>(
    dev: &mut D,
    index: u64,
    disk: Sectors,
) -> Result<SlotRead, LabelError> {
    dev.seek(SeekFrom::Start(index * SLOT_BYTES))?;
    let mut h = [0u8; HEADER];
    if let Err(e) = dev.read_exact(&mut h) {
        return if e.kind() == std::io::ErrorKind::UnexpectedEof {
            Ok(SlotRead::Blank)
        } else {
            Err(e.into())
        };
    }
    if &h[0..8] != MAGIC {
        return Ok(SlotRead::Blank);
    }
    let u32_at = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
    let mut header_crc_input = h;
    header_crc_input[32..36].fill(0);
    if crc32c::crc32c(&header_crc_input) != u32_at(32) {
        return Ok(SlotRead::Invalid("header checksum mismatch".into()));
    }
    let version = u32_at(8);
    if version > FORMAT_VERSION {
        return Ok(SlotRead::Newer(version));
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&h[12..20]);
    let seq = u64::from_le_bytes(seq);
    let len = u32_at(20) as usize;
    if len > SLOT_BYTES as usize - HEADER {
        return Ok(SlotRead::Invalid(format!(
            "body length {len} exceeds the slot"
        )));
    }
    let mut body = vec![0u8; len];
    dev.read_exact(&mut body)?;
    if crc32c::crc32c(&body) != u32_at(24) {
        return Ok(SlotRead::Invalid("body checksum mismatch".into()));
    }
    let label: DiskLabel = match serde_json::from_slice(&body) {
        Ok(label) => label,
        Err(e) => return Ok(SlotRead::Invalid(format!("body does not parse: {e}"))),
    };
    match validate(&label, disk) {
        Ok(()) => Ok(SlotRead::Valid(Slot { seq, label, len })),
        Err(why) => Ok(SlotRead::Invalid(why)),
    }
}

/// What is in a disk's label area.
#[derive(Debug)]
pub struct Loaded {
    /// The newest valid label, if any.
    pub label: Option<DiskLabel>,
    /// Its sequence number (0 when none).
    pub seq: u64,
    /// The slot the next write goes to.
    next_slot: u64,
    /// The disk's size, which the label's extents were checked against.
    disk: Sectors,
    /// The encoded label's length.
    len: usize,
}

/// Room a label must have left for a disk to take another leg: a volume's
/// record and two extents take about 1 KiB (`dmraid-bench scale` measures it).
pub const ROOM_FOR_A_LEG: usize = 4096;

impl Loaded {
    /// Whether the label can record another leg on this disk; a disk whose
    /// label cannot is skipped for new legs, and says so in `disks`.
    pub fn has_room_for_a_leg(&self) -> bool {
        self.len + ROOM_FOR_A_LEG <= SLOT_BYTES as usize - HEADER
    }

    /// The disk's size the label was read against.
    pub fn disk(&self) -> Sectors {
        self.disk
    }
}

/// Read the newest valid label, checking its extents against the disk's
/// size as the device reports it (its end, by seeking there). See
/// [`read_within`].
pub fn read<D: Read + Seek>(dev: &mut D) -> Result<Loaded, LabelError> {
    let end = dev.seek(SeekFrom::End(0))?;
    read_within(dev, Bytes(end).sectors())
}

/// Read the newest valid label of a disk of `disk` sectors. `Ok(label:
/// None)` for a disk that carries none of our slots; an error when our
/// slots exist but no copy is usable (checksum, body or extents wrong), or
/// a newer format is present. A copy skipped for the other is logged.
pub fn read_within<D: Read + Seek>(dev: &mut D, disk: Sectors) -> Result<Loaded, LabelError> {
    let slots = [read_slot(dev, 0, disk)?, read_slot(dev, 1, disk)?];
    for s in &slots {
        if let SlotRead::Newer(v) = s {
            return Err(LabelError::NewerFormat(*v));
        }
    }
    let seq = |s: &SlotRead| match s {
        SlotRead::Valid(slot) => Some(slot.seq),
        _ => None,
    };
    let best = match (seq(&slots[0]), seq(&slots[1])) {
        (Some(x), Some(y)) if y > x => Some(1),
        (Some(_), _) => Some(0),
        (None, Some(_)) => Some(1),
        (None, None) => None,
    };
    let why = |s: &SlotRead| match s {
        SlotRead::Invalid(why) => Some(why.clone()),
        _ => None,
    };
    let Some(best) = best else {
        if slots.iter().all(|s| matches!(s, SlotRead::Blank)) {
            return Ok(Loaded {
                label: None,
                seq: 0,
                next_slot: 0,
                disk,
                len: 0,
            });
        }
        let reasons: Vec<String> = slots
            .iter()
            .zip(SLOT_NAMES)
            .map(|(s, name)| format!("copy {name}: {}", why(s).unwrap_or_else(|| "blank".into())))
            .collect();
        return Err(LabelError::Corrupt(reasons.join("; ")));
    };
    let [a, b] = slots;
    let (chosen, other) = if best == 0 { (a, b) } else { (b, a) };
    if let Some(why) = why(&other) {
        tracing::warn!(
            copy = SLOT_NAMES[1 - best],
            reason = %why,
            "skipping an unusable copy of a disk label; the other copy is used and the next write replaces this one"
        );
    }
    match chosen {
        SlotRead::Valid(slot) => Ok(Loaded {
            label: Some(slot.label),
            seq: slot.seq,
            next_slot: 1 - best as u64,
            disk,
            len: slot.len,
        }),
        _ => unreachable!("best is the valid slot chosen above"),
    }
}

/// Write `label` as the next version after `loaded`, into the older slot,
/// and sync; `loaded` is updated to describe the new state.
///
/// Compare-and-swap: the slots are read again first, and when the newest
/// usable copy on the disk is no longer the one `loaded` describes (another
/// process wrote since), nothing is written and the error is
/// [`LabelError::Stale`]; the caller re-reads and decides. The read and the
/// write are one step only if the caller holds other writers off the disk
/// meanwhile (the engine takes the disk's lock).
pub fn write<D: Read + Write + Seek + SyncIo>(
    dev: &mut D,
    loaded: &mut Loaded,
    label: &DiskLabel,
) -> Result<(), LabelError> {
    write_with(dev, loaded, label, |_| Ok(()))
}

/// The label encoded, if it fits its slot and would read back on a disk of
/// `disk` sectors; else why not.
pub fn check(label: &DiskLabel, disk: Sectors) -> Result<Vec<u8>, LabelError> {
    let body = serde_json::to_vec(label).map_err(|e| LabelError::Body(e.to_string()))?;
    if body.len() > SLOT_BYTES as usize - HEADER {
        return Err(LabelError::TooBig {
            bytes: body.len() + HEADER,
            volumes: label.volumes.len(),
            extents: label.extents.len(),
        });
    }
    validate(label, disk).map_err(LabelError::Invalid)?;
    Ok(body)
}

/// [`write`], and `before` writes to the disk once the label on it is
/// known to be the one `loaded` describes (so the space the new label
/// takes is this writer's), before the new copy goes down: the one sync
/// that makes the label durable makes those writes durable too.
pub fn write_with<D: Read + Write + Seek + SyncIo>(
    dev: &mut D,
    loaded: &mut Loaded,
    label: &DiskLabel,
    before: impl FnOnce(&mut D) -> std::io::Result<()>,
) -> Result<(), LabelError> {
    let body = check(label, loaded.disk)?;
    let on_disk = read_within(dev, loaded.disk)?;
    if on_disk.seq != loaded.seq {
        return Err(LabelError::Stale {
            expected: loaded.seq,
            found: on_disk.seq,
        });
    }
    before(dev)?;
    let seq = loaded.seq + 1;
    let mut h = [0u8; HEADER];
    h[0..8].copy_from_slice(MAGIC);
    h[8..12].copy_from_slice(&format_of(label).to_le_bytes());
    h[12..20].copy_from_slice(&seq.to_le_bytes());
    h[20..24].copy_from_slice(&(body.len() as u32).to_le_bytes());
    h[24..28].copy_from_slice(&crc32c::crc32c(&body).to_le_bytes());
    let crc = crc32c::crc32c(&h);
    h[32..36].copy_from_slice(&crc.to_le_bytes());
    let mut buf = h.to_vec();
    buf.extend_from_slice(&body);
    dev.seek(SeekFrom::Start(on_disk.next_slot * SLOT_BYTES))?;
    dev.write_all(&buf)?;
    dev.flush()?;
    dev.sync_data()?;
    loaded.seq = seq;
    loaded.len = body.len();
    loaded.label = Some(label.clone());
    loaded.next_slot = 1 - on_disk.next_slot;
    Ok(())
}

/// A fresh label for a disk claimed by `node`.
pub fn new_label(disk_uuid: dmraid_api::DiskUuid, node: &str, now: u64) -> DiskLabel {
    DiskLabel {
        disk_uuid,
        node: node.to_string(),
        created: now,
        volumes: BTreeMap::new(),
        extents: Vec::new(),
        deleted: BTreeMap::new(),
        zeroed: Vec::new(),
    }
}

/// Whether the bytes at the start of a disk carry one of our label slots.
pub fn has_magic(head: &[u8]) -> bool {
    head.get(0..8) == Some(MAGIC)
        || head.get(SLOT_BYTES as usize..SLOT_BYTES as usize + 8) == Some(MAGIC)
}

#[cfg(test)]
mod tests;
