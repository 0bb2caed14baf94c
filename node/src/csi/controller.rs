//! The CSI Controller service of the standalone driver, served from the
//! local engine: volumes live on this machine's disks.

use crate::engine::{Engine, VolumeInfo};
use crate::health::condition as health;
use dmraid_api::capacity::{array_sectors, largest_volume, leg_for_size};
use dmraid_api::units::{Bytes, Sectors};
use dmraid_api::RaidSpec;
use dmraid_proto::csi::controller_server::Controller;
use dmraid_proto::csi::*;
use dmraid_proto::TOPOLOGY_KEY;
use std::collections::BTreeMap;
use std::sync::Arc;
use tonic::{Request, Response, Status};

pub use dmraid_proto::requests::DEFAULT_SIZE;
use dmraid_proto::requests::{
    check_capabilities, next_token, page, requested_size, snapshots_not_offered,
};

/// The standalone Controller service.
pub struct ControllerService {
    engine: Option<Arc<Engine>>,
    node_id: String,
    state_dir: std::path::PathBuf,
}

impl ControllerService {
    /// Serve volumes from `engine` (None: device-mapper is unavailable here).
    /// Volume specs are also written as YAML under `state_dir/volumes/`.
    pub fn new(
        engine: Option<Arc<Engine>>,
        node_id: String,
        state_dir: std::path::PathBuf,
    ) -> Self {
        ControllerService {
            engine,
            node_id,
            state_dir,
        }
    }

    fn engine(&self) -> Result<Arc<Engine>, Status> {
        self.engine.clone().ok_or_else(|| {
            Status::failed_precondition("device-mapper is not available on this machine (no /dev/mapper/control); volumes cannot be served")
        })
    }

    fn topology(&self) -> Topology {
        Topology {
            segments: [(TOPOLOGY_KEY.to_string(), self.node_id.clone())].into(),
        }
    }

    fn to_volume(&self, v: &VolumeInfo) -> Volume {
        let s = &v.spec.spec;
        Volume {
            capacity_bytes: v.capacity as i64,
            volume_id: v.id.clone(),
            volume_context: [
                ("raidType".to_string(), s.raid_type.to_string()),
                ("legs".to_string(), s.legs.to_string()),
                ("device".to_string(), v.device.clone()),
            ]
            .into(),
            content_source: None,
            accessible_topology: vec![self.topology()],
        }
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::error::Error> + Send + 'static,
) -> Result<T, Status> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Status::internal(format!("engine task failed: {e}")))?
        .map_err(Status::from)
}

/// The volume id for a CSI name: the name itself when it is a usable id,
/// else a stable hash of it (same name, same id: CreateVolume is idempotent).
pub fn volume_id(name: &str) -> String {
    let usable = !name.is_empty()
        && name.len() <= 100
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if usable {
        return name.to_string();
    }
    // FNV-1a, 64 bit: stable across versions and machines.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("v-{h:016x}")
}

fn spec_from(params: &std::collections::HashMap<String, String>) -> Result<RaidSpec, Status> {
    let map: BTreeMap<String, String> =
        params.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    RaidSpec::from_parameters(&map).map_err(|e| Status::invalid_argument(e.to_string()))
}

/// The capacity of the smallest `spec` volume holding `size` bytes, as the engine will make it.
fn capacity_for(spec: &RaidSpec, size: u64) -> Result<u64, Status> {
    leg_for_size(spec, Bytes(size))
        .and_then(|leg| array_sectors(spec, leg))
        .map(|s| s.bytes().0)
        .map_err(|e| Status::from(crate::error::Error::Model(e)))
}

/// Whether any parameter is the driver's own (the `csi.storage.k8s.io/*`
/// keys belong to the sidecars).
fn has_driver_parameters(params: &std::collections::HashMap<String, String>) -> bool {
    params.keys().any(|k| !k.starts_with("csi.storage.k8s.io/"))
}

/// All free space on the claimed disks, whatever the layout.
fn raw_free(gaps: &[Vec<Sectors>]) -> Bytes {
    Sectors(gaps.iter().flatten().map(|s| s.0).sum()).bytes()
}

#[tonic::async_trait]
impl Controller for ControllerService {
    async fn create_volume(
        &self,
        r: Request<CreateVolumeRequest>,
    ) -> Result<Response<CreateVolumeResponse>, Status> {
        let r = r.into_inner();
        if r.name.is_empty() {
            return Err(Status::invalid_argument("name is required"));
        }
        check_capabilities(&r.volume_capabilities)?;
        if r.volume_content_source.is_some() {
            return Err(Status::invalid_argument(
                "volume content sources (snapshots, clones) are not supported",
            ));
        }
        if let Some(req) = &r.accessibility_requirements {
            let here = |t: &Topology| t.segments.get(TOPOLOGY_KEY) == Some(&self.node_id);
            if !req.requisite.is_empty() && !req.requisite.iter().any(here) {
                return Err(Status::resource_exhausted(format!(
                    "this driver serves node {} only, which the requisite topology excludes",
                    self.node_id
                )));
            }
        }
        let spec = spec_from(&r.parameters)?;
        let (size, limit) = requested_size(r.capacity_range.as_ref())?;
        // Refused before anything is made: a volume created and then refused would be left behind.
        let capacity = capacity_for(&spec, size)?;
        if let Some(limit) = limit.filter(|l| capacity > *l) {
            return Err(Status::out_of_range(format!(
                "the smallest {} volume holding {} bytes has {} bytes, above limit_bytes {}",
                spec.raid_type, size, capacity, limit
            )));
        }
        let id = volume_id(&r.name);
        let engine = self.engine()?;
        // Made here before (the state dir remembers it) but not on any
        // present disk: its disks are away; it is never made again.
        if crate::state_dir::load_volume::<serde_json::Value>(&self.state_dir, &id).is_ok() {
            let probe = engine.clone();
            let key = id.clone();
            if let Err(crate::error::Error::NotFound(_)) =
                blocking(move || Ok(probe.volume(&key))).await?
            {
                return Err(crate::error::Error::DisksMissing {
                    detail: "disks missing: none of its disks is present (the state directory remembers the volume)"
                        .to_string(),
                    id,
                }
                .into());
            }
        }
        let name = r.name.clone();
        let v = blocking(move || engine.create_named(&id, Some(&name), &spec, size)).await?;
        // Remembered here too, so a restart while all its disks are away
        // still knows it was made (the labels on the disks stay the truth).
        if let Err(e) = crate::state_dir::save_volume(&self.state_dir, &v.id, &v.spec) {
            tracing::warn!(volume = %v.id, error = %e, "the volume's spec could not be saved in the state directory");
        }
        Ok(Response::new(CreateVolumeResponse {
            volume: Some(self.to_volume(&v)),
        }))
    }

    async fn delete_volume(
        &self,
        r: Request<DeleteVolumeRequest>,
    ) -> Result<Response<DeleteVolumeResponse>, Status> {
        let id = r.into_inner().volume_id;
        if id.is_empty() {
            return Err(Status::invalid_argument("volume_id is required"));
        }
        let engine = self.engine()?;
        let deleted = id.clone();
        // The state dir remembers volumes made here: a deletion while all
        // their disks are away is recorded, and done when they return.
        let made = crate::state_dir::load_volume::<serde_json::Value>(&self.state_dir, &id).is_ok();
        blocking(move || {
            if made {
                engine.delete_made_volume(&id)
            } else {
                engine.delete_volume(&id)
            }
        })
        .await?;
        if let Err(e) = crate::state_dir::forget_volume(&self.state_dir, &deleted) {
            tracing::warn!(volume = %deleted, error = %e, "could not remove the volume's YAML");
        }
        Ok(Response::new(DeleteVolumeResponse {}))
    }

    async fn controller_publish_volume(
        &self,
        _r: Request<ControllerPublishVolumeRequest>,
    ) -> Result<Response<ControllerPublishVolumeResponse>, Status> {
        Err(Status::unimplemented("ControllerPublishVolume is not offered: volumes are node-local, there is no attach step"))
    }

    async fn controller_unpublish_volume(
        &self,
        _r: Request<ControllerUnpublishVolumeRequest>,
    ) -> Result<Response<ControllerUnpublishVolumeResponse>, Status> {
        Err(Status::unimplemented("ControllerUnpublishVolume is not offered: volumes are node-local, there is no attach step"))
    }

    async fn validate_volume_capabilities(
        &self,
        r: Request<ValidateVolumeCapabilitiesRequest>,
    ) -> Result<Response<ValidateVolumeCapabilitiesResponse>, Status> {
        let r = r.into_inner();
        if r.volume_id.is_empty() {
            return Err(Status::invalid_argument("volume_id is required"));
        }
        if r.volume_capabilities.is_empty() {
            return Err(Status::invalid_argument("volume_capabilities is required"));
        }
        let engine = self.engine()?;
        let id = r.volume_id.clone();
        blocking(move || engine.volume(&id)).await?;
        let confirmed = check_capabilities(&r.volume_capabilities).is_ok().then(|| {
            validate_volume_capabilities_response::Confirmed {
                volume_context: r.volume_context.clone(),
                volume_capabilities: r.volume_capabilities.clone(),
                parameters: r.parameters.clone(),
                mutable_parameters: Default::default(),
            }
        });
        let message = if confirmed.is_some() {
            String::new()
        } else {
            "only SINGLE_NODE_* access modes are supported".into()
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
        let engine = self.engine()?;
        let all = blocking(move || {
            Ok(engine
                .volume_ids()
                .into_iter()
                .filter_map(|id| engine.volume(&id).ok())
                .collect::<Vec<_>>())
        })
        .await?;
        let (start, end) = page(all.len(), &r.starting_token, r.max_entries)?;
        let entries: Vec<_> = all[start..end]
            .iter()
            .map(|v| {
                let (abnormal, message) = health::condition(v);
                list_volumes_response::Entry {
                    volume: Some(self.to_volume(v)),
                    status: Some(list_volumes_response::VolumeStatus {
                        published_node_ids: vec![],
                        volume_condition: Some(VolumeCondition { abnormal, message }),
                    }),
                }
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
        if let Some(t) = &r.accessible_topology {
            if t.segments
                .get(TOPOLOGY_KEY)
                .is_some_and(|n| *n != self.node_id)
            {
                return Ok(Response::new(GetCapacityResponse {
                    available_capacity: 0,
                    ..Default::default()
                }));
            }
        }
        let engine = self.engine()?;
        let gaps = engine.free_gaps();
        // No StorageClass parameters (CSI makes them optional): no RAID layout
        // to size for, so the answer is the raw free space on the claimed disks.
        if !has_driver_parameters(&r.parameters) {
            return Ok(Response::new(GetCapacityResponse {
                available_capacity: raw_free(&gaps).0 as i64,
                ..Default::default()
            }));
        }
        let spec = spec_from(&r.parameters)?;
        let bytes = largest_volume(&spec, &gaps);
        Ok(Response::new(GetCapacityResponse {
            available_capacity: bytes.0 as i64,
            maximum_volume_size: Some(bytes.0 as i64),
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
        if r.volume_id.is_empty() {
            return Err(Status::invalid_argument("volume_id is required"));
        }
        let range = r.capacity_range.unwrap_or_default();
        if range.required_bytes <= 0 {
            return Err(Status::invalid_argument(
                "capacity_range.required_bytes must be positive",
            ));
        }
        let block = matches!(
            r.volume_capability
                .as_ref()
                .and_then(|c| c.access_type.as_ref()),
            Some(volume_capability::AccessType::Block(_))
        );
        let engine = self.engine()?;
        let id = r.volume_id.clone();
        let size = range.required_bytes as u64;
        if range.limit_bytes > 0 {
            // Refused before anything grows: a grown volume cannot shrink back.
            let e = engine.clone();
            let spec = blocking(move || e.volume(&id)).await?.spec.spec;
            let capacity = capacity_for(&spec, size)?;
            if capacity > range.limit_bytes as u64 {
                return Err(Status::out_of_range(format!(
                    "grown capacity {} would exceed limit_bytes {}",
                    capacity, range.limit_bytes
                )));
            }
        }
        let id = r.volume_id.clone();
        let v = blocking(move || engine.expand_volume(&id, size)).await?;
        if let Err(e) = crate::state_dir::save_volume(&self.state_dir, &v.id, &v.spec) {
            tracing::warn!(volume = %v.id, error = %e, "could not update the volume's YAML");
        }
        Ok(Response::new(ControllerExpandVolumeResponse {
            capacity_bytes: v.capacity as i64,
            node_expansion_required: !block,
        }))
    }

    async fn controller_get_volume(
        &self,
        r: Request<ControllerGetVolumeRequest>,
    ) -> Result<Response<ControllerGetVolumeResponse>, Status> {
        let id = r.into_inner().volume_id;
        if id.is_empty() {
            return Err(Status::invalid_argument("volume_id is required"));
        }
        let engine = self.engine()?;
        let v = blocking(move || engine.volume(&id)).await?;
        let (abnormal, message) = health::condition(&v);
        Ok(Response::new(ControllerGetVolumeResponse {
            volume: Some(self.to_volume(&v)),
            status: Some(controller_get_volume_response::VolumeStatus {
                published_node_ids: vec![],
                volume_condition: Some(VolumeCondition { abnormal, message }),
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
    use crate::engine::EngineConfig;
    use crate::kernel::disks::FakeDisks;
    use crate::kernel::dm::FakeDm;
    use dmraid_proto::csi::volume_capability::access_mode::Mode;

    /// The service over `n` fake disks of `mib` MiB each.
    fn service(n: usize, mib: usize) -> (ControllerService, tempfile::TempDir) {
        let disks = FakeDisks::new();
        for i in 0..n {
            disks.add(&format!("/dev/vd{}", (b'b' + i as u8) as char), mib << 20);
        }
        let engine = Arc::new(Engine::new(
            Arc::new(FakeDm::new()),
            Arc::new(disks),
            EngineConfig {
                node: "n".into(),
                globs: vec!["/dev/vd*".into()],
                wipe: false,
            },
        ));
        assert!(engine.claim_disks().unwrap().is_empty());
        let state = tempfile::tempdir().unwrap();
        let svc = ControllerService::new(Some(engine), "n".into(), state.path().to_path_buf());
        (svc, state)
    }

    async fn capacity(
        svc: &ControllerService,
        params: &[(&str, &str)],
    ) -> Result<GetCapacityResponse, Status> {
        let r = GetCapacityRequest {
            parameters: params
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Default::default()
        };
        svc.get_capacity(Request::new(r))
            .await
            .map(Response::into_inner)
    }

    #[tokio::test]
    async fn a_volume_over_limit_bytes_is_refused_before_it_is_made() {
        let (svc, _state) = service(2, 64);
        let mount = VolumeCapability {
            access_type: Some(volume_capability::AccessType::Mount(Default::default())),
            access_mode: Some(volume_capability::AccessMode {
                mode: Mode::SingleNodeWriter as i32,
            }),
        };
        let create = |required: i64, limit: i64| CreateVolumeRequest {
            name: "v".into(),
            capacity_range: Some(CapacityRange {
                required_bytes: required,
                limit_bytes: limit,
            }),
            volume_capabilities: vec![mount.clone()],
            parameters: [("raidType".to_string(), "raid1".to_string())].into(),
            ..Default::default()
        };
        // 1 MiB + 1 byte rounds up to whole sectors and more: above the limit.
        let err = svc
            .create_volume(Request::new(create((1 << 20) + 1, (1 << 20) + 1)))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::OutOfRange, "{err:?}");
        let engine = svc.engine().unwrap();
        assert!(engine.volume_ids().is_empty(), "nothing left behind");
        // Within the limit: made, and growing past a limit leaves it as it was.
        let v = svc
            .create_volume(Request::new(create(8 << 20, 8 << 20)))
            .await
            .unwrap()
            .into_inner()
            .volume
            .unwrap();
        assert_eq!(v.capacity_bytes, 8 << 20);
        let grow = ControllerExpandVolumeRequest {
            volume_id: "v".into(),
            capacity_range: Some(CapacityRange {
                required_bytes: (16 << 20) + 1,
                limit_bytes: (16 << 20) + 1,
            }),
            ..Default::default()
        };
        let err = svc
            .controller_expand_volume(Request::new(grow))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::OutOfRange, "{err:?}");
        assert_eq!(engine.volume("v").unwrap().capacity, 8 << 20);
    }

    #[tokio::test]
    async fn expansion_is_advertised_so_the_resizer_calls_it() {
        use controller_service_capability::rpc::Type;
        let (svc, _state) = service(2, 64);
        let caps = svc
            .controller_get_capabilities(Request::new(Default::default()))
            .await
            .unwrap()
            .into_inner()
            .capabilities;
        let has = |t: Type| {
            caps.iter().any(|c| {
                matches!(&c.r#type, Some(controller_service_capability::Type::Rpc(r)) if r.r#type == t as i32)
            })
        };
        assert!(has(Type::ExpandVolume) && has(Type::CreateDeleteVolume));
    }

    #[tokio::test]
    async fn capacity_without_parameters_is_the_raw_free_space() {
        let (svc, _state) = service(3, 64);
        let raw = capacity(&svc, &[]).await.unwrap();
        // Three 64 MiB disks less their label areas: nearly 192 MiB, no layout applied.
        assert!(
            raw.available_capacity > 180 << 20 && raw.available_capacity <= 192 << 20,
            "{raw:?}"
        );
        assert_eq!(raw.maximum_volume_size, None);
        // The sidecars' keys alone are no layout either.
        let sidecar = capacity(&svc, &[("csi.storage.k8s.io/fstype", "xfs")])
            .await
            .unwrap();
        assert_eq!(sidecar.available_capacity, raw.available_capacity);
        // With a layout: what one raid1 volume can hold, about a disk's worth.
        let raid1 = capacity(&svc, &[("raidType", "raid1")]).await.unwrap();
        assert!(raid1.available_capacity > 50 << 20 && raid1.available_capacity < 64 << 20);
        assert_eq!(raid1.maximum_volume_size, Some(raid1.available_capacity));
        // Parameters without a raidType are still a mistake worth naming.
        let err = capacity(&svc, &[("legs", "2")]).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("raidType"), "{err:?}");
    }

    #[test]
    fn volume_ids_are_names_or_stable_hashes() {
        assert_eq!(volume_id("pvc-1234"), "pvc-1234");
        let odd = volume_id("name with spaces/and slashes");
        assert!(odd.starts_with("v-") && odd.len() == 18);
        assert_eq!(odd, volume_id("name with spaces/and slashes"));
        assert_ne!(odd, volume_id("name with spaces/and slashes!"));
    }
}
