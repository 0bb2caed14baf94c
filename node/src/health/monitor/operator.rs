//! The rebuilds an operator asked for (`dmraid-csi rebuild`), carried out
//! at the start of a round; the request and answer files themselves are
//! `crate::health::requests`.

use super::act::rebuild_started;
use super::{MonitorConfig, Notices, RoundState};
use crate::engine::Engine;

/// Carry out the rebuilds operators asked for (`dmraid-csi rebuild`).
pub(super) fn operator_rebuilds(
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
