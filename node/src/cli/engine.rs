//! `dmraid-csi engine`: the array engine driven from the command line on
//! this machine's disks, with the real kernel. Prints JSON on stdout.

use crate::cli::{EngineArgs, EngineOp};
use crate::engine::{Engine, EngineConfig};
use crate::kernel::disks::RealDisks;
use crate::kernel::dm::KernelDm;
use dmraid_api::quantity::parse_size;
use dmraid_api::RaidSpec;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Run one engine operation; errors come back as text for the exit message.
pub fn run(args: EngineArgs) -> Result<(), String> {
    let _lock = crate::lock::take(&crate::lock::path(&args.state_dir))?;
    let dm = KernelDm::open().map_err(|e| e.to_string())?;
    let engine = Engine::new(
        Arc::new(dm),
        Arc::new(RealDisks),
        EngineConfig {
            node: args.node_id,
            globs: args.disks,
            wipe: args.wipe_disks,
        },
    );
    for problem in engine.claim_disks().map_err(|e| e.to_string())? {
        eprintln!("dmraid-csi: not claimed: {problem}");
    }
    let json =
        |v: serde_json::Value| println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    match args.op {
        EngineOp::Create { id, params, size } => {
            let mut map = BTreeMap::new();
            for p in params {
                let (k, v) = p
                    .split_once('=')
                    .ok_or_else(|| format!("--param {p:?}: use KEY=VALUE"))?;
                map.insert(k.to_string(), v.to_string());
            }
            let spec = RaidSpec::from_parameters(&map).map_err(|e| e.to_string())?;
            let size = parse_size("size", &size).map_err(|e| e.to_string())?;
            let v = engine
                .create_volume(&id, &spec, size.0)
                .map_err(|e| e.to_string())?;
            json(serde_json::to_value(v).map_err(|e| e.to_string())?);
        }
        EngineOp::Delete { id } => {
            engine.delete_volume(&id).map_err(|e| e.to_string())?;
            // One-shot: no wiper thread outlives this command.
            engine.wipe_pending().map_err(|e| e.to_string())?;
        }
        EngineOp::Rebuild { id, leg, disk } => {
            engine.activate_all();
            let v = engine
                .replace_leg(&id, leg, disk)
                .map_err(|e| e.to_string())?;
            json(serde_json::to_value(v).map_err(|e| e.to_string())?);
        }
        EngineOp::Activate => {
            let failures = engine.activate_all();
            let mut out = Vec::new();
            for id in engine.volume_ids() {
                if let Ok(v) = engine.volume(&id) {
                    out.push(serde_json::to_value(v).map_err(|e| e.to_string())?);
                }
            }
            json(serde_json::Value::Array(out));
            if !failures.is_empty() {
                let text: Vec<String> = failures
                    .iter()
                    .map(|(id, e)| format!("{id}: {e}"))
                    .collect();
                return Err(format!("activation failed: {}", text.join("; ")));
            }
        }
        EngineOp::Deactivate => {
            let left: Vec<String> = engine
                .deactivate_all()
                .iter()
                .map(|(id, e)| format!("{id}: {e}"))
                .collect();
            if !left.is_empty() {
                return Err(format!("left active: {}", left.join("; ")));
            }
        }
        EngineOp::Show { id } => {
            let v = engine.volume(&id).map_err(|e| e.to_string())?;
            json(serde_json::to_value(v).map_err(|e| e.to_string())?);
        }
        EngineOp::Disks => {
            let disks: Vec<serde_json::Value> = engine
                .disks()
                .into_iter()
                .map(|(path, size, free, uuid)| serde_json::json!({"path": path, "size": size, "free": free, "uuid": uuid}))
                .collect();
            json(serde_json::Value::Array(disks));
        }
    }
    Ok(())
}

/// `dmraid-csi check`: start a check or repair of a volume's array through
/// the kernel (a target message; the labels are not touched, so it is safe
/// beside a running driver).
pub fn check(id: &str, repair: bool) -> Result<String, String> {
    use crate::kernel::dm::DeviceMapper;
    let dm = KernelDm::open().map_err(|e| e.to_string())?;
    let name = crate::engine::array_name(id);
    let status = dm.status(&name).map_err(|e| format!("volume {id}: {e}"))?;
    let line = status
        .first()
        .filter(|t| t.kind == "raid")
        .map(|t| t.params.clone())
        .ok_or_else(|| format!("volume {id}: no raid target"))?;
    let st = dmraid_api::RaidStatus::parse(&line).map_err(|e| e.to_string())?;
    let what = if repair { "repair" } else { "check" };
    if !st.healthy() {
        return Err(format!(
            "volume {id} is not healthy and idle ({line}): a {what} needs every leg in sync; retry when the resync or rebuild has finished"
        ));
    }
    dm.message(&name, what).map_err(|e| e.to_string())?;
    Ok(format!("{what} started on volume {id}; `dmraid-csi volumes` shows its progress and the mismatch count"))
}
