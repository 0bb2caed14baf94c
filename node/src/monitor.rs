//! The health monitor: wakes on device-mapper events (the kernel raises one
//! when a leg fails and when a resync or rebuild ends) and on a slow timer
//! as a safety net; each round it claims disks that appeared (a spare the
//! operator added), logs every change of a volume's condition, starts a
//! rebuild onto a spare when a leg is lost (unless auto-rebuild is off), and
//! frees replaced extents once an array is back in sync.

use crate::engine::Engine;
use crate::health;
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
}

/// One round: returns the conditions seen, by volume.
pub fn round(
    engine: &Engine,
    cfg: &MonitorConfig,
    last: &mut BTreeMap<String, String>,
    metrics: Option<&crate::metrics::Metrics>,
) {
    if let Ok(problems) = engine.claim_disks() {
        for p in problems {
            let key = format!("claim:{p}");
            if last.insert(key.clone(), String::new()).is_none() {
                tracing::warn!(problem = %p, "disk not claimed");
            }
        }
    }
    for id in engine.volume_ids() {
        let Ok(v) = engine.volume(&id) else { continue };
        if let Some(m) = metrics {
            m.observe(&v);
        }
        let (abnormal, message) = health::condition(&v);
        if last.get(&id) != Some(&message) {
            if abnormal {
                tracing::warn!(volume = %id, condition = %message, "volume condition changed");
            } else {
                tracing::info!(volume = %id, condition = %message, "volume condition changed");
            }
            last.insert(id.clone(), message);
        }
        let Some(status) = &v.status else { continue };
        let lost = !status.dead_legs().is_empty() || v.legs.iter().any(|l| l.disk.is_none());
        if lost && cfg.auto_rebuild {
            match engine.replace_leg(&id, None, None) {
                Ok(after) => {
                    tracing::info!(volume = %id, legs = ?after.legs, "rebuild started onto a spare")
                }
                Err(e) => {
                    let key = format!("rebuild:{id}");
                    let text = e.to_string();
                    if last.get(&key) != Some(&text) {
                        tracing::warn!(volume = %id, error = %text, "cannot rebuild yet");
                        last.insert(key, text);
                    }
                }
            }
        } else if status.healthy() {
            match engine.reap_retired(&id) {
                Ok(n) if n > 0 => {
                    tracing::info!(volume = %id, extents = n, "replaced leg's extents freed")
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(volume = %id, error = %e, "freeing replaced extents failed")
                }
            }
        }
    }
}

/// Run rounds until `stop` is set: on every device-mapper event, and at
/// least every `cfg.interval`.
pub fn run(
    engine: Arc<Engine>,
    cfg: MonitorConfig,
    stop: Arc<AtomicBool>,
    metrics: Option<Arc<crate::metrics::Metrics>>,
) {
    let mut last = BTreeMap::new();
    while !stop.load(Ordering::SeqCst) {
        round(&engine, &cfg, &mut last, metrics.as_deref());
        if let Err(e) = engine.wait_for_event(cfg.interval) {
            tracing::warn!(error = %e, "waiting for device-mapper events failed; polling");
            std::thread::sleep(cfg.interval);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::disks::FakeDisks;
    use crate::dm::{DeviceMapper, FakeDm};
    use crate::engine::EngineConfig;

    #[test]
    fn a_lost_leg_is_rebuilt_onto_a_spare_and_reaped_when_in_sync() {
        let dm = Arc::new(FakeDm::new());
        let disks = FakeDisks::new();
        for d in ["/dev/vdb", "/dev/vdc", "/dev/vdd"] {
            disks.add(d, 64 << 20);
        }
        let engine = Engine::new(
            dm.clone(),
            Arc::new(disks.clone()),
            EngineConfig {
                node: "n".into(),
                globs: vec!["/dev/vd*".into()],
                wipe: false,
            },
        );
        engine.claim_disks().unwrap();
        let p: BTreeMap<String, String> = [("raidType".to_string(), "raid5_ls".to_string())].into();
        let spec = dmraid_api::RaidSpec::from_parameters(&p).unwrap();
        let old = engine.create_volume("v", &spec, 8 << 20).unwrap().legs[1]
            .disk
            .clone()
            .unwrap();
        let cfg = MonitorConfig {
            auto_rebuild: true,
            interval: Duration::from_millis(1),
        };
        let mut last = BTreeMap::new();
        dm.set_status("dmraid-v", "raid5_ls 3 ADA 8192/8192 idle 0");
        round(&engine, &cfg, &mut last, None);
        assert!(last["v"].contains("failed"), "{last:?}");
        assert!(
            last["rebuild:v"].contains("no room"),
            "no spare yet: {last:?}"
        );
        // The operator adds a disk: the next round claims it and rebuilds onto it.
        disks.add("/dev/vde", 64 << 20);
        round(&engine, &cfg, &mut last, None);
        let v = engine.volume("v").unwrap();
        assert_eq!(
            v.legs[1].disk.as_deref(),
            Some(std::path::Path::new("/dev/vde"))
        );
        assert!(dm.table("dmraid-v").unwrap()[0].params.contains("3 "));
        // In sync (the fake reports healthy after the swap): the old extents are freed.
        round(&engine, &cfg, &mut last, None);
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
    fn with_auto_rebuild_off_nothing_is_replaced() {
        let dm = Arc::new(FakeDm::new());
        let disks = FakeDisks::new();
        for d in ["/dev/vdb", "/dev/vdc", "/dev/vdd", "/dev/vde"] {
            disks.add(d, 64 << 20);
        }
        let engine = Engine::new(
            dm.clone(),
            Arc::new(disks.clone()),
            EngineConfig {
                node: "n".into(),
                globs: vec!["/dev/vd*".into()],
                wipe: false,
            },
        );
        engine.claim_disks().unwrap();
        let p: BTreeMap<String, String> = [("raidType".to_string(), "raid5_ls".to_string())].into();
        engine
            .create_volume(
                "v",
                &dmraid_api::RaidSpec::from_parameters(&p).unwrap(),
                8 << 20,
            )
            .unwrap();
        let before = engine.volume("v").unwrap().legs;
        dm.set_status("dmraid-v", "raid5_ls 3 ADA 8192/8192 idle 0");
        let mut last = BTreeMap::new();
        round(
            &engine,
            &MonitorConfig {
                auto_rebuild: false,
                interval: Duration::from_millis(1),
            },
            &mut last,
            None,
        );
        assert_eq!(engine.volume("v").unwrap().legs, before);
        assert!(last["v"].contains("failed"));
    }
}
