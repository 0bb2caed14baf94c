//! The chart's admission policy against a real kube-apiserver: a node
//! plugin's service account, with the chart's RBAC, may write only its own
//! node's RaidVolumes and RaidNode. RBAC alone would let it patch any
//! RaidVolume; the ValidatingAdmissionPolicy compares the object's node with
//! the node its pod-bound token names.

use dmraid_api::crd::{RaidNode, RaidNodeSpec, RaidVolume, RaidVolumeSpec, NODE_LABEL};
use dmraid_api::params::RaidSpec;
use e2e::apiserver::ApiServer;
use e2e::kube_util::{
    apply_all, apply_crds, client, namespace, pod_bound_token, service_account_token,
};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use std::time::{Duration, Instant};

fn volume(name: &str, node: &str) -> RaidVolume {
    let mut v = RaidVolume::new(
        name,
        RaidVolumeSpec {
            node: node.into(),
            csi_name: format!("pvc-{name}"),
            requested_bytes: 64 << 20,
            leg_sectors: 0,
            volume_mode: Default::default(),
            raid: RaidSpec::from_pairs(&[("raidType", "raid1"), ("legs", "2")]).unwrap(),
            claim: None,
        },
    );
    v.metadata.labels = Some([(NODE_LABEL.to_string(), node.to_string())].into());
    v
}

/// The API server's refusal of a write, or a panic naming what got through.
fn refused<T: std::fmt::Debug>(what: &str, r: Result<T, kube::Error>) -> String {
    match r {
        Err(kube::Error::Api(s)) => {
            assert!(
                s.code == 403 || s.code == 422,
                "{what}: refused with {} {}, not by admission",
                s.code,
                s.message
            );
            s.message
        }
        other => panic!("{what}: not refused: {other:?}"),
    }
}

fn merge(v: serde_json::Value) -> Patch<serde_json::Value> {
    Patch::Merge(v)
}

async fn as_token(server: &ApiServer, token: &str, who: &str) -> Client {
    let cfg = server.kubeconfig_with_token(token, false, who).unwrap();
    client(&cfg).await.unwrap()
}

#[test]
fn a_node_plugin_may_change_only_its_own_nodes_raid_objects() {
    let server = ApiServer::start().expect("API server");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let admin = client(&server.kubeconfig_path()).await.unwrap();
        apply_crds(&admin).await.unwrap();
        namespace(&admin, "dmraid").await.unwrap();
        let yaml = e2e::chart::render_only(
            &[],
            &[
                "templates/serviceaccounts.yaml",
                "templates/rbac.yaml",
                "templates/admission.yaml",
            ],
        )
        .unwrap();
        let kinds = apply_all(&admin, &yaml, "dmraid", false, &[])
            .await
            .unwrap();
        assert!(
            kinds.iter().any(|k| k == "ValidatingAdmissionPolicy"),
            "{kinds:?}"
        );
        assert!(
            kinds
                .iter()
                .any(|k| k == "ValidatingAdmissionPolicyBinding"),
            "{kinds:?}"
        );

        let admin_volumes: Api<RaidVolume> = Api::all(admin.clone());
        for (name, node) in [("rv-a", "node-a"), ("rv-b", "node-b")] {
            admin_volumes
                .create(&PostParams::default(), &volume(name, node))
                .await
                .unwrap();
        }
        // rv-b carries its node's finalizer, as the node-b plugin sets it.
        admin_volumes
            .patch(
                "rv-b",
                &PatchParams::default(),
                &merge(serde_json::json!(
                {"metadata": {"finalizers": [dmraid_api::crd::FINALIZER]}})),
            )
            .await
            .unwrap();

        let a_token = pod_bound_token(&admin, "dmraid", "dmraid-csi-node", "node-a")
            .await
            .unwrap();
        let a = as_token(&server, &a_token, "node-a").await;
        let volumes: Api<RaidVolume> = Api::all(a.clone());
        let nodes: Api<RaidNode> = Api::all(a.clone());

        // The policy takes effect once the API server has loaded it; a
        // dry run goes through admission without storing anything.
        let since = Instant::now();
        loop {
            let r = volumes
                .patch(
                    "rv-b",
                    &PatchParams::default().dry_run(),
                    &merge(serde_json::json!({"metadata": {"finalizers": null}})),
                )
                .await;
            if r.is_err() {
                break;
            }
            assert!(
                since.elapsed() < Duration::from_secs(60),
                "the policy is not enforced after a minute"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        println!("policy enforced after {:?}", since.elapsed());

        // The policy's expressions type-check against the CRDs' schemas.
        let policies: Api<k8s_openapi::api::admissionregistration::v1::ValidatingAdmissionPolicy> =
            Api::all(admin.clone());
        let p = policies.get("dmraid-csi-node-scope").await.unwrap();
        let warnings = p
            .status
            .and_then(|s| s.type_checking)
            .and_then(|t| t.expression_warnings)
            .unwrap_or_default();
        assert!(warnings.is_empty(), "type-check warnings: {warnings:?}");

        // Its own volume and RaidNode: everything the node plugin does.
        volumes
            .patch(
                "rv-a",
                &PatchParams::default(),
                &merge(serde_json::json!(
                {"metadata": {"finalizers": [dmraid_api::crd::FINALIZER]}})),
            )
            .await
            .expect("node-a sets the finalizer on its own volume");
        let status = serde_json::json!({
            "apiVersion": "dmraid.csi.io/v1alpha1", "kind": "RaidVolume",
            "status": {"phase": "Ready", "health": "ok", "message": "test"},
        });
        volumes
            .patch_status(
                "rv-a",
                &PatchParams::apply("dmraid-csi").force(),
                &Patch::Apply(&status),
            )
            .await
            .expect("node-a writes its own volume's status");
        let own = RaidNode::new(
            "node-a",
            RaidNodeSpec {
                disk_globs: vec!["/dev/vd*".into()],
            },
        );
        nodes
            .patch(
                "node-a",
                &PatchParams::apply("dmraid-csi").force(),
                &Patch::Apply(&own),
            )
            .await
            .expect("node-a writes its own RaidNode");

        // Another node's objects: each write refused, nothing changed.
        let m = refused(
            "strip another node's finalizer",
            volumes
                .patch(
                    "rv-b",
                    &PatchParams::default(),
                    &merge(serde_json::json!({"metadata": {"finalizers": null}})),
                )
                .await,
        );
        assert!(
            m.contains("node node-a may change only its own RaidVolumes"),
            "{m}"
        );
        assert!(m.contains("rv-b"), "{m}");
        refused(
            "edit another node's volume",
            volumes
                .patch(
                    "rv-b",
                    &PatchParams::default(),
                    &merge(serde_json::json!({"spec": {"requestedBytes": 1u64 << 40}})),
                )
                .await,
        );
        refused(
            "write another node's status",
            volumes
                .patch_status(
                    "rv-b",
                    &PatchParams::apply("dmraid-csi").force(),
                    &Patch::Apply(&status),
                )
                .await,
        );
        refused(
            "move its own volume to another node",
            volumes
                .patch(
                    "rv-a",
                    &PatchParams::default(),
                    &merge(serde_json::json!({"spec": {"node": "node-b"}})),
                )
                .await,
        );
        refused(
            "relabel its own volume for another node's watch",
            volumes
                .patch(
                    "rv-a",
                    &PatchParams::default(),
                    &merge(serde_json::json!({"metadata": {"labels": {NODE_LABEL: "node-b"}}})),
                )
                .await,
        );
        let other = RaidNode::new("node-b", RaidNodeSpec { disk_globs: vec![] });
        let m = refused(
            "write another node's RaidNode",
            nodes
                .patch(
                    "node-b",
                    &PatchParams::apply("dmraid-csi").force(),
                    &Patch::Apply(&other),
                )
                .await,
        );
        assert!(m.contains("only its own RaidNode"), "{m}");
        let b = admin_volumes.get("rv-b").await.unwrap();
        assert_eq!(b.spec.requested_bytes, 64 << 20);
        assert_eq!(
            b.metadata.finalizers,
            Some(vec![dmraid_api::crd::FINALIZER.to_string()])
        );
        assert!(b.status.is_none(), "{:?}", b.status);
        let a_vol = admin_volumes.get("rv-a").await.unwrap();
        assert_eq!(a_vol.spec.node, "node-a");
        assert_eq!(a_vol.metadata.labels.unwrap()[NODE_LABEL], "node-a");
        assert!(Api::<RaidNode>::all(admin.clone())
            .get_opt("node-b")
            .await
            .unwrap()
            .is_none());

        // RBAC alone allowed every one of those: the same service account
        // with a token bound to no node is refused even its own node's.
        let unbound = service_account_token(&admin, "dmraid", "dmraid-csi-node")
            .await
            .unwrap();
        let u = as_token(&server, &unbound, "node-unbound").await;
        let m = refused(
            "a token bound to no node",
            Api::<RaidVolume>::all(u)
                .patch(
                    "rv-a",
                    &PatchParams::default(),
                    &merge(serde_json::json!({"metadata": {"finalizers": null}})),
                )
                .await,
        );
        assert!(m.contains("not bound to a node"), "{m}");

        // The policy binds the node plugin only: the controller's account
        // still writes any node's volume.
        let ctl_token = service_account_token(&admin, "dmraid", "dmraid-csi-controller")
            .await
            .unwrap();
        let ctl = as_token(&server, &ctl_token, "controller").await;
        Api::<RaidVolume>::all(ctl)
            .patch(
                "rv-b",
                &PatchParams::default(),
                &merge(serde_json::json!({"spec": {"requestedBytes": 128u64 << 20}})),
            )
            .await
            .expect("the controller expands a volume on any node");
    });
}
