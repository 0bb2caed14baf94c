//! Claiming disks at start-up and on health rounds, and what the
//! claimed disks offer: their reports, free spaces and the refusal that
//! names full ones.

use super::*;

impl Engine {
    /// Read every disk's presence afresh from here on (a health round
    /// that does not list the disks starts with this, as a listing does).
    pub fn forget_presence(&self) {
        self.disks.forget_presence();
    }

    /// Volumes with a leg on a claimed disk that is not present now: a
    /// health round reports these first, so one pulled disk holding legs
    /// of hundreds of volumes is told of within the round's first part.
    pub fn volumes_on_absent_disks(&self) -> BTreeSet<String> {
        lock(&self.claimed)
            .iter()
            .filter(|c| !self.disks.present(&c.info))
            .flat_map(|c| {
                c.label()
                    .extents
                    .iter()
                    .filter(|e| e.state == ExtentState::Active)
                    .map(|e| e.volume.clone())
                    .collect::<Vec<_>>()
            })
            .collect()
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
            seen.extend(claimed.iter().map(|c| c.label().disk_uuid.to_string()));
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
            let uuid = loaded.label.as_ref().map(|l| l.disk_uuid.to_string());
            if let Some(twin) = claimed.iter().find(|c| {
                Some(c.label().disk_uuid.as_str()) == uuid.as_deref() && self.disks.present(&c.info)
            }) {
                problems.push(Error::Claim(format!(
                    "{} carries the same disk label as {} (a copy of that disk?); refusing to claim it",
                    info.path.display(),
                    twin.info.path.display()
                )));
                continue;
            }
            // The same disk back under another name: forget the old entry.
            claimed.retain(|c| Some(c.label().disk_uuid.as_str()) != uuid.as_deref());
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
    pub(super) fn claim_one(&self, info: &DiskInfo) -> Result<labels::Loaded, Error> {
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
        let uuid = new_uuid().parse().map_err(|e: dmraid_api::Error| {
            Error::Precondition(format!("the uuid for a new label: {e}"))
        })?;
        let label = labels::new_label(uuid, &self.cfg.node, now());
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
                    c.label().disk_uuid.as_str(),
                    Bytes(c.info.size).sectors(),
                    &c.label().extents,
                );
                (
                    c.info.path.clone(),
                    c.info.size,
                    space.free().bytes().0,
                    c.label().disk_uuid.to_string(),
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
                    c.label().disk_uuid.as_str(),
                    Bytes(c.info.size).sectors(),
                    &c.label().extents,
                );
                DiskReport {
                    path: c.info.path.clone(),
                    id: c.label().disk_uuid.to_string(),
                    size: c.info.size,
                    free: space.free().bytes().0,
                    gaps: space.gaps().into_iter().map(|(_, len)| len).collect(),
                    present: self.disks.present(&c.info),
                }
            })
            .collect()
    }

    /// The allocator's view of every claimed disk that is present.
    pub(super) fn spaces(&self) -> Vec<DiskSpace> {
        self.spaces_where(|_| true)
    }

    /// The space new legs may take: on disks whose label can record
    /// another leg (a full label's disk is skipped, and its free space is
    /// not offered as capacity).
    pub(super) fn spaces_for_legs(&self) -> Vec<DiskSpace> {
        self.spaces_where(|c| c.loaded.has_room_for_a_leg())
    }

    /// `place`'s refusal, naming the disks skipped because their label
    /// cannot record another leg.
    pub(super) fn no_room(&self, e: allocator::NoRoom) -> Error {
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

    pub(super) fn spaces_where(&self, keep: impl Fn(&Claimed) -> bool) -> Vec<DiskSpace> {
        lock(&self.claimed)
            .iter()
            .filter(|c| self.disks.present(&c.info) && keep(c))
            .map(|c| {
                DiskSpace::new(
                    c.label().disk_uuid.as_str(),
                    Bytes(c.info.size).sectors(),
                    &c.label().extents,
                )
                .in_domain(&c.info.domain)
                .named(&c.info.path.display().to_string())
            })
            .collect()
    }

    /// Forget the disks that came back once every volume saw them.
    pub(super) fn settle_returned(&self) {
        lock(&self.returned).clear();
    }
}
