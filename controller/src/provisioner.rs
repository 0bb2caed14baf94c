//! The external sidecars' work done in-process, for clusters where the
//! csi-provisioner or csi-resizer image cannot be had, each on its own
//! ([`Duties`]): with `dmraid-csi-controller --run-provisioner` claims of
//! our StorageClasses are provisioned into PersistentVolumes, released
//! volumes deleted and each node's room published as CSIStorageCapacity so
//! the scheduler places pods where their volume fits; with `--run-resizer`
//! claims are expanded. Each step calls the same
//! CSI Controller service the sidecars would call over the socket, so the
//! volume semantics (idempotency, errors) are one code path; the objects
//! written are the ones the sidecars write (PV shape, finalizer, claim
//! status, event reasons), so switching to the sidecars later keeps working.
//!
//! The pure parts (what to do with a claim, the request, the PV) are
//! functions tested below; the loops around them talk to the API server.

use crate::csi::{room_for, ClusterController};
use dmraid_api::crd::RaidNode;
use dmraid_api::quantity::parse_size;
use dmraid_api::RaidSpec;
use dmraid_proto::csi::controller_server::Controller as _;
use dmraid_proto::csi::{
    volume_capability, CapacityRange, ControllerExpandVolumeRequest, CreateVolumeRequest,
    DeleteVolumeRequest, Topology, TopologyRequirement, Volume, VolumeCapability,
};
use dmraid_proto::{DRIVER_NAME, TOPOLOGY_KEY};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{
    CSIPersistentVolumeSource, ObjectReference, PersistentVolume, PersistentVolumeClaim,
    PersistentVolumeSpec, VolumeNodeAffinity,
};
use k8s_openapi::api::storage::v1::{CSIStorageCapacity, StorageClass};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;
use tonic::Request;

/// The annotation the scheduler sets on a WaitForFirstConsumer claim.
pub const SELECTED_NODE: &str = "volume.kubernetes.io/selected-node";
/// The annotation naming who provisioned a PV.
pub const PROVISIONED_BY: &str = "pv.kubernetes.io/provisioned-by";
/// csi-provisioner's finalizer on the PVs it made, kept until the volume is
/// deleted; the same name so either provisioner can finish the other's work.
pub const PV_FINALIZER: &str = "external-provisioner.volume.kubernetes.io/finalizer";
/// Label on the CSIStorageCapacity objects this controller owns.
const MANAGED_BY: &str = "csi.storage.k8s.io/managed-by";
const MANAGER: &str = "dmraid-csi-controller";

/// What a claim needs from us now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClaimStep {
    /// Not ours (another provisioner, no class) or nothing to do.
    Nothing,
    /// WaitForFirstConsumer: the scheduler has not picked a node yet.
    WaitForNode,
    /// Make the volume and its PV.
    Provision,
    /// The claim asks for more than its PV holds: grow it to this many bytes.
    Expand(u64),
}

/// The PV name for a claim, as csi-provisioner names it.
pub fn pv_name(pvc: &PersistentVolumeClaim) -> String {
    format!("pvc-{}", pvc.metadata.uid.as_deref().unwrap_or_default())
}

fn requested(pvc: &PersistentVolumeClaim, which: &str) -> Result<Option<u64>, String> {
    let r = pvc.spec.as_ref().and_then(|s| s.resources.as_ref());
    let map = match which {
        "requests" => r.and_then(|r| r.requests.as_ref()),
        _ => r.and_then(|r| r.limits.as_ref()),
    };
    match map.and_then(|m| m.get("storage")) {
        None => Ok(None),
        Some(q) => parse_size("storage", &q.0)
            .map(|b| Some(b.0))
            .map_err(|e| e.to_string()),
    }
}

/// The CSI volume id a PV names.
fn volume_handle(pv: &PersistentVolume) -> String {
    pv.spec
        .as_ref()
        .and_then(|s| s.csi.as_ref())
        .map(|c| c.volume_handle.clone())
        .unwrap_or_default()
}

/// Bytes a PV holds, from its capacity.
fn pv_bytes(pv: &PersistentVolume) -> u64 {
    pv.spec
        .as_ref()
        .and_then(|s| s.capacity.as_ref())
        .and_then(|c| c.get("storage"))
        .and_then(|q| parse_size("storage", &q.0).ok())
        .map(|b| b.0)
        .unwrap_or(0)
}

/// `bytes` as an exact Kubernetes quantity, in the largest binary unit that
/// divides it ("64Mi", "1536Ki", "1000").
pub fn quantity(bytes: u64) -> String {
    for (unit, shift) in [("Ti", 40), ("Gi", 30), ("Mi", 20), ("Ki", 10)] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    bytes.to_string()
}

/// What to do with `pvc` of class `sc` (bound to `pv`, if it is).
pub fn claim_step(
    pvc: &PersistentVolumeClaim,
    sc: &StorageClass,
    pv: Option<&PersistentVolume>,
) -> ClaimStep {
    if sc.provisioner != DRIVER_NAME || pvc.metadata.deletion_timestamp.is_some() {
        return ClaimStep::Nothing;
    }
    let bound_to = pvc.spec.as_ref().and_then(|s| s.volume_name.clone());
    match (bound_to, pv) {
        (None, _) => {
            let wffc = sc.volume_binding_mode.as_deref() == Some("WaitForFirstConsumer");
            if wffc && !pvc.annotations().contains_key(SELECTED_NODE) {
                ClaimStep::WaitForNode
            } else {
                ClaimStep::Provision
            }
        }
        (Some(_), Some(pv)) => {
            let ours = pv
                .spec
                .as_ref()
                .and_then(|s| s.csi.as_ref())
                .is_some_and(|c| c.driver == DRIVER_NAME);
            let bound = pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
            match requested(pvc, "requests") {
                Ok(Some(want)) if ours && bound && want > pv_bytes(pv) => ClaimStep::Expand(want),
                _ => ClaimStep::Nothing,
            }
        }
        (Some(_), None) => ClaimStep::Nothing,
    }
}

fn is_block(pvc: &PersistentVolumeClaim) -> bool {
    pvc.spec.as_ref().and_then(|s| s.volume_mode.as_deref()) == Some("Block")
}

/// The fstype of a class, as csi-provisioner reads it.
fn fs_type(sc: &StorageClass) -> String {
    let params = sc.parameters.clone().unwrap_or_default();
    params
        .get("csi.storage.k8s.io/fstype")
        .or_else(|| params.get("fsType"))
        .cloned()
        .unwrap_or_else(|| "ext4".into())
}

/// The access modes a claim may ask for: a dm-raid array lives on one node,
/// and a new volume is empty, so read-only modes would hold nothing.
const ALLOWED_MODES: [&str; 2] = ["ReadWriteOnce", "ReadWriteOncePod"];

/// `kind name` of a claim's data source, as an operator would name it.
fn source_name(kind: &str, group: Option<&str>, name: &str) -> String {
    match group.filter(|g| !g.is_empty()) {
        Some(g) => format!("{kind}.{g} {name}"),
        None => format!("{kind} {name}"),
    }
}

/// Why `pvc` asks for something dmraid-csi cannot give, if it does. A
/// claim refused here gets a ProvisioningFailed event and no volume, rather
/// than a blank volume where it asked for a clone, or a single-node volume
/// where it asked for one shared between nodes.
pub fn refusal(pvc: &PersistentVolumeClaim) -> Option<String> {
    let spec = pvc.spec.as_ref()?;
    if let Some(src) = &spec.data_source {
        return Some(format!(
            "spec.dataSource is set ({}): dmraid-csi cannot clone or restore volumes yet; remove it",
            source_name(&src.kind, src.api_group.as_deref(), &src.name)
        ));
    }
    if let Some(src) = &spec.data_source_ref {
        return Some(format!(
            "spec.dataSourceRef is set ({}): dmraid-csi cannot clone, restore or populate volumes yet; remove it",
            source_name(&src.kind, src.api_group.as_deref(), &src.name)
        ));
    }
    let modes = spec.access_modes.as_deref().unwrap_or_default();
    if let Some(m) = modes.iter().find(|m| !ALLOWED_MODES.contains(&m.as_str())) {
        let why = match m.as_str() {
            "ReadWriteMany" | "ReadOnlyMany" => "a dm-raid volume lives on one node",
            _ => "it is not a Kubernetes access mode dmraid-csi knows",
        };
        return Some(format!(
            "accessModes {m} is not supported: {why}; use {}",
            ALLOWED_MODES.join(" or ")
        ));
    }
    None
}

/// The CreateVolume request csi-provisioner would send for `pvc`
/// (with `--extra-create-metadata` and strict topology).
pub fn create_request(
    pvc: &PersistentVolumeClaim,
    sc: &StorageClass,
) -> Result<CreateVolumeRequest, String> {
    if let Some(why) = refusal(pvc) {
        return Err(why);
    }
    let name = pv_name(pvc);
    let required =
        requested(pvc, "requests")?.ok_or("the claim has no spec.resources.requests.storage")?;
    let limit = requested(pvc, "limits")?.unwrap_or(0);
    let modes = pvc
        .spec
        .as_ref()
        .and_then(|s| s.access_modes.clone())
        .unwrap_or_default();
    let access = if modes.iter().any(|m| m == "ReadWriteOncePod") {
        volume_capability::access_mode::Mode::SingleNodeSingleWriter
    } else {
        volume_capability::access_mode::Mode::SingleNodeWriter
    };
    let access_type = if is_block(pvc) {
        volume_capability::AccessType::Block(volume_capability::BlockVolume {})
    } else {
        volume_capability::AccessType::Mount(volume_capability::MountVolume {
            fs_type: fs_type(sc),
            mount_flags: sc.mount_options.clone().unwrap_or_default(),
            volume_mount_group: String::new(),
        })
    };
    let mut parameters: HashMap<String, String> = sc
        .parameters
        .clone()
        .unwrap_or_default()
        .into_iter()
        .collect();
    parameters.insert(
        "csi.storage.k8s.io/pvc/name".into(),
        pvc.name_any().to_string(),
    );
    parameters.insert(
        "csi.storage.k8s.io/pvc/namespace".into(),
        pvc.namespace().unwrap_or_default(),
    );
    parameters.insert("csi.storage.k8s.io/pv/name".into(), name.clone());
    let accessibility_requirements = pvc.annotations().get(SELECTED_NODE).map(|node| {
        let t = Topology {
            segments: [(TOPOLOGY_KEY.to_string(), node.clone())].into(),
        };
        TopologyRequirement {
            requisite: vec![t.clone()],
            preferred: vec![t],
        }
    });
    Ok(CreateVolumeRequest {
        name,
        capacity_range: Some(CapacityRange {
            required_bytes: required as i64,
            limit_bytes: limit as i64,
        }),
        volume_capabilities: vec![VolumeCapability {
            access_mode: Some(volume_capability::AccessMode {
                mode: access as i32,
            }),
            access_type: Some(access_type),
        }],
        parameters,
        accessibility_requirements,
        ..Default::default()
    })
}

/// The PV for a volume made for `pvc`, bound to it, pinned to its node.
pub fn persistent_volume(
    pvc: &PersistentVolumeClaim,
    sc: &StorageClass,
    vol: &Volume,
) -> PersistentVolume {
    let mut pv = PersistentVolume::default();
    pv.metadata.name = Some(pv_name(pvc));
    pv.metadata.annotations = Some([(PROVISIONED_BY.to_string(), DRIVER_NAME.to_string())].into());
    pv.metadata.finalizers = Some(vec![PV_FINALIZER.to_string()]);
    let nodes: Vec<String> = vol
        .accessible_topology
        .iter()
        .filter_map(|t| t.segments.get(TOPOLOGY_KEY).cloned())
        .collect();
    let node_affinity = (!nodes.is_empty()).then(|| {
        serde_json::from_value::<VolumeNodeAffinity>(serde_json::json!({
            "required": {"nodeSelectorTerms": [{"matchExpressions": [
                {"key": TOPOLOGY_KEY, "operator": "In", "values": nodes}
            ]}]}
        }))
        .unwrap_or_default()
    });
    let spec = pvc.spec.clone().unwrap_or_default();
    pv.spec = Some(PersistentVolumeSpec {
        access_modes: spec.access_modes.clone(),
        capacity: Some(
            [(
                "storage".to_string(),
                Quantity(quantity(vol.capacity_bytes.max(0) as u64)),
            )]
            .into(),
        ),
        claim_ref: Some(ObjectReference {
            api_version: Some("v1".into()),
            kind: Some("PersistentVolumeClaim".into()),
            namespace: pvc.namespace(),
            name: Some(pvc.name_any()),
            uid: pvc.metadata.uid.clone(),
            ..Default::default()
        }),
        csi: Some(CSIPersistentVolumeSource {
            driver: DRIVER_NAME.into(),
            volume_handle: vol.volume_id.clone(),
            fs_type: (!is_block(pvc)).then(|| fs_type(sc)),
            volume_attributes: Some(
                vol.volume_context
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            ),
            ..Default::default()
        }),
        mount_options: sc.mount_options.clone(),
        node_affinity,
        persistent_volume_reclaim_policy: Some(
            sc.reclaim_policy.clone().unwrap_or_else(|| "Delete".into()),
        ),
        storage_class_name: Some(sc.name_any()),
        volume_mode: spec.volume_mode.clone(),
        ..Default::default()
    });
    pv
}

/// Whether `pv` is ours to delete now: made by this driver, released by
/// its claim, and its class said Delete.
pub fn should_delete(pv: &PersistentVolume) -> bool {
    let ours = pv.annotations().get(PROVISIONED_BY).map(String::as_str) == Some(DRIVER_NAME);
    let released = pv.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Released");
    let delete = pv
        .spec
        .as_ref()
        .and_then(|s| s.persistent_volume_reclaim_policy.as_deref())
        == Some("Delete");
    ours && released && delete
}

/// Shared by the loops.
struct Context {
    client: Client,
    csi: ClusterController,
    recorder: Recorder,
    duties: Duties,
}

/// Which sidecar's work this process does: a cluster may lack only one of
/// the two images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Duties {
    /// csi-provisioner's: provision claims, delete released volumes,
    /// publish CSIStorageCapacity.
    pub provision: bool,
    /// csi-resizer's: expand claims.
    pub resize: bool,
}

/// The loops' errors: logged and retried with a delay.
#[derive(Debug, thiserror::Error)]
enum Error {
    #[error("{0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Failed(String),
}

impl Context {
    async fn event(&self, obj: ObjectReference, warning: bool, reason: &str, note: String) {
        let e = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(note),
            action: reason.into(),
            secondary: None,
        };
        if let Err(err) = self.recorder.publish(&e, &obj).await {
            tracing::warn!(error = %err, reason, "event not recorded");
        }
    }
}

async fn reconcile_claim(
    pvc: Arc<PersistentVolumeClaim>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let Some(class) = pvc.spec.as_ref().and_then(|s| s.storage_class_name.clone()) else {
        return Ok(Action::await_change());
    };
    let classes: Api<StorageClass> = Api::all(ctx.client.clone());
    let Some(sc) = classes.get_opt(&class).await? else {
        return Ok(Action::requeue(Duration::from_secs(30)));
    };
    let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let bound = match pvc.spec.as_ref().and_then(|s| s.volume_name.clone()) {
        Some(name) => pvs.get_opt(&name).await?,
        None => None,
    };
    let me = pvc.object_ref(&());
    match claim_step(&pvc, &sc, bound.as_ref()) {
        ClaimStep::Nothing | ClaimStep::WaitForNode => Ok(Action::await_change()),
        ClaimStep::Provision if ctx.duties.provision => provision(&pvc, &sc, me, &ctx).await,
        ClaimStep::Expand(want) if ctx.duties.resize => {
            let pv = bound.ok_or_else(|| Error::Failed("PV vanished".into()))?;
            expand(&pvc, &pv, want, me, &ctx).await
        }
        // The upstream sidecar beside this process does it.
        ClaimStep::Provision | ClaimStep::Expand(_) => Ok(Action::await_change()),
    }
}

async fn provision(
    pvc: &PersistentVolumeClaim,
    sc: &StorageClass,
    me: ObjectReference,
    ctx: &Context,
) -> Result<Action, Error> {
    let name = pv_name(pvc);
    let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
    if pvs.get_opt(&name).await?.is_some() {
        // Made already; the PV controller binds it.
        return Ok(Action::await_change());
    }
    let who = format!("{}/{}", pvc.namespace().unwrap_or_default(), pvc.name_any());
    let failed = |msg: String| {
        format!(
            "failed to provision volume with StorageClass {:?}: {msg}",
            sc.name_any()
        )
    };
    let req = match create_request(pvc, sc) {
        Ok(r) => r,
        Err(msg) => {
            ctx.event(me, true, "ProvisioningFailed", failed(msg.clone()))
                .await;
            return Err(Error::Failed(msg));
        }
    };
    ctx.event(
        me.clone(),
        false,
        "Provisioning",
        format!("dmraid-csi-controller is provisioning volume for claim {who:?}"),
    )
    .await;
    tracing::info!(claim = %who, pv = %name, "provisioning");
    let vol = match ctx.csi.create_volume(Request::new(req)).await {
        Ok(r) => r.into_inner().volume.unwrap_or_default(),
        Err(status) => {
            let msg = format!(
                "rpc error: code = {:?} desc = {}",
                status.code(),
                status.message()
            );
            ctx.event(me, true, "ProvisioningFailed", failed(msg.clone()))
                .await;
            if status.code() == tonic::Code::ResourceExhausted
                && pvc.annotations().contains_key(SELECTED_NODE)
            {
                // As csi-provisioner does: let the scheduler pick another node.
                let api: Api<PersistentVolumeClaim> =
                    Api::namespaced(ctx.client.clone(), &pvc.namespace().unwrap_or_default());
                let patch = serde_json::json!({"metadata": {"annotations": {SELECTED_NODE: null}}});
                let _ = api
                    .patch(
                        &pvc.name_any(),
                        &PatchParams::default(),
                        &Patch::Merge(&patch),
                    )
                    .await;
            }
            return Err(Error::Failed(msg));
        }
    };
    let pv = persistent_volume(pvc, sc, &vol);
    match pvs.create(&PostParams::default(), &pv).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    ctx.event(
        me,
        false,
        "ProvisioningSucceeded",
        format!("Successfully provisioned volume {name}"),
    )
    .await;
    Ok(Action::await_change())
}

async fn expand(
    pvc: &PersistentVolumeClaim,
    pv: &PersistentVolume,
    want: u64,
    me: ObjectReference,
    ctx: &Context,
) -> Result<Action, Error> {
    let handle = volume_handle(pv);
    let claims: Api<PersistentVolumeClaim> =
        Api::namespaced(ctx.client.clone(), &pvc.namespace().unwrap_or_default());
    let set_status = |status: &str| {
        serde_json::json!({"status": {
            "allocatedResources": {"storage": quantity(want)},
            "allocatedResourceStatuses": {"storage": status},
        }})
    };
    patch_claim_status(&claims, pvc, &set_status("ControllerResizeInProgress")).await?;
    ctx.event(
        me.clone(),
        false,
        "Resizing",
        format!("dmraid-csi-controller is resizing volume {}", pv.name_any()),
    )
    .await;
    let req = ControllerExpandVolumeRequest {
        volume_id: handle,
        capacity_range: Some(CapacityRange {
            required_bytes: want as i64,
            limit_bytes: 0,
        }),
        ..Default::default()
    };
    let resp = match ctx.csi.controller_expand_volume(Request::new(req)).await {
        Ok(r) => r.into_inner(),
        Err(status) => {
            let msg = format!("resize volume {:?} by resizer {DRIVER_NAME:?} failed: rpc error: code = {:?} desc = {}", pv.name_any(), status.code(), status.message());
            ctx.event(me, true, "VolumeResizeFailed", msg.clone()).await;
            let _ = patch_claim_status(&claims, pvc, &set_status("ControllerResizeFailed")).await;
            return Err(Error::Failed(msg));
        }
    };
    let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let grown = (resp.capacity_bytes.max(0) as u64).max(want);
    let patch = serde_json::json!({"spec": {"capacity": {"storage": quantity(grown)}}});
    pvs.patch(
        &pv.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    if resp.node_expansion_required {
        // The kubelet grows the filesystem where the pod runs, then sets the capacity.
        let patch = serde_json::json!({"status": {
            "allocatedResourceStatuses": {"storage": "NodeResizePending"},
            "conditions": [{"type": "FileSystemResizePending", "status": "True",
                "message": "Waiting for user to (re-)start a pod to finish file system resize of volume on node.",
                "lastTransitionTime": now()}],
        }});
        patch_claim_status(&claims, pvc, &patch).await?;
        ctx.event(
            me,
            false,
            "FileSystemResizeRequired",
            "Require file system resize of volume on node".into(),
        )
        .await;
    } else {
        let patch = serde_json::json!({"status": {
            "capacity": {"storage": quantity(grown)},
            "allocatedResourceStatuses": null,
        }});
        patch_claim_status(&claims, pvc, &patch).await?;
        ctx.event(
            me,
            false,
            "VolumeResizeSuccessful",
            format!(
                "resize volume {:?} by resizer {DRIVER_NAME:?} finished successfully",
                pv.name_any()
            ),
        )
        .await;
    }
    Ok(Action::await_change())
}

async fn patch_claim_status(
    claims: &Api<PersistentVolumeClaim>,
    pvc: &PersistentVolumeClaim,
    patch: &serde_json::Value,
) -> Result<PersistentVolumeClaim, kube::Error> {
    claims
        .patch_status(
            &pvc.name_any(),
            &PatchParams::default(),
            &Patch::Merge(patch),
        )
        .await
}

fn now() -> String {
    // Whole seconds, as Kubernetes writes times.
    let t = k8s_openapi::jiff::Timestamp::now();
    k8s_openapi::jiff::Timestamp::from_second(t.as_second())
        .unwrap_or(t)
        .to_string()
}

async fn reconcile_volume(pv: Arc<PersistentVolume>, ctx: Arc<Context>) -> Result<Action, Error> {
    if !should_delete(&pv) {
        return Ok(Action::await_change());
    }
    let handle = volume_handle(&pv);
    tracing::info!(pv = %pv.name_any(), volume = %handle, "released: deleting the volume");
    if let Err(status) = ctx
        .csi
        .delete_volume(Request::new(DeleteVolumeRequest {
            volume_id: handle,
            ..Default::default()
        }))
        .await
    {
        let msg = format!(
            "rpc error: code = {:?} desc = {}",
            status.code(),
            status.message()
        );
        ctx.event(pv.object_ref(&()), true, "VolumeFailedDelete", msg.clone())
            .await;
        return Err(Error::Failed(msg));
    }
    let pvs: Api<PersistentVolume> = Api::all(ctx.client.clone());
    let rest: Vec<String> = pv
        .finalizers()
        .iter()
        .filter(|f| *f != PV_FINALIZER)
        .cloned()
        .collect();
    let patch = serde_json::json!({"metadata": {"finalizers": rest}});
    match pvs
        .patch(
            &pv.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
    {
        Ok(_) | Err(kube::Error::Api(_)) => {}
        Err(e) => return Err(e.into()),
    }
    match pvs.delete(&pv.name_any(), &DeleteParams::default()).await {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Action::await_change())
}

fn retry<K>(_: Arc<K>, e: &Error, _: Arc<Context>) -> Action {
    tracing::warn!(error = %e, "will retry");
    Action::requeue(Duration::from_secs(5))
}

/// The capacity objects for `classes` × `nodes`: (name, class, node, bytes),
/// each node's room as GetCapacity reports it ([`room_for`]).
pub fn capacities(
    classes: &[StorageClass],
    nodes: &[RaidNode],
) -> Vec<(String, String, String, u64)> {
    let mut out = vec![];
    for sc in classes.iter().filter(|c| c.provisioner == DRIVER_NAME) {
        let params: BTreeMap<String, String> = sc.parameters.clone().unwrap_or_default();
        let spec = RaidSpec::from_parameters(&params).ok();
        for n in nodes {
            let Some(st) = n.status.as_ref() else {
                continue;
            };
            let bytes = room_for(spec.as_ref(), st);
            let key = format!("{}\0{}", sc.name_any(), n.name_any());
            let mut h: u64 = 0xcbf2_9ce4_8422_2325;
            for b in key.bytes() {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
            out.push((
                format!("dmraid-{h:016x}"),
                sc.name_any(),
                n.name_any(),
                bytes,
            ));
        }
    }
    out
}

async fn publish_capacity(client: &Client, namespace: &str) -> Result<(), Error> {
    let classes = Api::<StorageClass>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let nodes = Api::<RaidNode>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items;
    let api: Api<CSIStorageCapacity> = Api::namespaced(client.clone(), namespace);
    let mut keep = BTreeSet::new();
    for (name, class, node, bytes) in capacities(&classes, &nodes) {
        let obj = serde_json::json!({
            "apiVersion": "storage.k8s.io/v1", "kind": "CSIStorageCapacity",
            "metadata": {"name": name, "labels": {
                "csi.storage.k8s.io/drivername": DRIVER_NAME, MANAGED_BY: MANAGER}},
            "storageClassName": class,
            "nodeTopology": {"matchLabels": {TOPOLOGY_KEY: node}},
            "capacity": bytes.to_string(),
            "maximumVolumeSize": bytes.to_string(),
        });
        api.patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&obj),
        )
        .await?;
        keep.insert(name);
    }
    let mine = api
        .list(&ListParams::default().labels(&format!("{MANAGED_BY}={MANAGER}")))
        .await?;
    for old in mine.items.iter().filter(|o| !keep.contains(&o.name_any())) {
        let _ = api.delete(&old.name_any(), &DeleteParams::default()).await;
    }
    Ok(())
}

/// Run the loops of `duties` (provisioner, deleter and capacity; resizer)
/// until the process ends. Capacity objects go to `namespace` (the pod's).
pub async fn run(
    client: Client,
    csi: ClusterController,
    namespace: Option<String>,
    duties: Duties,
) {
    let ctx = Arc::new(Context {
        recorder: Recorder::new(
            client.clone(),
            Reporter {
                controller: MANAGER.into(),
                instance: std::env::var("POD_NAME").ok(),
            },
        ),
        client: client.clone(),
        csi,
        duties,
    });
    let claims = Controller::new(
        Api::<PersistentVolumeClaim>::all(client.clone()),
        watcher::Config::default(),
    )
    .run(reconcile_claim, retry, ctx.clone())
    .for_each(|_| async {});
    let pv_client = client.clone();
    let volumes = async move {
        if duties.provision {
            Controller::new(
                Api::<PersistentVolume>::all(pv_client),
                watcher::Config::default(),
            )
            .run(reconcile_volume, retry, ctx.clone())
            .for_each(|_| async {})
            .await
        }
    };
    let capacity = async move {
        if !duties.provision {
            return;
        }
        let Some(ns) = namespace else {
            tracing::warn!("no POD_NAMESPACE: CSIStorageCapacity is not published");
            return;
        };
        loop {
            if let Err(e) = publish_capacity(&client, &ns).await {
                tracing::warn!(error = %e, "cannot publish CSIStorageCapacity (will retry)");
            }
            tokio::time::sleep(Duration::from_secs(10)).await;
        }
    };
    tracing::info!(
        provision = duties.provision,
        resize = duties.resize,
        "doing the sidecars' work for claims of provisioner {DRIVER_NAME}"
    );
    tokio::join!(claims, volumes, capacity);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(mode: &str) -> StorageClass {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "raid5"},
            "provisioner": DRIVER_NAME,
            "volumeBindingMode": mode,
            "reclaimPolicy": "Delete",
            "mountOptions": ["noatime"],
            "parameters": {"raidType": "raid5_ls", "legs": "3", "csi.storage.k8s.io/fstype": "xfs"},
        }))
        .unwrap()
    }

    fn claim(
        annotations: serde_json::Value,
        volume: Option<&str>,
        phase: &str,
    ) -> PersistentVolumeClaim {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": "data", "namespace": "app", "uid": "1234", "annotations": annotations},
            "spec": {"storageClassName": "raid5", "accessModes": ["ReadWriteOnce"],
                     "resources": {"requests": {"storage": "1Gi"}}, "volumeName": volume},
            "status": {"phase": phase},
        }))
        .unwrap()
    }

    #[test]
    fn a_wffc_claim_waits_for_the_scheduler_then_is_provisioned() {
        let sc = class("WaitForFirstConsumer");
        let c = claim(serde_json::json!({}), None, "Pending");
        assert_eq!(claim_step(&c, &sc, None), ClaimStep::WaitForNode);
        let c = claim(serde_json::json!({SELECTED_NODE: "n1"}), None, "Pending");
        assert_eq!(claim_step(&c, &sc, None), ClaimStep::Provision);
        let c2 = claim(serde_json::json!({}), None, "Pending");
        assert_eq!(
            claim_step(&c2, &class("Immediate"), None),
            ClaimStep::Provision
        );
    }

    #[test]
    fn quantities_are_exact() {
        assert_eq!(quantity(64 << 20), "64Mi");
        assert_eq!(quantity(1536 << 10), "1536Ki");
        assert_eq!(quantity(3 << 30), "3Gi");
        assert_eq!(quantity(1000), "1000");
        assert_eq!(quantity(0), "0");
        for b in [1u64, 4095, 65 << 20, (1 << 40) + 512] {
            assert_eq!(parse_size("q", &quantity(b)).unwrap().0, b);
        }
    }

    #[test]
    fn another_provisioners_claims_are_left_alone() {
        let mut sc = class("Immediate");
        sc.provisioner = "other.csi.io".into();
        assert_eq!(
            claim_step(&claim(serde_json::json!({}), None, "Pending"), &sc, None),
            ClaimStep::Nothing
        );
    }

    #[test]
    fn the_request_carries_size_topology_fstype_and_claim_metadata() {
        let c = claim(serde_json::json!({SELECTED_NODE: "n1"}), None, "Pending");
        let r = create_request(&c, &class("WaitForFirstConsumer")).unwrap();
        assert_eq!(r.name, "pvc-1234");
        assert_eq!(r.capacity_range.unwrap().required_bytes, 1 << 30);
        assert_eq!(r.parameters["csi.storage.k8s.io/pvc/name"], "data");
        assert_eq!(r.parameters["csi.storage.k8s.io/pvc/namespace"], "app");
        assert_eq!(r.parameters["raidType"], "raid5_ls");
        let topo = r.accessibility_requirements.unwrap();
        assert_eq!(topo.requisite[0].segments[TOPOLOGY_KEY], "n1");
        match r.volume_capabilities[0].access_type.as_ref().unwrap() {
            volume_capability::AccessType::Mount(m) => {
                assert_eq!(m.fs_type, "xfs");
                assert_eq!(m.mount_flags, vec!["noatime".to_string()]);
            }
            other => panic!("{other:?}"),
        }
        let mut no_size = c.clone();
        no_size.spec.as_mut().unwrap().resources = None;
        assert!(create_request(&no_size, &class("Immediate"))
            .unwrap_err()
            .contains("requests.storage"));
    }

    fn claim_with(spec: serde_json::Value) -> PersistentVolumeClaim {
        let mut c = claim(serde_json::json!({}), None, "Pending");
        let mut v = serde_json::to_value(&c).unwrap();
        for (k, val) in spec.as_object().unwrap() {
            v["spec"][k] = val.clone();
        }
        c = serde_json::from_value(v).unwrap();
        c
    }

    #[test]
    fn a_clone_or_restore_claim_is_refused_not_given_a_blank_volume() {
        let sc = class("Immediate");
        let snap = claim_with(serde_json::json!({"dataSource":
            {"apiGroup": "snapshot.storage.k8s.io", "kind": "VolumeSnapshot", "name": "x"}}));
        let err = create_request(&snap, &sc).unwrap_err();
        assert!(
            err.starts_with("spec.dataSource is set (VolumeSnapshot.snapshot.storage.k8s.io x)"),
            "{err}"
        );
        assert!(
            err.contains("cannot clone or restore") && err.contains("remove it"),
            "{err}"
        );
        let clone = claim_with(serde_json::json!({"dataSource":
            {"kind": "PersistentVolumeClaim", "name": "src"}}));
        assert!(create_request(&clone, &sc)
            .unwrap_err()
            .contains("(PersistentVolumeClaim src)"));
        let populated = claim_with(serde_json::json!({"dataSourceRef":
            {"apiGroup": "example.io", "kind": "Populator", "name": "p"}}));
        let err = create_request(&populated, &sc).unwrap_err();
        assert!(
            err.starts_with("spec.dataSourceRef is set (Populator.example.io p)"),
            "{err}"
        );
    }

    #[test]
    fn shared_access_modes_are_refused_with_the_modes_that_work() {
        let sc = class("Immediate");
        for (modes, refused) in [
            (serde_json::json!(["ReadWriteMany"]), "ReadWriteMany"),
            (
                serde_json::json!(["ReadWriteOnce", "ReadWriteMany"]),
                "ReadWriteMany",
            ),
            (serde_json::json!(["ReadOnlyMany"]), "ReadOnlyMany"),
        ] {
            let c = claim_with(serde_json::json!({"accessModes": modes}));
            let err = create_request(&c, &sc).unwrap_err();
            assert!(
                err.starts_with(&format!(
                    "accessModes {refused} is not supported: a dm-raid volume lives on one node"
                )),
                "{err}"
            );
            assert!(
                err.ends_with("use ReadWriteOnce or ReadWriteOncePod"),
                "{err}"
            );
        }
        let mode = |modes: serde_json::Value| {
            let c = claim_with(serde_json::json!({"accessModes": modes}));
            let r = create_request(&c, &sc).unwrap();
            r.volume_capabilities[0].access_mode.unwrap().mode
        };
        use volume_capability::access_mode::Mode;
        assert_eq!(
            mode(serde_json::json!(["ReadWriteOnce"])),
            Mode::SingleNodeWriter as i32
        );
        assert_eq!(
            mode(serde_json::json!(["ReadWriteOncePod"])),
            Mode::SingleNodeSingleWriter as i32
        );
    }

    #[test]
    fn the_pv_is_bound_to_its_claim_and_pinned_to_the_node() {
        let c = claim(serde_json::json!({SELECTED_NODE: "n1"}), None, "Pending");
        let vol = Volume {
            capacity_bytes: 1 << 30,
            volume_id: "pvc-1234".into(),
            accessible_topology: vec![Topology {
                segments: [(TOPOLOGY_KEY.to_string(), "n1".to_string())].into(),
            }],
            ..Default::default()
        };
        let pv = persistent_volume(&c, &class("WaitForFirstConsumer"), &vol);
        let v = serde_json::to_value(&pv).unwrap();
        assert_eq!(v["metadata"]["name"], "pvc-1234");
        assert_eq!(v["metadata"]["finalizers"][0], PV_FINALIZER);
        assert_eq!(v["spec"]["claimRef"]["uid"], "1234");
        assert_eq!(v["spec"]["csi"]["driver"], DRIVER_NAME);
        assert_eq!(v["spec"]["csi"]["fsType"], "xfs");
        assert_eq!(v["spec"]["capacity"]["storage"], "1Gi");
        assert_eq!(v["spec"]["persistentVolumeReclaimPolicy"], "Delete");
        assert_eq!(
            v["spec"]["nodeAffinity"]["required"]["nodeSelectorTerms"][0]["matchExpressions"][0]
                ["values"][0],
            "n1"
        );
    }

    #[test]
    fn a_bound_claim_asking_for_more_is_expanded_once() {
        let sc = class("WaitForFirstConsumer");
        let vol = Volume {
            capacity_bytes: 1 << 30,
            volume_id: "pvc-1234".into(),
            ..Default::default()
        };
        let c = claim(serde_json::json!({}), Some("pvc-1234"), "Pending");
        let pv = persistent_volume(&c, &sc, &vol);
        let mut bigger = claim(serde_json::json!({}), Some("pvc-1234"), "Bound");
        assert_eq!(claim_step(&bigger, &sc, Some(&pv)), ClaimStep::Nothing);
        bigger
            .spec
            .as_mut()
            .unwrap()
            .resources
            .as_mut()
            .unwrap()
            .requests = Some([("storage".to_string(), Quantity("2Gi".into()))].into());
        assert_eq!(
            claim_step(&bigger, &sc, Some(&pv)),
            ClaimStep::Expand(2 << 30)
        );
    }

    #[test]
    fn only_our_released_delete_volumes_are_deleted() {
        let mut pv: PersistentVolume = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "pvc-1", "annotations": {PROVISIONED_BY: DRIVER_NAME}},
            "spec": {"persistentVolumeReclaimPolicy": "Delete"},
            "status": {"phase": "Bound"},
        }))
        .unwrap();
        assert!(!should_delete(&pv));
        pv.status.as_mut().unwrap().phase = Some("Released".into());
        assert!(should_delete(&pv));
        pv.spec.as_mut().unwrap().persistent_volume_reclaim_policy = Some("Retain".into());
        assert!(!should_delete(&pv));
        pv.spec.as_mut().unwrap().persistent_volume_reclaim_policy = Some("Delete".into());
        pv.metadata.annotations = Some([(PROVISIONED_BY.to_string(), "other".to_string())].into());
        assert!(!should_delete(&pv));
    }

    #[test]
    fn a_class_with_bad_parameters_still_gets_the_raw_capacity() {
        let node: RaidNode = serde_json::from_value(serde_json::json!({
            "apiVersion": "dmraid.csi.io/v1alpha1", "kind": "RaidNode",
            "metadata": {"name": "n1"}, "spec": {},
            "status": {"disks": [
                {"id": "a", "path": "/dev/vda", "state": "claimed", "sizeBytes": 1073741824u64, "freeBytes": 1073741824u64, "freeExtents": [2097152]},
                {"id": "b", "path": "/dev/vdb", "state": "claimed", "sizeBytes": 1073741824u64, "freeBytes": 1073741824u64, "freeExtents": [2097152]},
                {"id": "c", "path": "/dev/vdc", "state": "claimed", "sizeBytes": 1073741824u64, "freeBytes": 1073741824u64, "freeExtents": [2097152]},
            ]},
        }))
        .unwrap();
        let good = class("WaitForFirstConsumer");
        let mut bad = class("WaitForFirstConsumer");
        bad.metadata.name = Some("bad".into());
        bad.parameters = Some([("raidType".to_string(), "raid7".to_string())].into());
        let caps = capacities(&[good, bad], &[node]);
        assert_eq!(caps.len(), 2);
        let (g, b) = (caps[0].3, caps[1].3);
        assert!(
            g > 0 && g < b,
            "raid5 of 3 holds less than the raw space: {g} vs {b}"
        );
        assert_ne!(caps[0].0, caps[1].0, "one object per class and node");
    }
}
