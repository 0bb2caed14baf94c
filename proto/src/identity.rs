//! The CSI Identity service: who the plugin is, what it offers, and whether
//! it is ready. Both binaries serve it; readiness flips once start-up work
//! (re-activating arrays from the disk labels) is done.

use crate::csi::identity_server::Identity;
use crate::csi::plugin_capability::{service, volume_expansion, Service, Type, VolumeExpansion};
use crate::csi::{
    GetPluginCapabilitiesRequest, GetPluginCapabilitiesResponse, GetPluginInfoRequest,
    GetPluginInfoResponse, PluginCapability, ProbeRequest, ProbeResponse,
};
use crate::DRIVER_NAME;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tonic::{Request, Response, Status};

/// A shared "ready" flag: the binary sets it when start-up is done.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// A flag that starts not ready.
    pub fn new() -> Self {
        Self::default()
    }

    /// Mark the plugin ready (or not).
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }

    /// Whether the plugin is ready.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Answer liveness probes at `http://addr/healthz` (what the livenessprobe
/// sidecar would): 200 while `ready` is set, else 503 with `not_ready`.
pub fn serve_healthz(addr: &str, ready: Readiness, not_ready: &'static str) -> std::io::Result<()> {
    let route: crate::grpc_metrics::Route = Arc::new(move || {
        if ready.get() {
            Ok("ok\n".into())
        } else {
            Err(format!("{not_ready}\n"))
        }
    });
    crate::grpc_metrics::serve_routes(addr, vec![("/healthz", route)])
}

/// The Identity service.
pub struct IdentityService {
    serves_controller: bool,
    readiness: Readiness,
}

impl IdentityService {
    /// `serves_controller`: whether this process also serves the Controller service.
    pub fn new(serves_controller: bool, readiness: Readiness) -> Self {
        IdentityService {
            serves_controller,
            readiness,
        }
    }

    fn capabilities(&self) -> Vec<PluginCapability> {
        let service = |t: service::Type| PluginCapability {
            r#type: Some(Type::Service(Service { r#type: t as i32 })),
        };
        let mut caps = Vec::new();
        if self.serves_controller {
            caps.push(service(service::Type::ControllerService));
            caps.push(service(service::Type::VolumeAccessibilityConstraints));
        }
        // Both ext4 and xfs grow while mounted, and dm-raid grows under I/O.
        caps.push(PluginCapability {
            r#type: Some(Type::VolumeExpansion(VolumeExpansion {
                r#type: volume_expansion::Type::Online as i32,
            })),
        });
        caps
    }
}

#[tonic::async_trait]
impl Identity for IdentityService {
    async fn get_plugin_info(
        &self,
        _req: Request<GetPluginInfoRequest>,
    ) -> Result<Response<GetPluginInfoResponse>, Status> {
        Ok(Response::new(GetPluginInfoResponse {
            name: DRIVER_NAME.to_string(),
            vendor_version: env!("CARGO_PKG_VERSION").to_string(),
            manifest: Default::default(),
        }))
    }

    async fn get_plugin_capabilities(
        &self,
        _req: Request<GetPluginCapabilitiesRequest>,
    ) -> Result<Response<GetPluginCapabilitiesResponse>, Status> {
        Ok(Response::new(GetPluginCapabilitiesResponse {
            capabilities: self.capabilities(),
        }))
    }

    async fn probe(&self, _req: Request<ProbeRequest>) -> Result<Response<ProbeResponse>, Status> {
        Ok(Response::new(ProbeResponse {
            ready: Some(self.readiness.get()),
        }))
    }
}
