//! What a round does to a volume's legs once every volume's health is
//! reported: wait for a lost leg's disk (the rebuild delay), replace the
//! leg onto a spare (volumes with no redundancy left first, within a time
//! budget), or free the extents of legs replaced earlier.

use super::{record, tell, MonitorConfig, Notice, Notices, RoundState};
use crate::engine::Engine;
use crate::health::condition as health;
use dmraid_api::EventReason;
use std::time::Duration;

/// What a round does to a volume once every volume's health is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Act {
    /// Replace a lost leg of a volume with no redundancy left.
    Urgent,
    /// Replace a lost leg.
    Replace,
    /// Load the table without `rebuild` of a rebuild that ended, and
    /// free the extents of legs replaced earlier.
    Reap,
}

/// What a round does to a volume once its health is reported (None:
/// nothing, or a lost leg waits for its disk); a volume that lost no leg
/// stops waiting.
pub(super) fn decide(
    cfg: &MonitorConfig,
    state: &mut RoundState,
    notices: Option<&Notices>,
    id: &str,
    v: &crate::engine::VolumeInfo,
) -> Option<Act> {
    let status = v.status.as_ref()?;
    let lost = !status.dead_legs().is_empty() || v.legs.iter().any(|l| l.disk.is_none());
    if !lost {
        state.lost_since.remove(id);
        state.last.remove(&format!("delay:{id}"));
    }
    if lost && cfg.auto_rebuild && rebuild_waits(cfg, state, notices, v, status) {
        // Waiting for the disk to come back.
        None
    } else if lost && cfg.auto_rebuild {
        let urgent = no_redundancy_left(v, status);
        Some(if urgent { Act::Urgent } else { Act::Replace })
    } else if status.healthy() {
        Some(Act::Reap)
    } else {
        None
    }
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

/// Whether one more failed leg would lose data: a volume with none left
/// never waits for a disk to return and rebuilds at full speed. Legs being
/// rebuilt count as lost (their copy is not complete).
pub(super) fn no_redundancy_left(
    v: &crate::engine::VolumeInfo,
    st: &dmraid_api::RaidStatus,
) -> bool {
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

/// The least time a round spends replacing legs: one disk holding legs of
/// hundreds of volumes is pulled, and each replacement writes labels and
/// loads tables; the rest wait for the next round, which starts at once,
/// so the round that reports every volume's state is never held up for
/// long. A round whose first part (reporting every volume) took longer, with hundreds
/// of volumes and the node busy with their rebuilds, replaces for as long
/// as that part took: at least half of the monitor's time still goes to
/// reporting, and the rebuilds do not start one a round.
const ACT_BUDGET: Duration = Duration::from_secs(1);

/// How long a round whose first part took `reported` replaces legs.
pub(super) fn act_budget(reported: Duration) -> Duration {
    ACT_BUDGET.max(reported)
}

/// Carry out a round's decisions, those for volumes with no redundancy
/// left first, within `budget` ([`act_budget`]).
pub(super) fn act(
    engine: &Engine,
    state: &mut RoundState,
    notices: Option<&Notices>,
    mut acts: Vec<(String, Act)>,
    budget: Duration,
) {
    acts.sort_by_key(|(_, a)| *a);
    let until = std::time::Instant::now() + budget;
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
            Act::Reap => {
                if let Err(e) = engine.load_steady(&id) {
                    tracing::warn!(volume = %id, error = %e, "loading the table without `rebuild` failed; next round tries again");
                }
                reap(engine, &id)
            }
        }
    }
}

/// Free the extents of a volume's legs replaced earlier, once it is in sync.
fn reap(engine: &Engine, id: &str) {
    match engine.reap_retired(id) {
        Ok(n) if n > 0 => {
            tracing::info!(volume = %id, extents = n, "replaced leg's extents freed")
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(volume = %id, error = %e, "freeing replaced extents failed")
        }
    }
}

/// Events and bookkeeping after a rebuild started; returns what moved.
pub(super) fn rebuild_started(
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
