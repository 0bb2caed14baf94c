//! The health monitor: wakes on device-mapper events (the kernel raises one
//! when a leg fails and when a resync or rebuild ends) and on a slow timer
//! as a safety net; each round it claims disks that appeared (a spare the
//! operator added), logs every change of a volume's condition, starts a
//! rebuild onto a spare when a leg is lost (unless auto-rebuild is off), and
//! frees replaced extents once an array is back in sync.

use crate::engine::Engine;
use crate::health::condition as health;
use dmraid_api::EventReason;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

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

/// Events and bookkeeping after a rebuild started; returns what moved.
fn rebuild_started(
    state: &mut RoundState,
    notices: Option<&Notices>,
    id: &str,
    after: &crate::engine::VolumeInfo,
) -> Vec<String> {
    let before = state.snaps.get(id).cloned().unwrap_or_default();
    let now = health::Snapshot::of(after);
    let mut moved = Vec::new();
    for (i, leg) in now.legs.iter().enumerate() {
        if before.legs.get(i).is_some_and(|b| b.1 != leg.1) {
            let disk = leg.1.clone().unwrap_or_default();
            let message = format!(
                "rebuilding {} leg {i} onto {disk}",
                after.spec.spec.raid_type
            );
            moved.push(message.clone());
            record(
                notices,
                id,
                health::HealthEvent {
                    warning: false,
                    reason: EventReason::RebuildStarted,
                    message,
                },
            );
        }
    }
    state.snaps.insert(id.to_string(), now);
    state.rebuilding.insert(id.to_string());
    tell(notices, Notice::Changed(id.to_string()));
    moved
}

/// Carry out the rebuilds operators asked for (`dmraid-csi rebuild`).
fn operator_rebuilds(
    engine: &Engine,
    cfg: &MonitorConfig,
    state: &mut RoundState,
    notices: Option<&Notices>,
) {
    let Some(dir) = &cfg.state_dir else { return };
    for req in crate::health::requests::take_rebuilds(dir) {
        let id = req.volume.clone();
        let outcome = match engine.replace_leg(&id, req.leg, req.disk.clone()) {
            Ok(after) => {
                let moved = rebuild_started(state, notices, &id, &after);
                crate::health::requests::Outcome {
                    ok: true,
                    message: if moved.is_empty() {
                        format!("volume {id}: rebuild started")
                    } else {
                        moved.join("; ")
                    },
                }
            }
            Err(e) => crate::health::requests::Outcome {
                ok: false,
                message: format!("volume {id}: {e}"),
            },
        };
        tracing::info!(volume = %id, ok = outcome.ok, message = %outcome.message, "operator rebuild request");
        crate::health::requests::answer(dir, &id, &outcome);
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

/// Whether one more failed leg would lose data: a volume with none left
/// never waits for a disk to return and rebuilds at full speed. Legs being
/// rebuilt count as lost (their copy is not complete).
fn no_redundancy_left(v: &crate::engine::VolumeInfo, st: &dmraid_api::RaidStatus) -> bool {
    let mut lost = health::lost_legs(v, st);
    if st.action == Some(dmraid_api::status::SyncAction::Recover) {
        lost.extend(
            st.legs
                .iter()
                .enumerate()
                .filter(|(_, l)| **l == dmraid_api::status::LegState::Syncing)
                .map(|(i, _)| i),
        );
    }
    let s = dmraid_api::redundancy::survival(&v.spec.spec, &lost);
    !s.lost && s.left == 0
}

/// The rebuild rate policy for one volume (`crate::health::rate`): retune the
/// table's recovery ceiling when the volume turns busy or idle. Returns
/// whether a sync it governs is running.
fn govern_rate(
    engine: &Engine,
    cfg: &MonitorConfig,
    state: &mut RoundState,
    now: f64,
    v: &crate::engine::VolumeInfo,
) -> bool {
    use dmraid_api::status::SyncAction::*;
    let Some(st) = &v.status else {
        state.rates.remove(&v.id);
        return false;
    };
    if st.healthy() {
        state.catching_up.remove(&v.id);
    }
    if v.spec.spec.max_recovery_rate.is_some() || state.catching_up.contains(&v.id) {
        return false;
    }
    // Never retune an array with a failed or missing leg: a new table makes
    // md load the degraded array's bitmap as out of date, and the leg, when
    // it comes back, is recovered in full instead of caught up (README,
    // "What the kernel really does").
    let whole = st.dead_legs().is_empty() && v.legs.iter().all(|l| l.disk.is_some());
    if !whole {
        return false;
    }
    let tracker = state.rates.entry(v.id.clone()).or_default();
    // A resync or rebuild the policy reloaded goes on as a "requested"
    // one, which dm-raid reports as `repair` (legs `A`): still the sync
    // it governs until the array is seen in sync and idle. A repair it
    // never saw start is an operator's scrub, left alone.
    let fresh = matches!(st.action, Some(Resync | Recover))
        && st.legs.contains(&dmraid_api::status::LegState::Syncing);
    let resumed = st.action == Some(Repair) && tracker.governing;
    // After an unclean shutdown md resyncs only the bitmap's dirty regions;
    // a reload would resume it as a "requested" resync, which md runs over
    // every region from there on: left at the kernel's default.
    let dirty_only = v.unclean.is_some() && st.action != Some(Recover);
    let running = (fresh || resumed) && !dirty_only && st.synced < st.total;
    let applied = engine.recovery_rate(&v.id);
    let sample = crate::health::rate::Sample {
        now,
        app_ios: engine.array_io(&v.id),
        running,
        over: st.healthy(),
        synced: st.synced,
        no_redundancy: no_redundancy_left(v, st),
        min_rate: v.spec.spec.min_recovery_rate.map(|b| b.0 / 1024),
        applied,
    };
    let want = match tracker.decide(cfg.rate, sample) {
        crate::health::rate::Ceiling::Keep => return running,
        crate::health::rate::Ceiling::Set(kib) => Some(kib),
        crate::health::rate::Ceiling::Clear => None,
    };
    let busy = tracker.busy(now);
    match engine.set_recovery_rate(&v.id, want) {
        Ok(_) => tracing::info!(
            volume = %v.id,
            busy,
            no_redundancy = sample.no_redundancy,
            max_recovery_rate_kib = want.map_or("kernel default".to_string(), |k| k.to_string()),
            "recovery ceiling retuned"
        ),
        Err(e) => tracing::debug!(volume = %v.id, error = %e, "recovery ceiling not retuned"),
    }
    running
}

/// Whether a lost leg should wait for its disk before a rebuild onto a
/// spare starts (`--rebuild-delay`); says so once, and asks the next round
/// to come when the wait ends.
fn rebuild_waits(
    cfg: &MonitorConfig,
    state: &mut RoundState,
    notices: Option<&Notices>,
    v: &crate::engine::VolumeInfo,
    st: &dmraid_api::RaidStatus,
) -> bool {
    let since = *state
        .lost_since
        .entry(v.id.clone())
        .or_insert_with(std::time::Instant::now);
    let waited = since.elapsed();
    if waited >= cfg.rebuild_delay || no_redundancy_left(v, st) {
        return false;
    }
    let left = cfg.rebuild_delay - waited;
    state.wake_in = Some(state.wake_in.map_or(left, |w| w.min(left)));
    let key = format!("delay:{}", v.id);
    if state.last.insert(key, String::new()).is_none() {
        let legs = health::lost_legs(v, st)
            .iter()
            .map(|l| format!("leg {l}"))
            .collect::<Vec<_>>()
            .join(", ");
        record(
            notices,
            &v.id,
            health::HealthEvent {
                warning: false,
                reason: EventReason::RebuildDelayed,
                message: format!(
                    "{legs} lost; the volume keeps redundancy, so the rebuild onto a spare waits {} s for the disk to come back (--rebuild-delay)",
                    cfg.rebuild_delay.as_secs()
                ),
            },
        );
    }
    true
}

/// One round over every volume.
pub fn round(
    engine: &Engine,
    cfg: &MonitorConfig,
    state: &mut RoundState,
    metrics: Option<&crate::health::metrics::Metrics>,
    notices: Option<&Notices>,
) {
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
    report_readded(engine, state, notices);
    operator_rebuilds(engine, cfg, state, notices);
    let epoch = *state.epoch.get_or_insert_with(std::time::Instant::now);
    state.wake_in = None;
    let ids = engine.volume_ids();
    let mut acts = Vec::new();
    state.rates.retain(|id, _| ids.contains(id));
    state.catching_up.retain(|id| ids.contains(id));
    state.lost_since.retain(|id, _| ids.contains(id));
    for id in ids {
        let Ok(mut v) = engine.volume(&id) else {
            continue;
        };
        // Rate and ETA of a running sync, from the average since it was first seen.
        let running = v.status.as_ref().filter(|st| {
            use dmraid_api::status::SyncAction::*;
            matches!(st.action, Some(Resync | Recover | Check | Repair)) && st.synced < st.total
        });
        match running {
            Some(st) => {
                let now = (epoch.elapsed().as_secs_f64(), st.synced);
                let start = state
                    .sync_start
                    .entry(id.clone())
                    .or_insert((now.0, now.1, st.action));
                if start.2 != st.action || now.1 < start.1 {
                    *start = (now.0, now.1, st.action);
                }
                let eta = health::eta((start.0, start.1), now, st.total);
                engine.set_eta(&id, eta);
                v.eta_seconds = eta;
            }
            None => {
                state.sync_start.remove(&id);
                engine.set_eta(&id, None);
                v.eta_seconds = None;
            }
        }
        // Slow legs, from the I/O counters of each leg's data device.
        let io = engine.leg_io(&id, v.legs.len() as u32);
        let before = state.io.get(&id).cloned().unwrap_or_default();
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
            state.io.insert(id.clone(), io);
        } else if busy {
            let slow = health::slow_legs(&before, &io);
            for (leg, ms, typical) in &slow {
                if !v.slow_legs.iter().any(|s| s.0 == *leg) {
                    record(
                        notices,
                        &id,
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
            engine.set_slow_legs(&id, slow.clone());
            v.slow_legs = slow;
            state.io.insert(id.clone(), io);
        }
        if v.write_hole.is_some() && v.status.as_ref().is_some_and(|s| s.healthy()) {
            // Redundancy is back after an unclean degraded shutdown: check
            // what may have been torn (dm-raid checks the whole array).
            if engine.scrub(&id, false).is_ok() {
                if let Some(n) = engine.write_hole_checked(&id) {
                    record(
                        notices,
                        &id,
                        health::HealthEvent {
                            warning: false,
                            reason: EventReason::WriteHoleCheck,
                            message: format!("redundancy is back: checking the array for the {n} regions written at the unclean shutdown while degraded"),
                        },
                    );
                }
            }
        }
        if let Some(every) = cfg.scrub_every {
            // Due `every` after the last check (or the creation), as the
            // labels record it, so restarts do not push it back; first seen
            // stands in for labels written before either was recorded.
            let seen = *state
                .last_scrub
                .entry(id.clone())
                .or_insert_with(std::time::Instant::now);
            let at = engine.checked_at(&id);
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
                match engine.scrub(&id, false) {
                    Ok(_) => tracing::info!(volume = %id, "scheduled check started"),
                    Err(e) => {
                        tracing::debug!(volume = %id, error = %e, "scheduled check not started")
                    }
                }
                state
                    .last_scrub
                    .insert(id.clone(), std::time::Instant::now());
            }
        }
        if let Some(m) = metrics {
            m.observe(&v);
        }
        let mut finished = false;
        for e in health::transitions(state.snaps.get(&id), &v) {
            finished |= e.reason == EventReason::RebuildFinished;
            record(notices, &id, e);
        }
        let in_sync = v.status.as_ref().is_some_and(|s| s.healthy());
        if state.rebuilding.contains(&id) && (finished || in_sync) {
            state.rebuilding.remove(&id);
            if !finished {
                record(
                    notices,
                    &id,
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
        state.snaps.insert(id.clone(), health::Snapshot::of(&v));
        let (abnormal, message) = health::condition(&v);
        if state.last.get(&id) != Some(&message) {
            tell(notices, Notice::Changed(id.clone()));
            if abnormal {
                tracing::warn!(volume = %id, condition = %message, "volume condition changed");
            } else {
                tracing::info!(volume = %id, condition = %message, "volume condition changed");
            }
            state.last.insert(id.clone(), message);
        }
        if govern_rate(engine, cfg, state, epoch.elapsed().as_secs_f64(), &v) {
            let tick = crate::health::rate::TICK;
            state.wake_in = Some(state.wake_in.map_or(tick, |w| w.min(tick)));
        }
        let Some(status) = &v.status else { continue };
        let lost = !status.dead_legs().is_empty() || v.legs.iter().any(|l| l.disk.is_none());
        if !lost {
            state.lost_since.remove(&id);
            state.last.remove(&format!("delay:{id}"));
        }
        if lost && cfg.auto_rebuild && rebuild_waits(cfg, state, notices, &v, status) {
            // Waiting for the disk to come back.
        } else if lost && cfg.auto_rebuild {
            let urgent = no_redundancy_left(&v, status);
            acts.push((id.clone(), if urgent { Act::Urgent } else { Act::Replace }));
        } else if status.healthy() {
            acts.push((id.clone(), Act::Reap));
        }
    }
    act(engine, state, notices, acts);
}

/// What a round does to a volume once every volume's health is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Act {
    /// Replace a lost leg of a volume with no redundancy left.
    Urgent,
    /// Replace a lost leg.
    Replace,
    /// Free the extents of legs replaced earlier.
    Reap,
}

/// The time a round spends replacing legs: one disk holding legs of
/// hundreds of volumes is pulled, and each replacement writes labels and
/// loads tables; the rest wait for the next round, which starts at once,
/// so the round that reports every volume's state is never held up.
const ACT_BUDGET: Duration = Duration::from_secs(1);

/// Carry out a round's decisions, those for volumes with no redundancy
/// left first, within [`ACT_BUDGET`].
fn act(
    engine: &Engine,
    state: &mut RoundState,
    notices: Option<&Notices>,
    mut acts: Vec<(String, Act)>,
) {
    acts.sort_by_key(|(_, a)| *a);
    let until = std::time::Instant::now() + ACT_BUDGET;
    let total = acts.len();
    for (n, (id, a)) in acts.into_iter().enumerate() {
        if a != Act::Reap && n > 0 && std::time::Instant::now() >= until {
            tracing::debug!(
                left = total - n,
                "the round's time for rebuilds is spent; the rest go next round"
            );
            state.wake_in = Some(Duration::ZERO);
            break;
        }
        match a {
            Act::Urgent | Act::Replace => match engine.replace_leg(&id, None, None) {
                Ok(after) => {
                    tracing::info!(volume = %id, legs = ?after.legs, "rebuild started onto a spare");
                    rebuild_started(state, notices, &id, &after);
                }
                Err(e) => {
                    let key = format!("rebuild:{id}");
                    let text = e.to_string();
                    if state.last.get(&key) != Some(&text) {
                        record(
                            notices,
                            &id,
                            health::HealthEvent {
                                warning: true,
                                reason: EventReason::RebuildBlocked,
                                message: format!("cannot rebuild yet: {text}"),
                            },
                        );
                        state.last.insert(key, text);
                    }
                }
            },
            Act::Reap => match engine.reap_retired(&id) {
                Ok(n) if n > 0 => {
                    tracing::info!(volume = %id, extents = n, "replaced leg's extents freed")
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(volume = %id, error = %e, "freeing replaced extents failed")
                }
            },
        }
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
        if let Err(e) = engine.wait_for_event(wait) {
            tracing::warn!(error = %e, "waiting for device-mapper events failed; polling");
            std::thread::sleep(wait);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::EngineConfig;
    use crate::kernel::disks::FakeDisks;
    use crate::kernel::dm::{DeviceMapper, FakeDm};

    /// An engine over fake disks `disks` (64 MiB each), all claimed.
    fn engine_on(disks: &[&str]) -> (Arc<FakeDm>, FakeDisks, Arc<Engine>) {
        let dm = Arc::new(FakeDm::new());
        let fake = FakeDisks::new();
        for d in disks {
            fake.add(d, 64 << 20);
        }
        let engine = Arc::new(Engine::new(
            dm.clone(),
            Arc::new(fake.clone()),
            EngineConfig {
                node: "n".into(),
                globs: vec!["/dev/vd*".into()],
                wipe: false,
            },
        ));
        engine.claim_disks().unwrap();
        (dm, fake, engine)
    }

    /// Volume `v`: an 8 MiB raid5_ls over three of the disks, nosync (no
    /// initial resync for the rate policy to retune).
    fn raid5_v(engine: &Engine) -> crate::engine::VolumeInfo {
        let p: BTreeMap<String, String> = [
            ("raidType".to_string(), "raid5_ls".to_string()),
            ("sync".to_string(), "nosync".to_string()),
        ]
        .into();
        let spec = dmraid_api::RaidSpec::from_parameters(&p).unwrap();
        engine.create_volume("v", &spec, 8 << 20).unwrap()
    }

    fn config(auto_rebuild: bool, interval: Duration) -> MonitorConfig {
        MonitorConfig {
            rebuild_delay: Duration::ZERO,
            rate: crate::health::rate::RatePolicy::default(),
            auto_rebuild,
            interval,
            scrub_every: None,
            state_dir: None,
        }
    }

    /// [`run`] on its own thread with a 600 s interval (only events wake it).
    fn spawn_run(
        engine: &Arc<Engine>,
    ) -> (
        std::thread::JoinHandle<()>,
        Arc<AtomicBool>,
        tokio::sync::mpsc::UnboundedReceiver<Notice>,
    ) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let stop = Arc::new(AtomicBool::new(false));
        let (engine, flag) = (engine.clone(), stop.clone());
        let cfg = config(false, Duration::from_secs(600));
        let worker = std::thread::spawn(move || run(engine, cfg, flag, None, Some(tx)));
        (worker, stop, rx)
    }

    /// Stop a [`spawn_run`] monitor: set the flag and keep waking it (an
    /// event raised before its next arm is absorbed) until it is gone.
    fn stop_run(dm: &FakeDm, worker: std::thread::JoinHandle<()>, stop: &AtomicBool) {
        stop.store(true, Ordering::SeqCst);
        while !worker.is_finished() {
            dm.raise_event();
            std::thread::sleep(Duration::from_millis(5));
        }
        worker.join().unwrap();
    }

    #[test]
    fn volumes_with_no_redundancy_left_are_rebuilt_first() {
        let (dm, _disks, engine) =
            engine_on(&["/dev/vdb", "/dev/vdc", "/dev/vdd", "/dev/vde", "/dev/vdf"]);
        let raid1 = |id: &str, legs: &str| {
            let p: BTreeMap<String, String> = [
                ("raidType".to_string(), "raid1".to_string()),
                ("legs".to_string(), legs.to_string()),
                ("sync".to_string(), "nosync".to_string()),
            ]
            .into();
            let spec = dmraid_api::RaidSpec::from_parameters(&p).unwrap();
            engine.create_volume(id, &spec, 8 << 20).unwrap();
        };
        // "a" keeps a mirror after losing one; "z" (later in every order
        // but this one) has none left.
        raid1("a", "3");
        raid1("z", "2");
        let cfg = config(true, Duration::from_millis(1));
        let mut st = RoundState::default();
        round(&engine, &cfg, &mut st, None, None);
        dm.set_status("dmraid-a", "raid1 3 ADA 16384/16384 idle 0");
        dm.set_status("dmraid-z", "raid1 2 AD 16384/16384 idle 0");
        let before = dm.log().len();
        round(&engine, &cfg, &mut st, None, None);
        let arrays: Vec<String> = dm.log()[before..]
            .iter()
            .filter(|l| *l == "load dmraid-a" || *l == "load dmraid-z")
            .cloned()
            .collect();
        assert_eq!(
            arrays.first().map(String::as_str),
            Some("load dmraid-z"),
            "{arrays:?}"
        );
        for id in ["dmraid-a", "dmraid-z"] {
            assert!(
                dm.loads(id).iter().any(|t| t.contains(" rebuild ")),
                "{id}: {:?}",
                dm.loads(id)
            );
        }
    }

    #[test]
    fn a_lost_leg_is_rebuilt_onto_a_spare_and_reaped_when_in_sync() {
        let (dm, disks, engine) = engine_on(&["/dev/vdb", "/dev/vdc", "/dev/vdd"]);
        let old = raid5_v(&engine).legs[1].disk.clone().unwrap();
        let cfg = config(true, Duration::from_millis(1));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut st = RoundState::default();
        round(&engine, &cfg, &mut st, None, Some(&tx));
        dm.set_status("dmraid-v", "raid5_ls 3 ADA 8192/8192 idle 0");
        round(&engine, &cfg, &mut st, None, Some(&tx));
        let last = &st.last;
        assert!(last["v"].contains("failed"), "{last:?}");
        assert!(
            last["rebuild:v"].contains("no room"),
            "no spare yet: {last:?}"
        );
        let mut reasons = Vec::new();
        while let Ok(n) = rx.try_recv() {
            if let Notice::Event(v, e) = n {
                assert_eq!(v, "v");
                reasons.push(e.reason);
            }
        }
        assert_eq!(reasons, ["LegFailed", "RebuildBlocked"]);
        // The operator adds a disk: the next round claims it and rebuilds onto it.
        disks.add("/dev/vde", 64 << 20);
        round(&engine, &cfg, &mut st, None, Some(&tx));
        let v = engine.volume("v").unwrap();
        let started: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok())
            .filter_map(|n| match n {
                Notice::Event(_, e) if e.reason == "RebuildStarted" => Some(e.message),
                _ => None,
            })
            .collect();
        assert_eq!(
            started,
            ["rebuilding raid5_ls leg 1 onto /dev/vde"],
            "{:?}",
            st.last
        );
        assert_eq!(
            v.legs[1].disk.as_deref(),
            Some(std::path::Path::new("/dev/vde"))
        );
        assert!(dm.table("dmraid-v").unwrap()[0].params.contains("3 "));
        // In sync (the fake reports healthy after the swap): the old extents are wiped and freed.
        round(&engine, &cfg, &mut st, None, Some(&tx));
        engine.wipe_pending().unwrap();
        let free: u64 = engine
            .disks()
            .iter()
            .filter(|d| d.0 == old)
            .map(|d| d.2)
            .sum();
        assert!(
            free > 60 << 20,
            "old leg freed on {}: {free}",
            old.display()
        );
    }

    #[test]
    fn a_lost_leg_waits_for_its_disk_while_the_volume_keeps_redundancy_and_not_once_it_has_none() {
        let (dm, _disks, engine) =
            engine_on(&["/dev/vdb", "/dev/vdc", "/dev/vdd", "/dev/vde", "/dev/vdf"]);
        let p: BTreeMap<String, String> = [("raidType".to_string(), "raid6_zr".to_string())].into();
        let spec = dmraid_api::RaidSpec::from_parameters(&p).unwrap();
        let before = engine.create_volume("v", &spec, 8 << 20).unwrap().legs;
        let mut cfg = config(true, Duration::from_secs(10));
        cfg.rebuild_delay = Duration::from_secs(3600);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut st = RoundState::default();
        round(&engine, &cfg, &mut st, None, Some(&tx));
        // One leg lost: raid6 still survives one more, so it waits.
        dm.set_status("dmraid-v", "raid6_zr 4 ADAA 8192/8192 idle 0");
        round(&engine, &cfg, &mut st, None, Some(&tx));
        round(&engine, &cfg, &mut st, None, Some(&tx));
        let reasons = |rx: &mut tokio::sync::mpsc::UnboundedReceiver<Notice>| {
            std::iter::from_fn(|| rx.try_recv().ok())
                .filter_map(|n| match n {
                    Notice::Event(_, e) => Some(e.reason),
                    _ => None,
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(reasons(&mut rx), ["LegFailed", "RebuildDelayed"]);
        assert_eq!(
            engine.volume("v").unwrap().legs,
            before,
            "nothing replaced yet"
        );
        assert!(
            st.wake_in.is_some_and(|w| w <= Duration::from_secs(3600)),
            "the round asks to wake when the delay ends: {:?}",
            st.wake_in
        );
        // A second leg lost: no redundancy left, the spare is taken at once.
        dm.set_status("dmraid-v", "raid6_zr 4 ADDA 8192/8192 idle 0");
        round(&engine, &cfg, &mut st, None, Some(&tx));
        let after = reasons(&mut rx);
        assert!(after.contains(&EventReason::RebuildStarted), "{after:?}");
        assert_ne!(engine.volume("v").unwrap().legs, before);
    }

    #[test]
    fn with_auto_rebuild_off_nothing_is_replaced() {
        let (dm, _disks, engine) = engine_on(&["/dev/vdb", "/dev/vdc", "/dev/vdd", "/dev/vde"]);
        raid5_v(&engine);
        let before = engine.volume("v").unwrap().legs;
        dm.set_status("dmraid-v", "raid5_ls 3 ADA 8192/8192 idle 0");
        let mut st = RoundState::default();
        round(
            &engine,
            &config(false, Duration::from_millis(1)),
            &mut st,
            None,
            None,
        );
        assert_eq!(engine.volume("v").unwrap().legs, before);
        assert!(st.last["v"].contains("failed"));
    }

    #[test]
    fn a_leg_failing_while_a_round_reads_wakes_the_next_round_at_once() {
        let (dm, _disks, engine) = engine_on(&["/dev/vdb", "/dev/vdc", "/dev/vdd"]);
        raid5_v(&engine);
        // The first round reads a healthy array; the leg fails (and the
        // kernel raises its event) just after.
        dm.change_after_read("dmraid-v", "raid5_ls 3 ADA 8192/8192 idle 0");
        // The interval (600 s) is far longer than the wait below: only the
        // event can wake it.
        let (worker, stop, mut rx) = spawn_run(&engine);
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        let mut rounds = 0;
        let failed = loop {
            match rx.try_recv() {
                Ok(Notice::Event(v, e)) if e.reason == "LegFailed" => break Some(v),
                Ok(Notice::Round) => rounds += 1,
                Ok(_) => {}
                Err(_) if std::time::Instant::now() > deadline => break None,
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        };
        stop_run(&dm, worker, &stop);
        assert_eq!(
            failed.as_deref(),
            Some("v"),
            "the failure was not seen before the 600 s round ({rounds} rounds ran)"
        );
        assert_eq!(rounds, 1, "seen in the round the event woke");
    }

    #[test]
    fn a_storm_of_events_is_held_to_a_few_rounds_a_second() {
        let (dm, _disks, engine) = engine_on(&[]);
        let (worker, stop, mut rx) = spawn_run(&engine);
        let until = std::time::Instant::now() + Duration::from_secs(1);
        while std::time::Instant::now() < until {
            dm.raise_event();
            std::thread::sleep(Duration::from_millis(1));
        }
        stop_run(&dm, worker, &stop);
        let rounds = std::iter::from_fn(|| rx.try_recv().ok())
            .filter(|n| *n == Notice::Round)
            .count();
        // Woken by the events (the interval is 600 s), at most
        // ROUNDS_PER_SECOND a second, plus the last (woken to stop).
        assert!(
            (2..=ROUNDS_PER_SECOND + 2).contains(&rounds),
            "{rounds} rounds in 1 s"
        );
    }
}
