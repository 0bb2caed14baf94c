//! The CSI Node service: stage (make a filesystem on a blank array and
//! mount it, or nothing for block volumes), publish (bind mount into the
//! pod's path), and report usage with the array's health as a
//! VolumeCondition. Every call is idempotent.

use crate::engine::Engine;
use crate::{health, mount, signature};
use dmraid_proto::csi::node_server::Node;
use dmraid_proto::csi::volume_capability::AccessType;
use dmraid_proto::csi::*;
use dmraid_proto::TOPOLOGY_KEY;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// The Node service for one node.
pub struct NodeService {
    node_id: String,
    engine: Option<Arc<Engine>>,
    /// Target and staging paths must lie under this directory (the kubelet's).
    root: PathBuf,
}

impl NodeService {
    /// The service for `node_id`; paths must be under `root`.
    pub fn new(node_id: String, engine: Option<Arc<Engine>>, root: PathBuf) -> Self {
        NodeService {
            node_id,
            engine,
            root,
        }
    }

    fn engine(&self) -> Result<Arc<Engine>, Status> {
        self.engine.clone().ok_or_else(|| {
            Status::failed_precondition(
                "device-mapper is not available on this machine (no /dev/mapper/control)",
            )
        })
    }

    fn checked_path(&self, what: &str, p: &str) -> Result<PathBuf, Status> {
        if p.is_empty() {
            return Err(Status::invalid_argument(format!("{what} is required")));
        }
        let path = PathBuf::from(p);
        if !path.is_absolute()
            || path
                .components()
                .any(|c| c == std::path::Component::ParentDir)
            || !path.starts_with(&self.root)
        {
            return Err(Status::invalid_argument(format!(
                "{what} {p:?} must be an absolute path under {} without '..'",
                self.root.display()
            )));
        }
        Ok(path)
    }

    async fn device(&self, id: &str) -> Result<(PathBuf, String), Status> {
        if id.is_empty() {
            return Err(Status::invalid_argument("volume_id is required"));
        }
        let engine = self.engine()?;
        let id = id.to_string();
        let v = tokio::task::spawn_blocking(move || engine.volume(&id))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(Status::from)?;
        if v.status.is_none() {
            return Err(Status::failed_precondition(format!(
                "volume {} exists but its array is not active",
                v.id
            )));
        }
        let fs = match v.spec.spec.fs_type {
            dmraid_api::params::FsType::Ext4 => "ext4",
            dmraid_api::params::FsType::Xfs => "xfs",
        };
        Ok((PathBuf::from(v.device), fs.to_string()))
    }
}

fn io_status(e: std::io::Error) -> Status {
    Status::internal(e.to_string())
}

fn is_block(cap: &Option<VolumeCapability>) -> Result<bool, Status> {
    match cap.as_ref().and_then(|c| c.access_type.as_ref()) {
        Some(AccessType::Block(_)) => Ok(true),
        Some(AccessType::Mount(_)) => Ok(false),
        None => Err(Status::invalid_argument(
            "volume_capability with an access type (block or mount) is required",
        )),
    }
}

fn fs_of(cap: &Option<VolumeCapability>, default: &str) -> Result<String, Status> {
    let fs = match cap.as_ref().and_then(|c| c.access_type.as_ref()) {
        Some(AccessType::Mount(m)) if !m.fs_type.is_empty() => m.fs_type.clone(),
        _ => default.to_string(),
    };
    if fs != "ext4" && fs != "xfs" {
        return Err(Status::invalid_argument(format!(
            "fs_type {fs:?} is not supported; use ext4 or xfs"
        )));
    }
    Ok(fs)
}

/// What libblkid finds on the device: empty for a blank device.
fn existing_fs(device: &Path) -> Result<Vec<signature::Found>, Status> {
    let f = std::fs::File::open(device)
        .map_err(|e| Status::internal(format!("{}: {e}", device.display())))?;
    signature::probe(&f).map_err(|e| Status::internal(format!("{}: {e}", device.display())))
}

#[tonic::async_trait]
impl Node for NodeService {
    async fn node_stage_volume(
        &self,
        r: Request<NodeStageVolumeRequest>,
    ) -> Result<Response<NodeStageVolumeResponse>, Status> {
        let r = r.into_inner();
        let staging = self.checked_path("staging_target_path", &r.staging_target_path)?;
        let block = is_block(&r.volume_capability)?;
        let (device, default_fs) = self.device(&r.volume_id).await?;
        if block {
            return Ok(Response::new(NodeStageVolumeResponse {}));
        }
        let fs = fs_of(&r.volume_capability, &default_fs)?;
        if let Some(m) = mount::mount_at(&staging).map_err(io_status)? {
            if Path::new(&m.source) == device
                || m.source
                    .ends_with(device.file_name().and_then(|n| n.to_str()).unwrap_or("\0"))
            {
                return Ok(Response::new(NodeStageVolumeResponse {}));
            }
            return Err(Status::already_exists(format!(
                "{} is already mounted from {}",
                staging.display(),
                m.source
            )));
        }
        let dev = device.clone();
        let fs2 = fs.clone();
        tokio::task::spawn_blocking(move || -> Result<(), Status> {
            let found = existing_fs(&dev)?;
            match found.as_slice() {
                [] => mount::mkfs(&dev, &fs2).map_err(io_status),
                [only] if only.kind == fs2 => Ok(()),
                other => Err(Status::failed_precondition(format!(
                    "{} already carries {}, not {fs2}; refusing to format it",
                    dev.display(),
                    signature::describe(other)
                ))),
            }
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))??;
        std::fs::create_dir_all(&staging).map_err(io_status)?;
        let options = r
            .volume_capability
            .as_ref()
            .and_then(|c| match &c.access_type {
                Some(AccessType::Mount(m)) => Some(m.mount_flags.clone()),
                _ => None,
            })
            .unwrap_or_default();
        mount::mount(&device, &staging, &fs, false, &options).map_err(io_status)?;
        Ok(Response::new(NodeStageVolumeResponse {}))
    }

    async fn node_unstage_volume(
        &self,
        r: Request<NodeUnstageVolumeRequest>,
    ) -> Result<Response<NodeUnstageVolumeResponse>, Status> {
        let r = r.into_inner();
        if r.volume_id.is_empty() {
            return Err(Status::invalid_argument("volume_id is required"));
        }
        let staging = self.checked_path("staging_target_path", &r.staging_target_path)?;
        mount::unmount(&staging).map_err(io_status)?;
        Ok(Response::new(NodeUnstageVolumeResponse {}))
    }

    async fn node_publish_volume(
        &self,
        r: Request<NodePublishVolumeRequest>,
    ) -> Result<Response<NodePublishVolumeResponse>, Status> {
        let r = r.into_inner();
        let target = self.checked_path("target_path", &r.target_path)?;
        let block = is_block(&r.volume_capability)?;
        let (device, _) = self.device(&r.volume_id).await?;
        if mount::mount_at(&target).map_err(io_status)?.is_some() {
            return Ok(Response::new(NodePublishVolumeResponse {}));
        }
        if block {
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(io_status)?;
            }
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&target)
                .map_err(io_status)?;
            mount::bind(&device, &target, r.readonly).map_err(io_status)?;
        } else {
            let staging = self.checked_path("staging_target_path", &r.staging_target_path)?;
            if mount::mount_at(&staging).map_err(io_status)?.is_none() {
                return Err(Status::failed_precondition(format!(
                    "volume is not staged at {}",
                    staging.display()
                )));
            }
            std::fs::create_dir_all(&target).map_err(io_status)?;
            mount::bind(&staging, &target, r.readonly).map_err(io_status)?;
        }
        Ok(Response::new(NodePublishVolumeResponse {}))
    }

    async fn node_unpublish_volume(
        &self,
        r: Request<NodeUnpublishVolumeRequest>,
    ) -> Result<Response<NodeUnpublishVolumeResponse>, Status> {
        let r = r.into_inner();
        if r.volume_id.is_empty() {
            return Err(Status::invalid_argument("volume_id is required"));
        }
        let target = self.checked_path("target_path", &r.target_path)?;
        mount::unmount(&target).map_err(io_status)?;
        if target.is_dir() {
            let _ = std::fs::remove_dir(&target);
        } else if target.exists() {
            let _ = std::fs::remove_file(&target);
        }
        Ok(Response::new(NodeUnpublishVolumeResponse {}))
    }

    async fn node_get_volume_stats(
        &self,
        r: Request<NodeGetVolumeStatsRequest>,
    ) -> Result<Response<NodeGetVolumeStatsResponse>, Status> {
        let r = r.into_inner();
        if r.volume_id.is_empty() || r.volume_path.is_empty() {
            return Err(Status::invalid_argument(
                "volume_id and volume_path are required",
            ));
        }
        let path = PathBuf::from(&r.volume_path);
        if !path.exists() {
            return Err(Status::not_found(format!(
                "volume_path {} does not exist",
                path.display()
            )));
        }
        let engine = self.engine()?;
        let id = r.volume_id.clone();
        let v = tokio::task::spawn_blocking(move || engine.volume(&id))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(Status::from)?;
        let (abnormal, message) = health::condition(&v);
        let usage = if path.is_dir() {
            let ((total, used, avail), (itotal, iused, iavail)) =
                mount::usage(&path).map_err(io_status)?;
            vec![
                VolumeUsage {
                    available: avail as i64,
                    total: total as i64,
                    used: used as i64,
                    unit: volume_usage::Unit::Bytes as i32,
                },
                VolumeUsage {
                    available: iavail as i64,
                    total: itotal as i64,
                    used: iused as i64,
                    unit: volume_usage::Unit::Inodes as i32,
                },
            ]
        } else {
            vec![VolumeUsage {
                available: 0,
                total: v.capacity as i64,
                used: 0,
                unit: volume_usage::Unit::Bytes as i32,
            }]
        };
        Ok(Response::new(NodeGetVolumeStatsResponse {
            usage,
            volume_condition: Some(VolumeCondition { abnormal, message }),
        }))
    }

    async fn node_expand_volume(
        &self,
        r: Request<NodeExpandVolumeRequest>,
    ) -> Result<Response<NodeExpandVolumeResponse>, Status> {
        let r = r.into_inner();
        if r.volume_path.is_empty() {
            return Err(Status::invalid_argument("volume_path is required"));
        }
        let (device, _) = self.device(&r.volume_id).await?;
        let path = PathBuf::from(&r.volume_path);
        if !path.exists() {
            return Err(Status::not_found(format!(
                "volume_path {} does not exist",
                path.display()
            )));
        }
        let capacity = {
            let engine = self.engine()?;
            let id = r.volume_id.clone();
            tokio::task::spawn_blocking(move || engine.volume(&id))
                .await
                .map_err(|e| Status::internal(e.to_string()))?
                .map_err(Status::from)?
                .capacity
        };
        if path.is_dir() {
            let m = mount::mount_at(&path).map_err(io_status)?.ok_or_else(|| {
                Status::failed_precondition(format!("{} is not mounted", path.display()))
            })?;
            let fs = m.fstype.clone();
            tokio::task::spawn_blocking(move || mount::grow(&device, &path, &fs))
                .await
                .map_err(|e| Status::internal(e.to_string()))?
                .map_err(io_status)?;
        }
        Ok(Response::new(NodeExpandVolumeResponse {
            capacity_bytes: capacity as i64,
        }))
    }

    async fn node_get_capabilities(
        &self,
        _r: Request<NodeGetCapabilitiesRequest>,
    ) -> Result<Response<NodeGetCapabilitiesResponse>, Status> {
        use node_service_capability::rpc::Type;
        let caps = [
            Type::StageUnstageVolume,
            Type::GetVolumeStats,
            Type::VolumeCondition,
            Type::ExpandVolume,
        ]
        .into_iter()
        .map(|t| NodeServiceCapability {
            r#type: Some(node_service_capability::Type::Rpc(
                node_service_capability::Rpc { r#type: t as i32 },
            )),
        })
        .collect();
        Ok(Response::new(NodeGetCapabilitiesResponse {
            capabilities: caps,
        }))
    }

    async fn node_get_info(
        &self,
        _r: Request<NodeGetInfoRequest>,
    ) -> Result<Response<NodeGetInfoResponse>, Status> {
        Ok(Response::new(NodeGetInfoResponse {
            node_id: self.node_id.clone(),
            max_volumes_per_node: 0,
            accessible_topology: Some(Topology {
                segments: [(TOPOLOGY_KEY.to_string(), self.node_id.clone())].into(),
            }),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn node_expansion_is_advertised_so_the_kubelet_grows_the_filesystem() {
        use node_service_capability::rpc::Type;
        let svc = NodeService::new("n".into(), None, "/".into());
        let caps = svc
            .node_get_capabilities(Request::new(NodeGetCapabilitiesRequest {}))
            .await
            .unwrap()
            .into_inner()
            .capabilities;
        let has = |t: Type| {
            caps.iter().any(|c| {
                matches!(&c.r#type, Some(node_service_capability::Type::Rpc(r)) if r.r#type == t as i32)
            })
        };
        assert!(has(Type::ExpandVolume) && has(Type::StageUnstageVolume));
    }
}
