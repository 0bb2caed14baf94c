//! The whole path as a user walks it, with real components only: on the
//! host kube-apiserver, etcd, kube-controller-manager and kube-scheduler;
//! in the VM containerd and a kubelet registered as node `vm`, whose pods
//! reach the API server's Service address through a QEMU forward (what
//! kube-proxy would do). The driver is installed with `helm install` of our
//! chart from its image, imported into containerd (nothing is pulled), with
//! the upstream csi-provisioner and csi-resizer (built from their Go
//! modules by scripts/k8s-tools.sh and imported the same way) at the tags
//! the chart pins. node-driver-registrar and livenessprobe cannot be built
//! here (the Go module proxy serves neither): the driver does their work
//! itself (`sidecars.nodeDriverRegistrar.enabled=false`,
//! `sidecars.livenessProbe.enabled=false`).
//!
//! StorageClass raid5_ls × 3 + a spare disk → PVC (WaitForFirstConsumer) →
//! a pod writes a known pattern → one disk is pulled from the VM →
//! `kubectl describe pvc` shows the Warning naming the leg and its disk,
//! `kubectl get raidvolumes` goes through rebuilding back to healthy → the
//! pattern reads back unchanged → the PVC is expanded and the pod's
//! filesystem grows → a class with a bad parameter leaves its PVC Pending
//! with a clear event → deleting pod and PVCs removes the PV, the array and
//! its extents.
//!
//! Runs on its own: `cargo test -p e2e --test whole_cluster -- --nocapture`.

use dmraid_api::crd::{RaidNode, RaidVolume};
use e2e::apiserver::ApiServer;
use e2e::control_plane::ControlPlane;
use e2e::controller::events_of;
use e2e::kube_util::client;
use e2e::kubectl::{
    bound_then_running, helm, install_driver, one_in_process_controller, upgrade_driver, wait_for,
    wait_or, Kubectl,
};
use e2e::kubelet::{self, NODE};
use e2e::{Vm, MIB};
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::storage::v1::CSINode;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use std::time::{Duration, Instant};

const DRIVER_IMAGE: &str = "dmraid-csi.local/dmraid-csi:e2e";
/// The tag `helm upgrade` moves to: the same binaries under another version,
/// as a release would be.
const NEXT_IMAGE: &str = "dmraid-csi.local/dmraid-csi:e2e-next";
/// The pattern the pod writes: `yes dmraid-csi | head -c` this many bytes.
const PATTERN_BYTES: usize = 16 << 20;

fn expected_md5() -> String {
    e2e::kubectl::yes_md5("dmraid-csi", PATTERN_BYTES)
}

fn debug(vm: &mut Vm, k: &Kubectl, plane: &ControlPlane) -> String {
    format!(
        "--- pods ---\n{}\n--- events ---\n{}\n--- kubelet ---\n{}\n--- node plugin ---\n{}\n--- controller ---\n{}\n--- csi-resizer ---\n{}\n--- scheduler ---\n{}",
        k.run(&["get", "pods", "-A", "-o", "wide"], None).unwrap_or_else(|e| e),
        k.run(&["get", "events", "-A"], None).unwrap_or_else(|e| e),
        vm.run_ok("grep -E ' E[0-9]{4}|rror' /tmp/kubelet.log | tail -25").unwrap_or_default(),
        // (kubectl logs would need the API server to reach the kubelet's port.)
        vm.run_ok("tail -30 /node/var/log/pods/dmraid-csi_dmraid-csi-node*/node/*.log").unwrap_or_default(),
        vm.run_ok("tail -30 /node/var/log/pods/dmraid-csi_dmraid-csi-controller*/controller/*.log").unwrap_or_default(),
        vm.run_ok("tail -20 /node/var/log/pods/dmraid-csi_dmraid-csi-controller*/csi-resizer/*.log").unwrap_or_default(),
        plane.log_tail("kube-scheduler", 10),
    )
}

const CLASSES: &str = r#"
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: raid5}
provisioner: dmraid.csi.io
volumeBindingMode: WaitForFirstConsumer
allowVolumeExpansion: true
reclaimPolicy: Delete
parameters:
  raidType: raid5_ls
  legs: "3"
  chunkSize: 64Ki
  # Slow enough that the rebuild is seen in `kubectl get raidvolumes`.
  maxRecoveryRate: 4Mi
  csi.storage.k8s.io/fstype: ext4
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: raid-bad}
provisioner: dmraid.csi.io
volumeBindingMode: WaitForFirstConsumer
parameters:
  raidType: raid7
  legs: "3"
"#;

fn claim_and_pod(claim: &str, class: &str, pod: &str, command: &str) -> String {
    e2e::kubectl::claim_and_pod(claim, class, "64Mi", pod, command)
}

/// Every pod of the release runs `image` and is ready, one node plugin and
/// one controller, none left terminating: "pod image" for each.
fn rolled_to(
    rt: &tokio::runtime::Runtime,
    driver_pods: &Api<Pod>,
    image: &str,
) -> Option<Vec<String>> {
    let list = rt.block_on(driver_pods.list(&ListParams::default())).ok()?;
    let mut seen = Vec::new();
    for p in &list.items {
        if p.metadata.deletion_timestamp.is_some() {
            return None;
        }
        let spec = p.spec.as_ref()?;
        let ours = spec
            .containers
            .iter()
            .find(|c| c.name == "node" || c.name == "controller")?;
        let statuses = p.status.as_ref()?.container_statuses.clone()?;
        if ours.image.as_deref() != Some(image) || !statuses.iter().all(|c| c.ready) {
            return None;
        }
        seen.push(format!("{} {image}", p.name_any()));
    }
    (seen.len() == 2).then_some(seen)
}

/// The writer pod never restarted (a failed write ends it), went on writing
/// while the driver's pods rolled, and its pattern reads back unchanged.
fn assert_live_volume(
    vm: &mut Vm,
    rt: &tokio::runtime::Runtime,
    pods: &Api<Pod>,
    want: &str,
    md5: &dyn Fn(&mut Vm) -> String,
    writes_before: u64,
    writes: &dyn Fn(&mut Vm) -> u64,
) {
    let p = rt.block_on(pods.get("writer")).unwrap();
    let st = p.status.unwrap();
    assert_eq!(st.phase.as_deref(), Some("Running"));
    let restarts: i32 = st
        .container_statuses
        .unwrap_or_default()
        .iter()
        .map(|c| c.restart_count)
        .sum();
    assert_eq!(restarts, 0, "the writer saw a failed write and restarted");
    let after = writes(vm);
    println!("writer: {writes_before} -> {after} writes, no error");
    assert!(after > writes_before, "the writer stopped writing");
    assert_eq!(md5(vm), want, "the pattern the pod wrote");
}

#[test]
fn pvc_pod_leg_failure_and_kubectl_describe_on_a_real_kubelet() {
    let started = Instant::now();
    let server = ApiServer::start().expect("API server");
    let plane = ControlPlane::start(&server).expect("controller-manager and scheduler");
    let k = Kubectl::for_server(&server);
    // Three legs and a spare; the driver's image under two tags.
    let mut vm = kubelet::node_vm(
        &server,
        &[256 * MIB; 4],
        &[
            (kubelet::driver_image(DRIVER_IMAGE).unwrap(), "dmraid-csi"),
            (
                kubelet::driver_image(NEXT_IMAGE).unwrap(),
                "dmraid-csi-next",
            ),
        ],
    )
    .unwrap();
    kubelet::start(&mut vm).unwrap();
    println!("node registered at {:.0?}", started.elapsed());

    // helm install, as a user would (values for images imported into the node).
    println!("{}", install_driver(&server, DRIVER_IMAGE, &[]));

    let rt = tokio::runtime::Runtime::new().unwrap();
    let c = rt.block_on(client(&server.kubeconfig_path())).unwrap();
    // The driver registered itself with the kubelet: its CSINode lists it.
    let csinodes: Api<CSINode> = Api::all(c.clone());
    let registered = || {
        rt.block_on(csinodes.get_opt(NODE))
            .ok()
            .flatten()
            .and_then(|n| {
                n.spec
                    .drivers
                    .into_iter()
                    .find(|d| d.name == "dmraid.csi.io")
            })
    };
    let driver = wait_or(
        "the kubelet lists the dmraid.csi.io driver",
        Duration::from_secs(300),
        registered,
        || debug(&mut vm, &k, &plane),
    );
    println!(
        "driver registered with the kubelet at {:.0?}: {driver:?}",
        started.elapsed()
    );
    assert_eq!(driver.node_id, NODE);
    let raidnodes: Api<RaidNode> = Api::all(c.clone());
    // Free bytes per disk before any claim.
    let free_before: std::collections::BTreeMap<String, u64> =
        wait_for("RaidNode vm with 4 disks", Duration::from_secs(120), || {
            let n = rt.block_on(raidnodes.get_opt(NODE)).ok()??;
            let st = n.status?;
            (st.disk_count == 4).then(|| {
                st.disks
                    .iter()
                    .map(|d| (d.id.clone(), d.free_bytes))
                    .collect()
            })
        });

    // A claim and the pod that uses it.
    k.apply(CLASSES);
    k.ok(&["create", "namespace", "app"]);
    // A write that fails ends the container (a restart the test sees); each
    // one that succeeds is counted in /data/count.
    let writer = format!(
        "yes dmraid-csi | head -c {PATTERN_BYTES} > /data/pattern && sync && touch /data/written && \
         i=0; while :; do dd if=/dev/zero of=/data/scratch bs=64k count=16 conv=fsync 2>/dev/null || exit 1; \
         i=$((i+1)); echo $i > /data/count; sleep 1; done"
    );
    k.apply(&claim_and_pod("data", "raid5", "writer", &writer));
    let pods: Api<Pod> = Api::namespaced(c.clone(), "app");
    let upstream = bound_then_running(&rt, &c, "app", "data", "writer", Duration::from_secs(400));
    if upstream.1.is_none() {
        panic!(
            "pod writer not Running within 400 s\n{}",
            debug(&mut vm, &k, &plane)
        );
    }
    println!("pod running at {:.0?}", started.elapsed());
    // The upstream sidecars did it: they run beside the controller, which
    // does none of their work itself.
    let driver_pods: Api<Pod> = Api::namespaced(c.clone(), "dmraid-csi");
    let controller_pod = rt
        .block_on(
            driver_pods
                .list(&ListParams::default().labels("app.kubernetes.io/component=controller")),
        )
        .unwrap()
        .items
        .pop()
        .expect("the controller pod");
    let running: Vec<String> = controller_pod
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.clone())
        .unwrap_or_default()
        .into_iter()
        .filter(|c| c.ready)
        .map(|c| format!("{} {}", c.name, c.image))
        .collect();
    println!("controller pod containers: {running:?}");
    for want in [
        "csi-provisioner registry.k8s.io/sig-storage/csi-provisioner:v6.4.0",
        "csi-resizer registry.k8s.io/sig-storage/csi-resizer:v2.3.0",
    ] {
        assert!(
            running.iter().any(|c| c == want),
            "{want} not running: {running:?}"
        );
    }
    let args = serde_json::to_string(&controller_pod.spec.as_ref().unwrap().containers).unwrap();
    assert!(
        !args.contains("--run-"),
        "the controller does a sidecar's work: {args}"
    );
    // The upstream provisioner (--enable-capacity) publishes the node's room.
    let capacities = k.ok(&[
        "get",
        "csistoragecapacities",
        "-n",
        "dmraid-csi",
        "-o",
        "wide",
    ]);
    println!("{capacities}");
    let volumes: Api<RaidVolume> = Api::all(c.clone());
    let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(c.clone(), "app");
    let pvc = rt.block_on(pvcs.get("data")).unwrap();
    let pv_name = pvc.spec.as_ref().unwrap().volume_name.clone().unwrap();
    assert_eq!(
        pvc.annotations()
            .get("volume.kubernetes.io/selected-node")
            .map(String::as_str),
        Some(NODE),
        "the scheduler picked the node"
    );
    // Where the kubelet published the volume into the pod.
    let mount = vm
        .run_ok(&format!(
            "awk '$2 ~ /kubernetes.io~csi\\/{pv_name}\\/mount$/ {{print $2}}' /proc/mounts | head -1"
        ))
        .unwrap()
        .trim()
        .to_string();
    assert!(!mount.is_empty(), "{pv_name} is not mounted in the VM");
    vm.wait_until(
        &format!("test -e {mount}/written"),
        Instant::now() + Duration::from_secs(120),
    )
    .unwrap();
    let md5 = |vm: &mut Vm| {
        vm.run_ok(&format!("md5sum {mount}/pattern"))
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };
    let want = expected_md5();
    assert_eq!(md5(&mut vm), want, "the pattern the pod wrote");

    // helm upgrade to another tag while the pod writes: the node DaemonSet
    // and the controller roll, the array and the mount stay as they are.
    let rv = wait_for("RaidVolume healthy", Duration::from_secs(180), || {
        let v = rt.block_on(volumes.get_opt(&pv_name)).ok()??;
        (v.status.as_ref()?.health == "healthy").then_some(v)
    });
    let array = rv.status.as_ref().unwrap().device.clone();
    // The tables without the rate policy's recovery ceiling, which it
    // takes out of the table once a resync or rebuild is over.
    let kernel_view = |vm: &mut Vm| {
        vm.run_ok(&format!(
            "dmsetup info -c --noheadings -o name,major,minor,uuid | grep {pv_name} | sort; \
             dmsetup table | grep {pv_name} | sed 's/ max_recovery_rate [0-9]*//' | sort; grep ' {mount} ' /proc/self/mountinfo | cut -d' ' -f3-"
        ))
        .unwrap()
    };
    let writes = |vm: &mut Vm| -> u64 {
        vm.run_ok(&format!("cat {mount}/count"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    };
    // `change` (helm upgrade or rollback) while the pod writes: the
    // driver's pods roll to `image`, the writer never notices, and the
    // array's devices, tables and mount stay exactly as they were.
    let roll_under_writer = |vm: &mut Vm, what: &str, image: &str, change: &dyn Fn() -> String| {
        let before = kernel_view(vm);
        println!("array {array} before the {what}:\n{before}");
        let writes_before = writes(vm);
        let started = Instant::now();
        println!("{}", change());
        let rolled = wait_or(
            &format!("the driver's pods rolled to {image} ({what})"),
            Duration::from_secs(400),
            || rolled_to(&rt, &driver_pods, image),
            || debug(vm, &k, &plane),
        );
        println!(
            "{what}: rolled to {image} in {:.0?}: {rolled:?}",
            started.elapsed()
        );
        assert_live_volume(vm, &rt, &pods, &want, &md5, writes_before, &writes);
        assert_eq!(
            kernel_view(vm),
            before,
            "the array or the mount changed under the {what}"
        );
    };
    let next_tag = format!("image.tag={}", NEXT_IMAGE.rsplit_once(':').unwrap().1);
    roll_under_writer(&mut vm, "upgrade", NEXT_IMAGE, &|| {
        upgrade_driver(&server, &[&next_tag])
    });
    // The new node plugin took the volume over from the labels: it reports
    // it on its RaidNode and keeps its status.
    wait_for(
        "the upgraded node plugin reports the volume",
        Duration::from_secs(60),
        || {
            let n = rt.block_on(raidnodes.get_opt(NODE)).ok()??;
            let v = rt.block_on(volumes.get_opt(&pv_name)).ok()??;
            (n.status?.volume_count == 1 && v.status?.health == "healthy").then_some(())
        },
    );

    // Pull the disk of leg 1 while the pod writes: the upgraded plugin
    // reports it and rebuilds.
    let disk = rv.status.as_ref().unwrap().legs[1].disk.clone();
    let victim = (0..4)
        .find(|i| vm.disk_dev(*i).unwrap() == disk)
        .unwrap_or_else(|| panic!("leg 1's disk {disk:?} is not one of the VM's"));
    println!("pulling {disk} (leg 1) at {:.0?}", started.elapsed());
    vm.hot_remove_disk(victim).unwrap();
    let pulled = Instant::now();
    let mut seen: Vec<String> = Vec::new();
    let mut degraded_seen = false;
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        let t = k.ok(&["get", "raidvolumes"]);
        let row = t
            .lines()
            .find(|l| l.starts_with(&pv_name))
            .unwrap_or("")
            .to_string();
        let health = row.split_whitespace().nth(5).unwrap_or("").to_string();
        if seen.last() != Some(&health) {
            println!("{:>5.1}s {row}", pulled.elapsed().as_secs_f64());
            seen.push(health.clone());
        }
        let v = rt.block_on(volumes.get(&pv_name)).unwrap();
        let cond = |name: &str| {
            v.status
                .as_ref()
                .and_then(|s| s.conditions.iter().find(|c| c.type_ == name))
                .map(|c| c.status == "True")
                .unwrap_or(false)
        };
        degraded_seen |= cond("Degraded");
        if health == "healthy" && seen.iter().any(|h| h == "rebuilding") {
            assert!(!cond("Degraded"), "healthy but still Degraded: {v:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not healed: health went {seen:?}\n{}",
            debug(&mut vm, &k, &plane)
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    println!(
        "health went {seen:?}; healed {:.0?} after the pull",
        pulled.elapsed()
    );
    assert!(degraded_seen, "the Degraded condition was never set");
    // Events are written as the node sees things happen: wait for the last.
    let describe = wait_for(
        "LegFailed (Warning), RebuildStarted and RebuildFinished in kubectl describe pvc",
        Duration::from_secs(30),
        || {
            let d = k.ok(&["describe", "pvc", "data", "-n", "app"]);
            let warned = d.lines().any(|l| {
                l.contains("Warning") && l.contains(dmraid_api::EventReason::LegFailed.as_str())
            });
            (warned
                && d.contains(dmraid_api::EventReason::RebuildStarted.as_str())
                && d.contains(dmraid_api::EventReason::RebuildFinished.as_str()))
            .then_some(d)
        },
    );
    println!("{describe}");
    let warning = describe
        .lines()
        .find(|l| l.contains(dmraid_api::EventReason::LegFailed.as_str()))
        .unwrap()
        .to_string();
    assert!(
        warning.contains("leg 1") && warning.contains(&disk),
        "the warning names the leg and its disk: {warning}"
    );
    assert_eq!(md5(&mut vm), want, "the pattern after the rebuild");

    // helm rollback to the first release: the same checks.
    roll_under_writer(&mut vm, "rollback", DRIVER_IMAGE, &|| {
        helm(
            &server,
            &["rollback", "dmraid-csi", "1", "-n", "dmraid-csi"],
        )
    });

    // Expansion: the claim grows, the pod's filesystem with it.
    let size_kib = |vm: &mut Vm| -> u64 {
        vm.run_ok(&format!("df -Pk {mount} | tail -1"))
            .unwrap()
            .split_whitespace()
            .nth(1)
            .unwrap()
            .parse()
            .unwrap()
    };
    let before = size_kib(&mut vm);
    k.ok(&[
        "patch",
        "pvc",
        "data",
        "-n",
        "app",
        "-p",
        r#"{"spec":{"resources":{"requests":{"storage":"128Mi"}}}}"#,
    ]);
    let grown = wait_or(
        "the claim's capacity at 128Mi",
        Duration::from_secs(240),
        || {
            let p = rt.block_on(pvcs.get("data")).ok()?;
            let cap = p.status?.capacity?.get("storage")?.0.clone();
            let bytes = dmraid_api::quantity::parse_size("storage", &cap).ok()?.0;
            (bytes >= 128 * MIB).then_some(cap)
        },
        || {
            format!(
                "{}\n--- pvc ---\n{}",
                debug(&mut vm, &k, &plane),
                k.run(&["get", "pvc", "data", "-n", "app", "-o", "yaml"], None)
                    .unwrap_or_else(|e| e)
            )
        },
    );
    let after = size_kib(&mut vm);
    println!("expanded: claim capacity {grown}, filesystem {before} KiB -> {after} KiB");
    assert!(after > before + 48 * 1024, "{before} -> {after} KiB");
    assert_eq!(md5(&mut vm), want, "the pattern after the expansion");

    // A class with a bad parameter: the claim stays Pending and says why.
    k.apply(&claim_and_pod("bad", "raid-bad", "bad-pod", "sleep 3600"));
    let event = wait_for(
        "a ProvisioningFailed event",
        Duration::from_secs(120),
        || {
            rt.block_on(events_of(&c, "bad"))
                .into_iter()
                .find(|e| e.reason.as_deref() == Some("ProvisioningFailed"))
        },
    );
    let msg = event.message.clone().unwrap_or_default();
    println!("bad class: {msg}");
    assert!(msg.contains("raidType") && msg.contains("raid7"), "{msg}");
    let phase = rt
        .block_on(pvcs.get("bad"))
        .unwrap()
        .status
        .and_then(|s| s.phase);
    assert_eq!(phase.as_deref(), Some("Pending"));

    // Delete the pods and claims: PV, array and extents go.
    k.ok(&[
        "delete",
        "pod",
        "writer",
        "bad-pod",
        "-n",
        "app",
        "--wait=true",
    ]);
    k.ok(&["delete", "pvc", "data", "bad", "-n", "app", "--wait=true"]);
    let pvs: Api<PersistentVolume> = Api::all(c.clone());
    wait_for("the PV deleted", Duration::from_secs(180), || {
        rt.block_on(pvs.get_opt(&pv_name))
            .ok()
            .map(|p| p.is_none())
            .filter(|gone| *gone)
    });
    wait_for("the RaidVolume deleted", Duration::from_secs(60), || {
        rt.block_on(volumes.get_opt(&pv_name))
            .ok()
            .map(|p| p.is_none())
            .filter(|gone| *gone)
    });
    let left = vm.run_ok("dmsetup ls | grep dmraid- || true").unwrap();
    assert!(left.trim().is_empty(), "devices left: {left}");
    // Every disk still present is as free as before the claim (the pulled
    // one keeps its old extents in its label until it comes back).
    let deadline = Instant::now() + Duration::from_secs(60);
    let last = loop {
        let st = rt
            .block_on(raidnodes.get(NODE))
            .unwrap()
            .status
            .unwrap_or_default();
        let present: Vec<_> = st.disks.iter().filter(|d| d.state == "claimed").collect();
        let last: Vec<String> = present
            .iter()
            .map(|d| {
                let before = free_before.get(&d.id).copied().unwrap_or(0);
                format!("{}: {} free, {before} before", d.path, d.free_bytes)
            })
            .collect();
        if present.len() == 3
            && present
                .iter()
                .all(|d| free_before.get(&d.id) == Some(&d.free_bytes))
        {
            break last.join("; ");
        }
        assert!(Instant::now() < deadline, "extents left: {last:?}");
        std::thread::sleep(Duration::from_millis(500));
    };
    println!("extents freed: {last}");

    // The same claim with the driver's in-process provisioner and resizer
    // (a cluster without the sidecar images): how long to Bound and Running
    // beside the upstream sidecars' run above. Printed, not asserted.
    println!(
        "{}",
        upgrade_driver(
            &server,
            &[
                "sidecars.provisioner.enabled=false",
                "sidecars.resizer.enabled=false"
            ]
        )
    );
    wait_or(
        "the controller rolled to the in-process sidecars",
        Duration::from_secs(400),
        || one_in_process_controller(&rt, &c),
        || debug(&mut vm, &k, &plane),
    );
    k.apply(&claim_and_pod(
        "inproc",
        "raid5",
        "inproc-pod",
        "sleep 3600",
    ));
    let in_process = bound_then_running(
        &rt,
        &c,
        "app",
        "inproc",
        "inproc-pod",
        Duration::from_secs(400),
    );
    println!(
        "PVC -> Bound -> pod Running, one node: upstream csi-provisioner {:.1?} -> {:.1?}; in-process {:.1?} -> {:.1?}",
        upstream.0, upstream.1, in_process.0, in_process.1
    );
    assert!(
        in_process.1.is_some(),
        "the in-process provisioner's claim never ran\n{}",
        debug(&mut vm, &k, &plane)
    );
    k.ok(&["delete", "pod", "inproc-pod", "-n", "app", "--wait=true"]);
    k.ok(&["delete", "pvc", "inproc", "-n", "app", "--wait=true"]);
    // The driver's own /healthz answered the kubelet's liveness probes all along.
    for p in rt
        .block_on(driver_pods.list(&ListParams::default()))
        .unwrap()
        .items
    {
        let restarts: i32 = p
            .status
            .and_then(|s| s.container_statuses)
            .unwrap_or_default()
            .iter()
            .map(|c| c.restart_count)
            .sum();
        assert_eq!(
            restarts,
            0,
            "{} restarted",
            p.metadata.name.unwrap_or_default()
        );
    }
    println!("whole path done in {:.0?}", started.elapsed());
}
