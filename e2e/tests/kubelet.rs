//! A real kubelet: containerd (Debian's) and the kubelet (built from the Go
//! module proxy) in the VM register it as a node with the host's real API
//! server and keep it Ready, the kubelet publishes its CSINode, and a pod
//! of the driver's own image (imported, nothing pulled) runs on the pod
//! network to completion. The first steps of the whole-cluster path
//! (PVC -> pod -> leg failure); see e2e/src/kubelet.rs.

use e2e::apiserver::ApiServer;
use e2e::kube_util::{client, namespace};
use e2e::kubelet::{self, NODE};
use e2e::Vm;
use k8s_openapi::api::core::v1::{Node, Pod, ServiceAccount};
use k8s_openapi::api::storage::v1::CSINode;
use kube::api::PostParams;
use kube::Api;
use std::time::{Duration, Instant};

#[test]
fn a_real_kubelet_in_the_vm_registers_a_ready_node() {
    let server = ApiServer::start().expect("API server");
    let started = Instant::now();
    let image = "dmraid-csi.local/dmraid-csi:e2e";
    let builder = Vm::builder().network().memory_mb(1536).file(
        kubelet::driver_image(image).unwrap(),
        "/images/dmraid-csi.oci.tar",
    );
    let mut vm = kubelet::with_kubelet(builder, &server)
        .unwrap()
        .boot()
        .unwrap();
    let booted = started.elapsed();
    kubelet::start(&mut vm).unwrap();
    let registered = started.elapsed();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let c = client(&server.kubeconfig_path()).await.unwrap();
        let nodes: Api<Node> = Api::all(c.clone());
        let deadline = Instant::now() + Duration::from_secs(120);
        let node = loop {
            let n = nodes.get_opt(NODE).await.unwrap();
            let ready = n
                .as_ref()
                .and_then(|n| n.status.as_ref()?.conditions.clone())
                .unwrap_or_default()
                .into_iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            if ready {
                break n.unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "node {NODE} not Ready: {:?}\n{}",
                n.and_then(|n| n.status),
                vm.run_ok("tail -30 /tmp/kubelet.log").unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let info = node.status.unwrap().node_info.unwrap();
        assert!(
            info.container_runtime_version.starts_with("containerd://"),
            "{info:?}"
        );
        assert_eq!(info.kubelet_version, "v1.36.3");
        // The kubelet keeps a CSINode for its node: where CSI drivers register.
        let csinodes: Api<CSINode> = Api::all(c.clone());
        let deadline = Instant::now() + Duration::from_secs(60);
        while csinodes.get_opt(NODE).await.unwrap().is_none() {
            assert!(Instant::now() < deadline, "no CSINode {NODE}");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        // A pod of the driver's image, bound to the node (no scheduler
        // here), on the pod network: it runs and exits 0.
        namespace(&c, "t").await.unwrap();
        let sas: Api<ServiceAccount> = Api::namespaced(c.clone(), "t");
        let sa: ServiceAccount =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "default"}})).unwrap();
        let _ = sas.create(&PostParams::default(), &sa).await;
        let pods: Api<Pod> = Api::namespaced(c.clone(), "t");
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "hello"},
            "spec": {
                "nodeName": NODE,
                "restartPolicy": "Never",
                "automountServiceAccountToken": false,
                "containers": [{
                    "name": "driver",
                    "image": image,
                    "imagePullPolicy": "Never",
                    "args": ["--version"],
                }],
            },
        }))
        .unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        let status = loop {
            let st = pods.get("hello").await.unwrap().status.unwrap_or_default();
            let phase = st.phase.clone().unwrap_or_default();
            if phase == "Succeeded" || phase == "Failed" {
                break st;
            }
            assert!(
                Instant::now() < deadline,
                "pod still {phase}: {st:?}\n{}",
                vm.run_ok("grep -iE 'error|fail' /tmp/kubelet.log | tail -20; tail -20 /tmp/containerd.log")
                    .unwrap_or_default()
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        assert_eq!(status.phase.as_deref(), Some("Succeeded"), "{status:?}");
        let ip = status.pod_ip.clone().unwrap_or_default();
        assert!(ip.starts_with("10.88."), "a pod network address: {status:?}");
        let pod_done = started.elapsed();
        println!(
            "booted in {:.1} s, node registered at {:.1} s, pod {ip} done at {:.1} s ({}, kubelet {})",
            booted.as_secs_f64(),
            registered.as_secs_f64(),
            pod_done.as_secs_f64(),
            info.container_runtime_version,
            info.kubelet_version
        );
    });
}
