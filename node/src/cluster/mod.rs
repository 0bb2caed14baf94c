//! The node plugin in a cluster: reconciles the `RaidVolume` objects of
//! this node with the engine (create, grow, tear down behind a finalizer),
//! writes their status by server-side apply under one field manager, turns
//! the monitor's health events into Kubernetes Events on the RaidVolume and,
//! when the volume backs a claim, on its PV and PVC, and keeps this node's
//! `RaidNode` current. The disks stay the truth: without the API server the
//! arrays keep running from the labels and the objects catch up later.
//!
//! Here: the shared context and the run loop; the reconciler of the
//! `RaidVolume` objects is in `reconcile`, the status written to them and
//! to the `RaidNode` in `status`, the Kubernetes Events in `events`.

use crate::engine::Engine;
use crate::error::Error as EngineError;
use crate::health::monitor::Notice;
use dmraid_api::crd::{RaidVolume, VolumeEvent, NODE_LABEL};
use dmraid_api::FailureReason;
use futures::StreamExt;
use kube::runtime::controller::Controller;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Api, Client};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod events;
mod reconcile;
mod status;
#[cfg(test)]
mod tests;

use reconcile::{error_policy, reconcile};
pub use status::{health_word, node_status, volume_status};

/// Errors of the cluster side.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or could not be reached.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The engine failed.
    #[error("{0}")]
    Engine(#[from] EngineError),
    /// A finalizer step failed.
    #[error("finalizer: {0}")]
    Finalizer(String),
}

/// Why the last operation on a volume failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Why; the controller answers CSI with the code it names.
    pub reason: FailureReason,
    /// The engine's words.
    pub message: String,
    /// The spec generation it failed for.
    pub generation: i64,
}

/// Shared by the reconciler and the notice loop.
pub struct Context {
    client: Client,
    engine: Arc<Engine>,
    node: String,
    globs: Vec<String>,
    recorder: Recorder,
    failures: Mutex<BTreeMap<String, Failure>>,
    events: Mutex<BTreeMap<String, VecDeque<VolumeEvent>>>,
    /// Volumes the reconciler has made or found whole; the monitor may see
    /// a volume in the labels while it is still being made.
    made: Mutex<std::collections::BTreeSet<String>>,
}

/// The reason word for an engine error (the controller maps it to a CSI code).
pub fn reason(e: &EngineError) -> FailureReason {
    use dmraid_api::ErrorKind;
    match e {
        EngineError::NoRoom(_) => FailureReason::NoRoom,
        EngineError::Model(m) => match m.kind() {
            ErrorKind::InvalidArgument => FailureReason::InvalidSpec,
            ErrorKind::OutOfRange => FailureReason::OutOfRange,
            ErrorKind::Corrupt => FailureReason::Internal,
        },
        EngineError::BadId(_) => FailureReason::InvalidSpec,
        EngineError::Precondition(_) | EngineError::Claim(_) => FailureReason::NotPossible,
        EngineError::Busy(_) => FailureReason::Busy,
        EngineError::AlreadyExists(_) => FailureReason::SpecChanged,
        EngineError::DisksMissing { .. } => FailureReason::DisksMissing,
        _ => FailureReason::Internal,
    }
}

fn now() -> String {
    // Whole seconds, as Kubernetes writes times.
    let t = k8s_openapi::jiff::Timestamp::now();
    k8s_openapi::jiff::Timestamp::from_second(t.as_second())
        .unwrap_or(t)
        .to_string()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Context {
    fn volumes(&self) -> Api<RaidVolume> {
        Api::all(self.client.clone())
    }

    async fn engine_call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Engine) -> Result<T, EngineError> + Send + 'static,
    ) -> Result<T, EngineError> {
        let engine = self.engine.clone();
        tokio::task::spawn_blocking(move || f(&engine))
            .await
            .map_err(|e| EngineError::Precondition(format!("engine task failed: {e}")))?
    }
}

/// Run the cluster side until the process stops: the reconciler, the notice
/// loop (status and events from the monitor) and the RaidNode reporter.
pub async fn run(
    client: Client,
    engine: Arc<Engine>,
    node: String,
    globs: Vec<String>,
    mut notices: tokio::sync::mpsc::UnboundedReceiver<Notice>,
) {
    let reporter = Reporter {
        controller: "dmraid-csi-node".into(),
        instance: Some(node.clone()),
    };
    let ctx = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client: client.clone(),
        engine,
        node: node.clone(),
        globs,
        failures: Mutex::default(),
        events: Mutex::default(),
        made: Mutex::default(),
    });
    let selector = format!("{NODE_LABEL}={node}");
    let controller = Controller::new(
        Api::<RaidVolume>::all(client.clone()),
        watcher::Config::default().labels(&selector),
    )
    .run(reconcile, error_policy, ctx.clone())
    .for_each(|r| async move {
        if let Err(e) = r {
            tracing::debug!(error = %e, "reconcile round");
        }
    });
    let notice_ctx = ctx.clone();
    let notices = async move {
        let mut last_node_report = tokio::time::Instant::now() - Duration::from_secs(3600);
        while let Some(n) = notices.recv().await {
            let result = match n {
                Notice::Changed(id) => notice_ctx.publish_status(&id).await,
                Notice::Event(id, e) => match notice_ctx.record(&id, &e).await {
                    Ok(()) => notice_ctx.publish_status(&id).await,
                    Err(err) => Err(err),
                },
                Notice::Round => {
                    if last_node_report.elapsed() >= Duration::from_secs(10) {
                        last_node_report = tokio::time::Instant::now();
                        notice_ctx.publish_node().await
                    } else {
                        Ok(())
                    }
                }
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "cannot update the cluster objects (will catch up)");
            }
        }
    };
    if let Err(e) = ctx.publish_node().await {
        tracing::warn!(error = %e, "cannot write this node's RaidNode yet (will retry)");
    }
    tracing::info!(node = %node, "watching this node's RaidVolumes");
    tokio::join!(controller, notices);
}
