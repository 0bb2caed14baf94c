//! `dmraid-csi`: the node plugin, the standalone driver and the operator CLI.

use clap::Parser;
use dmraid_node::cli::{Cli, Command, LogFormat, ServeArgs};
use dmraid_node::csi::{controller::ControllerService, node::NodeService};
use dmraid_node::engine::{Engine, EngineConfig};
use dmraid_node::kernel::disks::RealDisks;
use dmraid_node::kernel::dm::KernelDm;
use dmraid_node::state_dir;
use dmraid_proto::csi::controller_server::ControllerServer;
use dmraid_proto::csi::identity_client::IdentityClient;
use dmraid_proto::csi::identity_server::IdentityServer;
use dmraid_proto::csi::node_server::NodeServer;
use dmraid_proto::csi::{GetPluginCapabilitiesRequest, GetPluginInfoRequest, ProbeRequest};
use dmraid_proto::grpc_metrics::{self, GrpcMetrics};
use dmraid_proto::identity::{self, IdentityService, Readiness};
use dmraid_proto::{registration, socket, DRIVER_NAME};
use std::process::ExitCode;
use std::sync::Arc;

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn node_id(args: &ServeArgs) -> String {
    args.node_id.clone().unwrap_or_else(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "localhost".to_string())
    })
}

async fn serve(args: ServeArgs, standalone: bool) -> Result<(), String> {
    init_logging(args.log_format);
    state_dir::ensure_writable(&args.state_dir).map_err(|e| e.to_string())?;
    let _lock = dmraid_node::lock::take(&dmraid_node::lock::path(&args.state_dir))?;
    let path = socket::socket_path(&args.endpoint).map_err(|e| e.to_string())?;
    let listener = socket::bind(&path).map_err(|e| e.to_string())?;
    let node_id = node_id(&args);
    let readiness = Readiness::new();
    let engine = start_engine(&args, &node_id).await;
    let mut calls_registry = prometheus_client::registry::Registry::default();
    let calls = GrpcMetrics::register(&mut calls_registry);
    let mut router = tonic::transport::Server::builder()
        .layer(calls.layer())
        .add_service(IdentityServer::new(IdentityService::new(
            standalone,
            readiness.clone(),
        )))
        .add_service(NodeServer::new(NodeService::new(
            node_id.clone(),
            engine.clone(),
            args.paths_under.clone(),
        )));
    if standalone {
        router = router.add_service(ControllerServer::new(ControllerService::new(
            engine.clone(),
            node_id.clone(),
            args.state_dir.clone(),
        )));
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let metrics = serve_metrics(&args, calls_registry)?;
    let notices = match (&engine, standalone) {
        (Some(engine), false) => start_cluster(&args, engine, &node_id).await,
        _ => None,
    };
    let monitor = engine
        .clone()
        .map(|engine| start_monitor(&args, engine, stop.clone(), metrics, notices));
    // Ready once the arrays are back from the labels; never without device-mapper.
    readiness.set(engine.is_some());
    if let Some(addr) = &args.healthz_addr {
        let why = "not ready: device-mapper unavailable or arrays not re-activated";
        identity::serve_healthz(addr, readiness.clone(), why)
            .map_err(|e| format!("--healthz-addr {addr}: {e}"))?;
        tracing::info!(addr = %addr, "answering liveness probes at /healthz");
    }
    if let Some(dir) = &args.kubelet_registration_dir {
        register_with_kubelet(&args, dir, &path);
    }
    tracing::info!(endpoint = %path.display(), node = %node_id, standalone, ready = engine.is_some(), "serving CSI");
    socket::serve(router, listener, &path, socket::shutdown_signal())
        .await
        .map_err(|e| e.to_string())?;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    if let Some(m) = monitor {
        let _ = tokio::task::spawn_blocking(move || m.join()).await;
    }
    if let Some(engine) = engine {
        stop_engine(engine).await;
    }
    tracing::info!("stopped");
    Ok(())
}

/// `/metrics` on `--metrics-addr`: the volumes' metrics and the gRPC
/// calls' on one page. The volumes' metrics, for the monitor to update.
fn serve_metrics(
    args: &ServeArgs,
    calls_registry: prometheus_client::registry::Registry,
) -> Result<Option<Arc<dmraid_node::health::metrics::Metrics>>, String> {
    Ok(match &args.metrics_addr {
        Some(addr) => {
            let m = Arc::new(dmraid_node::health::metrics::Metrics::new());
            let (volumes, calls) = (m.clone(), Arc::new(calls_registry));
            // Two registries, one page: the first one's "# EOF" would end it early.
            let render = move || {
                let first = volumes.render();
                let first = first.strip_suffix("# EOF\n").unwrap_or(&first).to_string();
                first + &grpc_metrics::render(&calls)
            };
            grpc_metrics::serve(addr, Arc::new(render))
                .map_err(|e| format!("--metrics-addr {addr}: {e}"))?;
            tracing::info!(addr = %addr, "serving metrics at /metrics");
            Some(m)
        }
        None => None,
    })
}

/// The Kubernetes side of the node (RaidVolume and RaidNode status,
/// Events), when an API server answers: the channel the monitor's notices
/// go to.
async fn start_cluster(
    args: &ServeArgs,
    engine: &Arc<Engine>,
    node_id: &str,
) -> Option<dmraid_node::health::monitor::Notices> {
    match kube_client(args.kubeconfig.as_deref()).await {
        Ok(client) => {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            tokio::spawn(dmraid_node::cluster::run(
                client,
                engine.clone(),
                node_id.to_string(),
                args.disks.clone(),
                rx,
            ));
            Some(tx)
        }
        Err(e) => {
            tracing::warn!(error = %e, "no Kubernetes API: serving CSI Node calls only, no RaidVolumes are reconciled");
            None
        }
    }
}

/// The health monitor's thread.
fn start_monitor(
    args: &ServeArgs,
    engine: Arc<Engine>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    metrics: Option<Arc<dmraid_node::health::metrics::Metrics>>,
    notices: Option<dmraid_node::health::monitor::Notices>,
) -> std::thread::JoinHandle<()> {
    let cfg = dmraid_node::health::monitor::MonitorConfig {
        auto_rebuild: args.auto_rebuild,
        interval: std::time::Duration::from_secs(args.monitor_interval.max(1)),
        scrub_every: args.scrub_interval.0,
        state_dir: Some(args.state_dir.clone()),
        rebuild_delay: args.rebuild_delay,
        rate: dmraid_node::health::rate::RatePolicy {
            busy_share: args.rebuild_busy_share,
        },
    };
    std::thread::spawn(move || {
        dmraid_node::health::monitor::run(engine, cfg, stop, metrics, notices)
    })
}

/// The kubelet's plugin registration socket in `dir`, served in the
/// background.
fn register_with_kubelet(args: &ServeArgs, dir: &std::path::Path, path: &std::path::Path) {
    let seen_by_kubelet = args
        .kubelet_endpoint
        .clone()
        .unwrap_or_else(|| path.to_path_buf());
    let service = registration::RegistrationService::new(DRIVER_NAME, &seen_by_kubelet);
    let reg_path = registration::socket_in(dir, DRIVER_NAME);
    tracing::info!(socket = %reg_path.display(), csi = %seen_by_kubelet.display(), "registering with the kubelet");
    tokio::spawn(async move {
        if let Err(e) = registration::serve(service, reg_path).await {
            tracing::error!(error = %e, "kubelet registration socket failed; the kubelet will not call this driver");
        }
    });
}

/// The orderly stop: every array deactivated and marked clean; one in
/// use is left running for the next start to take over.
async fn stop_engine(engine: Arc<Engine>) {
    let left = tokio::task::spawn_blocking(move || engine.deactivate_all())
        .await
        .unwrap_or_default();
    for (id, e) in left {
        match e {
            // Mounted or open (an upgrade or a restart of the plugin
            // under a running pod): the kernel keeps serving it, and the
            // next start takes the live array over without touching it.
            dmraid_node::error::Error::Precondition(_) => {
                tracing::info!(volume = %id, reason = %e, "in use: left running for the next start to take over")
            }
            e => {
                tracing::warn!(volume = %id, error = %e, "left active; its next activation repairs it as after a crash")
            }
        }
    }
}

/// A client for the API server: an explicit kubeconfig, else the pod's
/// service account or $KUBECONFIG.
async fn kube_client(kubeconfig: Option<&std::path::Path>) -> Result<kube::Client, String> {
    let config = match kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| format!("--kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(|e| format!("--kubeconfig {}: {e}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| format!("no Kubernetes configuration: {e}"))?,
    };
    kube::Client::try_from(config).map_err(|e| format!("Kubernetes client: {e}"))
}

/// The engine on this machine's disks, with every array re-activated from
/// the labels; None (with a warning) where device-mapper is unavailable.
async fn start_engine(args: &ServeArgs, node_id: &str) -> Option<Arc<Engine>> {
    let dm = match KernelDm::open() {
        Ok(dm) => dm,
        Err(e) => {
            tracing::warn!(error = %e, "device-mapper unavailable: serving identity only, volume calls fail, probe says not ready");
            return None;
        }
    };
    let engine = Arc::new(Engine::new(
        Arc::new(dm),
        Arc::new(RealDisks),
        EngineConfig {
            node: node_id.to_string(),
            globs: args.disks.clone(),
            wipe: args.wipe_disks,
        },
    ));
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    if !dmraid_node::engine::resync_survives_reload(&release) {
        engine.assume_reload_restarts_resync();
        tracing::info!(
            kernel = %release.trim(),
            "a resync is not held back on this kernel: a table reload starts it over (measured on 6.12; only 6.1 goes on from where it was); rebuilds are"
        );
    }
    let e = engine.clone();
    let outcome = tokio::task::spawn_blocking(move || (e.claim_disks(), e.activate_all())).await;
    match outcome {
        Ok((Ok(problems), failures)) => {
            for p in problems {
                tracing::warn!(problem = %p, "disk not claimed");
            }
            for (id, err) in failures {
                tracing::error!(volume = %id, error = %err, "array not activated");
            }
        }
        Ok((Err(e), _)) => tracing::error!(error = %e, "claiming disks failed"),
        Err(e) => tracing::error!(error = %e, "start-up task failed"),
    }
    // Extents given up before a crash are wiped first thing.
    engine.start_wiper();
    Some(engine)
}

async fn identity(endpoint: &str) -> Result<(), String> {
    let channel = socket::connect(endpoint).await.map_err(|e| e.to_string())?;
    let mut client = IdentityClient::new(channel);
    let info = client
        .get_plugin_info(GetPluginInfoRequest {})
        .await
        .map_err(|s| s.message().to_string())?
        .into_inner();
    let caps = client
        .get_plugin_capabilities(GetPluginCapabilitiesRequest {})
        .await
        .map_err(|s| s.message().to_string())?
        .into_inner();
    let probe = client
        .probe(ProbeRequest {})
        .await
        .map_err(|s| s.message().to_string())?
        .into_inner();
    println!("name:         {}", info.name);
    println!("version:      {}", info.vendor_version);
    for cap in caps.capabilities {
        if let Some(t) = cap.r#type {
            println!(
                "capability:   {}",
                dmraid_node::cli::describe::plugin_capability(&t)
            );
        }
    }
    println!("ready:        {}", probe.ready.unwrap_or(false));
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Node(args) => serve(args, false).await,
        Command::Standalone(args) => serve(args, true).await,
        Command::Identity(args) => identity(&args.endpoint).await,
        Command::Engine(args) => dmraid_node::cli::engine::run(args),
        Command::Rebuild {
            id,
            leg,
            disk,
            state_dir,
        } => {
            let req = dmraid_node::health::requests::RebuildRequest {
                volume: id,
                leg,
                disk,
            };
            dmraid_node::health::requests::submit(
                &state_dir,
                &req,
                std::time::Duration::from_secs(60),
            )
            .and_then(|o| {
                if o.ok {
                    println!("{}", o.message);
                    Ok(())
                } else {
                    Err(o.message)
                }
            })
        }
        Command::Check { id, repair } => {
            dmraid_node::cli::engine::check(&id, repair).map(|text| println!("{text}"))
        }
        Command::Csi(args) => dmraid_node::cli::csi_client::run(args).await,
        Command::Volumes(args) => {
            dmraid_node::cli::csi_client::volumes(&args.client.endpoint, args.wait).await
        }
        Command::Disks(args) => dmraid_node::cli::csi_client::disks(&args.disks),
        Command::DmContract { disk } => dm_contract(&disk),
        Command::Describe { id, client } => {
            dmraid_node::cli::csi_client::describe(&client.endpoint, &id).await
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("dmraid-csi: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `dmraid-csi dm-contract`: the device-mapper contract on the kernel.
fn dm_contract(disk: &std::path::Path) -> Result<(), String> {
    use dmraid_node::kernel::dm::contract;
    let dm = KernelDm::open().map_err(|e| e.to_string())?;
    let devno = dmraid_node::kernel::disks::devno_of(disk)
        .map_err(|e| format!("{}: {e}", disk.display()))?;
    for held in contract::run(&dm, &devno)? {
        println!("held: {held}");
    }
    Ok(())
}
