//! A volume's life: created (recorded, blanked, made, marked complete
//! before its array goes live),
//! expanded, deleted (devices removed before extents are freed).

use super::stack;
use super::*;

impl Engine {
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

        if let Some(info) = self.existing(id, name, &wanted)? {
            return Ok(info);
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
        self.place_and_record(id, &wanted, leg)?;
        lap(&mut phases, "place, blank and record");
        if spec.sync != dmraid_api::params::SyncPolicy::Nosync {
            // The initial resync starts as fast as the disks go; the
            // monitor holds it back while the volume is busy.
            self.full_speed(id, spec);
        }
        // The create is recorded finished once the array's table is
        // loaded, before the array goes live and writes its superblocks:
        // a crash before that rolls it back, a crash after it leaves a
        // volume the next start brings up (its metadata blank: a new
        // array) and a retried create finds.
        let mut recorded = None;
        self.activate_volume_with(id, true, || {
            let at = std::time::Instant::now();
            self.record_complete(id)?;
            recorded = Some(at.elapsed());
            Ok(())
        })?;
        match recorded {
            Some(d) => {
                lap(&mut phases, "devices");
                phases.push(("of which record complete", d));
            }
            None => {
                lap(&mut phases, "devices");
                self.record_complete(id)?;
                lap(&mut phases, "record complete");
            }
        }
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

    /// Mark the create of `id` finished in every label that records it.
    fn record_complete(&self, id: &str) -> Result<(), Error> {
        self.edit_volume_labels(id, |label| {
            if let Some(r) = label.volumes.get_mut(id) {
                r.complete = true;
            }
        })
    }

    /// The volume `id` as it already is, when the same request made it
    /// before (None: it is to be made; a create cut short is undone first).
    /// Refused when it was made with another spec or for another name, or
    /// when only disks that are away hold it.
    fn existing(
        &self,
        id: &str,
        name: Option<&str>,
        wanted: &VolumeSpec,
    ) -> Result<Option<VolumeInfo>, Error> {
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
                return self.volume(id).map(Some);
            }
            // A create that crashed half-way: undo it and start again.
            self.teardown(id)?;
            self.free_extents(id)?;
        }

        Ok(None)
    }

    /// Place a new volume's legs, blank their heads and record them in the
    /// labels (incomplete), under the allocation lock.
    fn place_and_record(&self, id: &str, wanted: &VolumeSpec, leg: Sectors) -> Result<(), Error> {
        let uid = new_uuid();
        let alloc = lock(&self.alloc);
        let spaces = self.spaces_for_legs();
        let placements = allocator::place(&spaces, wanted.spec.legs, 0, META_EXTENT, leg, &[])
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
                            && allocator::ranges_cover(&c.label().zeroed, (p.data_start.0, leg.0))
                    })
                })
                .collect()
        };
        let blob = serde_json::to_value(wanted).map_err(|e| Error::Precondition(e.to_string()))?;
        // Blank metadata: the kernel must see a new array, never an old superblock.
        // Blank data head: a new volume has no filesystem, whatever was there before.
        // `nosync` skips the initial resync: it is safe only when every
        // leg reads the same (zeroes) from the start, else parity and
        // mirrors disagree and a rebuild writes garbage; data extents not
        // known to read as zeroes are zeroed whole.
        let data_wipe = DATA_WIPE.max(wanted.spec.chunk_size.0).min(leg.bytes().0);
        let nosync = wanted.spec.sync == dmraid_api::params::SyncPolicy::Nosync;
        let blank = |disk: &str, dev: &mut Box<dyn crate::kernel::disks::BlockIo>| {
            for p in placements.iter().filter(|p| p.disk == disk) {
                dev.write_zeroes(p.meta_start.bytes().0, META_WIPE)?;
                let whole = nosync && unzeroed.iter().any(|u| std::ptr::eq(*u, p));
                if whole {
                    tracing::info!(volume = %id, disk = %disk, "nosync on space not known to be zeroed: zeroing the data extent first");
                }
                let len = if whole { leg.bytes().0 } else { data_wipe };
                dev.write_zeroes(p.data_start.bytes().0, len)?;
            }
            Ok(())
        };
        self.edit_labels_with(
            |label| {
                for p in placements.iter().filter(|p| p.disk == label.disk_uuid) {
                    allocator::ranges_remove(&mut label.zeroed, (p.meta_start.0, META_EXTENT.0));
                    allocator::ranges_remove(&mut label.zeroed, (p.data_start.0, leg.0));
                    label.extents.push(Extent {
                        volume: id.into(),
                        leg: p.leg,
                        role: Role::Meta,
                        start: p.meta_start,
                        len: META_EXTENT,
                        offset: Sectors(0),
                        state: ExtentState::Active,
                    });
                    label.extents.push(Extent {
                        volume: id.into(),
                        leg: p.leg,
                        role: Role::Data,
                        start: p.data_start,
                        len: leg,
                        offset: Sectors(0),
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
                            stack: stack::VOLUME_STACK
                                .iter()
                                .map(ToString::to_string)
                                .collect(),
                        },
                    );
                }
            },
            blank,
        )?;
        drop(alloc);
        Ok(())
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
            // Recorded that long already; an expansion cut short after
            // its labels were written is finished here.
            let now = self.volume(id)?;
            let recorded = dmraid_api::capacity::array_sectors(&vs.spec, Sectors(vs.leg_data))?;
            if now.status.is_none() || now.capacity >= recorded.bytes().0 {
                return Ok(now);
            }
            return self.reload_grown(id);
        }
        if legs.len() < vs.spec.legs as usize {
            return Err(Error::Precondition(format!(
                "volume {id} is degraded ({} of {} legs present); rebuild it before growing it",
                legs.len(),
                vs.spec.legs
            )));
        }
        let alloc = lock(&self.alloc);
        let growth = self.plan_growth(id, &legs, new_leg)?;
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
        vs.leg_data = new_leg.0;
        vs.requested = size;
        let blob = serde_json::to_value(&vs).map_err(|e| Error::Precondition(e.to_string()))?;
        self.edit_labels(|label| {
            for (leg, (disk, last, extra, how)) in &growth {
                if label.disk_uuid == *disk {
                    grow_in_label(label, id, *leg, last, *extra, how);
                }
            }
            if let Some(r) = label.volumes.get_mut(id) {
                r.spec = blob.clone();
            }
        })?;
        drop(alloc);
        crash_point("grow-recorded");
        self.reload_grown(id)
    }

    /// The second half of a growth: the data linears and then the array
    /// are loaded with the lengths the labels record.
    fn reload_grown(&self, id: &str) -> Result<VolumeInfo, Error> {
        let (_, legs) = self
            .find(id)
            .ok_or_else(|| Error::NotFound(id.to_string()))?;
        for (leg, place) in &legs {
            dm::reload(
                self.dm.as_ref(),
                &leg_name(id, *leg, Role::Data),
                &place.data_table().targets(),
            )?;
        }
        crash_point("grow-linears");
        self.activate_volume(id, false)?;
        self.volume(id)
    }

    /// Where each leg of `id` grows to `to` sectors on its own disk: (disk
    /// uuid, its last segment, sectors to add, how); a leg already that
    /// long (an expansion cut short that got that far) is left as it is.
    /// Refused, naming the leg and the disk's free space, when one disk has
    /// not the room.
    #[allow(clippy::type_complexity)]
    fn plan_growth(
        &self,
        id: &str,
        legs: &BTreeMap<u32, LegPlace>,
        to: Sectors,
    ) -> Result<BTreeMap<u32, (String, Segment, Sectors, allocator::Growth)>, Error> {
        let spaces = self.spaces();
        let mut plan = BTreeMap::new();
        for (leg, place) in legs {
            let extra = to.saturating_sub(place.data_len());
            if extra.is_zero() {
                continue;
            }
            let uuid = self.uuid_of(&place.disk.path)?;
            let space = spaces
                .iter()
                .find(|s| s.id == uuid)
                .ok_or_else(|| Error::NotFound(uuid.clone()))?;
            let last = *place
                .data
                .last()
                .ok_or_else(|| Error::NotFound(format!("data of leg {leg} of {id}")))?;
            let how = allocator::grow(space, last.start, last.len, extra).ok_or_else(|| {
                allocator::NoRoom(format!(
                    "leg {leg} of {id} on {} cannot grow by {}: that disk has {} free, and a leg grows only on its own disk",
                    place.disk.path.display(),
                    extra.bytes(),
                    space.free().bytes()
                ))
            })?;
            plan.insert(*leg, (uuid, last, extra, how));
        }
        Ok(plan)
    }

    /// Remove the volume's devices top-down (array first, then legs).
    /// Missing devices are fine; every leg device of the volume goes, also
    /// one its labels no longer name (a replaced leg, a create cut short).
    pub(super) fn teardown(&self, id: &str) -> Result<(), Error> {
        let name = array_name(id);
        if let Some(info) = self.dm.info(&name)? {
            if info.open_count > 0 {
                return Err(Error::Precondition(format!(
                    "volume {id} is in use ({} openers: mounted or open); unstage it first",
                    info.open_count
                )));
            }
        }
        lock(&self.rates).remove(id);
        lock(&self.rebuild_live).remove(id);
        let prefix = format!("dmraid-{id}+");
        let legs: Vec<String> = self
            .dm
            .names()?
            .into_iter()
            .filter(|d| d.starts_with(&prefix))
            .collect();
        stack::teardown(self.dm.as_ref(), &[legs, vec![name]])?;
        Ok(())
    }

    /// Free the volume's extents on every present disk and remember it as
    /// deleted there, so a disk that is away now frees its part when it
    /// comes back ([`Engine::forget_deleted`]).
    pub(super) fn free_extents(&self, id: &str) -> Result<(), Error> {
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

    /// Mark `id` as being deleted, as a delete does, until the mark is
    /// dropped: for tests of what sees a delete in flight.
    #[cfg(test)]
    pub(crate) fn mark_deleting(&self, id: &str) -> Deleting<'_> {
        Deleting::mark(self, id)
    }

    pub(super) fn delete(&self, id: &str, made: bool) -> Result<(), Error> {
        let _guard = self.lock_volume(id)?;
        let _deleting = Deleting::mark(self, id);
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
}

/// Records in `label` that leg `leg` of `id`, whose last data segment is
/// `last`, grew by `extra` sectors as `how` says; the sectors it takes are
/// the volume's now, no longer free zeroes.
fn grow_in_label(
    label: &mut DiskLabel,
    id: &str,
    leg: u32,
    last: &Segment,
    extra: Sectors,
    how: &allocator::Growth,
) {
    match how {
        allocator::Growth::InPlace => {
            for e in label.extents.iter_mut().filter(|e| {
                e.volume == id
                    && e.leg == leg
                    && e.role == Role::Data
                    && e.state == ExtentState::Active
                    && (e.start, e.offset) == (last.start, last.offset)
            }) {
                allocator::ranges_remove(&mut label.zeroed, ((e.start + e.len).0, extra.0));
                e.len += extra;
            }
        }
        allocator::Growth::Segments(segments) => {
            let mut offset = last.offset + last.len;
            for &(start, len) in segments {
                allocator::ranges_remove(&mut label.zeroed, (start.0, len.0));
                label.extents.push(Extent {
                    volume: id.into(),
                    leg,
                    role: Role::Data,
                    start,
                    len,
                    offset,
                    state: ExtentState::Active,
                });
                offset += len;
            }
        }
    }
}

/// Marks a volume as being deleted while it lives (see
/// [`VolumeInfo::deleting`]).
pub struct Deleting<'a> {
    engine: &'a Engine,
    id: String,
}

impl<'a> Deleting<'a> {
    pub(super) fn mark(engine: &'a Engine, id: &str) -> Self {
        lock(&engine.deleting).insert(id.to_string());
        Deleting {
            engine,
            id: id.to_string(),
        }
    }
}

impl Drop for Deleting<'_> {
    fn drop(&mut self) {
        lock(&self.engine.deleting).remove(&self.id);
    }
}
