//! The node plugin in a cluster: reconciles the `RaidVolume` objects of
//! this node with the engine (create, grow, tear down behind a finalizer),
//! writes their status by server-side apply under one field manager, turns
//! the monitor's health events into Kubernetes Events on the RaidVolume and,
//! when the volume backs a claim, on its PV and PVC, and keeps this node's
//! `RaidNode` current. The disks stay the truth: without the API server the
//! arrays keep running from the labels and the objects catch up later.

use crate::engine::{DiskReport, Engine, VolumeInfo};
use crate::error::Error as EngineError;
use crate::health::condition as health;
use crate::health::monitor::Notice;
use dmraid_api::capacity::largest_volume;
use dmraid_api::crd::{
    human_bytes, DiskStatus, LayoutCapacity, LegStatus, Phase, RaidNode, RaidNodeSpec,
    RaidNodeStatus, RaidVolume, RaidVolumeStatus, VolumeEvent, FIELD_MANAGER, FINALIZER,
    NODE_LABEL,
};
use dmraid_api::status::{LegState, RaidStatus, SyncAction};
use dmraid_api::RaidSpec;
use dmraid_api::{EventReason, FailureReason};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{ObjectReference, PersistentVolumeClaim};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Events kept in `status.lastEvents`.
const KEEP_EVENTS: usize = 10;

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

fn leg_word(s: Option<LegState>) -> &'static str {
    match s {
        Some(LegState::InSync) => "in-sync",
        Some(LegState::Syncing) => "syncing",
        Some(LegState::Dead) => "failed",
        Some(LegState::Missing) => "missing",
        None => "inactive",
    }
}

/// One word for the HEALTH column.
pub fn health_word(v: &VolumeInfo) -> &'static str {
    let Some(st) = &v.status else {
        return "inactive";
    };
    let lost = crate::health::condition::lost_legs(v, st);
    if dmraid_api::redundancy::survival(&v.spec.spec, &lost).lost {
        return "failed";
    }
    status_word(st, lost.len() as u32, u32::MAX)
}

/// The HEALTH word of a status with `lost` legs gone of `tolerated`.
fn status_word(st: &RaidStatus, lost: u32, tolerated: u32) -> &'static str {
    if lost > tolerated {
        return "failed";
    }
    // Some legs in sync and others not: those are being recovered (the
    // action reads resync or idle for a moment around the table reloads
    // of a rebuild); an initial or post-crash resync marks every leg.
    let recovering = st.legs.contains(&LegState::Syncing) && st.legs.contains(&LegState::InSync);
    match st.action {
        Some(SyncAction::Recover) => "rebuilding",
        _ if lost > 0 => "degraded",
        _ if recovering => "rebuilding",
        Some(SyncAction::Resync) => "resyncing",
        _ if st.legs.contains(&LegState::Syncing) => "resyncing",
        Some(SyncAction::Check) | Some(SyncAction::Repair) => "scrubbing",
        _ if st.mismatches.is_some_and(|m| m > 0) => "mismatched",
        _ => "healthy",
    }
}

fn condition(
    prev: &[Condition],
    type_: &str,
    on: bool,
    reason: &str,
    message: String,
    generation: i64,
    now: &str,
) -> Condition {
    let status = if on { "True" } else { "False" };
    let since = prev
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone());
    Condition {
        type_: type_.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message,
        observed_generation: Some(generation),
        last_transition_time: since.unwrap_or_else(|| {
            Time(
                now.parse()
                    .unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
            )
        }),
    }
}

/// The status of a volume from what the engine knows, the last failure and
/// the previous status (for condition transition times).
pub fn volume_status(
    v: Option<&VolumeInfo>,
    failure: Option<&Failure>,
    prev: Option<&RaidVolumeStatus>,
    generation: i64,
    now: &str,
) -> RaidVolumeStatus {
    let prev_conds = prev.map(|p| p.conditions.as_slice()).unwrap_or(&[]);
    let cond = |t: &str, on: bool, reason: &str, message: String| {
        condition(prev_conds, t, on, reason, message, generation, now)
    };
    let mut st = RaidVolumeStatus {
        observed_generation: Some(generation),
        ..Default::default()
    };
    // Recorded in the labels but not active is not usable: a create in
    // progress, or an array that failed to activate.
    if let Some(v) = v.filter(|v| v.status.is_none()) {
        let (_, message) = health::condition(v);
        st.phase = Phase::Pending;
        st.health = "inactive".into();
        st.abnormal = true;
        st.message = message.clone();
        st.conditions = vec![cond("Ready", false, "ArrayInactive", message)];
        if let Some(f) = failure {
            st.conditions.push(cond(
                "OperationFailed",
                true,
                f.reason.as_str(),
                f.message.clone(),
            ));
        }
        return st;
    }
    let Some(v) = v else {
        match failure {
            Some(f) => {
                st.phase = Phase::Failed;
                st.health = "failed".into();
                st.abnormal = true;
                st.message = f.message.clone();
                st.conditions = vec![cond("Ready", false, f.reason.as_str(), f.message.clone())];
                // An array that was made keeps saying so (its size), so a
                // later reconcile never takes it for one still to be made.
                if let Some(p) = prev.filter(|p| p.capacity_bytes > 0) {
                    st.capacity_bytes = p.capacity_bytes;
                    st.size = p.size.clone();
                    st.device = p.device.clone();
                }
            }
            None => {
                st.phase = Phase::Pending;
                st.message = "the node has not made the array yet".into();
                st.conditions = vec![cond(
                    "Ready",
                    false,
                    "Pending",
                    "the node has not made the array yet".into(),
                )];
            }
        }
        return st;
    };
    let (abnormal, message) = health::condition(v);
    let snap = health::Snapshot::of(v);
    st.phase = Phase::Ready;
    st.health = health_word(v).into();
    st.abnormal = abnormal;
    st.message = message.clone();
    st.capacity_bytes = v.capacity;
    st.size = human_bytes(v.capacity);
    st.device = v.device.clone();
    st.legs = snap
        .legs
        .iter()
        .enumerate()
        .map(|(i, (s, d))| LegStatus {
            index: i as u32,
            state: leg_word(*s).into(),
            disk: d.clone().unwrap_or_default(),
        })
        .collect();
    if let Some(s) = &v.status {
        st.sync_action = s
            .action
            .map(|a| format!("{a:?}").to_lowercase())
            .unwrap_or_default();
        st.sync_percent = format!("{}%", (s.ratio() * 100.0).floor() as u64);
        st.eta = v
            .eta_seconds
            .map(health::duration_words)
            .unwrap_or_default();
        st.mismatch_count = s.mismatches;
    }
    let active = v.status.is_some();
    let lost = snap
        .legs
        .iter()
        .filter(|l| matches!(l.0, Some(LegState::Dead) | Some(LegState::Missing)))
        .count();
    let action = v.status.as_ref().and_then(|s| s.action);
    st.conditions = vec![
        cond(
            "Ready",
            active,
            if active {
                "ArrayActive"
            } else {
                "ArrayInactive"
            },
            message.clone(),
        ),
        cond(
            "Degraded",
            lost > 0 || action == Some(SyncAction::Recover),
            if lost > 0 {
                "LegsLost"
            } else if action == Some(SyncAction::Recover) {
                "Rebuilding"
            } else {
                "AllLegsInSync"
            },
            if lost > 0 {
                message.clone()
            } else if action == Some(SyncAction::Recover) {
                "redundancy is back when the rebuild finishes".into()
            } else {
                "every leg is present and in sync".into()
            },
        ),
        cond(
            "Rebuilding",
            action == Some(SyncAction::Recover),
            "Recovery",
            format!("sync {}", st.sync_percent),
        ),
        cond(
            "Resyncing",
            action == Some(SyncAction::Resync),
            "Resync",
            format!("sync {}", st.sync_percent),
        ),
    ];
    if let Some(f) = failure {
        st.conditions.push(cond(
            "OperationFailed",
            true,
            f.reason.as_str(),
            f.message.clone(),
        ));
    }
    st
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

    /// Write the status of volume `id` as the engine sees it now.
    pub async fn publish_status(&self, id: &str) -> Result<(), Error> {
        let Some(obj) = self.volumes().get_opt(id).await? else {
            return Ok(());
        };
        if obj.spec.node != self.node {
            return Ok(());
        }
        let key = id.to_string();
        let v = self.engine_call(move |e| Ok(e.volume(&key).ok())).await?;
        let v = v.filter(|_| lock(&self.made).contains(id));
        let failure = lock(&self.failures).get(id).cloned();
        let generation = obj.metadata.generation.unwrap_or(0);
        let mut st = volume_status(
            v.as_ref(),
            failure.as_ref(),
            obj.status.as_ref(),
            generation,
            &now(),
        );
        if obj.metadata.deletion_timestamp.is_some() {
            st.phase = Phase::Deleting;
        }
        st.last_events = self.events_of(id, obj.status.as_ref());
        let patch = serde_json::json!({
            "apiVersion": "dmraid.csi.io/v1alpha1",
            "kind": "RaidVolume",
            "status": st,
        });
        self.volumes()
            .patch_status(
                id,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(patch),
            )
            .await?;
        Ok(())
    }

    fn events_of(&self, id: &str, prev: Option<&RaidVolumeStatus>) -> Vec<VolumeEvent> {
        let mut all = lock(&self.events);
        let q = all.entry(id.to_string()).or_insert_with(|| {
            prev.map(|p| p.last_events.iter().cloned().collect())
                .unwrap_or_default()
        });
        q.iter().cloned().collect()
    }

    /// Record an event on the RaidVolume and, when it backs a claim, on its PV and PVC.
    pub async fn record(&self, id: &str, e: &health::HealthEvent) -> Result<(), Error> {
        {
            let mut all = lock(&self.events);
            let q = all.entry(id.to_string()).or_default();
            q.push_back(VolumeEvent {
                time: now(),
                type_: if e.warning { "Warning" } else { "Normal" }.into(),
                reason: e.reason.as_str().into(),
                message: e.message.clone(),
            });
            while q.len() > KEEP_EVENTS {
                q.pop_front();
            }
        }
        let Some(obj) = self.volumes().get_opt(id).await? else {
            return Ok(());
        };
        let event = Event {
            type_: if e.warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: e.reason.as_str().into(),
            note: Some(format!("volume {id} on node {}: {}", self.node, e.message)),
            action: "Health".into(),
            secondary: None,
        };
        let mut targets: Vec<ObjectReference> = vec![obj.object_ref(&())];
        if let Some(claim) = &obj.spec.claim {
            let pvcs: Api<PersistentVolumeClaim> =
                Api::namespaced(self.client.clone(), &claim.namespace);
            match pvcs.get_opt(&claim.name).await {
                Ok(Some(pvc)) => targets.push(pvc.object_ref(&())),
                Ok(None) => {}
                Err(err) => {
                    tracing::warn!(volume = %id, error = %err, "cannot read the claim for its events")
                }
            }
            let pv_name = if claim.pv.is_empty() {
                obj.spec.csi_name.clone()
            } else {
                claim.pv.clone()
            };
            let pvs: Api<k8s_openapi::api::core::v1::PersistentVolume> =
                Api::all(self.client.clone());
            if let Ok(Some(pv)) = pvs.get_opt(&pv_name).await {
                targets.push(pv.object_ref(&()));
            }
        }
        for t in targets {
            if let Err(err) = self.recorder.publish(&event, &t).await {
                tracing::warn!(volume = %id, error = %err, kind = ?t.kind, "event not recorded");
            }
        }
        Ok(())
    }

    /// Write this node's RaidNode (spec and status).
    pub async fn publish_node(&self) -> Result<(), Error> {
        let (disks, volumes) = self
            .engine_call(|e| Ok((e.disk_report(), e.volume_ids())))
            .await?;
        let api: Api<RaidNode> = Api::all(self.client.clone());
        let obj = RaidNode::new(
            &self.node,
            RaidNodeSpec {
                disk_globs: self.globs.clone(),
            },
        );
        api.patch(
            &self.node,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&obj),
        )
        .await?;
        let status = node_status(&disks, volumes, &now());
        let patch = serde_json::json!({
            "apiVersion": "dmraid.csi.io/v1alpha1",
            "kind": "RaidNode",
            "status": status,
        });
        api.patch_status(
            &self.node,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(patch),
        )
        .await?;
        Ok(())
    }
}

/// A RaidNode status from the engine's disk report.
pub fn node_status(disks: &[DiskReport], volumes: Vec<String>, now: &str) -> RaidNodeStatus {
    let disk_status: Vec<DiskStatus> = disks
        .iter()
        .map(|d| DiskStatus {
            path: d.path.display().to_string(),
            id: d.id.clone(),
            size_bytes: d.size,
            free_bytes: d.free,
            free_extents: d.gaps.iter().map(|g| g.0).collect(),
            state: if d.present { "claimed" } else { "missing" }.into(),
        })
        .collect();
    let mut st = RaidNodeStatus {
        disk_count: disk_status.len() as u32,
        volume_count: volumes.len() as u32,
        volumes,
        free: human_bytes(disks.iter().filter(|d| d.present).map(|d| d.free).sum()),
        disks: disk_status,
        updated: now.to_string(),
        ..Default::default()
    };
    let free = st.free_extents();
    for (t, legs) in [
        ("raid1", 2),
        ("raid5_ls", 3),
        ("raid6_zr", 4),
        ("raid10", 4),
    ] {
        let p: BTreeMap<String, String> = [
            ("raidType".to_string(), t.to_string()),
            ("legs".to_string(), legs.to_string()),
        ]
        .into();
        if let Ok(spec) = RaidSpec::from_parameters(&p) {
            st.capacity.push(LayoutCapacity {
                raid_type: t.into(),
                legs,
                largest_bytes: largest_volume(&spec, &free).0,
            });
        }
    }
    st
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// What reconciling a spec did.
enum Outcome {
    /// The array was already as asked.
    Unchanged(VolumeInfo),
    /// Made or grown.
    Changed(VolumeInfo),
    /// The spec asks for other RAID parameters than the array has.
    SpecChanged(String),
}

async fn apply(rv: Arc<RaidVolume>, ctx: Arc<Context>) -> Result<Action, Error> {
    let id = rv.name_any();
    let generation = rv.metadata.generation.unwrap_or(0);
    let spec = rv.spec.clone();
    let key = id.clone();
    // The status says the array was made: not finding it now means its
    // disks are away, never that it should be made again.
    let made_before = rv.status.as_ref().is_some_and(|s| {
        s.phase == dmraid_api::crd::Phase::Ready || s.capacity_bytes > 0 || !s.legs.is_empty()
    });
    let outcome = ctx
        .engine_call(move |e| match e.volume(&key) {
            Ok(v) if v.spec.spec != spec.raid => Ok(Outcome::SpecChanged(format!(
                "the array was made as {} × {} with other parameters; changing the RAID parameters of an existing volume is not supported, nothing was changed",
                v.spec.spec.raid_type, v.spec.spec.legs
            ))),
            Ok(v) if v.spec.requested >= spec.requested_bytes || v.capacity >= spec.requested_bytes => {
                Ok(Outcome::Unchanged(v))
            }
            Ok(_) => e.expand_volume(&key, spec.requested_bytes).map(Outcome::Changed),
            Err(EngineError::NotFound(_)) if made_before => Err(EngineError::DisksMissing {
                detail: e
                    .where_it_was(&key)
                    .unwrap_or_else(|| "none of its disks is present".to_string()),
                id: key.clone(),
            }),
            Err(EngineError::NotFound(_)) => e
                .create_volume(&key, &spec.raid, spec.requested_bytes)
                .map(Outcome::Changed),
            Err(other) => Err(other),
        })
        .await;
    let outcome = match outcome {
        Ok(Outcome::SpecChanged(message)) => Err(Failure {
            reason: FailureReason::SpecChanged,
            message,
            generation,
        }),
        Ok(Outcome::Unchanged(v)) => Ok((v, false)),
        Ok(Outcome::Changed(v)) => Ok((v, true)),
        Err(e) => Err(Failure {
            reason: reason(&e),
            message: e.to_string(),
            generation,
        }),
    };
    let requeue = match outcome {
        Ok((v, changed)) => {
            lock(&ctx.failures).remove(&id);
            lock(&ctx.made).insert(id.clone());
            if changed {
                tracing::info!(volume = %id, capacity = v.capacity, "array made or grown for the RaidVolume");
            }
            Action::requeue(Duration::from_secs(300))
        }
        Err(failure) => {
            let is_new = lock(&ctx.failures).get(&id) != Some(&failure);
            if is_new {
                tracing::warn!(volume = %id, reason = %failure.reason, error = %failure.message, "RaidVolume not reconciled");
                let _ = ctx
                    .record(
                        &id,
                        &health::HealthEvent {
                            warning: true,
                            reason: EventReason::OperationFailed,
                            message: failure.message.clone(),
                        },
                    )
                    .await;
            }
            lock(&ctx.failures).insert(id.clone(), failure);
            // A disk may be added or the spec fixed; try again now and then.
            Action::requeue(Duration::from_secs(30))
        }
    };
    ctx.publish_status(&id).await?;
    Ok(requeue)
}

async fn cleanup(rv: Arc<RaidVolume>, ctx: Arc<Context>) -> Result<Action, Error> {
    let id = rv.name_any();
    let key = id.clone();
    let made = rv
        .status
        .as_ref()
        .is_some_and(|s| s.capacity_bytes > 0 || !s.legs.is_empty());
    let _ = ctx.publish_status(&id).await;
    match ctx
        .engine_call(move |e| {
            match if made {
                e.delete_made_volume(&key)
            } else {
                e.delete_volume(&key)
            } {
                Err(EngineError::NotFound(_)) => Ok(()),
                other => other,
            }
        })
        .await
    {
        Ok(()) => {
            tracing::info!(volume = %id, "array torn down and extents freed");
            lock(&ctx.failures).remove(&id);
            lock(&ctx.events).remove(&id);
            lock(&ctx.made).remove(&id);
            Ok(Action::await_change())
        }
        Err(e) => {
            lock(&ctx.failures).insert(
                id.clone(),
                Failure {
                    reason: reason(&e),
                    message: format!("cannot tear the array down: {e}"),
                    generation: rv.metadata.generation.unwrap_or(0),
                },
            );
            let _ = ctx.publish_status(&id).await;
            Err(e.into())
        }
    }
}

async fn reconcile(rv: Arc<RaidVolume>, ctx: Arc<Context>) -> Result<Action, Error> {
    if rv.spec.node != ctx.node {
        return Ok(Action::await_change());
    }
    let api = ctx.volumes();
    finalizer(&api, FINALIZER, rv, |event| async {
        match event {
            Finalizer::Apply(rv) => apply(rv, ctx.clone()).await,
            Finalizer::Cleanup(rv) => cleanup(rv, ctx.clone()).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(e.to_string()))
}

fn error_policy(rv: Arc<RaidVolume>, e: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(volume = %rv.name_any(), error = %e, "reconcile failed; retrying in 5s");
    Action::requeue(Duration::from_secs(5))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leg_being_recovered_reads_rebuilding_whatever_the_action_says() {
        let word = |line: &str, lost| status_word(&RaidStatus::parse(line).unwrap(), lost, 1);
        assert_eq!(
            word("0 1548288 raid raid5_ls 3 AaA 0/516096 recover 0 0 -", 0),
            "rebuilding"
        );
        // Around the reload that drops `rebuild`, md says resync or idle for a moment.
        assert_eq!(
            word("0 1548288 raid raid5_ls 3 AaA 0/516096 resync 0 0 -", 0),
            "rebuilding"
        );
        assert_eq!(
            word("0 1548288 raid raid5_ls 3 AaA 0/516096 idle 0 0 -", 0),
            "rebuilding"
        );
        // Every leg syncing: the initial (or post-crash) resync.
        assert_eq!(
            word("0 1548288 raid raid5_ls 3 aaa 0/516096 resync 0 0 -", 0),
            "resyncing"
        );
        assert_eq!(
            word("0 1548288 raid raid5_ls 3 ADA 516096/516096 idle 0 0 -", 1),
            "degraded"
        );
        assert_eq!(
            word("0 1548288 raid raid5_ls 3 DDA 516096/516096 idle 0 0 -", 2),
            "failed"
        );
        assert_eq!(
            word("0 1548288 raid raid5_ls 3 AAA 516096/516096 idle 0 0 -", 0),
            "healthy"
        );
    }

    #[test]
    fn times_are_rfc3339_seconds() {
        let t = now();
        assert!(t.ends_with('Z') && t.len() == 20, "{t}");
        assert!(t.parse::<k8s_openapi::jiff::Timestamp>().is_ok());
    }

    #[test]
    fn a_failed_create_is_a_failed_phase_with_the_reason() {
        let f = Failure {
            reason: FailureReason::NoRoom,
            message: "no room for 3 legs".into(),
            generation: 1,
        };
        let st = volume_status(None, Some(&f), None, 1, "2026-11-24T00:00:00Z");
        assert_eq!(st.phase, Phase::Failed);
        assert_eq!(st.conditions[0].type_, "Ready");
        assert_eq!(st.conditions[0].reason, "NoRoom");
        let pending = volume_status(None, None, None, 1, "2026-11-24T00:00:00Z");
        assert_eq!(pending.phase, Phase::Pending);
    }

    #[test]
    fn an_array_whose_disks_are_away_keeps_saying_it_was_made() {
        let made = RaidVolumeStatus {
            phase: Phase::Ready,
            capacity_bytes: 64 << 20,
            size: "64Mi".into(),
            ..Default::default()
        };
        let f = Failure {
            reason: FailureReason::DisksMissing,
            message: "volume v was made on this node, but disks missing".into(),
            generation: 1,
        };
        let once = volume_status(None, Some(&f), Some(&made), 1, "2026-11-24T00:00:00Z");
        assert_eq!(once.phase, Phase::Failed);
        assert_eq!(once.conditions[0].reason, "DisksMissing");
        // Reconciled again from that status: still known as made.
        let twice = volume_status(None, Some(&f), Some(&once), 1, "2026-11-24T00:00:00Z");
        assert_eq!(twice.capacity_bytes, 64 << 20);
    }

    #[test]
    fn reasons_for_engine_errors() {
        assert_eq!(reason(&EngineError::Busy("v".into())), FailureReason::Busy);
        assert_eq!(
            reason(&EngineError::Precondition("x".into())),
            FailureReason::NotPossible
        );
    }

    #[test]
    fn node_status_counts_only_present_disks_as_room() {
        let d = |p: &str, present| DiskReport {
            path: p.into(),
            id: p.into(),
            size: 64 << 20,
            free: 60 << 20,
            gaps: vec![dmraid_api::units::Sectors(120_000)],
            present,
        };
        let st = node_status(
            &[
                d("/dev/vdb", true),
                d("/dev/vdc", true),
                d("/dev/vdd", false),
            ],
            vec!["v".into()],
            "t",
        );
        assert_eq!(st.disk_count, 3);
        assert_eq!(st.free, "120Mi");
        let raid1 = st.capacity.iter().find(|c| c.raid_type == "raid1").unwrap();
        assert!(raid1.largest_bytes > 0);
        let raid5 = st
            .capacity
            .iter()
            .find(|c| c.raid_type == "raid5_ls")
            .unwrap();
        assert_eq!(raid5.largest_bytes, 0, "only two disks are present");
    }
}
