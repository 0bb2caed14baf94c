//! `kubectl dmraid`: the operator's view of dmraid-csi in a cluster, read
//! from the `RaidVolume` and `RaidNode` objects (and PVCs to find a claim's
//! volume). Installed as `kubectl-dmraid` on the PATH, kubectl runs it.

use clap::{Parser, Subcommand};
use dmraid_api::crd::{human_bytes, RaidNode, RaidVolume};
use dmraid_controller::volume_id::VolumeId;
use k8s_openapi::api::core::v1::PersistentVolumeClaim;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use std::process::ExitCode;

/// kubectl dmraid: health of dmraid-csi volumes and disks.
#[derive(Debug, Parser)]
#[command(name = "kubectl-dmraid", version, about)]
struct Args {
    /// Kubeconfig file (default: $KUBECONFIG or ~/.kube/config, as kubectl).
    #[arg(long, global = true)]
    kubeconfig: Option<std::path::PathBuf>,
    /// Namespace of the PVC for `describe` (default: the context's).
    #[arg(short, long, global = true)]
    namespace: Option<String>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Every volume: node, layout, size, health, sync progress, the claim it backs.
    Volumes,
    /// Every claimed disk per node: size, free, state.
    Disks,
    /// One volume in detail (by PVC name, PV name or volume id).
    Describe {
        /// PVC name (in --namespace), PV name or RaidVolume name.
        name: String,
    },
}

fn table(rows: Vec<Vec<String>>) -> String {
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    rows.iter()
        .map(|r| {
            r.iter()
                .enumerate()
                .map(|(i, c)| format!("{c:<w$}", w = widths[i] + 3))
                .collect::<String>()
                .trim_end()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn claim_of(v: &RaidVolume) -> String {
    v.spec
        .claim
        .as_ref()
        .map(|c| format!("{}/{}", c.namespace, c.name))
        .unwrap_or_else(|| "-".into())
}

async fn volumes(c: &Client) -> Result<String, String> {
    let mut all = Api::<RaidVolume>::all(c.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("listing RaidVolumes: {e}"))?
        .items;
    all.sort_by_key(|v| v.name_any());
    let mut rows = vec![[
        "VOLUME", "CLAIM", "NODE", "TYPE", "LEGS", "SIZE", "HEALTH", "SYNC", "ETA",
    ]
    .map(String::from)
    .to_vec()];
    for v in &all {
        let st = v.status.clone().unwrap_or_default();
        let or_dash = |s: String| if s.is_empty() { "-".to_string() } else { s };
        rows.push(vec![
            v.name_any(),
            claim_of(v),
            v.spec.node.clone(),
            v.spec.raid.raid_type.to_string(),
            v.spec.raid.legs.to_string(),
            or_dash(st.size),
            or_dash(st.health),
            or_dash(st.sync_percent),
            or_dash(st.eta),
        ]);
    }
    Ok(table(rows))
}

async fn disks(c: &Client) -> Result<String, String> {
    let mut nodes = Api::<RaidNode>::all(c.clone())
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("listing RaidNodes: {e}"))?
        .items;
    nodes.sort_by_key(|n| n.name_any());
    let mut rows = vec![["NODE", "DISK", "SIZE", "FREE", "STATE", "ID"]
        .map(String::from)
        .to_vec()];
    for n in &nodes {
        for d in n.status.clone().unwrap_or_default().disks {
            rows.push(vec![
                n.name_any(),
                d.path,
                human_bytes(d.size_bytes),
                human_bytes(d.free_bytes),
                d.state,
                d.id,
            ]);
        }
    }
    Ok(table(rows))
}

/// The RaidVolume a name refers to: a PVC in the namespace, a PV, or the volume itself.
async fn find(c: &Client, ns: &str, name: &str) -> Result<RaidVolume, String> {
    let volumes: Api<RaidVolume> = Api::all(c.clone());
    // Only a name that is an object name goes into an API path ("x/status" would not).
    if let Ok(id) = VolumeId::parse(name) {
        if let Ok(Some(v)) = volumes.get_opt(id.as_str()).await {
            return Ok(v);
        }
    }
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(c.clone(), ns);
    let object_name = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.".contains(&b));
    let pv = if object_name {
        match pvcs.get_opt(name).await {
            Ok(Some(pvc)) => pvc.spec.and_then(|s| s.volume_name),
            _ => None,
        }
    } else {
        None
    };
    let all = volumes
        .list(&ListParams::default())
        .await
        .map_err(|e| format!("listing RaidVolumes: {e}"))?
        .items;
    all.into_iter()
        .find(|v| {
            let claim = v.spec.claim.as_ref();
            claim.is_some_and(|c| c.namespace == ns && c.name == name)
                || pv.as_deref() == Some(v.spec.csi_name.as_str())
                || claim.is_some_and(|c| c.pv == name)
                || v.spec.csi_name == name
        })
        .ok_or_else(|| {
            format!("no dmraid-csi volume for {name:?} (PVC in namespace {ns}, PV or volume id)")
        })
}

async fn describe(c: &Client, ns: &str, name: &str) -> Result<String, String> {
    let v = find(c, ns, name).await?;
    let st = v.status.clone().unwrap_or_default();
    let mut out = String::new();
    let mut line = |k: &str, val: String| out.push_str(&format!("{k:<12}{val}\n"));
    line("Volume:", v.name_any());
    line("Claim:", claim_of(&v));
    line("Node:", v.spec.node.clone());
    line(
        "Layout:",
        format!(
            "{} × {} legs, chunk {}",
            v.spec.raid.raid_type,
            v.spec.raid.legs,
            human_bytes(v.spec.raid.chunk_size.0)
        ),
    );
    line(
        "Size:",
        format!(
            "{} (asked {})",
            st.size,
            human_bytes(v.spec.requested_bytes)
        ),
    );
    line("Phase:", format!("{:?}", st.phase));
    line("Health:", st.health.clone());
    line("Condition:", st.message.clone());
    if !st.sync_action.is_empty() {
        let eta = if st.eta.is_empty() {
            String::new()
        } else {
            format!(", ETA {}", st.eta)
        };
        line(
            "Sync:",
            format!("{} {}{eta}", st.sync_action, st.sync_percent),
        );
    }
    if let Some(m) = st.mismatch_count {
        line("Mismatches:", m.to_string());
    }
    out.push_str("Legs:\n");
    let mut rows = vec![["  LEG", "STATE", "DISK"].map(String::from).to_vec()];
    for l in &st.legs {
        rows.push(vec![
            format!("  {}", l.index),
            l.state.clone(),
            l.disk.clone(),
        ]);
    }
    out.push_str(&table(rows));
    out.push_str("\nConditions:\n");
    for c in &st.conditions {
        out.push_str(&format!(
            "  {:<16}{:<6}{:<16}{}\n",
            c.type_, c.status, c.reason, c.message
        ));
    }
    out.push_str("Events:\n");
    if st.last_events.is_empty() {
        out.push_str("  <none>\n");
    }
    for e in &st.last_events {
        out.push_str(&format!(
            "  {}  {:<8}{:<18}{}\n",
            e.time, e.type_, e.reason, e.message
        ));
    }
    Ok(out)
}

async fn run(args: Args) -> Result<String, String> {
    let config = match &args.kubeconfig {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .map_err(|e| format!("--kubeconfig {}: {e}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &Default::default())
                .await
                .map_err(|e| e.to_string())?
        }
        None => kube::Config::infer()
            .await
            .map_err(|e| format!("no Kubernetes configuration: {e}"))?,
    };
    let ns = args
        .namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let c = Client::try_from(config).map_err(|e| e.to_string())?;
    match args.command {
        Cmd::Volumes => volumes(&c).await,
        Cmd::Disks => disks(&c).await,
        Cmd::Describe { name } => describe(&c, &ns, &name).await,
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(text) => {
            println!("{}", text.trim_end());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("kubectl-dmraid: {e}");
            ExitCode::FAILURE
        }
    }
}
