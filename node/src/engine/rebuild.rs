//! Rebuilds: a lost leg replaced onto a spare, a returned disk's legs
//! re-added so the bitmap catches them up, retired legs reaped, scrubs.

use super::*;

impl Engine {
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

    /// The legs given back to running arrays since the last call.
    pub fn take_readded(&self) -> Vec<ReAdded> {
        std::mem::take(&mut *lock(&self.readded))
    }

    /// (dirty, regions) of the on-disk write-intent bitmap of the first
    /// leg not in `skip` that has one: md sets a bit before it writes a
    /// region and, while a leg is missing, keeps it set.
    pub(super) fn bitmap_dirty(
        &self,
        legs: &BTreeMap<u32, LegPlace>,
        skip: &BTreeSet<u32>,
    ) -> Option<(u64, u64)> {
        legs.iter()
            .filter(|(l, _)| !skip.contains(l))
            .find_map(|(_, place)| {
                let (_, head) = self.meta_head(&place.disk.path, place.meta).ok()?;
                superblock::dirty_regions(&head).ok()
            })
    }

    /// The head of a leg's metadata extent (superblock, bitmap header and
    /// bits) and the open disk it was read from.
    pub(super) fn meta_head(
        &self,
        path: &std::path::Path,
        meta: Sectors,
    ) -> Result<(Box<dyn crate::kernel::disks::BlockIo>, Vec<u8>), Error> {
        let mut dev = self.disks.open(path).map_err(Self::io_err(path))?;
        let mut head =
            vec![0u8; superblock::BITMAP_OFFSET + superblock::BITMAP_HEADER + 256 * 1024];
        dev.seek(SeekFrom::Start(meta.bytes().0))
            .map_err(Self::io_err(path))?;
        dev.read_exact(&mut head).map_err(Self::io_err(path))?;
        Ok((dev, head))
    }

    /// Load `rebuilding` (the table with `rebuild` for `legs`) and check
    /// that the kernel took those legs. The same table without `rebuild`
    /// follows once the array is in sync ([`Engine::load_steady`]), so no
    /// later load starts the recovery over (DESIGN "Replacing a leg").
    ///
    /// Not at once: a suspend mid-recovery waits out the settle (a second,
    /// `dm::settle`), which held every replacement up that long and made a
    /// storm of hundreds start one rebuild a round; and the recovery it
    /// resumes reads `repair` for a while. Until then every table of ours
    /// is loaded without `rebuild` ([`Engine::set_recovery_rate`], the
    /// activation of a live array), and md goes on from its recovery
    /// checkpoint across such a load.
    pub(super) fn load_rebuild(
        &self,
        id: &str,
        legs: &[u32],
        rebuilding: &RaidTable,
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
        // Read twice: the first status after a load can be stale (measured in the VM).
        let _ = self.dm.status(&name)?;
        let taken = self
            .dm
            .status(&name)?
            .first()
            .and_then(|t| RaidStatus::parse(&t.params).ok());
        lock(&self.rebuild_live).insert(id.to_string());
        if let Some(leg) = legs.iter().find(|l| {
            taken
                .as_ref()
                .is_some_and(|s| s.dead_legs().contains(&(**l as usize)))
        }) {
            return Err(Error::Precondition(format!(
                "the kernel did not take the new leg {leg} of {id} (still D); see dmesg"
            )));
        }
        Ok(())
    }

    /// Once a rebuild has ended (the array idle, every leg in sync), load
    /// its table again without `rebuild` ([`Engine::load_rebuild`]).
    /// Returns whether it did; a volume busy with another operation waits
    /// for the next round.
    pub fn load_steady(&self, id: &str) -> Result<bool, Error> {
        if !lock(&self.rebuild_live).contains(id) {
            return Ok(false);
        }
        let Ok(_guard) = self.try_lock_volume(id) else {
            return Ok(false);
        };
        let name = array_name(id);
        let table = self.live_raid_table(&name)?;
        let Some(mut table) = table.filter(|t| !t.rebuild.is_empty()) else {
            lock(&self.rebuild_live).remove(id);
            return Ok(false);
        };
        let in_sync = self
            .dm
            .status(&name)?
            .first()
            .and_then(|t| RaidStatus::parse(&t.params).ok())
            .is_some_and(|st| st.healthy());
        if !in_sync {
            return Ok(false);
        }
        table.rebuild.clear();
        self.reload_array(
            id,
            &[Target::new(0, table.length.0, "raid", table.params())],
        )?;
        tracing::info!(volume = %id, "rebuild done: the table without `rebuild` loaded");
        Ok(true)
    }

    /// Replace a failed or missing leg: a new meta/data pair on a disk no
    /// other leg uses (or on `disk`), `rebuild <leg>` loaded live, and once
    /// the array is in sync the same table again without `rebuild`, so a
    /// later activation does not rebuild twice (DESIGN "Replacing a leg",
    /// [`Engine::load_steady`]). The old extents are kept as Retiring until the
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
        let (status, failed) = self.failed_legs(id, &vs, &legs)?;
        refuse_if_lost(id, &vs, &failed)?;
        let leg = leg_to_replace(id, &vs, &failed, leg)?;
        refuse_while_parity_resyncs(id, &vs, &status)?;
        let placement = self.record_replacement(id, &record, &legs, leg, disk.as_deref())?;
        crash_point("leg-recorded");
        // The rebuild starts as fast as the disks go; the monitor holds it
        // back while the volume is busy.
        self.full_speed(id, &vs.spec);
        if let Err(e) = self.load_replacement(id, &vs, leg) {
            self.undo_replacement(id, leg, &placement);
            return Err(e);
        }
        self.volume(id)
    }

    /// The kernel's status of an active volume and its failed legs: those
    /// the kernel holds dead and those whose disk is away.
    fn failed_legs(
        &self,
        id: &str,
        vs: &VolumeSpec,
        legs: &BTreeMap<u32, LegPlace>,
    ) -> Result<(RaidStatus, Vec<u32>), Error> {
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
        Ok((status, failed))
    }

    /// Places the new leg on a spare (or on `disk`), blanks its metadata
    /// and records it in the labels, the old leg retiring: the metadata is
    /// blanked before the label that names it goes down (and only once the
    /// label shows the space is ours), so a crash in between leaves free
    /// sectors zeroed, and once named, a blank extent tells activation that
    /// this leg still needs `rebuild`.
    fn record_replacement(
        &self,
        id: &str,
        record: &VolumeRecord,
        legs: &BTreeMap<u32, LegPlace>,
        leg: u32,
        disk: Option<&std::path::Path>,
    ) -> Result<allocator::Placement, Error> {
        let vs = Self::spec_of(record)?;
        let mut avoid = Vec::new();
        for place in legs.values() {
            avoid.push(self.uuid_of(&place.disk.path)?);
        }
        let _alloc = lock(&self.alloc);
        let mut spaces = self.spaces_for_legs();
        if let Some(want) = disk {
            let uuid = self.uuid_of(want)?;
            spaces.retain(|s| s.id == uuid);
        }
        let placement =
            allocator::place(&spaces, 1, leg, META_EXTENT, Sectors(vs.leg_data), &avoid)
                .map_err(|e| self.no_room(e))?
                .remove(0);
        let generation = record.generation + 1;
        let blank = |disk: &str, dev: &mut Box<dyn crate::kernel::disks::BlockIo>| {
            if disk == placement.disk {
                dev.write_zeroes(placement.meta_start.bytes().0, META_WIPE)?;
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
                        len: META_EXTENT,
                        offset: Sectors(0),
                        state: ExtentState::Active,
                    });
                    label.extents.push(Extent {
                        volume: id.into(),
                        leg,
                        role: Role::Data,
                        start: placement.data_start,
                        len: Sectors(vs.leg_data),
                        offset: Sectors(0),
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
        )
        .inspect_err(|_| {
            // Some labels took the new leg and some did not (a disk pulled
            // between its presence check and its write: the one whose leg
            // is being replaced, as often as not). Left so, the new extents
            // would name the failed leg's place while the array never got
            // them, and the next replacement would find that leg "on" the
            // spare and no room elsewhere. Give them up on every disk that
            // took them; the next round tries again over the disks present.
            self.disks.forget_presence();
            self.undo_replacement(id, leg, &placement);
        })?;
        Ok(placement)
    }

    /// Loads the array with the new leg to be rebuilt.
    fn load_replacement(&self, id: &str, vs: &VolumeSpec, leg: u32) -> Result<(), Error> {
        let (_, legs) = self
            .find(id)
            .ok_or_else(|| Error::NotFound(id.to_string()))?;
        let stack = self.volume_stack(id, vs, &legs, false)?;
        let (devs, _) = self.activate_legs(&stack, &BTreeSet::new())?;
        let rebuilding = self.with_rate(
            id,
            vs,
            RaidTable::build(&vs.spec, Sectors(vs.leg_data), devs, false, &[leg])?,
        );
        self.load_rebuild(id, &[leg], &rebuilding, true)
    }

    /// A replacement leg that did not go through (the kernel refused it, or
    /// only some labels took it): give the new extents up (to be wiped) and
    /// make the old leg the volume's again, so the labels never name a leg
    /// the array does not have.
    pub(super) fn undo_replacement(&self, id: &str, leg: u32, placement: &allocator::Placement) {
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
                tracing::warn!(volume = %id, leg, "the replacement leg did not go through: its extents are given up and the old leg kept")
            }
            Err(e) => {
                tracing::error!(volume = %id, leg, error = %e, "undoing a replacement leg that did not go through failed")
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
                        && stale.contains(&(label.disk_uuid.to_string(), e.leg))
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
}

/// Refuses a rebuild when the failed legs took every copy of some data:
/// there is nothing to rebuild from.
fn refuse_if_lost(id: &str, vs: &VolumeSpec, failed: &[u32]) -> Result<(), Error> {
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
    Ok(())
}

/// The leg asked for (checked: it exists and has failed), or the first
/// failed one.
fn leg_to_replace(
    id: &str,
    vs: &VolumeSpec,
    failed: &[u32],
    leg: Option<u32>,
) -> Result<u32, Error> {
    match leg {
        Some(l) if l >= vs.spec.legs => Err(Error::Precondition(format!(
            "volume {id} has legs 0..{}; there is no leg {l}",
            vs.spec.legs - 1
        ))),
        Some(l) if !failed.contains(&l) => Err(Error::Precondition(format!(
            "leg {l} of {id} is healthy; nothing to rebuild"
        ))),
        Some(l) => Ok(l),
        None => failed
            .first()
            .copied()
            .ok_or_else(|| Error::Precondition(format!("volume {id} has no failed leg"))),
    }
}

/// Refuses a rebuild of a parity volume whose initial resync has not
/// finished: its parity is not complete, the rebuild could rebuild garbage.
fn refuse_while_parity_resyncs(
    id: &str,
    vs: &VolumeSpec,
    status: &RaidStatus,
) -> Result<(), Error> {
    if vs.spec.raid_type.is_parity()
        && status.action == Some(dmraid_api::status::SyncAction::Resync)
        && status.synced < status.total
    {
        return Err(Error::Precondition(format!(
            "volume {id} is still resyncing ({:.0}%): parity is not complete, a rebuild now could rebuild garbage; wait for the resync",
            status.ratio() * 100.0
        )));
    }
    Ok(())
}
