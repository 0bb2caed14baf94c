//! The rebuild rate policy. The kernel holds every resync and rebuild to
//! `/proc/sys/dev/raid/speed_limit_max` (200 MB/s per device) when the
//! table sets no ceiling, whatever the disks can do (measured in the VM:
//! LVM's rebuild at its default rate takes 2.7× a `dd` of the same
//! bytes, README "Performance"). For a volume whose class sets
//! no `maxRecoveryRate` the driver sets the ceiling itself, in the table
//! (a reload: md goes on from its checkpoint on disk, which for a resync
//! can be behind where it was, README "What the kernel really does")
//! while a resync or rebuild runs, and takes it out again when the sync
//! is over:
//! - while the volume is idle, none that binds ([`UNLIMITED_RATE`]): the
//!   sync runs as fast as the disks go;
//! - while the application does I/O on the volume, a share (`--rebuild-busy-share`,
//!   25 % by default) of the speed the sync reached while idle (of the
//!   kernel's default ceiling if it was never seen idle), never under
//!   [`FLOOR`] nor under the class's `minRecoveryRate`;
//! - a volume with no redundancy left (one more failure loses data)
//!   rebuilds at full speed, busy or not;
//! - on a kernel that starts a resync over at sector 0 when the table is
//!   reloaded (6.12 does, and every kernel but 6.1 is taken to; 6.1,
//!   frozen first, goes on from where it was), a resync runs unhindered
//!   and is never reloaded while it runs: holding it back would cost it
//!   all its progress each time.
//!
//! A check or repair (scrub) is left at the kernel's default: a reload
//! would end it (md keeps no checkpoint for a scrub), and md's own idle
//! test already slows it to `speed_limit_min` under load.
//!
//! Busy means application I/Os completed on the array's own device (md's
//! sync I/O runs below it and is not counted) at [`BUSY_IOPS`] or more;
//! a volume stays busy [`HOLD`] after its last busy sample, so a pause
//! between two bursts does not flip the ceiling back and forth.

pub use crate::engine::UNLIMITED_RATE;

/// The kernel's default ceiling (KiB/s per device): the yardstick for a
/// sync never seen idle.
pub const KERNEL_DEFAULT: u64 = 200_000;
/// A busy volume's sync never goes slower than this (KiB/s): it always ends.
pub const FLOOR: u64 = 4 * 1024;
/// Application I/Os per second on the array that make a volume busy.
pub const BUSY_IOPS: f64 = 2.0;
/// How long a volume stays busy after its last busy sample, seconds.
pub const HOLD: f64 = 5.0;
/// How long the array must read in sync and idle before the ceiling comes
/// out, seconds: a status read just after a table load can say so before
/// md has started the recovery the load asked for.
pub const SETTLE: f64 = 3.0;
/// How often the monitor samples while a governed sync runs.
pub const TICK: std::time::Duration = std::time::Duration::from_secs(1);

/// The operator's knobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RatePolicy {
    /// Percent of the idle speed a sync keeps while the volume is busy
    /// (1..=100; 100 never holds a sync back).
    pub busy_share: u64,
}

impl Default for RatePolicy {
    fn default() -> Self {
        RatePolicy { busy_share: 25 }
    }
}

/// What one round saw of a volume.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Seconds on the monitor's clock.
    pub now: f64,
    /// Application I/Os completed on the array device so far.
    pub app_ios: Option<u64>,
    /// A resync or rebuild is running.
    pub running: bool,
    /// The array is in sync and idle: the sync is over. (Neither this nor
    /// `running` — a status read just after a reload, a frozen array —
    /// changes nothing.)
    pub over: bool,
    /// Its progress (the status's synced count, sectors).
    pub synced: u64,
    /// One more failed leg would lose data.
    pub no_redundancy: bool,
    /// The class's `minRecoveryRate`, KiB/s.
    pub min_rate: Option<u64>,
    /// The ceiling in the table now, KiB/s.
    pub applied: Option<u64>,
    /// A reload would start this sync over (a resync, on a kernel seen
    /// doing so): it runs unhindered, and is not reloaded again once it
    /// does.
    pub pinned: bool,
}

/// What the table's recovery ceiling should become.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ceiling {
    /// Leave it as it is.
    Keep,
    /// This many KiB/s.
    Set(u64),
    /// None: the kernel's default (no sync runs any more).
    Clear,
}

/// Per volume, what the policy remembers between rounds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tracker {
    io: Option<(f64, u64)>,
    /// (when, synced, the sync ran unhindered and the volume idle then).
    progress: Option<(f64, u64, bool)>,
    busy_until: f64,
    /// The fastest the sync went while idle and unhindered, KiB/s.
    pub idle_speed: Option<u64>,
    /// A sync this policy governs was seen and has not ended (the array
    /// was not yet seen in sync and idle for [`SETTLE`]).
    pub governing: bool,
    /// Since when the array reads in sync and idle.
    over_since: Option<f64>,
}

impl Tracker {
    /// Whether the volume counts as busy at `now`.
    pub fn busy(&self, now: f64) -> bool {
        now < self.busy_until
    }

    /// The ceiling the table should carry.
    pub fn decide(&mut self, policy: RatePolicy, s: Sample) -> Ceiling {
        let settled = if s.over {
            s.now - *self.over_since.get_or_insert(s.now) >= SETTLE
        } else {
            self.over_since = None;
            false
        };
        if settled {
            self.governing = false;
        }
        match self.want(policy, s) {
            Some(kib) if s.applied == Some(kib) => Ceiling::Keep,
            Some(kib) => Ceiling::Set(kib),
            // With no sync running the ceiling does nothing: it comes out
            // when the volume is idle, so the reload (a suspend and resume)
            // does not stall the application's I/O.
            None if settled && s.applied.is_some() && !self.busy(s.now) => Ceiling::Clear,
            None => Ceiling::Keep,
        }
    }

    /// The ceiling (KiB/s) while a sync runs, None when none runs.
    fn want(&mut self, policy: RatePolicy, s: Sample) -> Option<u64> {
        if let (Some((t0, n0)), Some(n)) = (self.io, s.app_ios) {
            let dt = s.now - t0;
            if dt > 0.0 && n >= n0 && (n - n0) as f64 / dt >= BUSY_IOPS {
                self.busy_until = s.now + HOLD;
            }
        }
        self.io = s.app_ios.map(|n| (s.now, n));
        if !s.running {
            self.progress = None;
            return None;
        }
        self.governing = true;
        let busy = self.busy(s.now);
        let unhindered = !busy && s.applied == Some(UNLIMITED_RATE);
        if let Some((t0, n0, was_unhindered)) = self.progress {
            let dt = s.now - t0;
            if was_unhindered && unhindered && dt >= 0.5 && s.synced > n0 {
                let kib = ((s.synced - n0) as f64 / 2.0 / dt) as u64;
                self.idle_speed = Some(self.idle_speed.unwrap_or(0).max(kib));
            }
        }
        self.progress = Some((s.now, s.synced, unhindered));
        if s.no_redundancy || !busy || s.pinned {
            return Some(UNLIMITED_RATE);
        }
        let share = policy.busy_share.clamp(1, 100);
        if share == 100 {
            return Some(UNLIMITED_RATE);
        }
        let base = self.idle_speed.unwrap_or(KERNEL_DEFAULT);
        Some((base * share / 100).max(FLOOR).max(s.min_rate.unwrap_or(0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(now: f64, ios: u64, synced: u64, applied: u64) -> Sample {
        Sample {
            now,
            app_ios: Some(ios),
            running: true,
            over: false,
            synced,
            no_redundancy: false,
            min_rate: None,
            applied: Some(applied),
            pinned: false,
        }
    }

    /// The ceiling `decide` wants while a sync runs (Keep: the one applied).
    fn ceiling(t: &mut Tracker, p: RatePolicy, s: Sample) -> Option<u64> {
        match t.decide(p, s) {
            Ceiling::Set(k) => Some(k),
            Ceiling::Keep => s.applied,
            Ceiling::Clear => None,
        }
    }

    #[test]
    fn an_idle_volume_syncs_unhindered_and_a_busy_one_gets_a_share_of_the_idle_speed() {
        let p = RatePolicy::default();
        let mut t = Tracker::default();
        // Idle: 400 MiB/s measured (819200 sectors/s = 409600 KiB/s).
        assert_eq!(
            ceiling(&mut t, p, sample(0.0, 10, 0, UNLIMITED_RATE)),
            Some(UNLIMITED_RATE)
        );
        assert_eq!(
            ceiling(&mut t, p, sample(1.0, 10, 819_200, UNLIMITED_RATE)),
            Some(UNLIMITED_RATE)
        );
        assert_eq!(t.idle_speed, Some(409_600));
        // The application writes: a quarter of the idle speed.
        assert_eq!(
            ceiling(&mut t, p, sample(2.0, 500, 1_638_400, UNLIMITED_RATE)),
            Some(102_400)
        );
        // Held busy for HOLD seconds after the last burst, then free again;
        // the slow stretch is not taken for the disks' speed.
        assert_eq!(
            ceiling(&mut t, p, sample(4.0, 500, 1_700_000, 102_400)),
            Some(102_400)
        );
        assert_eq!(
            ceiling(&mut t, p, sample(7.5, 500, 1_800_000, 102_400)),
            Some(UNLIMITED_RATE)
        );
        assert_eq!(t.idle_speed, Some(409_600));
    }

    #[test]
    fn a_volume_with_no_redundancy_left_rebuilds_at_full_speed_even_when_busy() {
        let p = RatePolicy::default();
        let mut t = Tracker::default();
        ceiling(&mut t, p, sample(0.0, 0, 0, UNLIMITED_RATE));
        let mut s = sample(1.0, 100, 1000, UNLIMITED_RATE);
        s.no_redundancy = true;
        assert_eq!(ceiling(&mut t, p, s), Some(UNLIMITED_RATE));
        assert!(t.busy(1.0));
    }

    #[test]
    fn a_sync_a_reload_would_start_over_runs_unhindered_busy_or_not_and_is_reloaded_once() {
        let p = RatePolicy::default();
        let mut t = Tracker::default();
        ceiling(&mut t, p, sample(0.0, 0, 0, UNLIMITED_RATE));
        // Busy, and held back, before the kernel was seen restarting it.
        assert_eq!(
            ceiling(&mut t, p, sample(1.0, 100, 10, UNLIMITED_RATE)),
            Some(50_000)
        );
        let mut s = sample(2.0, 200, 20, 50_000);
        s.pinned = true;
        assert_eq!(t.decide(p, s), Ceiling::Set(UNLIMITED_RATE));
        // Still busy: no reload (it would start the resync over again).
        let mut s = sample(3.0, 300, 30, UNLIMITED_RATE);
        s.pinned = true;
        assert_eq!(t.decide(p, s), Ceiling::Keep);
        assert!(t.busy(3.0));
    }

    #[test]
    fn never_seen_idle_the_kernel_default_is_the_yardstick_and_floors_hold() {
        let mut t = Tracker::default();
        let p = RatePolicy { busy_share: 25 };
        ceiling(&mut t, p, sample(0.0, 0, 0, KERNEL_DEFAULT));
        assert_eq!(
            ceiling(&mut t, p, sample(1.0, 50, 10, KERNEL_DEFAULT)),
            Some(50_000)
        );
        // The class's floor wins over the share.
        let mut s = sample(2.0, 100, 20, 50_000);
        s.min_rate = Some(80_000);
        assert_eq!(ceiling(&mut t, p, s), Some(80_000));
        // A share of a crawl is still at least FLOOR.
        let mut slow = Tracker {
            idle_speed: Some(1000),
            ..Tracker::default()
        };
        ceiling(&mut slow, p, sample(0.0, 0, 0, 1000));
        assert_eq!(
            ceiling(&mut slow, p, sample(1.0, 100, 10, 1000)),
            Some(FLOOR)
        );
        // 100 % never holds back.
        let all = RatePolicy { busy_share: 100 };
        assert_eq!(
            ceiling(&mut t, all, sample(3.0, 500, 30, 50_000)),
            Some(UNLIMITED_RATE)
        );
    }

    #[test]
    fn a_stray_io_is_not_busy_and_an_ended_sync_gives_the_kernel_its_default_back_once_idle() {
        let p = RatePolicy::default();
        let mut t = Tracker::default();
        ceiling(&mut t, p, sample(0.0, 0, 0, UNLIMITED_RATE));
        // One I/O over 5 s (udev's probe): idle.
        assert_eq!(
            ceiling(&mut t, p, sample(5.0, 1, 100, UNLIMITED_RATE)),
            Some(UNLIMITED_RATE)
        );
        // The sync ended: the ceiling comes out of the table, once, after
        // the array has read in sync and idle for SETTLE seconds.
        let mut done = sample(6.0, 1, 100, UNLIMITED_RATE);
        done.running = false;
        // A status between two states (read just after a reload) is no end.
        assert_eq!(t.decide(p, done), Ceiling::Keep);
        done.over = true;
        assert_eq!(t.decide(p, done), Ceiling::Keep);
        done.now = 6.0 + SETTLE;
        // … when the application is not busy: the reload (a suspend and
        // resume) waits until it is idle.
        let mut busy = done;
        busy.app_ios = Some(1_000);
        assert_eq!(t.decide(p, busy), Ceiling::Keep);
        busy.now += HOLD + 1.0;
        assert_eq!(t.decide(p, busy), Ceiling::Clear);
        busy.applied = None;
        assert_eq!(t.decide(p, busy), Ceiling::Keep);
        // Counters that went back (the array was re-made) are no burst.
        assert_eq!(
            ceiling(&mut t, p, sample(busy.now + 1.0, 0, 0, UNLIMITED_RATE)),
            Some(UNLIMITED_RATE)
        );
    }
}
