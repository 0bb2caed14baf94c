//! A raid device is not suspended, removed or frozen while md may still be
//! starting the sync a resume (or a sync message) set off.
//!
//! Why (measured on Debian's 6.1.176, read in its 6.1.192 source): md
//! starts a sync thread from a work item (`md_start_sync`), and a suspend
//! that lands while that work runs finds no thread to stop
//! (`__md_stop_writes` looks only at `sync_thread`, still unset, and flushes
//! the work only while it is pending, not while it runs), then quiesces the
//! array. The thread starts anyway, blocks on the quiesced array, and the
//! table's destructor waits for it for good: the ioctl (DeleteVolume, a
//! reload) and `mdX_resync` hang in D state, the device is never freed.
//! `csi-sanity`, which deletes volumes a few hundred milliseconds after
//! creating them, hit it in one run of two. A `frozen` message in that
//! window is as bad: it sees no thread to reap, and the suspend then skips
//! stopping writes since the array is frozen.
//!
//! The window is the time md takes to start a kernel thread after the
//! resume: 20-50 ms in the emulated VM (the "resync of RAID array" line
//! after the table's). So a raid device that was resumed or sent a sync
//! message less than [`SETTLE`] ago, and whose status says a sync is
//! running or asked for, is given the rest of [`SETTLE`] before it is
//! suspended, removed or frozen. An idle array has no start in flight
//! (md sets the running bit before it queues the work) and waits for
//! nothing.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long after a resume or a sync message a syncing raid device is left
/// alone: twenty times the longest start measured.
pub const SETTLE: Duration = Duration::from_secs(1);

/// The raid devices this process loaded, with when each was last resumed
/// or sent a message that can start a sync.
#[derive(Default)]
pub struct Settle {
    raid: Mutex<HashMap<String, Option<Instant>>>,
}

impl Settle {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Option<Instant>>> {
        self.raid.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A table was loaded into `name`: a raid table makes it one to watch.
    pub fn loaded(&self, name: &str, raid: bool) {
        let mut map = self.map();
        if raid {
            map.entry(name.to_string()).or_insert(None);
        } else {
            map.remove(name);
        }
    }

    /// `name` was resumed, or sent `msg` (None for a resume): either can
    /// set a sync off, except a `frozen` message.
    pub fn started(&self, name: &str, msg: Option<&str>, now: Instant) {
        if msg.is_some_and(|m| m.eq_ignore_ascii_case("frozen")) {
            return;
        }
        if let Some(at) = self.map().get_mut(name) {
            *at = Some(now);
        }
    }

    /// `name` is gone.
    pub fn removed(&self, name: &str) {
        self.map().remove(name);
    }

    /// How long `name` must still be left alone if a sync is running or
    /// asked for on it; None when it is not a raid device of ours or its
    /// last start is [`SETTLE`] behind.
    pub fn left(&self, name: &str, now: Instant) -> Option<Duration> {
        let at = (*self.map().get(name)?)?;
        SETTLE
            .checked_sub(now.saturating_duration_since(at))
            .filter(|d| !d.is_zero())
    }
}

/// Whether a raid status line (the words after `raid`) says no sync is
/// running or asked for: its sync action is `idle`. Anything else, or a
/// line this cannot read, counts as syncing.
pub fn idle(params: &str) -> bool {
    dmraid_api::status::RaidStatus::parse(params)
        .is_ok_and(|st| matches!(st.action, Some(dmraid_api::status::SyncAction::Idle)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_raid_device_is_left_alone_for_the_settle_time_after_a_resume_or_a_sync_message() {
        let s = Settle::default();
        let t0 = Instant::now();
        // Not loaded by us, or not raid: never waited for.
        s.started("x", None, t0);
        assert_eq!(s.left("x", t0), None);
        s.loaded("legs", false);
        s.started("legs", None, t0);
        assert_eq!(s.left("legs", t0), None);

        s.loaded("a", true);
        assert_eq!(s.left("a", t0), None, "loaded, never resumed");
        s.started("a", None, t0);
        assert_eq!(s.left("a", t0), Some(SETTLE));
        let later = t0 + Duration::from_millis(300);
        assert_eq!(
            s.left("a", later),
            Some(SETTLE - Duration::from_millis(300))
        );
        assert_eq!(s.left("a", t0 + SETTLE), None);

        // A frozen message starts nothing; a check does.
        let t1 = t0 + 2 * SETTLE;
        s.started("a", Some("frozen"), t1);
        assert_eq!(s.left("a", t1), None);
        s.started("a", Some("check"), t1);
        assert_eq!(s.left("a", t1), Some(SETTLE));

        // A reload keeps watching; a linear table or a remove ends it.
        s.loaded("a", true);
        assert_eq!(s.left("a", t1), Some(SETTLE));
        s.removed("a");
        assert_eq!(s.left("a", t1), None);
        s.loaded("b", true);
        s.started("b", None, t1);
        s.loaded("b", false);
        assert_eq!(s.left("b", t1), None);
    }

    #[test]
    fn only_an_idle_sync_action_reads_as_idle() {
        assert!(idle("raid1 2 AA 131072/131072 idle 0 0 -"));
        assert!(!idle("raid1 2 aa 0/131072 resync 0 0 -"));
        assert!(!idle("raid1 2 aa 0/131072 frozen 0 0 -"));
        assert!(!idle("raid1 2 Aa 4096/131072 recover 0 0 -"));
        assert!(!idle("garbage"));
    }
}
