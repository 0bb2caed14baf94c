//! Prometheus metrics of the node (`/metrics`): per-volume leg states, sync
//! ratio, mismatch count and rebuilt bytes, updated by the health monitor.
//! Served over plain HTTP on the address the operator gives.

use crate::engine::VolumeInfo;
use dmraid_api::status::{LegState, SyncAction};
use dmraid_api::units::Sectors;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VolumeLabel {
    volume: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LegLabel {
    volume: String,
    state: String,
}

/// The node's metrics.
pub struct Metrics {
    registry: Registry,
    legs: Family<LegLabel, Gauge>,
    sync_ratio: Family<VolumeLabel, Gauge<f64, AtomicU64>>,
    mismatches: Family<VolumeLabel, Gauge>,
    rebuilt: Family<VolumeLabel, Counter>,
    eta: Family<VolumeLabel, Gauge>,
    round: Gauge<f64, AtomicU64>,
    last_recover: Mutex<BTreeMap<String, u64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registered, all empty.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let legs = Family::<LegLabel, Gauge>::default();
        let sync_ratio = Family::<VolumeLabel, Gauge<f64, AtomicU64>>::default();
        let mismatches = Family::<VolumeLabel, Gauge>::default();
        let rebuilt = Family::<VolumeLabel, Counter>::default();
        let eta = Family::<VolumeLabel, Gauge>::default();
        let round = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "dmraid_health_round_seconds",
            "Seconds the last health round took (every volume's status read and acted on)",
            round.clone(),
        );
        registry.register(
            "dmraid_volume_sync_eta_seconds",
            "Estimated seconds left of a running resync, rebuild or scrub (0 when none)",
            eta.clone(),
        );
        registry.register(
            "dmraid_volume_legs",
            "Legs of a volume by state (in_sync, syncing, dead, missing)",
            legs.clone(),
        );
        registry.register(
            "dmraid_volume_sync_ratio",
            "Fraction of the array synchronised (1 when idle and in sync)",
            sync_ratio.clone(),
        );
        registry.register(
            "dmraid_volume_mismatch_count",
            "Mismatches found by the last check or repair",
            mismatches.clone(),
        );
        registry.register(
            "dmraid_rebuild_bytes",
            "Bytes rebuilt onto replacement legs (per device)",
            rebuilt.clone(),
        );
        Metrics {
            registry,
            legs,
            sync_ratio,
            mismatches,
            rebuilt,
            eta,
            round,
            last_recover: Mutex::new(BTreeMap::new()),
        }
    }

    /// Record how long a health round took.
    pub fn round_took(&self, took: std::time::Duration) {
        self.round.set(took.as_secs_f64());
    }

    /// Record a volume's current state.
    pub fn observe(&self, v: &VolumeInfo) {
        let Some(st) = &v.status else { return };
        for (state, want) in [
            ("in_sync", LegState::InSync),
            ("syncing", LegState::Syncing),
            ("dead", LegState::Dead),
            ("missing", LegState::Missing),
        ] {
            let n = st.legs.iter().filter(|l| **l == want).count() as i64;
            self.legs
                .get_or_create(&LegLabel {
                    volume: v.id.clone(),
                    state: state.into(),
                })
                .set(n);
        }
        let label = VolumeLabel {
            volume: v.id.clone(),
        };
        self.sync_ratio.get_or_create(&label).set(st.ratio());
        self.eta
            .get_or_create(&label)
            .set(v.eta_seconds.unwrap_or(0) as i64);
        self.mismatches
            .get_or_create(&label)
            .set(st.mismatches.unwrap_or(0) as i64);
        let mut last = self.last_recover.lock().unwrap_or_else(|e| e.into_inner());
        if st.action == Some(SyncAction::Recover) {
            let prev = last.insert(v.id.clone(), st.synced).unwrap_or(0);
            if st.synced > prev {
                self.rebuilt
                    .get_or_create(&label)
                    .inc_by(Sectors(st.synced - prev).bytes().0);
            }
        } else if let Some(prev) = last.remove(&v.id) {
            // The recovery finished between two looks: count the rest.
            if st.total > prev && st.healthy() {
                self.rebuilt
                    .get_or_create(&label)
                    .inc_by(Sectors(st.total - prev).bytes().0);
            }
        }
    }

    /// The text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{LegInfo, VolumeSpec};
    use dmraid_api::RaidStatus;

    fn vol(status: &str) -> VolumeInfo {
        let p: BTreeMap<String, String> = [("raidType".to_string(), "raid1".to_string())].into();
        VolumeInfo {
            id: "v".into(),
            spec: VolumeSpec {
                spec: dmraid_api::RaidSpec::from_parameters(&p).unwrap(),
                requested: 1,
                leg_data: 8,
                name: None,
            },
            capacity: 1,
            legs: vec![
                LegInfo { leg: 0, disk: None },
                LegInfo { leg: 1, disk: None },
            ],
            device: String::new(),
            status: Some(RaidStatus::parse(status).unwrap()),
            creating: false,
            deleting: false,
            unclean: None,
            write_hole: None,
            crash_fix_refused: None,
            unreadable: vec![],
            eta_seconds: None,
            slow_legs: vec![],
        }
    }

    #[test]
    fn renders_leg_states_ratio_and_rebuilt_bytes() {
        let m = Metrics::new();
        m.observe(&vol("raid1 2 Aa 100/1000 recover 0"));
        m.observe(&vol("raid1 2 Aa 600/1000 recover 0"));
        m.observe(&vol("raid1 2 AA 1000/1000 idle 3"));
        let text = m.render();
        assert!(
            text.contains("dmraid_volume_legs{volume=\"v\",state=\"in_sync\"} 2"),
            "{text}"
        );
        assert!(
            text.contains("dmraid_volume_sync_ratio{volume=\"v\"} 1.0"),
            "{text}"
        );
        assert!(
            text.contains("dmraid_volume_mismatch_count{volume=\"v\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("dmraid_rebuild_bytes_total{volume=\"v\"} 512000"),
            "{text}"
        );
    }
}
