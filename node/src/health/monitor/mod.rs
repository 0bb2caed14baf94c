//! The health monitor: wakes on device-mapper events (the kernel raises one
//! when a leg fails and when a resync or rebuild ends) and on a slow timer
//! as a safety net; each round it claims disks that appeared (a spare the
//! operator added), logs every change of a volume's condition, starts a
//! rebuild onto a spare when a leg is lost (unless auto-rebuild is off), and
//! frees replaced extents once an array is back in sync.
//!
//! A round's steps are here; what it does to a volume's legs (replace,
//! reap, the rebuild delay, the time budget) is in `act`, the rebuilds an
//! operator asked for in `operator`, the retuning of a rebuild's speed in
//! `recovery_rate`.

use crate::engine::Engine;
use crate::health::condition as health;
use dmraid_api::EventReason;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

mod act;
mod operator;
mod recovery_rate;
#[cfg(test)]
mod tests;

use act::{act, act_budget, decide};
use operator::operator_rebuilds;
use recovery_rate::govern_rate;

/// Monitor settings.
#[derive(Debug, Clone)]
pub struct MonitorConfig {
    /// Rebuild onto a spare by itself when a leg is lost.
    pub auto_rebuild: bool,
    /// Longest wait between two rounds when no event comes.
    pub interval: Duration,
    /// Start a `check` of every healthy, idle volume this often (None: never).
    pub scrub_every: Option<Duration>,
    /// The driver's state directory, where operator requests arrive (None: none).
    pub state_dir: Option<std::path::PathBuf>,
    /// How long a lost leg waits for its disk to come back before it is
    /// rebuilt onto a spare (a volume with no redundancy left never waits).
    pub rebuild_delay: Duration,
    /// The rebuild rate policy's knobs.
    pub rate: crate::health::rate::RatePolicy,
}

/// What the monitor tells the cluster side (status writer, event recorder).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A volume's condition or progress changed.
    Changed(String),
    /// Something happened to a volume.
    Event(String, health::HealthEvent),
    /// A round ended (disks may have come or gone).
    Round,
}

/// Where notices go: the cluster task's channel.
pub type Notices = tokio::sync::mpsc::UnboundedSender<Notice>;

/// What one round remembers for the next.
#[derive(Debug, Default)]
pub struct RoundState {
    /// The last condition message per volume (and per `claim:`/`rebuild:` problem).
    pub last: BTreeMap<String, String>,
    /// The last snapshot per volume, to tell what changed.
    pub snaps: BTreeMap<String, health::Snapshot>,
    /// Per volume: when the running sync was first seen, (seconds, sectors synced), and its action.
    pub sync_start: BTreeMap<String, (f64, u64, Option<dmraid_api::status::SyncAction>)>,
    /// Per volume: when it was last scrubbed (or first seen).
    pub last_scrub: BTreeMap<String, std::time::Instant>,
    /// Per volume: the legs' I/O counters at the last judged sample.
    pub io: BTreeMap<String, Vec<Option<(u64, u64)>>>,
    /// The monitor's clock origin.
    pub epoch: Option<std::time::Instant>,
    /// Volumes with a rebuild this monitor started and has not yet seen end
    /// (a short rebuild can end before any round sees it running).
    pub rebuilding: std::collections::BTreeSet<String>,
    /// Per volume with a lost leg: when the loss was first seen (the
    /// rebuild delay runs from there).
    pub lost_since: BTreeMap<String, std::time::Instant>,
    /// Per volume: what the rate policy remembers.
    pub rates: BTreeMap<String, crate::health::rate::Tracker>,
    /// Set by a round: wake the next one this soon at the latest (a
    /// governed sync runs, a rebuild delay ends).
    pub wake_in: Option<Duration>,
    /// Volumes whose returned legs are catching up from the bitmap: no
    /// table is loaded into them until they are in sync (a new table
    /// would turn the catch-up into a full recovery).
    pub catching_up: std::collections::BTreeSet<String>,
    /// What woke this round (None: a round run by hand, which lists the
    /// disks whatever woke it).
    pub woken_by: Option<crate::kernel::dm::Wake>,
    /// When the disks were last listed for disks to claim.
    pub disks_listed: Option<std::time::Instant>,
}

fn tell(notices: Option<&Notices>, n: Notice) {
    if let Some(tx) = notices {
        let _ = tx.send(n);
    }
}

fn record(notices: Option<&Notices>, id: &str, e: health::HealthEvent) {
    if e.warning {
        tracing::warn!(volume = %id, reason = e.reason.as_str(), message = %e.message, "event");
    } else {
        tracing::info!(volume = %id, reason = e.reason.as_str(), message = %e.message, "event");
    }
    tell(notices, Notice::Event(id.to_string(), e));
}

/// One round over every volume.
pub fn round(
    engine: &Engine,
    cfg: &MonitorConfig,
    state: &mut RoundState,
    metrics: Option<&crate::health::metrics::Metrics>,
    notices: Option<&Notices>,
) {
    let started = std::time::Instant::now();
    if disks_due(cfg, state) {
        state.disks_listed = Some(std::time::Instant::now());
        claim_new_disks(engine, state);
    } else {
        // What a listing would have done first: every round reads the
        // disks' presence afresh, so a disk pulled since the last round
        // is seen gone (a device-mapper event for its failed leg may wake
        // this round before the disk's own uevent does).
        engine.forget_presence();
    }
    report_readded(engine, state, notices);
    operator_rebuilds(engine, cfg, state, notices);
    let epoch = *state.epoch.get_or_insert_with(std::time::Instant::now);
    state.wake_in = None;
    let mut ids = engine.volume_ids();
    // Volumes that lost a disk first (a stable sort: the rest keep their order).
    let hit = engine.volumes_on_absent_disks();
    if !hit.is_empty() {
        ids.sort_by_key(|id| !hit.contains(id));
    }
    let mut acts = Vec::new();
    forget_gone_volumes(state, &ids);
    for id in ids {
        let Ok(mut v) = engine.volume(&id) else {
            continue;
        };
        // A create in flight (its devices being made): nothing to report
        // or repair until it has finished; one cut short is rolled back by
        // the next start or the retried create. A volume being deleted
        // (its array may already be gone) is not reported inactive.
        if v.creating || v.deleting {
            continue;
        }
        track_sync(engine, state, epoch, &id, &mut v);
        watch_slow_legs(engine, state, notices, &id, &mut v);
        check_write_hole(engine, notices, &id, &v);
        scrub_when_due(engine, cfg, state, &id, &v);
        if let Some(m) = metrics {
            m.observe(&v);
        }
        report_transitions(state, notices, &id, &v);
        report_condition(state, notices, &id, &v);
        if govern_rate(engine, cfg, state, epoch.elapsed().as_secs_f64(), &v) {
            let tick = crate::health::rate::TICK;
            state.wake_in = Some(state.wake_in.map_or(tick, |w| w.min(tick)));
        }
        if let Some(a) = decide(cfg, state, notices, &id, &v) {
            acts.push((id, a));
        }
    }
    act(engine, state, notices, acts, act_budget(started.elapsed()));
}

/// Whether this round lists the disks for new ones to claim. Listing them
/// reads sysfs for every matched path (tens of milliseconds for a few
/// disks under emulation); a disk that appears or returns sends a uevent,
/// which wakes the round that lists them. A round woken by a
/// device-mapper event alone (a table loaded, the create or delete of a
/// volume, a sync's end) lists them only when the last listing is an
/// interval old, so the timer's rounds still find a disk where no
/// uevent reaches the driver.
fn disks_due(cfg: &MonitorConfig, state: &RoundState) -> bool {
    use crate::kernel::dm::Wake;
    match state.woken_by {
        None | Some(Wake::Disk) => true,
        Some(Wake::Device | Wake::Timeout) => state
            .disks_listed
            .is_none_or(|at| at.elapsed() >= cfg.interval),
    }
}

/// Claim the disks that appeared (a spare the operator added, a disk that
/// came back), saying once why one is not claimed, and when any was
/// claimed bring up what it holds.
fn claim_new_disks(engine: &Engine, state: &mut RoundState) {
    let claims = engine.claim_count();
    if let Ok(problems) = engine.claim_disks() {
        for p in problems {
            let key = format!("claim:{p}");
            if state.last.insert(key.clone(), String::new()).is_none() {
                tracing::warn!(problem = %p, "disk not claimed");
            }
        }
    }
    if engine.claim_count() != claims {
        // A disk appeared or came back: bring up the volumes it holds now,
        // not at the next restart, and give a running array back the legs
        // that were missing when it was loaded (a table reload; md catches
        // such a leg up from its bitmap, or rebuilds it).
        for (id, e) in engine.activate_all() {
            let key = format!("activate:{id}");
            let text = e.to_string();
            if state.last.get(&key) != Some(&text) {
                tracing::warn!(volume = %id, error = %text, "array not activated");
                state.last.insert(key, text);
            }
        }
    }
}

/// Report legs given back to their running arrays (their disk came back).
fn report_readded(engine: &Engine, state: &mut RoundState, notices: Option<&Notices>) {
    for r in engine.take_readded() {
        let legs = r
            .legs
            .iter()
            .map(|(l, d)| format!("leg {l} ({})", d.display()))
            .collect::<Vec<_>>()
            .join(", ");
        let what = match r.dirty {
            Some((dirty, regions)) => {
                format!("catching up {dirty} of {regions} regions from the write-intent bitmap")
            }
            None => "catching up from the write-intent bitmap".to_string(),
        };
        state.lost_since.remove(&r.id);
        state.last.remove(&format!("delay:{}", r.id));
        state.catching_up.insert(r.id.clone());
        record(
            notices,
            &r.id,
            health::HealthEvent {
                warning: false,
                reason: EventReason::LegReturned,
                message: format!("{legs} back: {what}"),
            },
        );
        tell(notices, Notice::Changed(r.id.clone()));
    }
}

/// Forget what the round state keeps of volumes that are gone.
fn forget_gone_volumes(state: &mut RoundState, ids: &[String]) {
    state.rates.retain(|id, _| ids.contains(id));
    state.catching_up.retain(|id| ids.contains(id));
    state.lost_since.retain(|id, _| ids.contains(id));
}

/// Rate and ETA of a running sync, from the average since it was first seen.
fn track_sync(
    engine: &Engine,
    state: &mut RoundState,
    epoch: std::time::Instant,
    id: &str,
    v: &mut crate::engine::VolumeInfo,
) {
    let running = v.status.as_ref().filter(|st| {
        use dmraid_api::status::SyncAction::*;
        matches!(st.action, Some(Resync | Recover | Check | Repair)) && st.synced < st.total
    });
    match running {
        Some(st) => {
            let now = (epoch.elapsed().as_secs_f64(), st.synced);
            let start = state
                .sync_start
                .entry(id.to_string())
                .or_insert((now.0, now.1, st.action));
            if start.2 != st.action || now.1 < start.1 {
                *start = (now.0, now.1, st.action);
            }
            let eta = health::eta((start.0, start.1), now, st.total);
            engine.set_eta(id, eta);
            v.eta_seconds = eta;
        }
        None => {
            state.sync_start.remove(id);
            engine.set_eta(id, None);
            v.eta_seconds = None;
        }
    }
}

/// Slow legs, from the I/O counters of each leg's data device.
fn watch_slow_legs(
    engine: &Engine,
    state: &mut RoundState,
    notices: Option<&Notices>,
    id: &str,
    v: &mut crate::engine::VolumeInfo,
) {
    let io = engine.leg_io(id, v.legs.len() as u32);
    let before = state.io.get(id).cloned().unwrap_or_default();
    let busy = io
        .iter()
        .zip(before.iter())
        .any(|(n, b)| matches!((n, b), (Some(n), Some(b)) if n.0 >= b.0 + 4));
    // A leg without a sample yet (the array was being made) or whose
    // counters went back (its device was re-made) restarts the count.
    let fresh = before.len() != io.len()
        || before.iter().zip(io.iter()).any(|(b, n)| match (b, n) {
            (None, Some(_)) => true,
            (Some(b), Some(n)) => n.0 < b.0,
            _ => false,
        });
    if fresh {
        state.io.insert(id.to_string(), io);
    } else if busy {
        let slow = health::slow_legs(&before, &io);
        for (leg, ms, typical) in &slow {
            if !v.slow_legs.iter().any(|s| s.0 == *leg) {
                record(
                    notices,
                    id,
                    health::HealthEvent {
                        warning: true,
                        reason: EventReason::SlowLeg,
                        message: format!(
                            "leg {leg} is slow: {ms} ms per I/O against {typical} ms on the other legs; the kernel keeps it, check the disk"
                        ),
                    },
                );
            }
        }
        engine.set_slow_legs(id, slow.clone());
        v.slow_legs = slow;
        state.io.insert(id.to_string(), io);
    }
}

/// Start the check an unclean degraded shutdown left waiting, once the
/// volume is whole and in sync again.
fn check_write_hole(
    engine: &Engine,
    notices: Option<&Notices>,
    id: &str,
    v: &crate::engine::VolumeInfo,
) {
    if v.write_hole.is_some() && v.status.as_ref().is_some_and(|s| s.healthy()) {
        // Redundancy is back after an unclean degraded shutdown: check
        // what may have been torn (dm-raid checks the whole array).
        if engine.scrub(id, false).is_ok() {
            if let Some(n) = engine.write_hole_checked(id) {
                record(
                    notices,
                    id,
                    health::HealthEvent {
                        warning: false,
                        reason: EventReason::WriteHoleCheck,
                        message: format!("redundancy is back: checking the array for the {n} regions written at the unclean shutdown while degraded"),
                    },
                );
            }
        }
    }
}

/// Start the scheduled check (`scrub_every`) of a healthy, idle volume
/// when it is due.
fn scrub_when_due(
    engine: &Engine,
    cfg: &MonitorConfig,
    state: &mut RoundState,
    id: &str,
    v: &crate::engine::VolumeInfo,
) {
    if let Some(every) = cfg.scrub_every {
        // Due `every` after the last check (or the creation), as the
        // labels record it, so restarts do not push it back; first seen
        // stands in for labels written before either was recorded.
        let seen = *state
            .last_scrub
            .entry(id.to_string())
            .or_insert_with(std::time::Instant::now);
        let at = engine.checked_at(id);
        let due = if at > 0 {
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or_default();
            now.saturating_sub(at) >= every.as_secs()
        } else {
            seen.elapsed() >= every
        };
        let idle = v.status.as_ref().is_some_and(|s| s.healthy());
        if idle && due {
            match engine.scrub(id, false) {
                Ok(_) => tracing::info!(volume = %id, "scheduled check started"),
                Err(e) => {
                    tracing::debug!(volume = %id, error = %e, "scheduled check not started")
                }
            }
            state
                .last_scrub
                .insert(id.to_string(), std::time::Instant::now());
        }
    }
}

/// Record what changed since the last round's snapshot (and the end of a
/// rebuild this monitor started, which a short rebuild may hide from the
/// snapshots), then keep the volume's new snapshot.
fn report_transitions(
    state: &mut RoundState,
    notices: Option<&Notices>,
    id: &str,
    v: &crate::engine::VolumeInfo,
) {
    let mut finished = false;
    for e in health::transitions(state.snaps.get(id), v) {
        finished |= e.reason == EventReason::RebuildFinished;
        record(notices, id, e);
    }
    let in_sync = v.status.as_ref().is_some_and(|s| s.healthy());
    if state.rebuilding.contains(id) && (finished || in_sync) {
        state.rebuilding.remove(id);
        if !finished {
            record(
                notices,
                id,
                health::HealthEvent {
                    warning: false,
                    reason: EventReason::RebuildFinished,
                    message: format!(
                        "{}: rebuild finished, all legs in sync",
                        v.spec.spec.raid_type
                    ),
                },
            );
        }
    }
    state.snaps.insert(id.to_string(), health::Snapshot::of(v));
}

/// Tell the cluster side, and log, when a volume's condition changed.
fn report_condition(
    state: &mut RoundState,
    notices: Option<&Notices>,
    id: &str,
    v: &crate::engine::VolumeInfo,
) {
    let (abnormal, message) = health::condition(v);
    if state.last.get(id) != Some(&message) {
        tell(notices, Notice::Changed(id.to_string()));
        if abnormal {
            tracing::warn!(volume = %id, condition = %message, "volume condition changed");
        } else {
            tracing::info!(volume = %id, condition = %message, "volume condition changed");
        }
        state.last.insert(id.to_string(), message);
    }
}

/// At most this many rounds start in any one second.
const ROUNDS_PER_SECOND: usize = 10;

/// Run rounds until `stop` is set: on every device-mapper event, and at
/// least every `cfg.interval`.
pub fn run(
    engine: Arc<Engine>,
    cfg: MonitorConfig,
    stop: Arc<AtomicBool>,
    metrics: Option<Arc<crate::health::metrics::Metrics>>,
    notices: Option<Notices>,
) {
    let mut state = RoundState::default();
    let mut recent: std::collections::VecDeque<std::time::Instant> = Default::default();
    while !stop.load(Ordering::SeqCst) {
        // A round's own table loads raise events too, so it is followed by
        // one more round at once; rounds that keep raising events (a
        // replacement failing and cleaned up each time) are held to
        // ROUNDS_PER_SECOND instead of spinning. A lone event is never held.
        if recent.len() >= ROUNDS_PER_SECOND {
            if let Some(oldest) = recent.pop_front() {
                let age = oldest.elapsed();
                if age < Duration::from_secs(1) {
                    std::thread::sleep(Duration::from_secs(1) - age);
                }
            }
        }
        recent.push_back(std::time::Instant::now());
        // Armed before the round reads anything: an event raised while the
        // round runs (a leg failing just after its status was read) wakes
        // the wait below at once instead of waiting out the interval.
        if let Err(e) = engine.arm_events() {
            tracing::warn!(error = %e, "arming device-mapper events failed; polling");
        }
        let started = std::time::Instant::now();
        round(
            &engine,
            &cfg,
            &mut state,
            metrics.as_deref(),
            notices.as_ref(),
        );
        let took = started.elapsed();
        if let Some(m) = &metrics {
            m.round_took(took);
        }
        tracing::debug!(
            ms = format!("{:.1}", took.as_secs_f64() * 1000.0),
            "health round"
        );
        tell(notices.as_ref(), Notice::Round);
        let wait = state
            .wake_in
            .map_or(cfg.interval, |w| w.min(cfg.interval))
            .max(Duration::from_millis(100));
        state.woken_by = match engine.wait_for_event(wait) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::warn!(error = %e, "waiting for device-mapper events failed; polling");
                std::thread::sleep(wait);
                Some(crate::kernel::dm::Wake::Timeout)
            }
        };
    }
}
