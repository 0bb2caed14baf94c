//! The CSI Node service: stage (make a filesystem on a blank array and
//! mount it, or nothing for block volumes), publish (bind mount into the
//! pod's path), and report usage with the array's health as a
//! VolumeCondition. Every call is idempotent.

use crate::engine::Engine;
use crate::error::Error;
use crate::health::condition as health;
use crate::kernel::{mount, paths, signature};
use dmraid_api::units::Bytes;
use dmraid_proto::csi::node_server::Node;
use dmraid_proto::csi::volume_capability::AccessType;
use dmraid_proto::csi::*;
use dmraid_proto::TOPOLOGY_KEY;
use std::os::unix::fs::OpenOptionsExt;
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

    /// A request's path resolved under the root (see [`paths::confine`]).
    fn confined(&self, what: &'static str, p: &str) -> Result<PathBuf, Status> {
        paths::confine(&self.root, Path::new(p))
            .map_err(|source| Error::Path { what, source }.into())
    }

    /// A stats or expand request's volume_path: NotFound when nothing is
    /// there (as the CSI spec asks), else resolved under the root.
    fn existing_volume_path(&self, p: &str) -> Result<PathBuf, Status> {
        if !Path::new(p).exists() {
            return Err(Status::not_found(format!("volume_path {p} does not exist")));
        }
        self.confined("volume_path", p)
    }

    /// Refuse a stats or expand call whose volume_path does not hold the
    /// volume: a filesystem on its array (a directory), or its device node.
    fn volume_is_at(&self, id: &str, path: &Path, devno: &str, block: bool) -> Result<(), Status> {
        let found = match at_path(path, devno, block)? {
            AtPath::This => return Ok(()),
            AtPath::Nothing => "nothing is mounted there".to_string(),
            AtPath::Other(found) => format!("{found} is mounted there"),
        };
        Err(Error::NotAtPath {
            path: path.to_path_buf(),
            found,
            volume: id.to_string(),
        }
        .into())
    }

    async fn volume(&self, id: &str) -> Result<ActiveVolume, Status> {
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
        let device = PathBuf::from(v.device);
        let devno = mount::devno_of(&device)
            .map_err(|e| Status::internal(format!("volume {}: {e}", v.id)))?;
        Ok(ActiveVolume {
            id: v.id,
            device,
            devno,
            fs: fs.to_string(),
            capacity: v.capacity,
        })
    }
}

/// A volume whose array is active, as the Node calls need it.
struct ActiveVolume {
    id: String,
    /// /dev/mapper path of the array.
    device: PathBuf,
    /// `major:minor` of the array.
    devno: String,
    /// The filesystem its StorageClass asks for.
    fs: String,
    capacity: u64,
}

/// What is mounted at a request's path, judged against a volume.
#[derive(Debug, PartialEq, Eq)]
enum AtPath {
    /// Nothing is mounted there.
    Nothing,
    /// The volume: its filesystem (staged, or a bind of the staging mount),
    /// or for a block volume a bind of its device node.
    This,
    /// Something else, described for a message.
    Other(String),
}

/// Whether mount `m` is the volume whose array is `devno`. A filesystem on
/// the array shows the array's number in mountinfo, and a bind of the
/// staging mount keeps it (with root `/`: a bind of a subdirectory is not
/// what publish made). A block publish is a bind of the device node, so
/// mountinfo shows devtmpfs; `node` is the rdev stat reads through it.
fn judge(m: &mount::MountEntry, block: bool, node: Option<&str>, devno: &str) -> AtPath {
    let this = if block {
        node == Some(devno)
    } else {
        m.devno == devno && m.root == "/"
    };
    if this {
        return AtPath::This;
    }
    let root = if m.root == "/" {
        String::new()
    } else {
        format!(":{}", m.root)
    };
    let node = match (block, node) {
        (true, Some(n)) => format!(", device node {n}"),
        (true, None) => ", not a block device".to_string(),
        (false, _) => String::new(),
    };
    AtPath::Other(format!(
        "{}{root} ({}, device {}{node})",
        m.source, m.fstype, m.devno
    ))
}

/// What is mounted at `path` (a resolved path), judged against `devno`.
fn at_path(path: &Path, devno: &str, block: bool) -> Result<AtPath, Status> {
    let Some(m) = mount::mount_at(path).map_err(io_status)? else {
        return Ok(AtPath::Nothing);
    };
    let node = if block {
        mount::devno_of(path).ok()
    } else {
        None
    };
    Ok(judge(&m, block, node.as_deref(), devno))
}

/// Pin a resolved path for mounting; a path that changed since it was
/// resolved is refused as the request's.
fn pinned(what: &'static str, path: &Path) -> Result<mount::Pinned, Status> {
    mount::pin(path).map_err(|source| {
        Error::Path {
            what,
            source: paths::PathError::Unresolvable {
                path: path.to_path_buf(),
                source,
            },
        }
        .into()
    })
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
        let staging = self.confined("staging_target_path", &r.staging_target_path)?;
        let block = is_block(&r.volume_capability)?;
        let vol = self.volume(&r.volume_id).await?;
        if block {
            return Ok(Response::new(NodeStageVolumeResponse {}));
        }
        let fs = fs_of(&r.volume_capability, &vol.fs)?;
        match at_path(&staging, &vol.devno, false)? {
            AtPath::This => return Ok(Response::new(NodeStageVolumeResponse {})),
            AtPath::Other(found) => {
                return Err(Error::MountedOther {
                    path: staging,
                    found,
                    volume: vol.id,
                }
                .into())
            }
            AtPath::Nothing => {}
        }
        let options = r
            .volume_capability
            .as_ref()
            .and_then(|c| match &c.access_type {
                Some(AccessType::Mount(m)) => Some(m.mount_flags.clone()),
                _ => None,
            })
            .unwrap_or_default();
        let engine = self.engine()?;
        // Formatted and mounted with the volume held: no reload of ours
        // suspends the array under the mount (Engine::with_volume_held).
        tokio::task::spawn_blocking(move || -> Result<(), Status> {
            let dev = &vol.device;
            engine.with_volume_held(&vol.id, || -> Result<(), Status> {
                let found = existing_fs(dev)?;
                match found.as_slice() {
                    [] => mount::mkfs(dev, &fs).map_err(io_status)?,
                    [only] if only.kind == fs => {}
                    other => {
                        return Err(Status::failed_precondition(format!(
                            "{} already carries {}, not {fs}; refusing to format it",
                            dev.display(),
                            signature::describe(other)
                        )))
                    }
                }
                std::fs::create_dir_all(&staging).map_err(io_status)?;
                let target = pinned("staging_target_path", &staging)?;
                mount::mount(dev, &target, &fs, false, &options).map_err(io_status)
            })?
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))??;
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
        let staging = self.confined("staging_target_path", &r.staging_target_path)?;
        mount::unmount(&staging).map_err(io_status)?;
        Ok(Response::new(NodeUnstageVolumeResponse {}))
    }

    async fn node_publish_volume(
        &self,
        r: Request<NodePublishVolumeRequest>,
    ) -> Result<Response<NodePublishVolumeResponse>, Status> {
        let r = r.into_inner();
        let target = self.confined("target_path", &r.target_path)?;
        let block = is_block(&r.volume_capability)?;
        let vol = self.volume(&r.volume_id).await?;
        match at_path(&target, &vol.devno, block)? {
            AtPath::This => return Ok(Response::new(NodePublishVolumeResponse {})),
            AtPath::Other(found) => {
                return Err(Error::MountedOther {
                    path: target,
                    found,
                    volume: vol.id,
                }
                .into())
            }
            AtPath::Nothing => {}
        }
        let source = if block {
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent).map_err(io_status)?;
            }
            std::fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&target)
                .map_err(io_status)?;
            // udev makes /dev/mapper names symlinks to /dev/dm-N; pin the node itself.
            let node = vol.device.canonicalize().map_err(io_status)?;
            mount::pin(&node).map_err(io_status)?
        } else {
            let staging = self.confined("staging_target_path", &r.staging_target_path)?;
            match at_path(&staging, &vol.devno, false)? {
                AtPath::This => {}
                AtPath::Nothing => {
                    return Err(Status::failed_precondition(format!(
                        "volume {} is not staged at {}",
                        vol.id,
                        staging.display()
                    )))
                }
                AtPath::Other(found) => {
                    return Err(Status::failed_precondition(format!(
                        "volume {} is not staged at {}: {found} is mounted there",
                        vol.id,
                        staging.display()
                    )))
                }
            }
            std::fs::create_dir_all(&target).map_err(io_status)?;
            pinned("staging_target_path", &staging)?
        };
        let target = pinned("target_path", &target)?;
        mount::bind(&source, &target, r.readonly).map_err(io_status)?;
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
        let target = self.confined("target_path", &r.target_path)?;
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
        let path = self.existing_volume_path(&r.volume_path)?;
        let engine = self.engine()?;
        let id = r.volume_id.clone();
        let v = tokio::task::spawn_blocking(move || engine.volume(&id))
            .await
            .map_err(|e| Status::internal(e.to_string()))?
            .map_err(Status::from)?;
        let fs_mount = path.is_dir();
        // No device node means the array is not active: nothing of it can be mounted.
        let devno = mount::devno_of(Path::new(&v.device)).unwrap_or_default();
        self.volume_is_at(&v.id, &path, &devno, !fs_mount)?;
        let (abnormal, message) = health::condition(&v);
        let usage = if fs_mount {
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
        let path = self.existing_volume_path(&r.volume_path)?;
        let vol = self.volume(&r.volume_id).await?;
        // The array grows first (ControllerExpandVolume); a filesystem grown
        // before it would stay the old size while the call said done.
        let required = r
            .capacity_range
            .as_ref()
            .map_or(0, |c| u64::try_from(c.required_bytes).unwrap_or(0));
        if required > vol.capacity {
            return Err(Status::failed_precondition(format!(
                "volume {} is {} and {} was asked: its array has not grown yet (ControllerExpandVolume grows it); try again once it has",
                vol.id,
                Bytes(vol.capacity),
                Bytes(required)
            )));
        }
        let fs_mount = path.is_dir();
        self.volume_is_at(&vol.id, &path, &vol.devno, !fs_mount)?;
        if fs_mount {
            // volume_is_at proved a mount of this volume is there.
            let fs = mount::mount_at(&path)
                .map_err(io_status)?
                .map(|m| m.fstype)
                .unwrap_or_default();
            let device = vol.device.clone();
            tokio::task::spawn_blocking(move || mount::grow(&device, &path, &fs))
                .await
                .map_err(|e| Status::internal(e.to_string()))?
                .map_err(io_status)?;
        }
        Ok(Response::new(NodeExpandVolumeResponse {
            capacity_bytes: vol.capacity as i64,
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
mod tests;
