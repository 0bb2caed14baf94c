//! `dmraid-csi-controller`: the cluster-side CSI Controller service. It
//! serves Identity now; the Controller calls answer UNIMPLEMENTED until the
//! Kubernetes side (RaidVolume objects, reconcilers) lands.

use clap::Parser;
use dmraid_proto::csi::controller_server::{Controller, ControllerServer};
use dmraid_proto::csi::identity_server::IdentityServer;
use dmraid_proto::csi::*;
use dmraid_proto::identity::{IdentityService, Readiness};
use dmraid_proto::socket;
use std::process::ExitCode;
use tonic::{Request, Response, Status};

/// dmraid-csi-controller: the CSI Controller service for a Kubernetes cluster.
#[derive(Debug, Parser)]
#[command(name = "dmraid-csi-controller", version, about)]
struct Args {
    /// CSI endpoint: unix:///path/to/csi.sock or a plain path.
    #[arg(long, env = "CSI_ENDPOINT", default_value = "unix:///csi/csi.sock")]
    endpoint: String,
}

struct ClusterController;

fn not_yet(rpc: &str) -> Status {
    Status::unimplemented(format!(
        "{rpc} is not implemented yet in cluster mode: it lands with the Kubernetes side (issue 8)"
    ))
}

#[tonic::async_trait]
impl Controller for ClusterController {
    async fn create_volume(
        &self,
        _r: Request<CreateVolumeRequest>,
    ) -> Result<Response<CreateVolumeResponse>, Status> {
        Err(not_yet("CreateVolume"))
    }
    async fn delete_volume(
        &self,
        _r: Request<DeleteVolumeRequest>,
    ) -> Result<Response<DeleteVolumeResponse>, Status> {
        Err(not_yet("DeleteVolume"))
    }
    async fn controller_publish_volume(
        &self,
        _r: Request<ControllerPublishVolumeRequest>,
    ) -> Result<Response<ControllerPublishVolumeResponse>, Status> {
        Err(Status::unimplemented(
            "ControllerPublishVolume is not offered: volumes are node-local",
        ))
    }
    async fn controller_unpublish_volume(
        &self,
        _r: Request<ControllerUnpublishVolumeRequest>,
    ) -> Result<Response<ControllerUnpublishVolumeResponse>, Status> {
        Err(Status::unimplemented(
            "ControllerUnpublishVolume is not offered: volumes are node-local",
        ))
    }
    async fn validate_volume_capabilities(
        &self,
        _r: Request<ValidateVolumeCapabilitiesRequest>,
    ) -> Result<Response<ValidateVolumeCapabilitiesResponse>, Status> {
        Err(not_yet("ValidateVolumeCapabilities"))
    }
    async fn list_volumes(
        &self,
        _r: Request<ListVolumesRequest>,
    ) -> Result<Response<ListVolumesResponse>, Status> {
        Err(not_yet("ListVolumes"))
    }
    async fn get_capacity(
        &self,
        _r: Request<GetCapacityRequest>,
    ) -> Result<Response<GetCapacityResponse>, Status> {
        Err(not_yet("GetCapacity"))
    }
    async fn controller_get_capabilities(
        &self,
        _r: Request<ControllerGetCapabilitiesRequest>,
    ) -> Result<Response<ControllerGetCapabilitiesResponse>, Status> {
        Ok(Response::new(ControllerGetCapabilitiesResponse {
            capabilities: vec![],
        }))
    }
    async fn create_snapshot(
        &self,
        _r: Request<CreateSnapshotRequest>,
    ) -> Result<Response<CreateSnapshotResponse>, Status> {
        Err(Status::unimplemented(
            "snapshots are not offered by dmraid-csi",
        ))
    }
    async fn delete_snapshot(
        &self,
        _r: Request<DeleteSnapshotRequest>,
    ) -> Result<Response<DeleteSnapshotResponse>, Status> {
        Err(Status::unimplemented(
            "snapshots are not offered by dmraid-csi",
        ))
    }
    async fn list_snapshots(
        &self,
        _r: Request<ListSnapshotsRequest>,
    ) -> Result<Response<ListSnapshotsResponse>, Status> {
        Err(Status::unimplemented(
            "snapshots are not offered by dmraid-csi",
        ))
    }
    async fn get_snapshot(
        &self,
        _r: Request<GetSnapshotRequest>,
    ) -> Result<Response<GetSnapshotResponse>, Status> {
        Err(Status::unimplemented(
            "snapshots are not offered by dmraid-csi",
        ))
    }
    async fn controller_expand_volume(
        &self,
        _r: Request<ControllerExpandVolumeRequest>,
    ) -> Result<Response<ControllerExpandVolumeResponse>, Status> {
        Err(not_yet("ControllerExpandVolume"))
    }
    async fn controller_get_volume(
        &self,
        _r: Request<ControllerGetVolumeRequest>,
    ) -> Result<Response<ControllerGetVolumeResponse>, Status> {
        Err(not_yet("ControllerGetVolume"))
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

async fn run(args: Args) -> Result<(), String> {
    let path = socket::socket_path(&args.endpoint).map_err(|e| e.to_string())?;
    let listener = socket::bind(&path).map_err(|e| e.to_string())?;
    let readiness = Readiness::new();
    let router = tonic::transport::Server::builder()
        .add_service(IdentityServer::new(IdentityService::new(
            true,
            readiness.clone(),
        )))
        .add_service(ControllerServer::new(ClusterController));
    readiness.set(true);
    tracing::info!(endpoint = %path.display(), "serving CSI controller");
    socket::serve(router, listener, &path, socket::shutdown_signal())
        .await
        .map_err(|e| e.to_string())
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dmraid-csi-controller: {e}");
            ExitCode::FAILURE
        }
    }
}
