//! The CSI Controller service in a cluster. Volumes are `RaidVolume`
//! objects: CreateVolume validates the StorageClass parameters, picks the
//! node (the scheduler's choice under WaitForFirstConsumer) after checking
//! its room in `RaidNode`, writes the object and waits for that node to
//! report the array; DeleteVolume deletes the object and waits for the node
//! to tear the array down (its finalizer); expansion raises the requested
//! bytes and waits for the node. Capacity and health come from the objects.

use crate::error::Error;
use crate::volume_id::{BadId, VolumeId};
use dmraid_api::capacity::{array_sectors, largest_volume, leg_for_size};
use dmraid_api::crd::{
    human_bytes, ClaimRef, Phase, RaidNode, RaidVolume, RaidVolumeSpec, VolumeMode, NODE_LABEL,
};
use dmraid_api::units::{Bytes, Sectors};
use dmraid_api::{ErrorKind, RaidSpec};
use dmraid_proto::csi::controller_server::Controller;
use dmraid_proto::csi::*;
use dmraid_proto::requests::{
    check_capabilities, next_token, page, requested_size, snapshots_not_offered, wants_block,
};
use dmraid_proto::TOPOLOGY_KEY;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource, ResourceExt};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tonic::{Request, Response, Status};

/// Keys the provisioner adds with `--extra-create-metadata`.
const PVC_NAME: &str = "csi.storage.k8s.io/pvc/name";
const PVC_NAMESPACE: &str = "csi.storage.k8s.io/pvc/namespace";
const PV_NAME: &str = "csi.storage.k8s.io/pv/name";

/// The cluster Controller service.
#[derive(Clone)]
pub struct ClusterController {
    volumes: Api<RaidVolume>,
    nodes: Api<RaidNode>,
    /// The cluster's Node objects: whether a volume's node still exists.
    cluster_nodes: Api<k8s_openapi::api::core::v1::Node>,
    /// Events on RaidVolumes (a volume whose node is gone).
    recorder: kube::runtime::events::Recorder,
    /// How long a call waits for the node to act.
    timeout: Duration,
    inflight: Arc<Mutex<BTreeSet<String>>>,
}

/// Held while a call on one volume runs.
struct InFlight {
    set: Arc<Mutex<BTreeSet<String>>>,
    id: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.set
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

/// The id of a volume a request names, for calls where an id no volume has
/// is NotFound (CSI: "volume does not exist"), never a request to a wrong API path.
pub fn known_id(id: &str) -> Result<VolumeId, Error> {
    match VolumeId::parse(id) {
        Ok(id) => Ok(id),
        Err(BadId::Empty) => Err(Error::Invalid(BadId::Empty.to_string())),
        Err(bad) => Err(Error::NoSuchId(bad)),
    }
}

/// The volume a DeleteVolume names, or None when no volume can have that id
/// (CSI: deleting a volume that does not exist succeeds).
pub fn delete_target(id: &str) -> Result<Option<VolumeId>, Error> {
    match known_id(id) {
        Ok(id) => Ok(Some(id)),
        Err(Error::NoSuchId(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A model error as the controller reports it: a size that cannot be built
/// is OutOfRange, anything else in the request InvalidArgument.
fn model(e: dmraid_api::Error) -> Error {
    match e.kind() {
        ErrorKind::OutOfRange => Error::OutOfRange(e.to_string()),
        _ => Error::Invalid(e.to_string()),
    }
}

/// The size a new volume will have, worked out before anything is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizePlan {
    /// Bytes asked for (required_bytes, or the default).
    pub size: u64,
    /// Data sectors per leg of the smallest array holding `size`.
    pub leg: Sectors,
    /// Bytes that array holds, as the node will report them.
    pub capacity: u64,
    /// limit_bytes, if given.
    pub limit: Option<u64>,
}

/// Refuse a range whose required_bytes is above its limit_bytes: no size fits it.
fn required_within_limit(r: &CapacityRange) -> Result<(), Error> {
    if r.limit_bytes > 0 && r.required_bytes > r.limit_bytes {
        return Err(Error::OutOfRange(format!(
            "capacity_range required_bytes {} is above limit_bytes {}",
            r.required_bytes, r.limit_bytes
        )));
    }
    Ok(())
}

/// Plan a `spec` volume for a capacity range, refusing with OutOfRange a
/// range that no such volume fits (required above limit, or the smallest
/// array holding required_bytes above limit_bytes). Checked before the
/// RaidVolume is written: one written and then refused would be left behind,
/// and every retry would meet it as AlreadyExists.
pub fn plan_size(spec: &RaidSpec, range: Option<&CapacityRange>) -> Result<SizePlan, Error> {
    range.map(required_within_limit).transpose()?;
    let (size, limit) = requested_size(range).map_err(|s| Error::Invalid(s.message().into()))?;
    let leg = leg_for_size(spec, Bytes(size)).map_err(model)?;
    let capacity = array_sectors(spec, leg).map_err(model)?.bytes().0;
    if let Some(l) = limit.filter(|l| capacity > *l) {
        return Err(Error::OutOfRange(format!(
            "the smallest {} × {} volume holding {size} bytes has {capacity} bytes, above limit_bytes {l}",
            spec.raid_type, spec.legs
        )));
    }
    Ok(SizePlan {
        size,
        leg,
        capacity,
        limit,
    })
}

/// The size an expansion asks for, and its limit. CSI makes capacity_range
/// REQUIRED here: without it there is no size to grow to.
pub fn expansion_size(range: Option<&CapacityRange>) -> Result<(u64, Option<u64>), Error> {
    let Some(r) = range else {
        return Err(Error::Invalid(
            "capacity_range is required: ControllerExpandVolume needs the new size".into(),
        ));
    };
    if r.required_bytes <= 0 {
        return Err(Error::Invalid(
            "capacity_range.required_bytes is required: the size to grow the volume to".into(),
        ));
    }
    required_within_limit(r)?;
    requested_size(Some(r)).map_err(|s| Error::Invalid(s.message().into()))
}

/// The StorageClass parameters, validated (the parser passes over the
/// sidecars' own `csi.storage.k8s.io/*` keys, fstype aside).
fn spec_from(params: &HashMap<String, String>) -> Result<RaidSpec, Error> {
    let map: BTreeMap<String, String> =
        params.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    RaidSpec::from_parameters(&map).map_err(|e| Error::Invalid(e.to_string()))
}

/// The nodes a request may land on, in the order to try them; empty means any.
pub fn candidate_nodes(req: Option<&TopologyRequirement>) -> Vec<String> {
    let Some(req) = req else { return vec![] };
    let mut out: Vec<String> = Vec::new();
    for t in req.preferred.iter().chain(req.requisite.iter()) {
        if let Some(n) = t.segments.get(TOPOLOGY_KEY) {
            if !out.contains(n) {
                out.push(n.clone());
            }
        }
    }
    out
}

/// Why an existing volume does not match a new request, if it does not.
pub fn mismatch(
    existing: &RaidVolumeSpec,
    capacity: u64,
    name: &str,
    spec: &RaidSpec,
    mode: VolumeMode,
    size: u64,
    limit: Option<u64>,
) -> Option<String> {
    if existing.csi_name != name {
        return Some(format!(
            "it was made for name {:?}, not {name:?}",
            existing.csi_name
        ));
    }
    if existing.raid != *spec {
        return Some(format!(
            "it is {} × {} with other parameters than this request's {} × {}",
            existing.raid.raid_type, existing.raid.legs, spec.raid_type, spec.legs
        ));
    }
    if existing.volume_mode != mode {
        return Some(format!("it is a {:?} volume", existing.volume_mode));
    }
    let have = capacity.max(existing.requested_bytes);
    if have < size {
        return Some(format!(
            "it holds {have} bytes, less than the {size} asked for"
        ));
    }
    if let Some(l) = limit {
        if capacity > l {
            return Some(format!("it holds {capacity} bytes, above limit_bytes {l}"));
        }
    }
    None
}

/// The room a node reports for a class: the largest volume of `spec` its
/// free extents hold. A class whose parameters do not parse (`None`) gets
/// the node's raw free space, so the scheduler goes ahead and the claim
/// gets CreateVolume's clear error on the PVC instead of a pod that only
/// says "not enough free storage".
pub fn room_for(spec: Option<&RaidSpec>, node: &dmraid_api::crd::RaidNodeStatus) -> u64 {
    let free = node.free_extents();
    match spec {
        Some(spec) => largest_volume(spec, &free).0,
        None => free.iter().flatten().map(|x| x.0 * 512).sum(),
    }
}

/// Whether the node has not touched a RaidVolume: no status and none of its
/// finalizers.
fn untouched_by_node(v: &RaidVolume) -> bool {
    v.status.is_none()
        && !v
            .metadata
            .finalizers
            .as_ref()
            .is_some_and(|f| f.iter().any(|f| f == dmraid_api::crd::FINALIZER))
}

/// What a call that waited in vain for a node says: the node's name, and
/// either its last words or that it never took the volume up.
fn timeout_message(
    id: &VolumeId,
    what: &str,
    timeout: Duration,
    last: Option<&RaidVolume>,
) -> String {
    let node = last.map(|v| v.spec.node.as_str()).unwrap_or("?");
    let said = last
        .and_then(|v| v.status.as_ref())
        .map(|s| s.message.as_str())
        .filter(|m| !m.is_empty());
    let why = match (said, last) {
        (Some(m), _) => format!("node {node} says: {m}"),
        (None, Some(v)) if untouched_by_node(v) => {
            format!("node {node} never took it up: is its dmraid-csi node plugin running?")
        }
        (None, _) => format!("node {node} has not reported"),
    };
    format!(
        "volume {id}: {what} did not finish within {timeout:?} ({why}); the call can be retried"
    )
}

impl ClusterController {
    /// Serve from the API server `client` talks to; calls wait up to `timeout` for a node.
    pub fn new(client: Client, timeout: Duration) -> Self {
        ClusterController {
            volumes: Api::all(client.clone()),
            nodes: Api::all(client.clone()),
            cluster_nodes: Api::all(client.clone()),
            recorder: kube::runtime::events::Recorder::new(
                client,
                kube::runtime::events::Reporter {
                    controller: "dmraid-csi-controller".into(),
                    instance: std::env::var("POD_NAME").ok(),
                },
            ),
            timeout,
            inflight: Arc::default(),
        }
    }

    fn begin(&self, id: &VolumeId) -> Result<InFlight, Error> {
        let mut set = self.inflight.lock().unwrap_or_else(|e| e.into_inner());
        if !set.insert(id.to_string()) {
            return Err(Error::InFlight(id.to_string()));
        }
        Ok(InFlight {
            set: self.inflight.clone(),
            id: id.to_string(),
        })
    }

    async fn get(&self, id: &VolumeId) -> Result<Option<RaidVolume>, Error> {
        self.volumes
            .get_opt(id.as_str())
            .await
            .map_err(|e| Error::kube(&format!("reading RaidVolume {id}"), e))
    }

    /// The node to put a new volume on: the first candidate with room,
    /// or (no topology given) the node with the most room.
    async fn pick_node(
        &self,
        spec: &RaidSpec,
        size: u64,
        candidates: &[String],
    ) -> Result<String, Error> {
        let all = self
            .nodes
            .list(&ListParams::default())
            .await
            .map_err(|e| Error::kube("listing RaidNodes", e))?;
        let room = |n: &RaidNode| {
            n.status
                .as_ref()
                .map(|s| largest_volume(spec, &s.free_extents()).0)
                .unwrap_or(0)
        };
        let want = format!(
            "{} × {} of {}",
            spec.raid_type,
            spec.legs,
            human_bytes(size)
        );
        if candidates.is_empty() {
            let best = all.items.iter().max_by_key(|n| room(n));
            return match best {
                Some(n) if room(n) >= size => Ok(n.name_any()),
                Some(n) => Err(Error::NoRoom(format!(
                    "no node has room for {want}: the roomiest, {}, fits {}",
                    n.name_any(),
                    human_bytes(room(n))
                ))),
                None => Err(Error::NoRoom(
                    "no node runs the dmraid-csi node plugin (no RaidNode objects)".into(),
                )),
            };
        }
        let mut why = Vec::new();
        for c in candidates {
            match all.items.iter().find(|n| n.name_any() == *c) {
                Some(n) if room(n) >= size => return Ok(c.clone()),
                Some(n) => why.push(format!("{c} fits {}", human_bytes(room(n)))),
                None => why.push(format!("{c} runs no dmraid-csi node plugin (no RaidNode)")),
            }
        }
        Err(Error::NoRoom(format!(
            "no room for {want}: {}",
            why.join("; ")
        )))
    }

    /// Wait until `done` says the object is finished (Some(result)) or the deadline passes.
    async fn wait_for<T>(
        &self,
        id: &VolumeId,
        what: &str,
        mut done: impl FnMut(Option<&RaidVolume>) -> Option<Result<T, Error>>,
    ) -> Result<T, Error> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut last: Option<RaidVolume> = None;
        loop {
            let obj = self.get(id).await?;
            if let Some(r) = done(obj.as_ref()) {
                return r;
            }
            last = obj.or(last);
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Timeout(timeout_message(
                    id,
                    what,
                    self.timeout,
                    last.as_ref(),
                )));
            }
            // A watch would wake sooner but costs a connection per call; the node
            // reports within a second, so a short poll keeps the call simple.
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn to_volume(v: &RaidVolume) -> Volume {
        let st = v.status.clone().unwrap_or_default();
        let mut ctx = HashMap::new();
        ctx.insert("raidType".to_string(), v.spec.raid.raid_type.to_string());
        ctx.insert("legs".to_string(), v.spec.raid.legs.to_string());
        Volume {
            capacity_bytes: st.capacity_bytes.max(v.spec.requested_bytes) as i64,
            volume_id: v.name_any(),
            volume_context: ctx,
            content_source: None,
            accessible_topology: vec![Topology {
                segments: [(TOPOLOGY_KEY.to_string(), v.spec.node.clone())].into(),
            }],
        }
    }

    fn condition(v: &RaidVolume) -> VolumeCondition {
        match &v.status {
            Some(s) if !s.message.is_empty() => VolumeCondition {
                abnormal: s.abnormal,
                message: s.message.clone(),
            },
            _ => VolumeCondition {
                abnormal: false,
                message: format!("waiting for node {} to report", v.spec.node),
            },
        }
    }

    /// Outcome of a create as the node reports it.
    fn created(v: Option<&RaidVolume>) -> Option<Result<RaidVolume, Error>> {
        let v = v?;
        let st = v.status.as_ref()?;
        match st.phase {
            Phase::Ready => Some(Ok(v.clone())),
            Phase::Failed => {
                let (reason, message) = ready_condition(v);
                Some(Err(Error::NodeFailed {
                    node: v.spec.node.clone(),
                    reason,
                    message,
                }))
            }
            _ => None,
        }
    }

    async fn create(&self, r: CreateVolumeRequest) -> Result<Volume, Error> {
        if r.name.is_empty() {
            return Err(Error::Invalid("name is required".into()));
        }
        check_capabilities(&r.volume_capabilities)
            .map_err(|s| Error::Invalid(s.message().into()))?;
        if r.volume_content_source.is_some() {
            return Err(Error::Invalid(
                "volume content sources (snapshots, clones) are not supported".into(),
            ));
        }
        let spec = spec_from(&r.parameters)?;
        let SizePlan {
            size, leg, limit, ..
        } = plan_size(&spec, r.capacity_range.as_ref())?;
        let mode = if wants_block(&r.volume_capabilities) {
            VolumeMode::Block
        } else {
            VolumeMode::Filesystem
        };
        let id = VolumeId::for_name(&r.name);
        let _flight = self.begin(&id)?;
        let existing = match self.get(&id).await? {
            Some(v) => v,
            None => {
                let node = self
                    .pick_node(
                        &spec,
                        size,
                        &candidate_nodes(r.accessibility_requirements.as_ref()),
                    )
                    .await?;
                let claim = match (r.parameters.get(PVC_NAMESPACE), r.parameters.get(PVC_NAME)) {
                    (Some(ns), Some(name)) => Some(ClaimRef {
                        namespace: ns.clone(),
                        name: name.clone(),
                        pv: r.parameters.get(PV_NAME).cloned().unwrap_or_default(),
                    }),
                    _ => None,
                };
                let mut obj = RaidVolume::new(
                    id.as_str(),
                    RaidVolumeSpec {
                        node: node.clone(),
                        csi_name: r.name.clone(),
                        requested_bytes: size,
                        leg_sectors: leg.0,
                        volume_mode: mode,
                        raid: spec.clone(),
                        claim,
                    },
                );
                obj.metadata.labels = Some([(NODE_LABEL.to_string(), node.clone())].into());
                tracing::info!(volume = %id, node = %node, raid = %spec.raid_type, legs = spec.legs, bytes = size, "creating RaidVolume");
                match self.volumes.create(&PostParams::default(), &obj).await {
                    Ok(v) => v,
                    // Made by a call we lost track of: check it like any existing one.
                    Err(kube::Error::Api(s)) if s.code == 409 => self
                        .get(&id)
                        .await?
                        .ok_or_else(|| Error::Unavailable(format!("RaidVolume {id} vanished")))?,
                    Err(e) => return Err(Error::kube(&format!("creating RaidVolume {id}"), e)),
                }
            }
        };
        if existing.metadata.deletion_timestamp.is_some() {
            return Err(Error::InFlight(id.to_string()));
        }
        let capacity = existing
            .status
            .as_ref()
            .map(|s| s.capacity_bytes)
            .unwrap_or(0);
        if let Some(why) = mismatch(&existing.spec, capacity, &r.name, &spec, mode, size, limit) {
            return Err(Error::AlreadyExists {
                id: id.to_string(),
                why,
            });
        }
        let ready = self
            .wait_for(&id, "creating the array", Self::created)
            .await;
        match ready {
            Ok(v) => {
                let vol = Self::to_volume(&v);
                if let Some(l) = limit {
                    if vol.capacity_bytes as u64 > l {
                        return Err(Error::OutOfRange(format!(
                            "the smallest {} volume holding {size} bytes has {} bytes, above limit_bytes {l}",
                            spec.raid_type, vol.capacity_bytes
                        )));
                    }
                }
                Ok(vol)
            }
            Err(e @ Error::NodeFailed { .. }) => {
                // Nothing was made; drop the object so a retry starts afresh (maybe elsewhere).
                tracing::warn!(volume = %id, error = %e, "node could not make the array; deleting the RaidVolume");
                let _ = self
                    .volumes
                    .delete(id.as_str(), &DeleteParams::default())
                    .await;
                Err(e)
            }
            Err(e @ Error::Timeout(_)) => {
                self.withdraw_untouched(&id).await;
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    async fn delete(&self, id: &str) -> Result<(), Error> {
        let Some(id) = delete_target(id)? else {
            tracing::info!(volume = %id, "DeleteVolume of an id no volume can have: nothing to delete");
            return Ok(());
        };
        let id = &id;
        let _flight = self.begin(id)?;
        match self
            .volumes
            .delete(id.as_str(), &DeleteParams::default())
            .await
        {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(()),
            Err(e) => return Err(Error::kube(&format!("deleting RaidVolume {id}"), e)),
        }
        tracing::info!(volume = %id, "RaidVolume deleted; waiting for its node to tear the array down");
        if let Some(v) = self.get(id).await? {
            if self.node_is_gone(&v.spec.node).await {
                // Nobody will ever remove the node's finalizer but the node
                // itself: the deletion stays recorded on the object (and is
                // carried out if a node of that name returns with the disks);
                // retrying this call could not change that.
                let note = format!(
                    "node {} no longer exists: the deletion of volume {id} is recorded and is carried out if the node returns; its disks left with it",
                    v.spec.node
                );
                tracing::warn!(volume = %id, node = %v.spec.node, "{note}");
                let event = kube::runtime::events::Event {
                    type_: kube::runtime::events::EventType::Warning,
                    reason: dmraid_api::EventReason::NodeGone.as_str().into(),
                    note: Some(note),
                    action: "Delete".into(),
                    secondary: None,
                };
                if let Err(e) = self.recorder.publish(&event, &v.object_ref(&())).await {
                    tracing::warn!(volume = %id, error = %e, "event not recorded");
                }
                return Ok(());
            }
        }
        self.wait_for(id, "tearing the array down", |v| match v {
            None => Some(Ok(())),
            Some(_) => None,
        })
        .await
    }

    /// Whether `node` has no Node object any more (a node removed from the
    /// cluster). Unknown (the API refused or failed) counts as present: the
    /// call then waits for the node as usual.
    async fn node_is_gone(&self, node: &str) -> bool {
        matches!(self.cluster_nodes.get_opt(node).await, Ok(None))
    }

    /// After a create timed out: a RaidVolume its node never touched (no
    /// status, no finalizer) is deleted, so a node that comes back later
    /// makes nothing for a call that already failed. Deleted only if
    /// unchanged since it was read: a node that took it up meanwhile keeps it.
    async fn withdraw_untouched(&self, id: &VolumeId) {
        let Ok(Some(v)) = self.get(id).await else {
            return;
        };
        if !untouched_by_node(&v) {
            return;
        }
        let dp = DeleteParams {
            preconditions: Some(kube::api::Preconditions {
                resource_version: v.metadata.resource_version.clone(),
                uid: v.metadata.uid.clone(),
            }),
            ..Default::default()
        };
        match self.volumes.delete(id.as_str(), &dp).await {
            Ok(_) => {
                tracing::warn!(volume = %id, node = %v.spec.node, "node never took the volume up; RaidVolume withdrawn")
            }
            Err(e) => {
                tracing::info!(volume = %id, error = %e, "RaidVolume kept: its node took it up meanwhile")
            }
        }
    }

    async fn expand(
        &self,
        id: &VolumeId,
        size: u64,
        limit: Option<u64>,
    ) -> Result<(u64, bool), Error> {
        let _flight = self.begin(id)?;
        let v = self
            .get(id)
            .await?
            .ok_or_else(|| Error::NotFound(id.to_string()))?;
        let block = v.spec.volume_mode == VolumeMode::Block;
        let have = v.status.as_ref().map(|s| s.capacity_bytes).unwrap_or(0);
        if have >= size {
            return Ok((have, !block));
        }
        // Refused before the spec changes, as for a new volume.
        let range = CapacityRange {
            required_bytes: size as i64,
            limit_bytes: limit.unwrap_or(0) as i64,
        };
        plan_size(&v.spec.raid, Some(&range))?;
        let patch =
            serde_json::json!({ "spec": { "requestedBytes": size.max(v.spec.requested_bytes) } });
        let after = self
            .volumes
            .patch(id.as_str(), &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| Error::kube(&format!("expanding RaidVolume {id}"), e))?;
        let generation = after.metadata.generation.unwrap_or(0);
        tracing::info!(volume = %id, bytes = size, "expansion asked of the node");
        let grown = self
            .wait_for(id, "expanding the array", |v| {
                let v = v?;
                let st = v.status.as_ref()?;
                if st.capacity_bytes >= size {
                    return Some(Ok(st.capacity_bytes));
                }
                if st.observed_generation.unwrap_or(0) >= generation {
                    let (reason, message) = error_condition(v)?;
                    return Some(Err(Error::NodeFailed {
                        node: v.spec.node.clone(),
                        reason,
                        message,
                    }));
                }
                None
            })
            .await?;
        if let Some(l) = limit {
            if grown > l {
                return Err(Error::OutOfRange(format!(
                    "the array grew to {grown} bytes, above limit_bytes {l}"
                )));
            }
        }
        Ok((grown, !block))
    }
}

/// (reason, message) of the Ready condition.
fn ready_condition(v: &RaidVolume) -> (String, String) {
    v.status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .map(|c| (c.reason.clone(), c.message.clone()))
        .unwrap_or_else(|| ("Unknown".into(), "the node gave no reason".into()))
}

/// (reason, message) of the failure of the last operation, if the node reported one.
fn error_condition(v: &RaidVolume) -> Option<(String, String)> {
    v.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == "OperationFailed" && c.status == "True")
        .map(|c| (c.reason.clone(), c.message.clone()))
}

#[tonic::async_trait]
impl Controller for ClusterController {
    async fn create_volume(
        &self,
        r: Request<CreateVolumeRequest>,
    ) -> Result<Response<CreateVolumeResponse>, Status> {
        let volume = self.create(r.into_inner()).await?;
        Ok(Response::new(CreateVolumeResponse {
            volume: Some(volume),
        }))
    }

    async fn delete_volume(
        &self,
        r: Request<DeleteVolumeRequest>,
    ) -> Result<Response<DeleteVolumeResponse>, Status> {
        self.delete(&r.into_inner().volume_id).await?;
        Ok(Response::new(DeleteVolumeResponse {}))
    }

    async fn controller_publish_volume(
        &self,
        _r: Request<ControllerPublishVolumeRequest>,
    ) -> Result<Response<ControllerPublishVolumeResponse>, Status> {
        Err(Status::unimplemented(
            "ControllerPublishVolume is not offered: volumes are node-local, there is no attach step",
        ))
    }

    async fn controller_unpublish_volume(
        &self,
        _r: Request<ControllerUnpublishVolumeRequest>,
    ) -> Result<Response<ControllerUnpublishVolumeResponse>, Status> {
        Err(Status::unimplemented(
            "ControllerUnpublishVolume is not offered: volumes are node-local, there is no attach step",
        ))
    }

    async fn validate_volume_capabilities(
        &self,
        r: Request<ValidateVolumeCapabilitiesRequest>,
    ) -> Result<Response<ValidateVolumeCapabilitiesResponse>, Status> {
        let r = r.into_inner();
        let id = known_id(&r.volume_id)?;
        if r.volume_capabilities.is_empty() {
            return Err(Status::invalid_argument("volume_capabilities is required"));
        }
        if self.get(&id).await?.is_none() {
            return Err(Error::NotFound(r.volume_id).into());
        }
        let confirmed = match check_capabilities(&r.volume_capabilities) {
            Ok(()) => Some(validate_volume_capabilities_response::Confirmed {
                volume_context: r.volume_context,
                volume_capabilities: r.volume_capabilities,
                parameters: r.parameters,
                mutable_parameters: HashMap::new(),
            }),
            Err(_) => None,
        };
        let message = if confirmed.is_some() {
            String::new()
        } else {
            "only SINGLE_NODE_* access modes with a block or mount access type are supported".into()
        };
        Ok(Response::new(ValidateVolumeCapabilitiesResponse {
            confirmed,
            message,
        }))
    }

    async fn list_volumes(
        &self,
        r: Request<ListVolumesRequest>,
    ) -> Result<Response<ListVolumesResponse>, Status> {
        let r = r.into_inner();
        let mut all = self
            .volumes
            .list(&ListParams::default())
            .await
            .map_err(|e| Error::kube("listing RaidVolumes", e))?
            .items;
        all.sort_by_key(|v| v.name_any());
        let (start, end) = page(all.len(), &r.starting_token, r.max_entries)?;
        let entries: Vec<_> = all[start..end]
            .iter()
            .map(|v| list_volumes_response::Entry {
                volume: Some(Self::to_volume(v)),
                status: Some(list_volumes_response::VolumeStatus {
                    published_node_ids: vec![],
                    volume_condition: Some(Self::condition(v)),
                }),
            })
            .collect();
        Ok(Response::new(ListVolumesResponse {
            entries,
            next_token: next_token(end, all.len()),
        }))
    }

    async fn get_capacity(
        &self,
        r: Request<GetCapacityRequest>,
    ) -> Result<Response<GetCapacityResponse>, Status> {
        let r = r.into_inner();
        let spec = spec_from(&r.parameters).ok();
        let wanted = r
            .accessible_topology
            .as_ref()
            .and_then(|t| t.segments.get(TOPOLOGY_KEY).cloned());
        let nodes = self
            .nodes
            .list(&ListParams::default())
            .await
            .map_err(|e| Error::kube("listing RaidNodes", e))?;
        let best = nodes
            .items
            .iter()
            .filter(|n| wanted.as_ref().is_none_or(|w| n.name_any() == *w))
            .filter_map(|n| n.status.as_ref())
            .map(|s| room_for(spec.as_ref(), s))
            .max()
            .unwrap_or(0);
        Ok(Response::new(GetCapacityResponse {
            available_capacity: best as i64,
            maximum_volume_size: Some(best as i64),
            minimum_volume_size: None,
        }))
    }

    async fn controller_get_capabilities(
        &self,
        _r: Request<ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<ControllerGetCapabilitiesResponse>, Status> {
        Ok(Response::new(ControllerGetCapabilitiesResponse {
            capabilities: dmraid_proto::requests::controller_capabilities(),
        }))
    }

    async fn create_snapshot(
        &self,
        _r: Request<CreateSnapshotRequest>,
    ) -> Result<Response<CreateSnapshotResponse>, Status> {
        Err(snapshots_not_offered())
    }

    async fn delete_snapshot(
        &self,
        _r: Request<DeleteSnapshotRequest>,
    ) -> Result<Response<DeleteSnapshotResponse>, Status> {
        Err(snapshots_not_offered())
    }

    async fn list_snapshots(
        &self,
        _r: Request<ListSnapshotsRequest>,
    ) -> Result<Response<ListSnapshotsResponse>, Status> {
        Err(snapshots_not_offered())
    }

    async fn get_snapshot(
        &self,
        _r: Request<GetSnapshotRequest>,
    ) -> Result<Response<GetSnapshotResponse>, Status> {
        Err(snapshots_not_offered())
    }

    async fn controller_expand_volume(
        &self,
        r: Request<ControllerExpandVolumeRequest>,
    ) -> Result<Response<ControllerExpandVolumeResponse>, Status> {
        let r = r.into_inner();
        let id = known_id(&r.volume_id)?;
        let (size, limit) = expansion_size(r.capacity_range.as_ref())?;
        let (bytes, node_expansion_required) = self.expand(&id, size, limit).await?;
        Ok(Response::new(ControllerExpandVolumeResponse {
            capacity_bytes: bytes as i64,
            node_expansion_required,
        }))
    }

    async fn controller_get_volume(
        &self,
        r: Request<ControllerGetVolumeRequest>,
    ) -> Result<Response<ControllerGetVolumeResponse>, Status> {
        let id = known_id(&r.into_inner().volume_id)?;
        let v = self
            .get(&id)
            .await?
            .ok_or_else(|| Error::NotFound(id.to_string()))?;
        Ok(Response::new(ControllerGetVolumeResponse {
            volume: Some(Self::to_volume(&v)),
            status: Some(controller_get_volume_response::VolumeStatus {
                published_node_ids: vec![],
                volume_condition: Some(Self::condition(&v)),
            }),
        }))
    }

    async fn controller_modify_volume(
        &self,
        _r: Request<ControllerModifyVolumeRequest>,
    ) -> Result<Response<ControllerModifyVolumeResponse>, Status> {
        Err(Status::unimplemented(
            "ControllerModifyVolume is not offered by dmraid-csi",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(required: i64, limit: i64) -> CapacityRange {
        CapacityRange {
            required_bytes: required,
            limit_bytes: limit,
        }
    }

    #[test]
    fn expansion_without_a_capacity_range_is_invalid() {
        let code = |r: Option<&CapacityRange>| Status::from(expansion_size(r).unwrap_err()).code();
        assert_eq!(code(None), tonic::Code::InvalidArgument);
        assert_eq!(code(Some(&range(0, 0))), tonic::Code::InvalidArgument);
        assert_eq!(code(Some(&range(-1, 0))), tonic::Code::InvalidArgument);
        assert_eq!(
            code(Some(&range(2 << 30, 1 << 30))),
            tonic::Code::OutOfRange
        );
        assert_eq!(
            expansion_size(Some(&range(2 << 30, 0))).unwrap(),
            (2 << 30, None)
        );
    }

    #[test]
    fn a_size_above_the_limit_is_refused_before_anything_is_written() {
        let code = |r: CapacityRange| {
            Status::from(plan_size(&spec("raid5_ls"), Some(&r)).unwrap_err()).code()
        };
        assert_eq!(code(range(2 << 30, 1 << 30)), tonic::Code::OutOfRange);
        // raid5 of 3 legs rounds 1 byte up to two chunks: above a 1-byte limit.
        assert_eq!(code(range(1, 1)), tonic::Code::OutOfRange);
        assert_eq!(code(range(-1, 0)), tonic::Code::InvalidArgument);
        let p = plan_size(&spec("raid5_ls"), Some(&range(1 << 30, 2 << 30))).unwrap();
        assert_eq!((p.size, p.limit), (1 << 30, Some(2 << 30)));
        assert!(p.capacity >= 1 << 30 && p.capacity <= 2 << 30);
        assert_eq!(
            p.capacity,
            array_sectors(&spec("raid5_ls"), p.leg).unwrap().bytes().0
        );
        let exact = plan_size(
            &spec("raid5_ls"),
            Some(&range(p.capacity as i64, p.capacity as i64)),
        );
        assert_eq!(
            exact.unwrap().capacity,
            p.capacity,
            "limit == capacity fits"
        );
    }

    #[test]
    fn ids_no_volume_can_have_are_not_found_and_never_reach_the_api() {
        for bad in ["x/status", "a?watch=1", "PVC-1", "a..b", "../raidnodes"] {
            let e = known_id(bad).unwrap_err();
            assert_eq!(Status::from(e).code(), tonic::Code::NotFound, "{bad:?}");
            assert_eq!(delete_target(bad).unwrap(), None, "{bad:?}");
        }
        assert_eq!(
            Status::from(known_id("").unwrap_err()).code(),
            tonic::Code::InvalidArgument
        );
        assert_eq!(
            Status::from(delete_target("").unwrap_err()).code(),
            tonic::Code::InvalidArgument
        );
        let pv = "pvc-0b0e3c1e-7c43-4a4b-9a53-2a4f1b2f6b01";
        assert_eq!(known_id(pv).unwrap().as_str(), pv);
        assert_eq!(delete_target(pv).unwrap().unwrap().as_str(), pv);
    }

    #[test]
    fn preferred_nodes_come_before_requisite_ones() {
        let t = |n: &str| Topology {
            segments: [(TOPOLOGY_KEY.to_string(), n.to_string())].into(),
        };
        let req = TopologyRequirement {
            requisite: vec![t("a"), t("b")],
            preferred: vec![t("b")],
        };
        assert_eq!(candidate_nodes(Some(&req)), ["b", "a"]);
        assert!(candidate_nodes(None).is_empty());
    }

    fn spec(t: &str) -> RaidSpec {
        spec_from(&[("raidType".to_string(), t.to_string())].into()).unwrap()
    }

    /// A 1 GiB raid1 volume "pvc-1" on `node`.
    fn spec_on(node: &str) -> RaidVolumeSpec {
        RaidVolumeSpec {
            node: node.into(),
            csi_name: "pvc-1".into(),
            requested_bytes: 1 << 30,
            leg_sectors: 0,
            volume_mode: VolumeMode::Filesystem,
            raid: spec("raid1"),
            claim: None,
        }
    }

    fn volume_on(node: &str) -> RaidVolume {
        RaidVolume::new("pvc-1", spec_on(node))
    }

    #[test]
    fn a_node_that_never_took_a_volume_up_is_named_in_the_timeout() {
        let id = VolumeId::parse("pvc-1").unwrap();
        let t = Duration::from_secs(30);
        let mut v = volume_on("worker-7");
        assert!(untouched_by_node(&v));
        let m = timeout_message(&id, "creating the array", t, Some(&v));
        assert!(
            m.contains("node worker-7 never took it up")
                && m.contains("node plugin running")
                && m.contains("30s"),
            "{m}"
        );
        // Taken up (its finalizer) but silent: not "never took it up", and
        // not withdrawn.
        v.metadata.finalizers = Some(vec![dmraid_api::crd::FINALIZER.into()]);
        assert!(!untouched_by_node(&v));
        let m = timeout_message(&id, "creating the array", t, Some(&v));
        assert!(m.contains("node worker-7 has not reported"), "{m}");
        // Its last words.
        v.status = Some(dmraid_api::crd::RaidVolumeStatus {
            message: "waiting for disks".into(),
            ..Default::default()
        });
        assert!(!untouched_by_node(&v));
        let m = timeout_message(&id, "creating the array", t, Some(&v));
        assert!(m.contains("node worker-7 says: waiting for disks"), "{m}");
        let m = timeout_message(&id, "tearing the array down", t, None);
        assert!(m.contains("tearing the array down did not finish"), "{m}");
    }

    #[test]
    fn same_name_other_parameters_is_a_conflict() {
        let existing = spec_on("n");
        let fs = VolumeMode::Filesystem;
        let cap = (1 << 30) + 4096;
        assert_eq!(
            mismatch(&existing, cap, "pvc-1", &spec("raid1"), fs, 1 << 30, None),
            None
        );
        assert!(mismatch(
            &existing,
            cap,
            "pvc-1",
            &spec("raid5_ls"),
            fs,
            1 << 30,
            None
        )
        .is_some());
        assert!(mismatch(
            &existing,
            cap,
            "pvc-1",
            &spec("raid1"),
            VolumeMode::Block,
            1 << 30,
            None
        )
        .is_some());
        assert!(mismatch(&existing, cap, "pvc-1", &spec("raid1"), fs, 2 << 30, None).is_some());
        assert!(mismatch(
            &existing,
            cap,
            "pvc-1",
            &spec("raid1"),
            fs,
            1 << 30,
            Some(1 << 30)
        )
        .is_some());
    }

    #[test]
    fn provisioner_metadata_is_not_a_raid_parameter() {
        let p: HashMap<String, String> = [
            ("raidType".to_string(), "raid1".to_string()),
            (PVC_NAME.to_string(), "data".to_string()),
            (PVC_NAMESPACE.to_string(), "default".to_string()),
        ]
        .into();
        assert_eq!(spec_from(&p).unwrap(), spec("raid1"));
        let bad: HashMap<String, String> = [("raidTyp".to_string(), "raid1".to_string())].into();
        assert!(matches!(spec_from(&bad), Err(Error::Invalid(_))));
    }
}
