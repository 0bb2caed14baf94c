//! The status the node writes: a `RaidVolume`'s (phase, health, legs,
//! sync, conditions) from what the engine knows, and this node's
//! `RaidNode` (disks, free room, the largest volume of each layout).

use super::{lock, now, Context, Error, Failure};
use crate::engine::{DiskReport, VolumeInfo};
use crate::health::condition as health;
use dmraid_api::capacity::largest_volume;
use dmraid_api::crd::{
    human_bytes, DiskStatus, LayoutCapacity, LegStatus, Phase, RaidNode, RaidNodeSpec,
    RaidNodeStatus, RaidVolumeStatus, FIELD_MANAGER,
};
use dmraid_api::status::{LegState, RaidStatus, SyncAction};
use dmraid_api::RaidSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Patch, PatchParams};
use kube::Api;
use std::collections::BTreeMap;

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
pub(super) fn status_word(st: &RaidStatus, lost: u32, tolerated: u32) -> &'static str {
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
        inactive_status(&mut st, v, &cond);
        failure_condition(&mut st, failure, &cond);
        return st;
    }
    let Some(v) = v else {
        unmade_status(&mut st, failure, prev, &cond);
        return st;
    };
    let (abnormal, message) = health::condition(v);
    let snap = health::Snapshot::of(v);
    active_status(&mut st, v, &snap, abnormal, &message);
    active_conditions(&mut st, v, &snap, &message, &cond);
    failure_condition(&mut st, failure, &cond);
    st
}

/// The status of a volume recorded in the labels whose array is not active.
fn inactive_status(
    st: &mut RaidVolumeStatus,
    v: &VolumeInfo,
    cond: &impl Fn(&str, bool, &str, String) -> Condition,
) {
    let (_, message) = health::condition(v);
    st.phase = Phase::Pending;
    st.health = "inactive".into();
    st.abnormal = true;
    st.message = message.clone();
    st.conditions = vec![cond("Ready", false, "ArrayInactive", message)];
}

/// The status of a volume the engine does not know: failed to be made (or
/// its disks are away), or not made yet.
fn unmade_status(
    st: &mut RaidVolumeStatus,
    failure: Option<&Failure>,
    prev: Option<&RaidVolumeStatus>,
    cond: &impl Fn(&str, bool, &str, String) -> Condition,
) {
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
}

/// The fields of an active volume's status: health, size, legs, sync.
fn active_status(
    st: &mut RaidVolumeStatus,
    v: &VolumeInfo,
    snap: &health::Snapshot,
    abnormal: bool,
    message: &str,
) {
    st.phase = Phase::Ready;
    st.health = health_word(v).into();
    st.abnormal = abnormal;
    st.message = message.to_string();
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
}

/// The conditions of an active volume: Ready, Degraded, Rebuilding, Resyncing.
fn active_conditions(
    st: &mut RaidVolumeStatus,
    v: &VolumeInfo,
    snap: &health::Snapshot,
    message: &str,
    cond: &impl Fn(&str, bool, &str, String) -> Condition,
) {
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
            message.to_string(),
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
                message.to_string()
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
}

/// The OperationFailed condition, when the last operation on the volume failed.
fn failure_condition(
    st: &mut RaidVolumeStatus,
    failure: Option<&Failure>,
    cond: &impl Fn(&str, bool, &str, String) -> Condition,
) {
    if let Some(f) = failure {
        st.conditions.push(cond(
            "OperationFailed",
            true,
            f.reason.as_str(),
            f.message.clone(),
        ));
    }
}

impl Context {
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
