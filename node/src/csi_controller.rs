//! The CSI Controller service of the standalone driver, served from the
//! local engine. Until the engine lands, every call answers UNIMPLEMENTED
//! with a message saying so.

use dmraid_proto::csi::controller_server::Controller;
use dmraid_proto::csi::*;
use tonic::{Request, Response, Status};

/// The standalone Controller service.
#[derive(Default)]
pub struct ControllerService;

fn not_yet(rpc: &str) -> Status {
    Status::unimplemented(format!(
        "{rpc} is not implemented yet: it lands with the node engine (issue 6)"
    ))
}

fn never(rpc: &str) -> Status {
    Status::unimplemented(format!("{rpc} is not offered by dmraid-csi"))
}

#[tonic::async_trait]
impl Controller for ControllerService {
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
        Err(never(
            "ControllerPublishVolume (volumes are node-local; no attach step)",
        ))
    }
    async fn controller_unpublish_volume(
        &self,
        _r: Request<ControllerUnpublishVolumeRequest>,
    ) -> Result<Response<ControllerUnpublishVolumeResponse>, Status> {
        Err(never(
            "ControllerUnpublishVolume (volumes are node-local; no attach step)",
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
        // No capability is advertised until the engine can honour it.
        Ok(Response::new(ControllerGetCapabilitiesResponse {
            capabilities: vec![],
        }))
    }
    async fn create_snapshot(
        &self,
        _r: Request<CreateSnapshotRequest>,
    ) -> Result<Response<CreateSnapshotResponse>, Status> {
        Err(never("CreateSnapshot"))
    }
    async fn delete_snapshot(
        &self,
        _r: Request<DeleteSnapshotRequest>,
    ) -> Result<Response<DeleteSnapshotResponse>, Status> {
        Err(never("DeleteSnapshot"))
    }
    async fn list_snapshots(
        &self,
        _r: Request<ListSnapshotsRequest>,
    ) -> Result<Response<ListSnapshotsResponse>, Status> {
        Err(never("ListSnapshots"))
    }
    async fn get_snapshot(
        &self,
        _r: Request<GetSnapshotRequest>,
    ) -> Result<Response<GetSnapshotResponse>, Status> {
        Err(never("GetSnapshot"))
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
        Err(never("ControllerModifyVolume"))
    }
}
