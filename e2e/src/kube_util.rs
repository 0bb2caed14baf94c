//! Small helpers for tests that talk to a real API server: a client from a
//! kubeconfig, installing our CRDs, and the server's table view (what
//! `kubectl get` prints).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DynamicObject, Patch, PatchParams, PostParams};
use kube::discovery::{Discovery, Scope};
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

/// The objects of a multi-document YAML stream (empty documents dropped).
pub fn documents(yaml: &str) -> Vec<serde_json::Value> {
    yaml.split("\n---")
        .filter_map(|doc| {
            let v: serde_json::Value = serde_saphyr::from_str(doc).ok()?;
            v.is_object().then_some(v)
        })
        .collect()
}

/// Server-side apply every object (`dry_run`: validated strictly, nothing
/// stored) into namespace `ns` where namespaced; returns the kinds applied.
/// Kinds the server does not serve are an error, except those in `absent_ok`.
pub async fn apply_all(
    c: &Client,
    yaml: &str,
    ns: &str,
    dry_run: bool,
    absent_ok: &[&str],
) -> Result<Vec<String>, String> {
    let discovery = Discovery::new(c.clone())
        .run()
        .await
        .map_err(|e| format!("discovery: {e}"))?;
    let mut kinds = Vec::new();
    for doc in documents(yaml) {
        let obj: DynamicObject = serde_json::from_value(doc.clone()).map_err(|e| e.to_string())?;
        let tm = obj
            .types
            .clone()
            .ok_or("an object without apiVersion/kind")?;
        let (group, version) = match tm.api_version.split_once('/') {
            Some((g, v)) => (g.to_string(), v.to_string()),
            None => (String::new(), tm.api_version.clone()),
        };
        let gvk = kube::api::GroupVersionKind::gvk(&group, &version, &tm.kind);
        let Some((ar, caps)) = discovery.resolve_gvk(&gvk) else {
            if absent_ok.contains(&tm.kind.as_str()) {
                kinds.push(tm.kind.clone());
                continue;
            }
            return Err(format!("the API server does not serve {gvk:?}"));
        };
        let api: Api<DynamicObject> = if caps.scope == Scope::Cluster {
            Api::all_with(c.clone(), &ar)
        } else {
            Api::namespaced_with(c.clone(), ns, &ar)
        };
        let name = obj.metadata.name.clone().unwrap_or_default();
        let mut pp = PatchParams::apply("dmraid-e2e").force().validation_strict();
        if dry_run {
            pp = pp.dry_run();
        }
        api.patch(&name, &pp, &Patch::Apply(&doc))
            .await
            .map_err(|e| format!("{} {name} refused by the API server: {e}", tm.kind))?;
        kinds.push(tm.kind.clone());
    }
    Ok(kinds)
}

/// Create a namespace (no error if it exists).
pub async fn namespace(c: &Client, name: &str) -> Result<(), String> {
    let ns: k8s_openapi::api::core::v1::Namespace = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}
    }))
    .map_err(|e| e.to_string())?;
    match Api::<k8s_openapi::api::core::v1::Namespace>::all(c.clone())
        .create(&PostParams::default(), &ns)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

/// A bound token of a service account (TokenRequest), valid for an hour.
pub async fn service_account_token(c: &Client, ns: &str, sa: &str) -> Result<String, String> {
    request_token(c, ns, sa, None).await
}

/// TokenRequest for `ns`/`sa`, valid for an hour, bound to `bound` if given.
async fn request_token(
    c: &Client,
    ns: &str,
    sa: &str,
    bound: Option<k8s_openapi::api::authentication::v1::BoundObjectReference>,
) -> Result<String, String> {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    let to = bound
        .as_ref()
        .and_then(|b| b.name.clone())
        .map(|n| format!(" bound to {n}"))
        .unwrap_or_default();
    let api: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(c.clone(), ns);
    let req = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(3600),
            bound_object_ref: bound,
            ..Default::default()
        }),
        ..Default::default()
    };
    let out: TokenRequest = api
        .create_subresource("token", sa, &PostParams::default(), &req)
        .await
        .map_err(|e| format!("token for {ns}/{sa}{to}: {e}"))?;
    out.status
        .and_then(|s| s.token)
        .ok_or_else(|| format!("no token for {ns}/{sa}"))
}

/// A token of service account `sa` bound to a pod on `node`, the way the
/// kubelet projects one into a pod: the API server puts the node's name into
/// the request's user info (`authentication.kubernetes.io/node-name`), which
/// the chart's admission policy checks. Creates the Node object and a pod
/// `{sa}-on-{node}` (never run: nothing schedules or starts it here).
pub async fn pod_bound_token(c: &Client, ns: &str, sa: &str, node: &str) -> Result<String, String> {
    use k8s_openapi::api::core::v1::{Node, Pod};
    let n: Node = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Node", "metadata": {"name": node}
    }))
    .map_err(|e| e.to_string())?;
    match Api::<Node>::all(c.clone())
        .create(&PostParams::default(), &n)
        .await
    {
        Ok(_) => {}
        Err(kube::Error::Api(s)) if s.code == 409 => {}
        Err(e) => return Err(format!("node {node}: {e}")),
    }
    let name = format!("{sa}-on-{node}");
    let pods: Api<Pod> = Api::namespaced(c.clone(), ns);
    let p: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "nodeName": node,
            "serviceAccountName": sa,
            "containers": [{"name": "plugin", "image": "dmraid-csi.local/never-run:0"}]
        }
    }))
    .map_err(|e| e.to_string())?;
    let pod = match pods.create(&PostParams::default(), &p).await {
        Ok(p) => p,
        Err(kube::Error::Api(s)) if s.code == 409 => pods
            .get(&name)
            .await
            .map_err(|e| format!("pod {name}: {e}"))?,
        Err(e) => return Err(format!("pod {name}: {e}")),
    };
    let bound = k8s_openapi::api::authentication::v1::BoundObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: Some(name.clone()),
        uid: pod.metadata.uid.clone(),
    };
    request_token(c, ns, sa, Some(bound)).await
}
