//! `dmraid-csi csi ...` and `dmraid-csi volumes`: a CSI client over the
//! driver's Unix socket, for people and for the tests in the VM. Failures
//! print the gRPC code and message and exit non-zero.

use crate::cli::{CsiArgs, CsiCall};
use dmraid_api::quantity::parse_size;
use dmraid_proto::csi::controller_client::ControllerClient;
use dmraid_proto::csi::node_client::NodeClient;
use dmraid_proto::csi::volume_capability::{
    access_mode::Mode, AccessMode, AccessType, BlockVolume, MountVolume,
};
use dmraid_proto::csi::*;
use dmraid_proto::socket;
use std::collections::HashMap;

fn capability(block: bool, fs: &str, mount_flags: &[String]) -> VolumeCapability {
    VolumeCapability {
        access_type: Some(if block {
            AccessType::Block(BlockVolume {})
        } else {
            AccessType::Mount(MountVolume {
                fs_type: fs.to_string(),
                mount_flags: mount_flags.to_vec(),
                volume_mount_group: String::new(),
            })
        }),
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
    }
}

fn params(kv: &[String]) -> Result<HashMap<String, String>, String> {
    kv.iter()
        .map(|p| {
            p.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| format!("--param {p:?}: use KEY=VALUE"))
        })
        .collect()
}

fn status(s: tonic::Status) -> String {
    format!("{:?}: {}", s.code(), s.message())
}

/// Run one CSI call and print its answer.
pub async fn run(args: CsiArgs) -> Result<(), String> {
    let ch = socket::connect(&args.client.endpoint)
        .await
        .map_err(|e| e.to_string())?;
    let mut ctl = ControllerClient::new(ch.clone());
    let mut node = NodeClient::new(ch);
    match args.call {
        CsiCall::Create {
            name,
            params: p,
            size,
            block,
        } => create(&mut ctl, name, &p, &size, block).await?,
        CsiCall::Delete { id } => {
            ctl.delete_volume(DeleteVolumeRequest {
                volume_id: id,
                ..Default::default()
            })
            .await
            .map_err(status)?;
        }
        CsiCall::Stage {
            id,
            staging,
            block,
            fs,
            mount_flag,
        } => {
            node.node_stage_volume(NodeStageVolumeRequest {
                volume_id: id,
                staging_target_path: staging,
                volume_capability: Some(capability(block, &fs, &mount_flag)),
                ..Default::default()
            })
            .await
            .map_err(status)?;
        }
        CsiCall::Unstage { id, staging } => {
            node.node_unstage_volume(NodeUnstageVolumeRequest {
                volume_id: id,
                staging_target_path: staging,
            })
            .await
            .map_err(status)?;
        }
        CsiCall::Publish {
            id,
            staging,
            target,
            block,
            readonly,
        } => {
            node.node_publish_volume(NodePublishVolumeRequest {
                volume_id: id,
                staging_target_path: staging,
                target_path: target,
                volume_capability: Some(capability(block, "", &[])),
                readonly,
                ..Default::default()
            })
            .await
            .map_err(status)?;
        }
        CsiCall::Unpublish { id, target } => {
            node.node_unpublish_volume(NodeUnpublishVolumeRequest {
                volume_id: id,
                target_path: target,
            })
            .await
            .map_err(status)?;
        }
        CsiCall::Stats { id, path } => stats(&mut node, id, path).await?,
        CsiCall::Expand { id, size, path } => expand(&mut ctl, &mut node, id, &size, path).await?,
        CsiCall::Get { id } => get(&mut ctl, id).await?,
        CsiCall::Capacity { params: p } => capacity(&mut ctl, &p).await?,
    }
    Ok(())
}

type Ctl = ControllerClient<tonic::transport::Channel>;
type Node = NodeClient<tonic::transport::Channel>;

/// `csi create`: CreateVolume, the new volume printed.
async fn create(
    ctl: &mut Ctl,
    name: String,
    p: &[String],
    size: &str,
    block: bool,
) -> Result<(), String> {
    let bytes = parse_size("size", size).map_err(|e| e.to_string())?;
    let v = ctl
        .create_volume(CreateVolumeRequest {
            name,
            capacity_range: Some(CapacityRange {
                required_bytes: bytes.0 as i64,
                limit_bytes: 0,
            }),
            volume_capabilities: vec![capability(block, "", &[])],
            parameters: params(p)?,
            ..Default::default()
        })
        .await
        .map_err(status)?
        .into_inner()
        .volume
        .unwrap_or_default();
    println!(
        "volume_id={} capacity_bytes={} device={}",
        v.volume_id,
        v.capacity_bytes,
        v.volume_context.get("device").cloned().unwrap_or_default()
    );
    Ok(())
}

/// `csi stats`: NodeGetVolumeStats, its usage and condition printed.
async fn stats(node: &mut Node, id: String, path: String) -> Result<(), String> {
    let s = node
        .node_get_volume_stats(NodeGetVolumeStatsRequest {
            volume_id: id,
            volume_path: path,
            staging_target_path: String::new(),
        })
        .await
        .map_err(status)?
        .into_inner();
    for u in s.usage {
        let unit = volume_usage::Unit::try_from(u.unit)
            .map(|u| u.as_str_name())
            .unwrap_or("?");
        println!(
            "{unit}: total={} used={} available={}",
            u.total, u.used, u.available
        );
    }
    if let Some(c) = s.volume_condition {
        println!("abnormal={} message={}", c.abnormal, c.message);
    }
    Ok(())
}

/// `csi expand`: ControllerExpandVolume, then NodeExpandVolume when a
/// path is given.
async fn expand(
    ctl: &mut Ctl,
    node: &mut Node,
    id: String,
    size: &str,
    path: Option<String>,
) -> Result<(), String> {
    let bytes = parse_size("size", size).map_err(|e| e.to_string())?.0 as i64;
    let r = ctl
        .controller_expand_volume(ControllerExpandVolumeRequest {
            volume_id: id.clone(),
            capacity_range: Some(CapacityRange {
                required_bytes: bytes,
                limit_bytes: 0,
            }),
            volume_capability: Some(capability(false, "", &[])),
            ..Default::default()
        })
        .await
        .map_err(status)?
        .into_inner();
    println!(
        "capacity_bytes={} node_expansion_required={}",
        r.capacity_bytes, r.node_expansion_required
    );
    if let Some(path) = path {
        // As the kubelet asks: the size the claim wants.
        node.node_expand_volume(NodeExpandVolumeRequest {
            volume_id: id,
            volume_path: path,
            capacity_range: Some(CapacityRange {
                required_bytes: bytes,
                limit_bytes: 0,
            }),
            ..Default::default()
        })
        .await
        .map_err(status)?;
    }
    Ok(())
}

/// `csi get`: ControllerGetVolume, the volume and its condition printed.
async fn get(ctl: &mut Ctl, id: String) -> Result<(), String> {
    let r = ctl
        .controller_get_volume(ControllerGetVolumeRequest { volume_id: id })
        .await
        .map_err(status)?
        .into_inner();
    let v = r.volume.unwrap_or_default();
    let c = r
        .status
        .and_then(|s| s.volume_condition)
        .unwrap_or_default();
    println!(
        "volume_id={} capacity_bytes={} abnormal={} message={}",
        v.volume_id, v.capacity_bytes, c.abnormal, c.message
    );
    Ok(())
}

/// `csi capacity`: GetCapacity for these parameters.
async fn capacity(ctl: &mut Ctl, p: &[String]) -> Result<(), String> {
    let r = ctl
        .get_capacity(GetCapacityRequest {
            parameters: params(p)?,
            ..Default::default()
        })
        .await
        .map_err(status)?
        .into_inner();
    println!("available_capacity={}", r.available_capacity);
    Ok(())
}

/// `dmraid-csi volumes`: every volume, its size and health; with `wait`,
/// redrawn with progress bars until no resync, rebuild or scrub runs.
pub async fn volumes(endpoint: &str, wait: bool) -> Result<(), String> {
    let ch = socket::connect(endpoint).await.map_err(|e| e.to_string())?;
    let mut client = ControllerClient::new(ch);
    loop {
        let r = client
            .list_volumes(ListVolumesRequest::default())
            .await
            .map_err(status)?
            .into_inner();
        println!("{:<24} {:>12}  {:<10} HEALTH", "VOLUME", "SIZE", "STATE");
        let mut busy = false;
        for e in r.entries {
            let v = e.volume.unwrap_or_default();
            let c = e
                .status
                .and_then(|s| s.volume_condition)
                .unwrap_or_default();
            let size = dmraid_api::units::Bytes(v.capacity_bytes as u64);
            println!(
                "{:<24} {:>12}  {:<10} {}",
                v.volume_id,
                size.to_string(),
                crate::health::condition::state_word(c.abnormal, &c.message),
                c.message
            );
            if let Some(p) = crate::health::condition::progress(&c.message) {
                busy = true;
                println!("{:<24} {}", "", crate::health::condition::bar(p));
            }
        }
        if !wait || !busy {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        println!();
    }
}

/// `dmraid-csi describe`: one volume in detail, from the running driver.
pub async fn describe(endpoint: &str, id: &str) -> Result<(), String> {
    let ch = socket::connect(endpoint).await.map_err(|e| e.to_string())?;
    let mut client = ControllerClient::new(ch);
    let r = client
        .controller_get_volume(ControllerGetVolumeRequest {
            volume_id: id.to_string(),
        })
        .await
        .map_err(status)?
        .into_inner();
    let v = r.volume.unwrap_or_default();
    let c = r
        .status
        .and_then(|s| s.volume_condition)
        .unwrap_or_default();
    let ctx = |k: &str| {
        v.volume_context
            .get(k)
            .cloned()
            .unwrap_or_else(|| "-".into())
    };
    let node = v
        .accessible_topology
        .first()
        .and_then(|t| t.segments.get(dmraid_proto::TOPOLOGY_KEY).cloned())
        .unwrap_or_else(|| "-".into());
    println!("Volume:     {}", v.volume_id);
    println!("Layout:     {} × {} legs", ctx("raidType"), ctx("legs"));
    println!(
        "Size:       {}",
        dmraid_api::units::Bytes(v.capacity_bytes as u64)
    );
    println!("Node:       {node}");
    println!("Device:     {}", ctx("device"));
    println!(
        "Condition:  {}",
        if c.abnormal { "ABNORMAL" } else { "normal" }
    );
    // One part per line: legs lost, degradation, progress, scrub results.
    let (_, parts) = c.message.split_once(": ").unwrap_or(("", &c.message));
    for part in parts.split("; ") {
        println!("  - {part}");
    }
    if let Some(p) = crate::health::condition::progress(&c.message) {
        let eta = c
            .message
            .split(", ETA ")
            .nth(1)
            .map(|e| format!("  ETA {}", e.split(';').next().unwrap_or(e)))
            .unwrap_or_default();
        println!("Progress:   {}{eta}", crate::health::condition::bar(p));
    }
    Ok(())
}

/// `dmraid-csi disks`: every device the globs match, what each claimed
/// disk's label says, and why each other one is left alone; writes nothing.
pub fn disks(globs: &[String]) -> Result<(), String> {
    use crate::kernel::disks::{Disks, RealDisks};
    println!(
        "{:<28} {:>10} {:>10}  {:<16} VOLUMES / NOTE",
        "DISK", "SIZE", "FREE", "NODE"
    );
    let found = RealDisks.discover(globs).map_err(|e| e.to_string())?;
    for d in &found.disks {
        let size = dmraid_api::units::Bytes(d.size);
        let line = match disk_line(d) {
            Ok(line) => line,
            Err(e) => format!("{:>10}  {:<16} {e}", "-", "-"),
        };
        println!(
            "{:<28} {:>10} {line}",
            d.path.display().to_string(),
            size.to_string()
        );
    }
    for s in &found.skipped {
        println!(
            "{:<28} {:>10} {:>10}  {:<16} skipped: {}",
            s.path.display().to_string(),
            "-",
            "-",
            "-",
            s.reason
        );
    }
    Ok(())
}

/// FREE, NODE and the note of one disk the driver may claim.
fn disk_line(d: &crate::kernel::disks::DiskInfo) -> Result<String, String> {
    let size = dmraid_api::units::Bytes(d.size);
    let mut dev = std::fs::File::open(&d.path).map_err(|e| format!("cannot be opened: {e}"))?;
    let loaded =
        crate::engine::labels::read(&mut dev).map_err(|e| format!("label unreadable: {e}"))?;
    Ok(match loaded.label {
        Some(l) => {
            let space = crate::engine::allocator::DiskSpace::new(
                l.disk_uuid.as_str(),
                size.sectors(),
                &l.extents,
            );
            let vols: Vec<&str> = l.volumes.keys().map(String::as_str).collect();
            let wiping: dmraid_api::units::Sectors = l
                .extents
                .iter()
                .filter(|e| e.state == crate::engine::labels::ExtentState::Wiping)
                .map(|e| e.len)
                .sum();
            let note = if !wiping.is_zero() {
                format!(" (wiping {} of deleted volumes)", wiping.bytes())
            } else {
                String::new()
            };
            format!(
                "{:>10}  {:<16} {}{note}",
                space.free().bytes().to_string(),
                l.node,
                vols.join(",")
            )
        }
        None if d.size < crate::engine::smallest_disk() => format!(
            "{:>10}  {:<16} not claimed: smaller than a label and one leg ({})",
            "-",
            "-",
            dmraid_api::units::Bytes(crate::engine::smallest_disk())
        ),
        None => {
            let note = match crate::kernel::signature::probe(&dev) {
                Ok(found) if found.is_empty() => "blank: will be claimed".to_string(),
                Ok(found) => format!(
                    "not claimed: carries {} (--wipe-disks erases them)",
                    crate::kernel::signature::describe(&found)
                ),
                Err(e) => format!("cannot be probed: {e}"),
            };
            format!("{:>10}  {:<16} {note}", "-", "-")
        }
    })
}
