//! The reconciler of this node's `RaidVolume` objects: makes or grows the
//! array a spec asks for, tears it down behind the finalizer, and records
//! why an operation failed.

use super::{lock, reason, Context, Error, Failure};
use crate::engine::VolumeInfo;
use crate::error::Error as EngineError;
use crate::health::condition as health;
use dmraid_api::crd::{RaidVolume, FINALIZER};
use dmraid_api::{EventReason, FailureReason};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{finalizer, Event as Finalizer};
use kube::ResourceExt;
use std::sync::Arc;
use std::time::Duration;

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
        .engine_call(move |e| make_or_grow(e, &key, &spec, made_before))
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
    let requeue = settle(&ctx, &id, outcome).await;
    ctx.publish_status(&id).await?;
    Ok(requeue)
}

/// What the engine does for a spec: nothing (already so), make the array,
/// grow it, or refuse (other RAID parameters; its disks away).
fn make_or_grow(
    e: &crate::engine::Engine,
    key: &str,
    spec: &dmraid_api::crd::RaidVolumeSpec,
    made_before: bool,
) -> Result<Outcome, EngineError> {
    match e.volume(key) {
        Ok(v) if v.spec.spec != spec.raid => Ok(Outcome::SpecChanged(format!(
            "the array was made as {} × {} with other parameters; changing the RAID parameters of an existing volume is not supported, nothing was changed",
            v.spec.spec.raid_type, v.spec.spec.legs
        ))),
        Ok(v) if v.spec.requested >= spec.requested_bytes || v.capacity >= spec.requested_bytes => {
            Ok(Outcome::Unchanged(v))
        }
        Ok(_) => e.expand_volume(key, spec.requested_bytes).map(Outcome::Changed),
        Err(EngineError::NotFound(_)) if made_before => Err(EngineError::DisksMissing {
            detail: e
                .where_it_was(key)
                .unwrap_or_else(|| "none of its disks is present".to_string()),
            id: key.to_string(),
        }),
        Err(EngineError::NotFound(_)) => e
            .create_volume(key, &spec.raid, spec.requested_bytes)
            .map(Outcome::Changed),
        Err(other) => Err(other),
    }
}

/// Remember how reconciling went (a new failure is logged and becomes a
/// Warning event once) and say when to look again.
async fn settle(ctx: &Context, id: &str, outcome: Result<(VolumeInfo, bool), Failure>) -> Action {
    match outcome {
        Ok((v, changed)) => {
            lock(&ctx.failures).remove(id);
            lock(&ctx.made).insert(id.to_string());
            if changed {
                tracing::info!(volume = %id, capacity = v.capacity, "array made or grown for the RaidVolume");
            }
            Action::requeue(Duration::from_secs(300))
        }
        Err(failure) => {
            let is_new = lock(&ctx.failures).get(id) != Some(&failure);
            if is_new {
                tracing::warn!(volume = %id, reason = %failure.reason, error = %failure.message, "RaidVolume not reconciled");
                let _ = ctx
                    .record(
                        id,
                        &health::HealthEvent {
                            warning: true,
                            reason: EventReason::OperationFailed,
                            message: failure.message.clone(),
                        },
                    )
                    .await;
            }
            lock(&ctx.failures).insert(id.to_string(), failure);
            // A disk may be added or the spec fixed; try again now and then.
            Action::requeue(Duration::from_secs(30))
        }
    }
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

pub(super) async fn reconcile(rv: Arc<RaidVolume>, ctx: Arc<Context>) -> Result<Action, Error> {
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

pub(super) fn error_policy(rv: Arc<RaidVolume>, e: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(volume = %rv.name_any(), error = %e, "reconcile failed; retrying in 5s");
    Action::requeue(Duration::from_secs(5))
}
