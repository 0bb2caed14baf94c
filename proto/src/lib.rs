//! The CSI gRPC API, compiled from `csi.proto` at build time.
