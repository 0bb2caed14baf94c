//! The rebuild rate policy (`crate::health::rate`) applied to one volume
//! in a round: the recovery ceiling of its table, retuned as the volume
//! turns busy or idle.

use super::act::no_redundancy_left;
use super::{MonitorConfig, RoundState};
use crate::engine::Engine;

/// The rebuild rate policy for one volume (`crate::health::rate`): retune the
/// table's recovery ceiling when the volume turns busy or idle. Returns
/// whether a sync it governs is running.
pub(super) fn govern_rate(
    engine: &Engine,
    cfg: &MonitorConfig,
    state: &mut RoundState,
    now: f64,
    v: &crate::engine::VolumeInfo,
) -> bool {
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
    let running = governed_sync_running(v, st, tracker.governing);
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
        pinned: engine.reload_restarts_resync()
            && st.action == Some(dmraid_api::status::SyncAction::Resync),
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

/// Whether a sync the policy governs is running: a resync or rebuild, or
/// one the policy reloaded (`governing`), which goes on as a "requested"
/// one (legs `A`; dm-raid says `repair`, the engine reads it as the sync
/// it resumed) until the array is seen in sync and idle. A repair it never saw start is an operator's scrub,
/// left alone. After an unclean shutdown md resyncs only the bitmap's
/// dirty regions; a reload would resume it as a "requested" resync, which
/// md runs over every region from there on: left at the kernel's default.
fn governed_sync_running(
    v: &crate::engine::VolumeInfo,
    st: &dmraid_api::RaidStatus,
    governing: bool,
) -> bool {
    use dmraid_api::status::SyncAction::*;
    let fresh = matches!(st.action, Some(Resync | Recover))
        && st.legs.contains(&dmraid_api::status::LegState::Syncing);
    // The engine reads a sync it resumed as what it is, not `repair`.
    let resumed = matches!(st.action, Some(Repair | Resync | Recover)) && governing;
    let dirty_only = v.unclean.is_some() && st.action != Some(Recover);
    (fresh || resumed) && !dirty_only && st.synced < st.total
}
