//! The CRDs against a real kube-apiserver: they install, the server's
//! schema refuses a bad spec with a message naming the field, and the table
//! view (`kubectl get raidvolumes`) has the operator's columns.

use dmraid_api::crd::{RaidVolume, RaidVolumeStatus};
use e2e::apiserver::ApiServer;
use e2e::kube_util::{apply_crds, client, table};
use kube::api::{Patch, PatchParams, PostParams};
use kube::Api;

#[test]
fn crds_install_refuse_bad_specs_and_print_the_operators_columns() {
    let server = ApiServer::start().expect("API server");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = client(&server.kubeconfig_path()).await.expect("client");
        apply_crds(&c).await.expect("CRDs");
        let api: Api<RaidVolume> = Api::all(c.clone());

        let good = serde_json::json!({
            "apiVersion": "dmraid.csi.io/v1alpha1",
            "kind": "RaidVolume",
            "metadata": { "name": "pvc-1" },
            "spec": {
                "node": "n1", "csiName": "pvc-1", "requestedBytes": 1073741824u64,
                "raid": { "raidType": "raid5_ls", "legs": 3, "chunkSize": 65536 },
                "claim": { "namespace": "default", "name": "data" }
            }
        });
        let v: RaidVolume = serde_json::from_value(good.clone()).unwrap();
        api.create(&PostParams::default(), &v)
            .await
            .expect("valid RaidVolume");

        let mut bad = good.clone();
        bad["metadata"]["name"] = "pvc-2".into();
        bad["spec"]["raid"]["raidType"] = "raid7".into();
        let dynamic: Api<kube::api::DynamicObject> = Api::all_with(
            c.clone(),
            &kube::discovery::ApiResource::erase::<RaidVolume>(&()),
        );
        let obj: kube::api::DynamicObject = serde_json::from_value(bad).unwrap();
        let err = dynamic
            .create(&PostParams::default(), &obj)
            .await
            .expect_err("raid7 must be refused by the schema");
        let text = err.to_string();
        assert!(
            text.contains("raidType") && text.contains("raid7"),
            "{text}"
        );

        let status = RaidVolumeStatus {
            health: "degraded".into(),
            size: "1Gi".into(),
            sync_percent: "41%".into(),
            ..Default::default()
        };
        api.patch_status(
            "pvc-1",
            &PatchParams::apply("dmraid-csi").force(),
            &Patch::Apply(serde_json::json!({
                "apiVersion": "dmraid.csi.io/v1alpha1", "kind": "RaidVolume",
                "status": status,
            })),
        )
        .await
        .expect("status");

        let t = table(&c, "/apis/dmraid.csi.io/v1alpha1/raidvolumes")
            .await
            .expect("table");
        println!("{t}");
        let header = t.lines().next().unwrap();
        for col in [
            "NAME", "NODE", "TYPE", "LEGS", "SIZE", "HEALTH", "SYNC%", "AGE",
        ] {
            assert!(header.contains(col), "{col} missing: {header}");
        }
        let row = t.lines().nth(1).unwrap();
        for cell in ["pvc-1", "n1", "raid5_ls", "3", "1Gi", "degraded", "41%"] {
            assert!(row.contains(cell), "{cell} missing: {row}");
        }

        // kubectl dmraid reads the same objects.
        let plugin = e2e::vm::release_binary("kubectl-dmraid")
            .expect("release kubectl-dmraid: run `cargo build --release --workspace --bins`");
        let run = |args: &[&str]| {
            let out = std::process::Command::new(&plugin)
                .arg("--kubeconfig")
                .arg(server.kubeconfig_path())
                .args(args)
                .output()
                .unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned()
                    + &String::from_utf8_lossy(&out.stderr),
            )
        };
        let (ok, out) = run(&["volumes"]);
        println!("{out}");
        assert!(
            ok && out.contains("default/data") && out.contains("degraded") && out.contains("41%"),
            "{out}"
        );
        let (ok, out) = run(&["describe", "data", "-n", "default"]);
        println!("{out}");
        assert!(
            ok && out.contains("pvc-1") && out.contains("raid5_ls × 3 legs"),
            "{out}"
        );
        let (ok, out) = run(&["describe", "nothing-here"]);
        assert!(!ok && out.contains("no dmraid-csi volume"), "{out}");
    });
}
