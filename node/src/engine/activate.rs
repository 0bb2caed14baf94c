//! Activation: a volume's devices made from its record, its rate ceiling,
//! every volume re-activated at start-up (with the crash fix when the
//! clean-shutdown marker is missing) and deactivated at an orderly stop.

use super::stack::{self, Layer, Stack};
use super::*;
use crate::kernel::dm::DmInfo;

impl Engine {
    /// Make the volume's devices live from its labels; `new_array`: first activation.
    pub(super) fn activate_volume(&self, id: &str, new_array: bool) -> Result<(), Error> {
        self.activate_volume_with(id, new_array, || Ok(()))
    }

    /// [`Engine::activate_volume`], with `before_live` run when the array's
    /// table is loaded and before it goes live, where the whole stack is
    /// made ([`stack::activate_with`]: a create). On the other paths (a
    /// live array reloaded, blank legs rebuilt) it is not run.
    pub(super) fn activate_volume_with(
        &self,
        id: &str,
        new_array: bool,
        before_live: impl FnOnce() -> Result<(), Error>,
    ) -> Result<(), Error> {
        let (record, legs) = self
            .find(id)
            .ok_or_else(|| Error::NotFound(id.to_string()))?;
        let vs = Self::spec_of(&record)?;
        stack::check_recorded(&record.stack)
            .map_err(|e| Error::Precondition(format!("volume {id}: {e}")))?;
        let name = array_name(id);
        let live = self.dm.info(&name)?.is_some_and(|i| i.live_table);
        // Legs on a disk that went away and came back: their linears still
        // map the vanished device, whatever their table text says.
        let returned: BTreeSet<u32> = {
            let back = lock(&self.returned);
            legs.iter()
                .filter(|(_, p)| self.uuid_of(&p.disk.path).is_ok_and(|u| back.contains(&u)))
                .map(|(leg, _)| *leg)
                .collect()
        };
        let current = if live {
            self.live_raid_table(&name)?
        } else {
            None
        };
        // A live array keeps the recovery ceiling the rebuild policy gave it.
        if let Some(rate) = current.as_ref().and_then(|t| t.max_recovery_rate) {
            if vs.spec.max_recovery_rate.is_none() {
                lock(&self.rates).entry(id.to_string()).or_insert(rate);
            }
        }
        let stack = self.volume_stack(id, &vs, &legs, new_array)?;
        let reload = Self::leg_device_names(id, &returned);
        // A replacement leg whose metadata the kernel never wrote (the driver
        // died between recording it and loading `rebuild`) still needs
        // `rebuild`: without it the kernel refuses the array.
        let blank = if new_array {
            Vec::new()
        } else {
            self.blank_meta_legs(&legs)
        };
        if !live && blank.is_empty() {
            stack::activate_with(self.dm.as_ref(), &stack, &reload, before_live)?;
            return Ok(());
        }
        let (devs, steady) = self.activate_legs(&stack, &reload)?;
        if !blank.is_empty() {
            tracing::warn!(volume = %id, legs = ?blank, "legs without dm-raid metadata: rebuilding them");
            let rebuilding = self.with_rate(
                id,
                &vs,
                RaidTable::build(&vs.spec, Sectors(vs.leg_data), devs, false, &blank)?,
            );
            return self.load_rebuild(id, &blank, &rebuilding, live);
        }
        let target = [Target::new(0, steady.length.0, "raid", steady.params())];
        let dirty = if returned.is_empty() {
            None
        } else {
            self.bitmap_dirty(&legs, &returned)
        };
        // `nosync` only matters to a new array: a live one made with it
        // is the same array without it. A live one still rebuilding (the
        // driver restarted) keeps its `rebuild` until it is in sync: a
        // load now would suspend the recovery for nothing.
        let same = current.as_ref().is_some_and(|c| {
            let mut c = c.clone();
            c.sync = steady.sync;
            c.rebuild.clear();
            c == steady
        });
        if same && current.as_ref().is_some_and(|c| !c.rebuild.is_empty()) {
            lock(&self.rebuild_live).insert(id.to_string());
        }
        if !same {
            self.reload_array(id, &target)?;
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
                    .filter_map(|l| legs.get(l).map(|p| (*l, p.disk.path.clone())))
                    .collect(),
                dirty,
            });
        }
        Ok(())
    }

    /// `table` with the rebuild policy's recovery ceiling, where the
    /// volume's class sets none.
    pub(super) fn with_rate(&self, id: &str, vs: &VolumeSpec, mut table: RaidTable) -> RaidTable {
        if vs.spec.max_recovery_rate.is_none() {
            if let Some(rate) = lock(&self.rates).get(id) {
                table.max_recovery_rate = Some((*rate).max(table.min_recovery_rate.unwrap_or(0)));
            }
        }
        table
    }

    /// A sync about to start runs unhindered (where the class sets no ceiling).
    pub(super) fn full_speed(&self, id: &str, spec: &RaidSpec) {
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
        let _guard = self.try_lock_volume(id)?;
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
        let Some(mut table) = self.live_raid_table(&array_name(id))? else {
            return Ok(false);
        };
        let want = kib.map(|k| k.max(table.min_recovery_rate.unwrap_or(0)));
        if table.max_recovery_rate == want {
            return Ok(false);
        }
        table.max_recovery_rate = want;
        // `rebuild` again would start the recovery over.
        table.rebuild.clear();
        self.reload_array(
            id,
            &[Target::new(0, table.length.0, "raid", table.params())],
        )?;
        Ok(true)
    }

    /// The raid table device `name` has live, if it has one.
    pub(super) fn live_raid_table(&self, name: &str) -> Result<Option<RaidTable>, Error> {
        if !self.dm.info(name)?.is_some_and(|i| i.live_table) {
            return Ok(None);
        }
        Ok(self
            .dm
            .table(name)?
            .first()
            .and_then(|t| RaidTable::parse(&t.line()).ok()))
    }

    /// Swap the live array's table. A resync or rebuild running goes on
    /// from its checkpoint as a "requested" sync that dm-raid reports as
    /// `repair`: remembered, so the volume's status goes on saying what it
    /// is ([`Engine::as_resumed`]).
    ///
    /// A resync is frozen first: the new table reads md's checkpoint from
    /// the superblocks when it is loaded, and the old one writes its own
    /// only at the suspend after that, so a resync an earlier reload had
    /// resumed went back to that reload's checkpoint and did the work
    /// since again. Frozen, md writes where it stands before the load
    /// (measured on 6.1: the next table goes on from the exact position;
    /// README "What the kernel really does"). A rebuild keeps its
    /// checkpoint on disk as it goes and is not frozen.
    pub(super) fn reload_array(&self, id: &str, target: &[Target]) -> Result<(), Error> {
        use dmraid_api::status::SyncAction::{Recover, Repair, Resync};
        let name = array_name(id);
        let live = self.dm.status(&name)?;
        let before = live.first().and_then(|t| RaidStatus::parse(&t.params).ok());
        let action = before.as_ref().and_then(|st| st.action);
        // A grown array resyncs its new region as a "requested" sync, which
        // dm-raid reports as `repair` too (seen on 6.1: "requested-resync"
        // after an expand; the monitor told of a repair nobody asked for).
        let length = |t: &[Target]| t.iter().map(|t| t.length).sum::<u64>();
        let grows = length(target) > length(&live);
        let resync = match action {
            Some(Resync) => true,
            Some(Repair) => lock(&self.resumed).get(id) == Some(&Resync),
            _ => false,
        };
        match action {
            Some(a @ (Resync | Recover)) => {
                lock(&self.resumed).insert(id.to_string(), a);
            }
            Some(Repair) => {}
            _ if grows => {
                lock(&self.resumed).insert(id.to_string(), Resync);
            }
            _ => {
                lock(&self.resumed).remove(id);
            }
        }
        if resync {
            if let Err(e) = self.dm.message(&name, "frozen") {
                tracing::debug!(volume = %id, error = %e, "resync not frozen before the reload");
            }
        }
        if let Err(e) = dm::reload(self.dm.as_ref(), &name, target) {
            if resync {
                // The old table stays: let its resync go on.
                let _ = self.dm.message(&name, "idle");
            }
            return Err(e.into());
        }
        // Every table this loads is one without `rebuild`.
        lock(&self.rebuild_live).remove(id);
        match before {
            Some(st) if resync && st.synced > 0 => {
                lock(&self.resync_reloaded).insert(id.to_string(), st.synced);
            }
            _ => {
                lock(&self.resync_reloaded).remove(id);
            }
        }
        Ok(())
    }

    /// Whether this kernel starts a resync over when its array's table is
    /// reloaded: assumed for every kernel but 6.1
    /// ([`Engine::assume_reload_restarts_resync`]), or seen
    /// ([`Engine::as_resumed`] watches).
    pub fn reload_restarts_resync(&self) -> bool {
        self.reload_restarts_resync
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Take it that a reload starts a resync over on this kernel: the
    /// rate policy then holds no resync back.
    pub fn assume_reload_restarts_resync(&self) {
        self.reload_restarts_resync
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// The status as the volume lives it: a `repair` that is a resync or
    /// rebuild resumed by a reload of ours reads as that sync; the memory
    /// of it goes once the array is in sync and idle.
    pub(super) fn as_resumed(&self, id: &str, mut st: RaidStatus) -> RaidStatus {
        use dmraid_api::status::SyncAction::Repair;
        let mut resumed = lock(&self.resumed);
        match (resumed.get(id), st.action) {
            (Some(a), Some(Repair)) => st.action = Some(*a),
            (Some(_), _) if st.synced >= st.total => {
                resumed.remove(id);
            }
            _ => {}
        }
        drop(resumed);
        self.watch_reloaded_resync(id, &st);
        st
    }

    /// After a reload of ours swapped a running resync's table: once the
    /// status shows it moving (the first read after a load can still say
    /// 0), a position under half the one it stood at means the kernel
    /// started it over, not went on from where it was.
    fn watch_reloaded_resync(&self, id: &str, st: &RaidStatus) {
        use dmraid_api::status::SyncAction::Resync;
        let mut reloaded = lock(&self.resync_reloaded);
        let Some(&from) = reloaded.get(id) else {
            return;
        };
        if st.action != Some(Resync) || st.synced >= from {
            reloaded.remove(id);
        } else if st.synced > 0 && st.synced < from / 2 {
            reloaded.remove(id);
            if !self
                .reload_restarts_resync
                .swap(true, std::sync::atomic::Ordering::Relaxed)
            {
                tracing::warn!(
                    volume = %id,
                    was_at = from,
                    now_at = st.synced,
                    "this kernel started a resync over when its table was reloaded: the rebuild rate policy no longer holds back a resync (it runs unhindered); rebuilds are still governed"
                );
            }
        }
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

    /// The names of the meta and data devices of `legs`.
    pub(super) fn leg_device_names(id: &str, legs: &BTreeSet<u32>) -> BTreeSet<String> {
        legs.iter()
            .flat_map(|l| [leg_name(id, *l, Role::Meta), leg_name(id, *l, Role::Data)])
            .collect()
    }

    /// Make every layer of `stack` but the array live (devices in `reload`
    /// reloaded even when their table reads the same: their disk vanished
    /// and came back, the old mapping holds a dead device). Returns the
    /// legs' devices by number and the array's table over them.
    pub(super) fn activate_legs(
        &self,
        stack: &Stack,
        reload: &BTreeSet<String>,
    ) -> Result<(Vec<Option<LegDevs>>, RaidTable), Error> {
        let (top, below) = stack
            .layers
            .split_last()
            .ok_or_else(|| Error::Precondition("an empty device stack".into()))?;
        let below = Stack {
            layers: below.to_vec(),
        };
        let made = stack::activate(self.dm.as_ref(), &below, reload)?;
        match top
            .first()
            .map(|d| d.layer.resolve(|n| made.get(n).map(DmInfo::devno)))
        {
            Some(Layer::Raid(table)) => Ok((table.legs.clone(), table)),
            other => Err(Error::Precondition(format!(
                "the top of a volume's stack is its array, not {:?}",
                other.map(|l| l.kind())
            ))),
        }
    }

    /// Legs whose metadata extent holds no dm-raid superblock, when some
    /// other leg has one (all blank is a new array, not a rebuild). A leg
    /// whose disk cannot be read is left to the kernel to judge.
    pub(super) fn blank_meta_legs(&self, legs: &BTreeMap<u32, LegPlace>) -> Vec<u32> {
        let mut blank = Vec::new();
        let mut written = 0;
        for (leg, place) in legs {
            let mut head = vec![0u8; 4096];
            let read = self.disks.open(&place.disk.path).and_then(|mut dev| {
                dev.seek(SeekFrom::Start(place.meta.bytes().0))?;
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

    /// Start-up, and whenever a disk is claimed: re-create every array from
    /// the labels alone (a running one is reloaded when its table lacks a
    /// leg whose disk is back). Half-made volumes are rolled back; volumes
    /// without a clean-shutdown marker get the crash fix first. Returns one
    /// error per volume that failed.
    ///
    /// Three passes: each volume is judged (rolled back, refused, or to
    /// start, and whether it was stopped cleanly); then the clean marks of
    /// every volume to start are cleared in one label write a disk (one
    /// write a volume made a start-up of hundreds of arrays wait on as many
    /// syncs); then each is repaired if it must be and made live.
    pub fn activate_all(&self) -> Vec<(String, Error)> {
        let mut failures = Vec::new();
        let mut starting = Vec::new();
        for id in self.volume_ids() {
            match self.judge_start(&id) {
                Ok(Some(plan)) => starting.push((id, plan)),
                Ok(None) => {}
                Err(e) => failures.push((id, e)),
            }
        }
        let marked = match self.mark_started(&starting) {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, "clearing the clean-shutdown marks in one write failed: one volume at a time");
                false
            }
        };
        // One at a time: 8 at once (as an orderly stop does) started 150
        // arrays no faster in the test VM (measured once, on a busy host).
        for (id, plan) in starting {
            let result = self.start_one(&id, &plan, marked);
            // A rebuild that ended while no driver ran (the CLI started
            // it) leaves its `rebuild` table live until here.
            let result = result
                .and_then(|_| self.load_steady(&id))
                .and_then(|_| self.reap_retired(&id).map(|_| ()));
            if let Err(e) = result {
                failures.push((id, e));
            }
        }
        self.settle_returned();
        failures
    }

    /// The first pass of [`Engine::activate_all`] for one volume: None when
    /// there is nothing to start (a create cut short, rolled back here; only
    /// disks that are away hold it: an error says so).
    fn judge_start(&self, id: &str) -> Result<Option<StartPlan>, Error> {
        let _guard = self.lock_volume(id)?;
        let Some((record, legs)) = self.find(id) else {
            // Only disks that are away hold it: it waits for them.
            return match self.where_it_was(id) {
                Some(detail) => Err(Error::DisksMissing {
                    id: id.to_string(),
                    detail,
                }),
                None => Ok(None),
            };
        };
        if !record.complete {
            // No present disk knows a finished create (the merge
            // above prefers one): the create died half-way.
            tracing::warn!(volume = %id, "a create that did not finish before a crash: rolling it back");
            self.teardown(id)?;
            self.free_extents(id)?;
            return Ok(None);
        }
        // A stack this driver does not make (a newer driver's):
        // nothing is written or loaded for it.
        stack::check_recorded(&record.stack)
            .map_err(|e| Error::Precondition(format!("volume {id}: {e}")))?;
        self.check_not_lost(id, &record, &legs)?;
        let clean = {
            let claimed = lock(&self.claimed);
            claimed
                .iter()
                .filter_map(|c| c.label().volumes.get(id))
                .all(|r| r.clean_shutdown)
        };
        Ok(Some(StartPlan {
            clean,
            uid: record.uid,
        }))
    }

    /// The second pass: every volume to start loses its clean-shutdown mark
    /// (a crash from here on is a crash), and a label copy a crash left
    /// saying its create was in flight learns it finished; one label write
    /// a disk for them all.
    fn mark_started(&self, starting: &[(String, StartPlan)]) -> Result<(), Error> {
        let plans: BTreeMap<&str, &StartPlan> =
            starting.iter().map(|(id, p)| (id.as_str(), p)).collect();
        self.edit_labels_where(
            |label| plans.keys().any(|id| label.volumes.contains_key(*id)),
            |label| {
                for (id, r) in label.volumes.iter_mut() {
                    let Some(plan) = plans.get(id.as_str()) else {
                        continue;
                    };
                    r.clean_shutdown = false;
                    if !r.complete && r.uid == plan.uid {
                        tracing::info!(volume = %id, disk = %label.disk_uuid, "label copy still said the create was in flight; marked complete");
                        r.complete = true;
                    }
                }
            },
            |_, _| Ok(()),
        )
    }

    /// The last pass for one volume: the crash fix where it was not stopped
    /// cleanly, then its devices.
    fn start_one(&self, id: &str, plan: &StartPlan, marked: bool) -> Result<(), Error> {
        let _guard = self.lock_volume(id)?;
        let Some((record, legs)) = self.find(id) else {
            // Deleted since the first pass.
            return Ok(());
        };
        let patched = self.crash_fix(id, &legs, plan.clean)?;
        // Where the one write of the second pass failed: this volume's own.
        if !marked {
            self.mark_started(&[(id.to_string(), plan.clone())])?;
        }
        match (self.activate_volume(id, false), patched) {
            (Err(e), Some((found, originals)))
                if Self::spec_of(&record)?.spec.raid_type.is_parity() =>
            {
                self.start_with_write_hole(id, e, found, &originals)
            }
            (result, _) => result,
        }
    }

    /// Refused (and nothing written) while the legs whose disks are away
    /// are more than the level survives.
    fn check_not_lost(
        &self,
        id: &str,
        record: &VolumeRecord,
        legs: &BTreeMap<u32, LegPlace>,
    ) -> Result<(), Error> {
        // Legs whose disks are away, more than the level survives
        // (both disks of a raid10 mirror): the kernel would refuse
        // the table, and nothing is written to the disks that are
        // here (no crash fix, no label change) until they return.
        let spec = Self::spec_of(record)?.spec;
        let away: BTreeSet<usize> = (0..spec.legs)
            .filter(|l| !legs.contains_key(l))
            .map(|l| l as usize)
            .collect();
        if dmraid_api::redundancy::survival(&spec, &away).lost {
            return Err(Error::DisksMissing {
                id: id.to_string(),
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
        Ok(())
    }

    /// The crash fix, where the array is not live and a present label has
    /// no clean-shutdown marker: the dirty regions and the superblocks as
    /// they were before it (None: not needed, or refused in words).
    #[allow(clippy::type_complexity)]
    fn crash_fix(
        &self,
        id: &str,
        legs: &BTreeMap<u32, LegPlace>,
        clean: bool,
    ) -> Result<Option<((u64, u64), Vec<(PathBuf, Sectors, Vec<u8>)>)>, Error> {
        let already_live = self.dm.info(&array_name(id))?.is_some_and(|i| i.live_table);
        if !clean && !already_live {
            match self.repair_after_crash(legs) {
                // No leg has a superblock: the array never went live (a
                // create that died as it was recorded finished), and
                // comes up as the new array it is.
                Ok((_, originals)) if originals.is_empty() => {
                    tracing::info!(volume = %id, "unclean shutdown before the array first went live: no superblock to repair, the array starts new");
                }
                Ok((found, originals)) => {
                    // Every kernel the suites run (6.1, 6.12) drops
                    // the bitmap's dirty bits after a crash (the
                    // power_cut suite asserts it on each): the fix
                    // applies on all of them.
                    tracing::info!(volume = %id, dirty = found.0, regions = found.1, kernel = %kernel_release(), "unclean shutdown: array_resync_offset set to 0 so the kernel resyncs the dirty regions");
                    lock(&self.unclean).insert(id.to_string(), found);
                    return Ok(Some((found, originals)));
                }
                // Nothing was written: the kernel starts it as it
                // is (what it does for everyone else), and the
                // volume says why the fix was not applied.
                Err(Error::Precondition(why)) => {
                    tracing::warn!(volume = %id, reason = %why, "unclean shutdown: crash fix refused, starting the array as the kernel finds it");
                    lock(&self.crash_fix_refused).insert(id.to_string(), why);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// A parity array that lost power while degraded (a leg missing, or
    /// one being rebuilt): the kernel refuses it with array_resync_offset 0
    /// ("cannot start dirty degraded array", measured on 6.1), because the
    /// stripes written at the crash cannot be checked without every leg
    /// (the RAID5/6 write hole). Policy: put the superblocks back as they
    /// were, start the array without the resync, say how many regions may
    /// be inconsistent, and check the whole array once redundancy is back
    /// (the monitor does). Never leave it offline for this.
    pub(super) fn start_with_write_hole(
        &self,
        id: &str,
        refused: Error,
        (dirty, regions): (u64, u64),
        originals: &[(PathBuf, Sectors, Vec<u8>)],
    ) -> Result<(), Error> {
        tracing::warn!(volume = %id, error = %refused, dirty, regions, "the kernel refused the dirty degraded array: starting it without the resync; the regions written at the crash are checked once redundancy is back");
        for (path, meta, head) in originals {
            let mut dev = self.disks.open(path).map_err(Self::io_err(path))?;
            dev.seek(SeekFrom::Start(meta.bytes().0))
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
    /// dirty bits (README, "What the kernel really does"); set array_resync_offset to 0 in every leg's
    /// superblock so it resyncs exactly the dirty regions. Returns (dirty,
    /// regions) and each patched superblock as it was (disk, meta start,
    /// 4 KiB), to put back if the kernel refuses the array.
    #[allow(clippy::type_complexity)]
    pub(super) fn repair_after_crash(
        &self,
        legs: &BTreeMap<u32, LegPlace>,
    ) -> Result<((u64, u64), Vec<(PathBuf, Sectors, Vec<u8>)>), Error> {
        let mut originals = Vec::new();
        let mut worst = (0, 0);
        // Every leg's superblock is read and checked before any is written:
        // one the driver may not edit (a layout or feature it does not know)
        // leaves them all as they were.
        let mut patched = Vec::new();
        for place in legs.values() {
            let (path, meta) = (&place.disk.path, &place.meta);
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
            dev.seek(SeekFrom::Start(meta.bytes().0))
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
        // The kernel's removal of a device waits mostly on grace periods
        // (its table's users, the block layer's queue), not on the CPU:
        // several volumes go down at once.
        let mut left = Vec::new();
        let mut stopped = BTreeSet::new();
        for (id, result) in in_parallel(self.volume_ids(), |id| self.stop_one(id)) {
            match result {
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

    /// Take one volume's devices down for an orderly stop, after the
    /// operation in flight on it (a reconcile, a rebuild step), which it
    /// waits for a little.
    fn stop_one(&self, id: &str) -> Result<(), Error> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let _guard = loop {
            match self.lock_volume(id) {
                Err(Error::Busy(_)) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(100))
                }
                other => break other?,
            }
        };
        self.teardown(id)
    }
}

/// How many volumes an orderly stop takes down at once. Removing devices
/// waits mostly on the kernel (grace periods, md's threads), not on the
/// CPU: in a one-vCPU VM, 150 arrays stopped in 5.3 s with 8 at once
/// against 19.9 s one at a time.
const WORKERS: usize = 8;

/// `f` on every id, [`WORKERS`] at a time; the results in id order.
fn in_parallel<T: Send>(
    ids: Vec<String>,
    f: impl Fn(&str) -> Result<T, Error> + Sync,
) -> Vec<(String, Result<T, Error>)> {
    let workers = WORKERS.min(ids.len()).max(1);
    let next = Mutex::new(ids.into_iter());
    let done = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let Some(id) = lock(&next).next() else {
                    break;
                };
                let result = f(&id);
                lock(&done).push((id, result));
            });
        }
    });
    let mut done = done.into_inner().unwrap_or_else(|e| e.into_inner());
    done.sort_by(|a, b| a.0.cmp(&b.0));
    done
}

/// What the first pass of [`Engine::activate_all`] found of a volume to start.
#[derive(Debug, Clone)]
struct StartPlan {
    /// Every present label said it was stopped cleanly.
    clean: bool,
    /// The create's uid, to tell a copy of this create's record from another's.
    uid: String,
}
