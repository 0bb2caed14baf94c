//! The cluster controller binary on the host, against a real API server,
//! and the CSI requests the suites and the bench send it.

use crate::vm::release_binary;
use dmraid_proto::csi::volume_capability::{
    access_mode::Mode, AccessMode, AccessType, MountVolume,
};
use dmraid_proto::csi::{
    CapacityRange, CreateVolumeRequest, Topology, TopologyRequirement, VolumeCapability,
};
use dmraid_proto::TOPOLOGY_KEY;
use k8s_openapi::api::core::v1::Event;
use kube::api::ListParams;
use kube::{Api, Client};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `dmraid-csi-controller`; killed on drop.
pub struct Controller {
    child: Child,
    /// The port of its /metrics, on 127.0.0.1.
    pub metrics_port: u16,
    dir: tempfile::TempDir,
    /// Its CSI socket.
    pub socket: PathBuf,
}

impl Controller {
    /// Start the release controller binary with `kubeconfig` and wait for
    /// its socket; calls wait up to 90 s for a node.
    pub fn start(kubeconfig: &Path) -> Result<Controller, String> {
        Self::start_with_timeout(kubeconfig, 90)
    }

    /// [`Controller::start`] with `--node-timeout` `secs`.
    pub fn start_with_timeout(kubeconfig: &Path, secs: u32) -> Result<Controller, String> {
        let bin = release_binary("dmraid-csi-controller").ok_or(
            "release dmraid-csi-controller: run `cargo build --release --workspace --bins`",
        )?;
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let socket = dir.path().join("controller.sock");
        let log =
            std::fs::File::create(dir.path().join("controller.log")).map_err(|e| e.to_string())?;
        let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| e.to_string())?
            .port();
        let child = Command::new(bin)
            .arg(format!("--metrics-addr=127.0.0.1:{metrics_port}"))
            .arg("--endpoint")
            .arg(&socket)
            .arg("--kubeconfig")
            .arg(kubeconfig)
            .args(["--node-timeout", &secs.to_string()])
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| e.to_string())?;
        let c = Controller {
            child,
            metrics_port,
            dir,
            socket,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !c.socket.exists() {
            if Instant::now() > deadline {
                return Err(format!(
                    "the controller's socket never appeared:\n{}",
                    c.log_tail(20)
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(c)
    }

    /// The last `lines` of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text =
            std::fs::read_to_string(self.dir.path().join("controller.log")).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A single-node-writer ext4 mount capability.
pub fn mount_cap() -> VolumeCapability {
    VolumeCapability {
        access_mode: Some(AccessMode {
            mode: Mode::SingleNodeWriter as i32,
        }),
        access_type: Some(AccessType::Mount(MountVolume {
            fs_type: "ext4".into(),
            ..Default::default()
        })),
    }
}

/// CreateVolume for `name` with StorageClass `params`, `bytes` big, on
/// `node` (as the external-provisioner sends it for WaitForFirstConsumer).
pub fn create_request(
    name: &str,
    params: &[(&str, &str)],
    node: &str,
    bytes: i64,
) -> CreateVolumeRequest {
    let topo = Topology {
        segments: [(TOPOLOGY_KEY.to_string(), node.to_string())].into(),
    };
    CreateVolumeRequest {
        name: name.into(),
        capacity_range: Some(CapacityRange {
            required_bytes: bytes,
            limit_bytes: 0,
        }),
        volume_capabilities: vec![mount_cap()],
        parameters: params
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        accessibility_requirements: Some(TopologyRequirement {
            requisite: vec![topo.clone()],
            preferred: vec![topo],
        }),
        ..Default::default()
    }
}

/// Every Event about an object called `name`, in any namespace.
pub async fn events_of(c: &Client, name: &str) -> Vec<Event> {
    let api: Api<Event> = Api::all(c.clone());
    api.list(&ListParams::default().fields(&format!("involvedObject.name={name}")))
        .await
        .map(|l| l.items)
        .unwrap_or_default()
}
