//! One operation at a time on a volume: the lock an operation holds, and
//! the volume id it is taken by, parsed.

use super::*;

/// How long an operation on a volume waits for the one in flight to end.
const BUSY_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Held while an operation on a volume runs; a second one waits a little
/// ([`BUSY_WAIT`]), then gets `Busy`.
pub struct VolumeLock<'a> {
    engine: &'a Engine,
    id: dmraid_api::VolumeId,
}

impl Drop for VolumeLock<'_> {
    fn drop(&mut self) {
        lock(&self.engine.busy).remove(self.id.as_str());
    }
}

/// Parse a volume id the engine accepts ([`dmraid_api::VolumeId`]).
pub fn parse_id(id: &str) -> Result<dmraid_api::VolumeId, Error> {
    id.parse().map_err(|_| Error::BadId(id.to_string()))
}

impl Engine {
    /// Hold the volume for one operation, waiting up to [`BUSY_WAIT`] for
    /// one in flight to end (a monitor's reload of the recovery ceiling
    /// takes a moment: a CSI call arriving then must not fail for it);
    /// `Busy` (CSI: Aborted, retried) after that.
    pub(super) fn lock_volume(&self, id: &str) -> Result<VolumeLock<'_>, Error> {
        let deadline = std::time::Instant::now() + BUSY_WAIT;
        loop {
            match self.try_lock_volume(id) {
                Err(Error::Busy(_)) if std::time::Instant::now() < deadline => {
                    std::thread::sleep(std::time::Duration::from_millis(20))
                }
                other => return other,
            }
        }
    }

    /// Run `f` with the volume held, as an operation of its own: nothing
    /// of the engine's (the monitor's reload of the recovery ceiling, an
    /// expand, a delete) suspends or changes its array meanwhile. The node
    /// formats and mounts under it: a mount while device-mapper has the
    /// device suspended for a reload fails ("Can't mount, blockdev is
    /// frozen": EBUSY; csi-sanity's NodeStage hit a ceiling retune set off
    /// by its own mkfs on a syncing volume).
    pub fn with_volume_held<T>(&self, id: &str, f: impl FnOnce() -> T) -> Result<T, Error> {
        let _guard = self.lock_volume(id)?;
        Ok(f())
    }

    /// Hold the volume for one operation, or `Busy` at once when another
    /// is in flight (the monitor's housekeeping, which tries next round).
    pub(super) fn try_lock_volume(&self, id: &str) -> Result<VolumeLock<'_>, Error> {
        let id = parse_id(id)?;
        if !lock(&self.busy).insert(id.to_string()) {
            return Err(Error::Busy(id.to_string()));
        }
        Ok(VolumeLock { engine: self, id })
    }
}
