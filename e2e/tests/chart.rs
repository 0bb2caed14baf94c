//! The Helm chart with the real `helm` (built by scripts/k8s-tools.sh):
//! lint, render with several value sets, and send every rendered object to a
//! real kube-apiserver as a strict server-side dry run, so an invalid or
//! unknown field fails here; values.schema.json refuses typos; the RBAC
//! grants exactly what the table below explains.

use e2e::apiserver::{tool, ApiServer};
use e2e::kube_util::{apply_all, apply_crds, client, documents, namespace};
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

fn chart() -> PathBuf {
    e2e::chart::dir()
}

fn render(sets: &[&str]) -> Result<String, String> {
    e2e::chart::render(sets)
}

#[test]
fn helm_lint_passes() {
    let helm = tool("helm").expect("helm");
    let out = Command::new(helm)
        .args([
            "lint",
            "--strict",
            "--kube-version",
            e2e::chart::KUBE_VERSION,
        ])
        .arg(chart())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_misspelt_value_is_refused_with_its_name() {
    let e = render(&["imagee.tag=x"]).unwrap_err();
    assert!(e.contains("imagee"), "{e}");
    let e = render(&["node.disks[0]=sda"]).unwrap_err();
    assert!(e.contains("/node/disks/0") && e.contains("^/dev/"), "{e}");
    let e = render(&["logFormat=yaml"]).unwrap_err();
    assert!(e.contains("logFormat"), "{e}");
    // The in-process provisioner has no leader election.
    let e = render(&["sidecars.enabled=false", "controller.replicas=2"]).unwrap_err();
    assert!(e.contains("controller.replicas to 1"), "{e}");
    let e = render(&["sidecars.resizer.enabled=false", "controller.replicas=2"]).unwrap_err();
    assert!(e.contains("controller.replicas to 1"), "{e}");
    let e = render(&[
        "sidecars.provisioner.enabled=false",
        "controller.nodeDeployment=true",
    ])
    .unwrap_err();
    assert!(e.contains("upstream csi-provisioner"), "{e}");
}

/// The sidecar tags the chart pins are the ones scripts/k8s-tools.sh builds
/// and `--test whole_cluster` runs.
#[test]
fn the_pinned_sidecars_are_the_ones_the_tests_build() {
    let tools = std::fs::read_to_string(e2e::repo_root().join("scripts/k8s-tools.sh")).unwrap();
    let pinned = |var: &str| {
        tools
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{var}=")))
            .and_then(|v| v.split_whitespace().next())
            .unwrap_or_else(|| panic!("{var} not in scripts/k8s-tools.sh"))
            .to_string()
    };
    let yaml = render(&[]).unwrap();
    for (image, var) in [
        ("csi-provisioner", "PROVISIONER_VERSION"),
        ("csi-resizer", "RESIZER_VERSION"),
    ] {
        let want = format!("registry.k8s.io/sig-storage/{image}:{}", pinned(var));
        assert!(yaml.contains(&want), "the chart does not run {want}");
    }
    // Without it csi-resizer watches every pod in the cluster, which the
    // RBAC above does not grant: it would never expand.
    assert!(yaml.contains("--handle-volume-inuse-error=false"));
}

#[test]
fn every_rendered_object_passes_strict_server_side_validation() {
    let server = ApiServer::start().expect("API server");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = client(&server.kubeconfig_path()).await.unwrap();
        apply_crds(&c).await.unwrap();
        namespace(&c, "dmraid").await.unwrap();
        let sets: [&[&str]; 7] = [
            &[],
            &[
                "storageClasses.raid1.enabled=true",
                "storageClasses.raid5.enabled=true",
                "storageClasses.raid6.enabled=true",
                "storageClasses.raid10.enabled=true",
                "storageClassDefaults.fsType=xfs",
            ],
            &[
                "metrics.serviceMonitor.enabled=true",
                "metrics.grafanaDashboard.enabled=true",
                "controller.replicas=2",
                "logFormat=json",
                "node.hostIPC=true",
            ],
            &[
                "metrics.enabled=false",
                "node.wipeDisks=true",
                "node.autoRebuild=false",
            ],
            &["controller.nodeDeployment=true"],
            &[
                "sidecars.enabled=false",
                "controller.hostNetwork=true",
                "node.hostNetwork=true",
            ],
            // A cluster that lacks only some sidecar images.
            &[
                "sidecars.provisioner.enabled=false",
                "sidecars.nodeDriverRegistrar.enabled=false",
            ],
        ];
        for set in sets {
            let yaml = render(set).unwrap_or_else(|e| panic!("helm template {set:?}: {e}"));
            // Prometheus Operator's CRD is not installed on the test server.
            let kinds = apply_all(&c, &yaml, "dmraid", true, &["ServiceMonitor"])
                .await
                .unwrap_or_else(|e| panic!("{set:?}: {e}"));
            println!("{set:?}: {kinds:?}");
            for k in [
                "CSIDriver",
                "Deployment",
                "DaemonSet",
                "ClusterRole",
                "ServiceAccount",
            ] {
                assert!(kinds.iter().any(|x| x == k), "{k} missing for {set:?}");
            }
            if set.iter().any(|s| s.starts_with("storageClasses")) {
                assert_eq!(kinds.iter().filter(|k| *k == "StorageClass").count(), 4);
            }
            if set.contains(&"metrics.serviceMonitor.enabled=true") {
                assert!(kinds.iter().any(|k| k == "ServiceMonitor"));
                assert!(kinds.iter().any(|k| k == "ConfigMap"), "the dashboard");
            }
            if set.contains(&"metrics.enabled=false") {
                assert!(!yaml.contains("--metrics-addr"), "metrics off still serves");
            }
            // Upgrades never run two controllers side by side (host ports,
            // the in-process provisioner without leader election).
            let strategy = documents(&yaml)
                .into_iter()
                .find(|d| d["kind"] == "Deployment")
                .map(|d| d["spec"]["strategy"]["rollingUpdate"].clone())
                .unwrap();
            assert_eq!(strategy["maxSurge"], 0, "{set:?}");
            // Distributed provisioning: the provisioner moves into the node
            // pods (one of them per node), the Deployment keeps the resizer.
            let provisioners: Vec<String> = documents(&yaml)
                .iter()
                .filter(|d| d["kind"] == "Deployment" || d["kind"] == "DaemonSet")
                .flat_map(|d| {
                    let kind = d["kind"].as_str().unwrap_or_default().to_string();
                    d["spec"]["template"]["spec"]["containers"]
                        .as_array()
                        .cloned()
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|c| c["name"] == "csi-provisioner")
                        .map(move |c| format!("{kind} {}", c["args"]))
                })
                .collect();
            if set.contains(&"sidecars.enabled=false") {
                // The driver does the sidecars' work: no sidecar image at all.
                assert!(provisioners.is_empty(), "{provisioners:?}");
                assert!(!yaml.contains("registry.k8s.io/sig-storage"), "{yaml}");
                for flag in [
                    "--run-provisioner",
                    "--run-resizer",
                    "--kubelet-registration-dir=/registration",
                    "--healthz-addr=0.0.0.0:9809",
                    "--healthz-addr=0.0.0.0:9810",
                    "hostNetwork: true",
                ] {
                    assert!(yaml.contains(flag), "{flag} missing");
                }
                continue;
            }
            if set.contains(&"sidecars.provisioner.enabled=false") {
                // Each sidecar replaced on its own: the driver provisions and
                // registers, the upstream resizer and livenessprobe stay.
                assert!(provisioners.is_empty(), "{provisioners:?}");
                for flag in [
                    "--run-provisioner",
                    "--kubelet-registration-dir=/registration",
                    "sig-storage/csi-resizer:",
                    "sig-storage/livenessprobe:",
                ] {
                    assert!(yaml.contains(flag), "{flag} missing");
                }
                for gone in [
                    "- --run-resizer",
                    "csi-node-driver-registrar",
                    "--healthz-addr",
                ] {
                    assert!(!yaml.contains(gone), "{gone} rendered");
                }
                continue;
            }
            assert_eq!(provisioners.len(), 1, "{provisioners:?}");
            assert!(
                !yaml.contains("- --run-"),
                "an in-process sidecar beside the upstream ones"
            );
            if set.contains(&"controller.nodeDeployment=true") {
                assert!(
                    provisioners[0].starts_with("DaemonSet")
                        && provisioners[0].contains("--node-deployment")
                        && !provisioners[0].contains("--leader-election"),
                    "{provisioners:?}"
                );
            } else {
                assert!(
                    provisioners[0].starts_with("Deployment"),
                    "{provisioners:?}"
                );
            }
        }
    });
}

/// Every (role, apiGroup, resource, verb) the chart grants, with who needs it.
const GRANTS: &[(&str, &str, &str, &str, &str)] = &[
    ("controller", "dmraid.csi.io", "raidvolumes", "get list watch create delete patch", "dmraid-csi-controller: RaidVolumes are the volumes (create, wait for Ready, delete, expand)"),
    ("controller", "dmraid.csi.io", "raidnodes", "get list watch", "dmraid-csi-controller: room per node for CreateVolume and GetCapacity"),
    ("controller", "", "persistentvolumes", "get list watch create delete patch", "csi-provisioner: makes and deletes PVs"),
    ("controller", "", "persistentvolumeclaims", "get list watch update patch", "csi-provisioner and csi-resizer: claims"),
    ("controller", "", "persistentvolumeclaims/status", "patch update", "csi-resizer: records the new size"),
    ("controller", "storage.k8s.io", "storageclasses", "get list watch", "csi-provisioner: parameters"),
    ("controller", "storage.k8s.io", "csinodes", "get list watch", "csi-provisioner: topology"),
    ("controller", "", "nodes", "get list watch", "csi-provisioner: topology; dmraid-csi-controller: whether a volume's node still exists"),
    ("controller-cfg", "storage.k8s.io", "csistoragecapacities", "get list watch create update patch delete", "csi-provisioner --enable-capacity"),
    ("controller-cfg", "", "pods", "get", "csi-provisioner --capacity-ownerref-level: its own pod"),
    ("controller-cfg", "apps", "replicasets", "get", "csi-provisioner --capacity-ownerref-level: owner chain"),
    ("controller-cfg", "apps", "deployments", "get", "csi-provisioner --capacity-ownerref-level: owner chain"),
    ("controller", "", "events", "list watch create update patch", "sidecars: Events on claims"),
    ("controller", "events.k8s.io", "events", "create patch", "dmraid-csi-controller: Events on claims and PVs (--run-provisioner), NodeGone on a RaidVolume"),
    ("controller-cfg", "coordination.k8s.io", "leases", "get watch list delete update create", "sidecars: leader election"),
    ("node", "dmraid.csi.io", "raidvolumes", "get list watch patch", "dmraid-csi node: reconciles its RaidVolumes, finalizer by patch"),
    ("node", "dmraid.csi.io", "raidvolumes/status", "patch", "dmraid-csi node: status by server-side apply"),
    ("node", "dmraid.csi.io", "raidnodes", "get create patch", "dmraid-csi node: its own RaidNode"),
    ("node", "dmraid.csi.io", "raidnodes/status", "patch", "dmraid-csi node: its RaidNode's status"),
    ("node", "events.k8s.io", "events", "create patch", "dmraid-csi node: health Events"),
    ("node", "", "persistentvolumes", "get", "dmraid-csi node: the PV to put Events on"),
    ("node", "", "persistentvolumeclaims", "get", "dmraid-csi node: the PVC to put Events on"),
    ("node-provisioner", "dmraid.csi.io", "raidvolumes", "get list watch create delete patch", "controller.nodeDeployment: dmraid-csi-controller in the node pod"),
    ("node-provisioner", "dmraid.csi.io", "raidnodes", "get list watch", "controller.nodeDeployment: room per node"),
    ("node-provisioner", "", "persistentvolumes", "get list watch create delete patch", "controller.nodeDeployment: csi-provisioner makes PVs"),
    ("node-provisioner", "", "persistentvolumeclaims", "get list watch update patch", "controller.nodeDeployment: csi-provisioner claims"),
    ("node-provisioner", "storage.k8s.io", "storageclasses", "get list watch", "controller.nodeDeployment: csi-provisioner parameters"),
    ("node-provisioner", "storage.k8s.io", "csinodes", "get list watch", "controller.nodeDeployment: csi-provisioner topology"),
    ("node-provisioner", "", "nodes", "get list watch", "controller.nodeDeployment: csi-provisioner topology"),
    ("node-provisioner-cfg", "storage.k8s.io", "csistoragecapacities", "get list watch create update patch delete", "controller.nodeDeployment: capacity per node"),
    ("node-provisioner-cfg", "", "pods", "get", "controller.nodeDeployment: --capacity-ownerref-level, its pod"),
    ("node-provisioner-cfg", "apps", "daemonsets", "get", "controller.nodeDeployment: --capacity-ownerref-level, the DaemonSet"),
    ("node-provisioner", "", "events", "list watch create update patch", "controller.nodeDeployment: Events on claims"),
];

#[test]
fn rbac_grants_exactly_what_is_explained() {
    // Every optional role on, so every grant is rendered.
    let yaml = render(&["controller.nodeDeployment=true"]).unwrap();
    let mut granted = BTreeSet::new();
    for doc in documents(&yaml) {
        if doc["kind"] != "ClusterRole" && doc["kind"] != "Role" {
            continue;
        }
        let role = doc["metadata"]["name"]
            .as_str()
            .unwrap()
            .trim_start_matches("dmraid-csi-")
            .to_string();
        for rule in doc["rules"].as_array().unwrap() {
            for g in rule["apiGroups"].as_array().unwrap() {
                for r in rule["resources"].as_array().unwrap() {
                    for v in rule["verbs"].as_array().unwrap() {
                        let v = v.as_str().unwrap();
                        assert_ne!(v, "*", "wildcard verb in {role}");
                        assert_ne!(r.as_str().unwrap(), "*", "wildcard resource in {role}");
                        granted.insert((
                            role.clone(),
                            g.as_str().unwrap().to_string(),
                            r.as_str().unwrap().to_string(),
                            v.to_string(),
                        ));
                    }
                }
            }
        }
    }
    let mut explained = BTreeSet::new();
    for (role, group, resource, verbs, why) in GRANTS {
        assert!(!why.is_empty());
        for v in verbs.split_whitespace() {
            explained.insert((
                role.to_string(),
                group.to_string(),
                resource.to_string(),
                v.to_string(),
            ));
        }
    }
    let unexplained: Vec<_> = granted.difference(&explained).collect();
    let missing: Vec<_> = explained.difference(&granted).collect();
    assert!(
        unexplained.is_empty(),
        "granted without a reason: {unexplained:?}"
    );
    assert!(missing.is_empty(), "explained but not granted: {missing:?}");
    println!("{} grants, each explained", granted.len());
}

#[test]
fn the_dashboard_queries_only_metrics_the_binaries_export() {
    let root = e2e::repo_root();
    let dashboard = std::fs::read_to_string(chart().join("dashboards/dmraid-csi.json")).unwrap();
    let d: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let sources = std::fs::read_to_string(root.join("node/src/health/metrics.rs")).unwrap()
        + &std::fs::read_to_string(root.join("proto/src/grpc_metrics.rs")).unwrap();
    let mut checked = 0;
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().unwrap() {
            let expr = t["expr"].as_str().unwrap();
            for (i, _) in expr.match_indices("dmraid_") {
                let name: String = expr[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let registered = |n: &str| sources.contains(&format!("\"{n}\""));
                let known = registered(&name)
                    || ["_total", "_bucket", "_sum", "_count"]
                        .iter()
                        .filter_map(|s| name.strip_suffix(s))
                        .any(registered);
                assert!(
                    known,
                    "panel {:?} queries {name}, which no binary registers",
                    p["title"]
                );
                checked += 1;
            }
        }
    }
    assert!(checked >= 6, "{checked}");
}
