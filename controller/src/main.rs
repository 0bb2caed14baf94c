//! `dmraid-csi-controller`: the CSI Identity and Controller services for a
//! Kubernetes cluster, backed by `RaidVolume`/`RaidNode` objects.

use clap::Parser;
use dmraid_controller::csi::ClusterController;
use dmraid_proto::csi::controller_server::ControllerServer;
use dmraid_proto::csi::identity_server::IdentityServer;
use dmraid_proto::grpc_metrics::{self, GrpcMetrics};
use dmraid_proto::identity::{self, IdentityService, Readiness};
use dmraid_proto::socket;
use std::process::ExitCode;
use std::time::Duration;

/// dmraid-csi-controller: the CSI Controller service for a Kubernetes cluster.
#[derive(Debug, Parser)]
#[command(name = "dmraid-csi-controller", version, about)]
struct Args {
    /// CSI endpoint: unix:///path/to/csi.sock or a plain path.
    #[arg(long, env = "CSI_ENDPOINT", default_value = "unix:///csi/csi.sock")]
    endpoint: String,
    /// Kubeconfig file; without it the in-cluster service account (or $KUBECONFIG) is used.
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<std::path::PathBuf>,
    /// Seconds a call waits for the node to make, grow or tear down an array
    /// before answering DEADLINE_EXCEEDED (the provisioner retries).
    #[arg(long, default_value_t = 60)]
    node_timeout: u64,
    /// Log format.
    #[arg(long, value_parser = ["text", "json"], default_value = "text")]
    log_format: String,
    /// Serve Prometheus metrics (CSI calls by method and code, their
    /// latency) at http://ADDR/metrics, e.g. 0.0.0.0:9808; off when unset.
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<String>,
    /// Do the csi-provisioner sidecar's work in this process (for clusters
    /// where its image cannot be had): provision claims of dmraid.csi.io
    /// StorageClasses, delete released volumes, publish CSIStorageCapacity
    /// in $POD_NAMESPACE. Run one replica only: there is no leader election.
    #[arg(long)]
    run_provisioner: bool,
    /// Do the csi-resizer sidecar's work in this process: expand claims of
    /// dmraid.csi.io StorageClasses. One replica only, as above.
    #[arg(long)]
    run_resizer: bool,
    /// Answer liveness probes at http://ADDR/healthz (e.g. 0.0.0.0:9809)
    /// without the livenessprobe sidecar. Off when unset.
    #[arg(long, value_name = "ADDR")]
    healthz_addr: Option<String>,
}

async fn client(kubeconfig: Option<&std::path::Path>) -> Result<kube::Client, String> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| format!("--kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(|e| format!("--kubeconfig {}: {e}", path.display()))?
        }
        None => kube::Config::infer().await.map_err(|e| {
            format!(
                "no Kubernetes configuration (not in a pod, no $KUBECONFIG, no --kubeconfig): {e}"
            )
        })?,
    };
    kube::Client::try_from(config).map_err(|e| format!("Kubernetes client: {e}"))
}

async fn run(args: Args) -> Result<(), String> {
    let client = client(args.kubeconfig.as_deref()).await?;
    let path = socket::socket_path(&args.endpoint).map_err(|e| e.to_string())?;
    let listener = socket::bind(&path).map_err(|e| e.to_string())?;
    let readiness = Readiness::new();
    let mut registry = prometheus_client::registry::Registry::default();
    let calls = GrpcMetrics::register(&mut registry);
    if let Some(addr) = &args.metrics_addr {
        let registry = std::sync::Arc::new(registry);
        grpc_metrics::serve(
            addr,
            std::sync::Arc::new(move || grpc_metrics::render(&registry)),
        )
        .map_err(|e| format!("--metrics-addr {addr}: {e}"))?;
        tracing::info!(addr = %addr, "serving metrics at /metrics");
    }
    let controller = ClusterController::new(
        client.clone(),
        Duration::from_secs(args.node_timeout.max(1)),
    );
    let router = tonic::transport::Server::builder()
        .layer(calls.layer())
        .add_service(IdentityServer::new(IdentityService::new(
            true,
            readiness.clone(),
        )))
        .add_service(ControllerServer::new(controller.clone()));
    if args.run_provisioner || args.run_resizer {
        let namespace = std::env::var("POD_NAMESPACE").ok();
        let duties = dmraid_controller::provisioner::Duties {
            provision: args.run_provisioner,
            resize: args.run_resizer,
        };
        tokio::spawn(dmraid_controller::provisioner::run(
            client, controller, namespace, duties,
        ));
    }
    readiness.set(true);
    if let Some(addr) = &args.healthz_addr {
        identity::serve_healthz(addr, readiness.clone(), "not serving yet")
            .map_err(|e| format!("--healthz-addr {addr}: {e}"))?;
    }
    tracing::info!(endpoint = %path.display(), "serving CSI controller");
    socket::serve(router, listener, &path, socket::shutdown_signal())
        .await
        .map_err(|e| e.to_string())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if args.log_format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dmraid-csi-controller: {e}");
            ExitCode::FAILURE
        }
    }
}
