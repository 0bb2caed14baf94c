//! The CSI Node service. NodeGetInfo and NodeGetCapabilities answer for real;
//! the volume calls answer UNIMPLEMENTED until the engine lands.

use dmraid_proto::csi::node_server::Node;
use dmraid_proto::csi::*;
use dmraid_proto::TOPOLOGY_KEY;
use tonic::{Request, Response, Status};

/// The Node service for one node.
pub struct NodeService {
    node_id: String,
}

impl NodeService {
    /// The service for the node called `node_id`.
    pub fn new(node_id: String) -> Self {
        NodeService { node_id }
    }
}

fn not_yet(rpc: &str) -> Status {
    Status::unimplemented(format!(
        "{rpc} is not implemented yet: it lands with the node engine (issue 6)"
    ))
}

#[tonic::async_trait]
impl Node for NodeService {
    async fn node_stage_volume(
        &self,
        _r: Request<NodeStageVolumeRequest>,
    ) -> Result<Response<NodeStageVolumeResponse>, Status> {
        Err(not_yet("NodeStageVolume"))
    }
    async fn node_unstage_volume(
        &self,
        _r: Request<NodeUnstageVolumeRequest>,
    ) -> Result<Response<NodeUnstageVolumeResponse>, Status> {
        Err(not_yet("NodeUnstageVolume"))
    }
    async fn node_publish_volume(
        &self,
        _r: Request<NodePublishVolumeRequest>,
    ) -> Result<Response<NodePublishVolumeResponse>, Status> {
        Err(not_yet("NodePublishVolume"))
    }
    async fn node_unpublish_volume(
        &self,
        _r: Request<NodeUnpublishVolumeRequest>,
    ) -> Result<Response<NodeUnpublishVolumeResponse>, Status> {
        Err(not_yet("NodeUnpublishVolume"))
    }
    async fn node_get_volume_stats(
        &self,
        _r: Request<NodeGetVolumeStatsRequest>,
    ) -> Result<Response<NodeGetVolumeStatsResponse>, Status> {
        Err(not_yet("NodeGetVolumeStats"))
    }
    async fn node_expand_volume(
        &self,
        _r: Request<NodeExpandVolumeRequest>,
    ) -> Result<Response<NodeExpandVolumeResponse>, Status> {
        Err(not_yet("NodeExpandVolume"))
    }
    async fn node_get_capabilities(
        &self,
        _r: Request<NodeGetCapabilitiesRequest>,
    ) -> Result<Response<NodeGetCapabilitiesResponse>, Status> {
        // Advertised only once the calls behind them work.
        Ok(Response::new(NodeGetCapabilitiesResponse {
            capabilities: vec![],
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
