//! The CSI gRPC API (spec v1.12) compiled from `proto/csi.proto` at build
//! time, the Identity service both binaries serve, and serving/connecting
//! over a Unix socket.

/// Generated CSI types, clients and servers (`csi.v1`).
pub mod csi {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("csi.v1");
}

/// The kubelet's plugin registration API (`pluginregistration`), served by
/// the node plugin where the node-driver-registrar sidecar is not used.
pub mod pluginregistration {
    #![allow(missing_docs, clippy::all, clippy::pedantic)]
    tonic::include_proto!("pluginregistration");
}

pub mod grpc_metrics;
pub mod identity;
pub mod registration;
pub mod requests;
pub mod socket;

/// The driver name every CSI client sees.
pub const DRIVER_NAME: &str = "dmraid.csi.io";
/// The topology key whose value names the node a volume lives on.
pub const TOPOLOGY_KEY: &str = "topology.dmraid.csi.io/node";
