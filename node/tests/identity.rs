//! The real `dmraid-csi` binary, serving on a real Unix socket, called by a
//! real tonic client: Identity answers, unknown or unimplemented calls get
//! proper gRPC codes, and bad start-up input is refused with the path named.

use dmraid_proto::csi::controller_client::ControllerClient;
use dmraid_proto::csi::identity_client::IdentityClient;
use dmraid_proto::csi::node_client::NodeClient;
use dmraid_proto::csi::plugin_capability::{service, Type};
use dmraid_proto::csi::{
    CreateVolumeRequest, GetPluginCapabilitiesRequest, GetPluginInfoRequest, NodeGetInfoRequest,
    ProbeRequest,
};
use dmraid_proto::socket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_dmraid-csi");

/// A driver process killed when the test ends, however it ends.
struct Driver {
    child: Child,
    endpoint: String,
    _dir: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(mode: &str) -> Driver {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("csi.sock");
    let child = Command::new(BIN)
        .args([mode, "--endpoint"])
        .arg(&sock)
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .args(["--node-id", "node-a"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let endpoint = format!("unix://{}", sock.display());
    Driver {
        child,
        endpoint,
        _dir: dir,
    }
}

async fn channel(driver: &Driver) -> tonic::transport::Channel {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match socket::connect(&driver.endpoint).await {
            Ok(c) => return c,
            Err(e) if Instant::now() > deadline => panic!("driver never answered: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

#[tokio::test]
async fn standalone_identity_answers_over_the_socket() {
    let driver = start("standalone");
    let mut id = IdentityClient::new(channel(&driver).await);
    let info = id
        .get_plugin_info(GetPluginInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.name, "dmraid.csi.io");
    assert_eq!(info.vendor_version, env!("CARGO_PKG_VERSION"));

    let caps = id
        .get_plugin_capabilities(GetPluginCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    let services: Vec<i32> = caps
        .capabilities
        .iter()
        .filter_map(|c| match &c.r#type {
            Some(Type::Service(s)) => Some(s.r#type),
            _ => None,
        })
        .collect();
    assert!(services.contains(&(service::Type::ControllerService as i32)));
    assert!(services.contains(&(service::Type::VolumeAccessibilityConstraints as i32)));

    let probe = id.probe(ProbeRequest {}).await.unwrap().into_inner();
    // Ready only where device-mapper can serve volumes (not on this test
    // host). The node alone proves nothing: libdevmapper makes it where the
    // kernel has no driver behind it (ENODEV on open).
    let dm = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/mapper/control")
        .is_ok();
    assert_eq!(probe.ready, Some(dm));
}

#[tokio::test]
async fn node_mode_does_not_claim_the_controller_service() {
    let driver = start("node");
    let ch = channel(&driver).await;
    let caps = IdentityClient::new(ch.clone())
        .get_plugin_capabilities(GetPluginCapabilitiesRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(!caps
        .capabilities
        .iter()
        .any(|c| matches!(&c.r#type, Some(Type::Service(s)) if s.r#type == service::Type::ControllerService as i32)));
    // The Controller service is not served at all in node mode.
    let err = ControllerClient::new(ch.clone())
        .create_volume(CreateVolumeRequest::default())
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);

    let info = NodeClient::new(ch)
        .node_get_info(NodeGetInfoRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.node_id, "node-a");
    let topo = info.accessible_topology.unwrap();
    assert_eq!(topo.segments["topology.dmraid.csi.io/node"], "node-a");
}

#[tokio::test]
async fn unknown_service_paths_get_unimplemented() {
    let driver = start("standalone");
    let ch = channel(&driver).await;
    let mut grpc = tonic::client::Grpc::new(ch);
    grpc.ready().await.unwrap();
    let codec = tonic_prost::ProstCodec::<ProbeRequest, ProbeRequest>::default();
    let path = http::uri::PathAndQuery::from_static("/csi.v1.NoSuchService/Nothing");
    let err = grpc
        .unary(tonic::Request::new(ProbeRequest {}), path, codec)
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);
}

fn run_expecting_failure(args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(BIN).args(args).output().unwrap();
    assert!(!out.status.success(), "expected failure, got success");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn os(p: &Path) -> &std::ffi::OsStr {
    p.as_os_str()
}

#[test]
fn refuses_a_regular_file_as_socket_and_leaves_it_intact() {
    let dir = tempfile::tempdir().unwrap();
    let file: PathBuf = dir.path().join("csi.sock");
    std::fs::write(&file, b"not a socket").unwrap();
    let state = dir.path().join("state");
    let err = run_expecting_failure(&[
        "standalone".as_ref(),
        "--endpoint".as_ref(),
        os(&file),
        "--state-dir".as_ref(),
        os(&state),
    ]);
    assert!(err.contains(&file.display().to_string()), "{err}");
    assert!(err.contains("not a socket"), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"not a socket");
}

#[test]
fn refuses_a_state_dir_that_is_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    std::fs::write(&state, b"keep me").unwrap();
    let sock = dir.path().join("csi.sock");
    let err = run_expecting_failure(&[
        "standalone".as_ref(),
        "--endpoint".as_ref(),
        os(&sock),
        "--state-dir".as_ref(),
        os(&state),
    ]);
    assert!(err.contains(&state.display().to_string()), "{err}");
    assert_eq!(std::fs::read(&state).unwrap(), b"keep me");
    assert!(!sock.exists(), "no socket may be left behind");
}
