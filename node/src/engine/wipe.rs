//! The wiper: freed extents zeroed in the background before they are
//! handed out again, and tombstones of deleted volumes forgotten once no
//! label needs them.

use super::*;

impl Engine {
    /// Zero every extent marked Wiping on the present disks, then free it
    /// (and remember it reads as zeroes). Resumes what a crash
    /// interrupted: the mark stays in the labels until the wipe is done.
    /// Returns how many extents were freed.
    pub fn wipe_pending(&self) -> Result<usize, Error> {
        let pending: Vec<(PathBuf, String, Sectors, Sectors)> = lock(&self.claimed)
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
                            c.label().disk_uuid.to_string(),
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
            let mut at = Sectors(0);
            while at < *len {
                let n = WIPE_STEP.min(*len - at);
                dev.zero_range((*start + at).bytes().0, n.bytes().0)
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
                    allocator::ranges_add(&mut label.zeroed, (start.0, len.0));
                }
            })?;
            tracing::info!(disk = %path.display(), start = start.0, sectors = len.0, "extent wiped and freed");
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

    pub(super) fn wake_wiper(&self) {
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
}
