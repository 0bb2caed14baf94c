//! Small helpers for tests that talk to a real API server: a client from a
//! kubeconfig, installing our CRDs, and the server's table view (what
//! `kubectl get` prints).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use std::path::Path;
use std::time::Duration;

/// A client for the cluster a kubeconfig file names.
pub async fn client(kubeconfig: &Path) -> Result<Client, String> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).map_err(|e| e.to_string())?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(|e| e.to_string())?;
    Client::try_from(cfg).map_err(|e| e.to_string())
}

/// Server-side apply our CRDs and wait until the server serves them.
pub async fn apply_crds(c: &Client) -> Result<(), String> {
    let api: Api<CustomResourceDefinition> = Api::all(c.clone());
    for crd in dmraid_controller::crds::objects() {
        let name = crd.metadata.name.clone().unwrap_or_default();
        api.patch(
            &name,
            &PatchParams::apply("dmraid-e2e").force(),
            &Patch::Apply(&crd),
        )
        .await
        .map_err(|e| format!("applying CRD {name}: {e}"))?;
        let established = kube::runtime::wait::conditions::is_crd_established();
        tokio::time::timeout(
            Duration::from_secs(30),
            kube::runtime::wait::await_condition(api.clone(), &name, established),
        )
        .await
        .map_err(|_| format!("CRD {name} not established within 30s"))?
        .map_err(|e| format!("waiting for CRD {name}: {e}"))?;
    }
    Ok(())
}

/// The server's table for a list path, as `kubectl get` would print it.
pub async fn table(c: &Client, path: &str) -> Result<String, String> {
    let req = http::Request::get(path)
        .header(
            "Accept",
            "application/json;as=Table;v=v1;g=meta.k8s.io,application/json",
        )
        .body(Vec::new())
        .map_err(|e| e.to_string())?;
    let text = c.request_text(req).await.map_err(|e| e.to_string())?;
    let v: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let cols: Vec<String> = v["columnDefinitions"]
        .as_array()
        .ok_or_else(|| format!("not a table: {text}"))?
        .iter()
        .map(|c| c["name"].as_str().unwrap_or("").to_uppercase())
        .collect();
    let mut rows = vec![cols];
    for r in v["rows"].as_array().cloned().unwrap_or_default() {
        rows.push(
            r["cells"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|c| match c {
                    serde_json::Value::String(s) => s.clone(),
                    serde_json::Value::Null => "<none>".into(),
                    other => other.to_string(),
                })
                .collect(),
        );
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|i| {
            rows.iter()
                .map(|r| r.get(i).map_or(0, |c| c.len()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    Ok(rows
        .iter()
        .map(|r| {
            r.iter()
                .enumerate()
                .map(|(i, c)| format!("{c:<w$}", w = widths[i] + 3))
                .collect::<String>()
                .trim_end()
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n"))
}
