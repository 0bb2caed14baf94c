//! The cluster path against a real kube-apiserver: the controller runs on
//! the host, the node plugin in the VM reaches the API server through QEMU
//! user networking. CreateVolume (WaitForFirstConsumer topology) → the node
//! makes the array and reports it Ready → a leg fault shows as a Warning
//! Event and a Degraded condition within seconds, and the array heals onto
//! the spare → a hand-edited spec is refused with a condition, nothing
//! destroyed → DeleteVolume tears the array down. Bad parameters write
//! nothing; with the API server down the controller answers UNAVAILABLE.
//! Both run as the chart's service accounts with the chart's RBAC.

use dmraid_api::crd::{RaidNode, RaidVolume};
use dmraid_proto::csi::controller_client::ControllerClient;
use dmraid_proto::csi::*;
use dmraid_proto::TOPOLOGY_KEY;
use e2e::apiserver::ApiServer;
use e2e::controller::{create_request, events_of, Controller};
use e2e::kube_util::{
    apply_all, apply_crds, client, namespace, pod_bound_token, service_account_token, table,
};
use e2e::{Vm, MIB};
use kube::api::{Patch, PatchParams};
use kube::Api;
use std::process::Command;
use std::time::{Duration, Instant};

async fn wait_for<T, F, Fut>(what: &str, within: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn condition(v: &RaidVolume, t: &str) -> Option<(String, String, String)> {
    v.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == t)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

#[test]
fn raid_volume_lifecycle_health_and_events_through_a_real_api_server() {
    let mut server = ApiServer::start().expect("API server");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let c = rt.block_on(async {
        let c = client(&server.kubeconfig_path()).await.unwrap();
        apply_crds(&c).await.unwrap();
        c
    });
    // The controller and the node plugin run as the chart's service
    // accounts, with exactly the chart's RBAC: a missing grant fails here.
    // The chart's admission policy too: every write of the node plugin
    // below goes through it, with a token bound to a pod on node vm1 as the
    // kubelet would project it.
    let rbac = e2e::chart::render_only(
        &[],
        &[
            "templates/serviceaccounts.yaml",
            "templates/rbac.yaml",
            "templates/admission.yaml",
        ],
    )
    .unwrap();
    let (node_token, controller_token) = rt.block_on(async {
        namespace(&c, "dmraid").await.unwrap();
        apply_all(&c, &rbac, "dmraid", false, &[]).await.unwrap();
        (
            pod_bound_token(&c, "dmraid", "dmraid-csi-node", "vm1")
                .await
                .unwrap(),
            service_account_token(&c, "dmraid", "dmraid-csi-controller")
                .await
                .unwrap(),
        )
    });
    let node_kubeconfig = server
        .kubeconfig_with_token(&node_token, true, "node")
        .unwrap();
    let controller_kubeconfig = server
        .kubeconfig_with_token(&controller_token, false, "controller")
        .unwrap();

    // The node plugin in the VM: 3 legs + 1 spare.
    let mut vm = Vm::builder()
        .disks(&[128 * MIB; 4])
        .network()
        .with_driver()
        .unwrap()
        .file(&node_kubeconfig, "/etc/kubeconfig")
        .boot()
        .unwrap();
    let node_pid = vm.spawn("exec dmraid-csi node --endpoint /run/csi.sock --node-id vm1 --disks '/dev/vd*' --kubeconfig /etc/kubeconfig --monitor-interval 2 2>/tmp/node.log")
        .unwrap();
    let nodes: Api<RaidNode> = Api::all(c.clone());
    let volumes: Api<RaidVolume> = Api::all(c.clone());
    rt.block_on(wait_for(
        "RaidNode vm1 with 4 disks",
        Duration::from_secs(90),
        || {
            let nodes = nodes.clone();
            async move {
                let n = nodes.get_opt("vm1").await.ok()??;
                (n.status?.disk_count == 4).then_some(())
            }
        },
    ));
    println!(
        "{}",
        rt.block_on(table(&c, "/apis/dmraid.csi.io/v1alpha1/raidnodes"))
            .unwrap()
    );

    let ctl = Controller::start(&controller_kubeconfig).unwrap();
    let mut csi = rt.block_on(async {
        let ch = dmraid_proto::socket::connect(&ctl.socket.display().to_string())
            .await
            .unwrap();
        ControllerClient::new(ch)
    });

    // Bad parameters: InvalidArgument, and nothing is written.
    let bad = rt
        .block_on(csi.create_volume(create_request(
            "pvc-bad",
            &[
                ("raidType", "raid5_ls"),
                ("legs", "3"),
                ("chunkSize", "48Ki"),
            ],
            "vm1",
            32 << 20,
        )))
        .unwrap_err();
    assert_eq!(bad.code(), tonic::Code::InvalidArgument, "{bad:?}");
    assert!(bad.message().contains("chunkSize"), "{}", bad.message());
    assert!(rt.block_on(volumes.get_opt("pvc-bad")).unwrap().is_none());

    // No room on the chosen node: ResourceExhausted before any object is written.
    let big = rt
        .block_on(csi.create_volume(create_request(
            "pvc-big",
            &[("raidType", "raid5_ls"), ("legs", "3")],
            "vm1",
            4 << 30,
        )))
        .unwrap_err();
    assert_eq!(big.code(), tonic::Code::ResourceExhausted, "{big:?}");
    assert!(rt.block_on(volumes.get_opt("pvc-big")).unwrap().is_none());

    // A size above limit_bytes: OutOfRange before any object is written
    // (a RaidVolume leaked here made every retry AlreadyExists).
    let mut over = create_request(
        "pvc-over",
        &[("raidType", "raid5_ls"), ("legs", "3")],
        "vm1",
        64 << 20,
    );
    if let Some(r) = over.capacity_range.as_mut() {
        r.limit_bytes = 32 << 20;
    }
    let over = rt.block_on(csi.create_volume(over)).unwrap_err();
    assert_eq!(over.code(), tonic::Code::OutOfRange, "{over:?}");
    assert!(rt.block_on(volumes.get_opt("pvc-over")).unwrap().is_none());
    // Ids that are no object name never reach an API path.
    for bad_id in ["x/status", "a?b", "Pvc-1"] {
        let e = rt
            .block_on(csi.controller_expand_volume(ControllerExpandVolumeRequest {
                volume_id: bad_id.into(),
                capacity_range: Some(CapacityRange {
                    required_bytes: 96 << 20,
                    limit_bytes: 0,
                }),
                ..Default::default()
            }))
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound, "{bad_id}: {e:?}");
        rt.block_on(csi.delete_volume(DeleteVolumeRequest {
            volume_id: bad_id.into(),
            ..Default::default()
        }))
        .unwrap_or_else(|e| panic!("{bad_id}: deleting what cannot exist is OK: {e:?}"));
    }

    // CreateVolume with WaitForFirstConsumer topology.
    let id = "pvc-0b0e3c1e-7c43-4a4b-9a53-2a4f1b2f6b01";
    let params = [
        ("raidType", "raid5_ls"),
        ("legs", "3"),
        ("regionSize", "1Mi"),
    ];
    let created = Instant::now();
    let vol = rt
        .block_on(csi.create_volume(create_request(id, &params, "vm1", 64 << 20)))
        .unwrap_or_else(|e| {
            panic!(
                "{e:?}\n--- node log ---\n{}",
                vm.run_ok("tail -30 /tmp/node.log").unwrap_or_default()
            )
        })
        .into_inner()
        .volume
        .unwrap();
    println!("CreateVolume answered in {:?}", created.elapsed());
    assert_eq!(vol.volume_id, id);
    assert!(vol.capacity_bytes >= 64 << 20);
    assert_eq!(
        vol.accessible_topology[0].segments[TOPOLOGY_KEY], "vm1",
        "{vol:?}"
    );
    // Idempotent; same name with other parameters is ALREADY_EXISTS.
    let again = rt
        .block_on(csi.create_volume(create_request(id, &params, "vm1", 64 << 20)))
        .unwrap()
        .into_inner()
        .volume
        .unwrap();
    assert_eq!(again.volume_id, id);
    let other = rt
        .block_on(csi.create_volume(create_request(
            id,
            &[("raidType", "raid1"), ("legs", "2")],
            "vm1",
            64 << 20,
        )))
        .unwrap_err();
    assert_eq!(other.code(), tonic::Code::AlreadyExists, "{other:?}");
    let dev = format!("/dev/mapper/dmraid-{id}");
    if vm.run_ok(&format!("test -b {dev}")).is_err() {
        panic!(
            "no {dev}:\n{}",
            vm.run_ok("dmsetup ls; ls -l /dev/mapper; cat /tmp/node.log")
                .unwrap_or_default()
        );
    }

    // Wait for the initial resync, then the operator's view.
    rt.block_on(wait_for(
        "healthy after the initial resync",
        Duration::from_secs(120),
        || {
            let volumes = volumes.clone();
            async move {
                let v = volumes.get_opt(id).await.ok()??;
                (v.status?.health == "healthy").then_some(())
            }
        },
    ));
    let t = rt
        .block_on(table(&c, "/apis/dmraid.csi.io/v1alpha1/raidvolumes"))
        .unwrap();
    println!("{t}");
    assert!(
        t.contains("vm1") && t.contains("raid5_ls") && t.contains("healthy") && t.contains("100%"),
        "{t}"
    );
    let events = rt.block_on(events_of(&c, id));
    assert!(
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some(dmraid_api::EventReason::ResyncFinished.as_str())),
        "{events:?}\n--- node log ---\n{}",
        vm.run_ok("tail -20 /tmp/node.log").unwrap_or_default()
    );

    // A leg fault: the leg's disk is pulled while a writer runs.
    let show = vm.run_ok(&format!("dmsetup table dmraid-{id}")).unwrap();
    println!("{show}");
    let victim = (0..4)
        .find(|i| {
            let d = vm.disk_dev(*i).unwrap();
            vm.run_ok(&format!(
                "dmsetup deps -o devname dmraid-{id}+d0 | grep -q {}",
                d.trim_start_matches("/dev/")
            ))
            .is_ok()
        })
        .expect("the disk of leg 0");
    let writer = vm.spawn(&format!("while :; do dd if=/dev/urandom of={dev} bs=64k count=4 seek=$((RANDOM % 200)) oflag=direct 2>/dev/null; done"))
        .unwrap();
    let pulled = Instant::now();
    vm.hot_remove_disk(victim).unwrap();
    let warning = rt.block_on(wait_for(
        "a Warning LegFailed event",
        Duration::from_secs(30),
        || {
            let c = c.clone();
            async move {
                events_of(&c, id).await.into_iter().find(|e| {
                    e.reason.as_deref() == Some(dmraid_api::EventReason::LegFailed.as_str())
                })
            }
        },
    ));
    let seen = pulled.elapsed();
    println!(
        "leg fault → Warning event in {seen:?}: {}",
        warning.message.clone().unwrap_or_default()
    );
    assert_eq!(warning.type_.as_deref(), Some("Warning"));
    assert!(
        warning.message.as_deref().unwrap_or("").contains("leg 0"),
        "{warning:?}"
    );
    // The status follows: Degraded (or already rebuilding onto the spare).
    let (health, degraded) = rt.block_on(wait_for(
        "Degraded or rebuilding status",
        Duration::from_secs(10),
        || {
            let volumes = volumes.clone();
            async move {
                let v = volumes.get_opt(id).await.ok()??;
                let degraded = condition(&v, "Degraded");
                let health = v.status?.health;
                (health == "degraded" || health == "rebuilding").then_some((health, degraded))
            }
        },
    ));
    println!("status after the fault: {health}, Degraded condition {degraded:?}");
    assert_eq!(degraded.map(|d| d.0).as_deref(), Some("True"));
    // Healed onto the spare by itself.
    let healed = rt.block_on(async {
        let deadline = Instant::now() + Duration::from_secs(180);
        while Instant::now() < deadline {
            if let Ok(Some(v)) = volumes.get_opt(id).await {
                if let Some(st) = v.status {
                    if st.health == "healthy" && st.legs.iter().all(|l| l.state == "in-sync") {
                        return true;
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        false
    });
    assert!(
        healed,
        "healthy again after the rebuild: not within 180 s; status {:?}\n--- dmsetup ---\n{}\n--- node log ---\n{}",
        rt.block_on(volumes.get_opt(id)).ok().flatten().and_then(|v| v.status),
        vm.run_ok("dmsetup table; dmsetup status").unwrap_or_default(),
        vm.run_ok("tr -d '\\033' < /tmp/node.log | tail -60").unwrap_or_default()
    );
    // Events are written as the monitor sees things happen: wait for the last one.
    let reasons: Vec<String> = rt.block_on(wait_for(
        "a RebuildFinished event",
        Duration::from_secs(30),
        || {
            let c = c.clone();
            async move {
                let r: Vec<String> = events_of(&c, id)
                    .await
                    .into_iter()
                    .filter_map(|e| e.reason)
                    .collect();
                r.iter()
                    .any(|r| r == dmraid_api::EventReason::RebuildFinished.as_str())
                    .then_some(r)
            }
        },
    ));
    println!("events: {reasons:?}");
    assert!(
        reasons
            .iter()
            .any(|r| r == dmraid_api::EventReason::RebuildStarted.as_str()),
        "{reasons:?}"
    );
    let listed = rt
        .block_on(csi.list_volumes(ListVolumesRequest::default()))
        .unwrap()
        .into_inner();
    let cond = listed.entries[0]
        .status
        .clone()
        .unwrap()
        .volume_condition
        .unwrap();
    assert!(
        !cond.abnormal && cond.message.contains("healthy"),
        "{cond:?}"
    );

    // Capacity for the StorageClass on this node, from its RaidNode.
    let cap = rt
        .block_on(
            csi.get_capacity(GetCapacityRequest {
                parameters: params
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                accessible_topology: Some(Topology {
                    segments: [(TOPOLOGY_KEY.to_string(), "vm1".to_string())].into(),
                }),
                ..Default::default()
            }),
        )
        .unwrap()
        .into_inner();
    println!(
        "GetCapacity raid5_ls × 3 on vm1: {}",
        cap.available_capacity
    );
    assert!(
        cap.available_capacity > 64 << 20 && cap.available_capacity < 256 << 20,
        "{cap:?}"
    );

    // Expansion without a size is refused, not grown to some default.
    let sizeless = rt
        .block_on(csi.controller_expand_volume(ControllerExpandVolumeRequest {
            volume_id: id.into(),
            capacity_range: None,
            ..Default::default()
        }))
        .unwrap_err();
    assert_eq!(
        sizeless.code(),
        tonic::Code::InvalidArgument,
        "{sizeless:?}"
    );
    // Expansion: the node grows the array, the filesystem grows on the node.
    let grown = rt
        .block_on(csi.controller_expand_volume(ControllerExpandVolumeRequest {
            volume_id: id.into(),
            capacity_range: Some(CapacityRange {
                required_bytes: 96 << 20,
                limit_bytes: 0,
            }),
            ..Default::default()
        }))
        .unwrap_or_else(|e| {
            panic!(
                "{e:?}\n--- node log ---\n{}",
                vm.run_ok("tail -30 /tmp/node.log").unwrap_or_default()
            )
        })
        .into_inner();
    assert!(
        grown.capacity_bytes >= 96 << 20 && grown.node_expansion_required,
        "{grown:?}"
    );
    let sectors: u64 = vm
        .run_ok(&format!("blockdev --getsz {dev}"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(sectors * 512 >= 96 << 20, "{sectors} sectors");

    // A spec edited by hand to other RAID parameters: a condition says why, nothing destroyed.
    rt.block_on(volumes.patch(
        id,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"raid": {"legs": 4}}})),
    ))
    .unwrap();
    let refused = rt.block_on(wait_for(
        "OperationFailed condition",
        Duration::from_secs(30),
        || {
            let volumes = volumes.clone();
            async move {
                let v = volumes.get_opt(id).await.ok()??;
                condition(&v, "OperationFailed")
            }
        },
    ));
    println!("hand edit refused: {refused:?}");
    assert_eq!(refused.1, dmraid_api::FailureReason::SpecChanged.as_str());
    // Still the array of three legs, in sync once the resync of the grown
    // part is over (the rate policy may retune it meanwhile).
    vm.wait_until(
        &format!("test -b {dev} && dmsetup status dmraid-{id} | grep -q ' 3 AAA .* idle '"),
        Instant::now() + Duration::from_secs(60),
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}\n{}",
            vm.run_ok(&format!(
                "dmsetup status dmraid-{id}; dmsetup table dmraid-{id}; tail -40 /tmp/node.log; true"
            ))
            .unwrap_or_default()
        )
    });
    rt.block_on(volumes.patch(
        id,
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"raid": {"legs": 3}}})),
    ))
    .unwrap();

    // The writer loop goes first (its shell, then its last dd).
    vm.run_ok(&format!(
        "kill -9 {writer} 2>/dev/null; pkill dd; while pgrep -x dd >/dev/null; do sleep 0.2; done"
    ))
    .unwrap();
    vm.run_ok(&format!(
        "while pgrep -f 'of={dev}' >/dev/null; do pkill -f 'of={dev}'; sleep 0.2; done"
    ))
    .unwrap();

    // Every disk of the volume goes away and the node plugin restarts
    // without them: the RaidVolume is reconciled again and again and the
    // array is never made anew on the spare; the disks come back and so
    // does the volume, with its data.
    let want = e2e::raid::write_pattern(&mut vm, &dev, 4).unwrap();
    let legs = e2e::raid::leg_disks(&mut vm, id).unwrap();
    assert_eq!(legs.len(), 3);
    e2e::driver::stop(&mut vm, node_pid).unwrap();
    assert!(
        !vm.run_ok("dmsetup ls").unwrap().contains(id),
        "an orderly stop takes the idle array down: {}",
        vm.run_ok("tail -5 /tmp/node.log").unwrap_or_default()
    );
    for d in &legs {
        vm.hot_remove_disk(*d).unwrap();
    }
    let node_pid = vm.spawn("exec dmraid-csi node --endpoint /run/csi.sock --node-id vm1 --disks '/dev/vd*' --kubeconfig /etc/kubeconfig --monitor-interval 2 2>>/tmp/node.log")
        .unwrap();
    for n in 0..3 {
        rt.block_on(volumes.patch(
            id,
            &PatchParams::default(),
            &Patch::Merge(
                serde_json::json!({"metadata": {"annotations": {"test/poke": n.to_string()}}}),
            ),
        ))
        .unwrap();
        let missing = rt.block_on(wait_for(
            dmraid_api::FailureReason::DisksMissing.as_str(),
            Duration::from_secs(60),
            || {
                let volumes = volumes.clone();
                async move {
                    let v = volumes.get_opt(id).await.ok()??;
                    condition(&v, "Ready")
                        .filter(|c| c.1 == dmraid_api::FailureReason::DisksMissing.as_str())
                }
            },
        ));
        if n == 0 {
            println!("disks away: {missing:?}");
        }
    }
    let spare = vm.run_ok("dmraid-csi disks --disks '/dev/vd*'").unwrap();
    assert!(!spare.contains(id), "made again on the spare:\n{spare}");
    assert!(!vm.run_ok("dmsetup ls").unwrap().contains(id));
    for d in &legs {
        vm.replug_disk(*d).unwrap();
    }
    vm.wait_until(
        &format!("dmsetup status dmraid-{id} | grep -q ' 3 AAA .* idle '"),
        Instant::now() + Duration::from_secs(120),
    )
    .unwrap_or_else(|e| {
        panic!(
            "{e}\n{}",
            vm.run_ok("tail -30 /tmp/node.log").unwrap_or_default()
        )
    });
    let got = e2e::raid::read_md5(&mut vm, &dev, 4).unwrap();
    assert_eq!(got, want, "the same data back");

    // DeleteVolume: the object and the devices are gone.
    rt.block_on(csi.delete_volume(DeleteVolumeRequest {
        volume_id: id.into(),
        ..Default::default()
    }))
    .unwrap_or_else(|e| {
        panic!(
            "{e:?}\n--- node log ---\n{}",
            vm.run_ok("tail -30 /tmp/node.log").unwrap_or_default()
        )
    });
    assert!(rt.block_on(volumes.get_opt(id)).unwrap().is_none());
    let left = vm.run_ok("dmsetup ls").unwrap();
    assert!(!left.contains(id), "devices left: {left}");

    // A node whose plugin is down: CreateVolume for it fails within the
    // controller's timeout and names the node; the object it wrote is
    // withdrawn, so the node makes nothing when it returns.
    let orphan = "pvc-node-removed";
    // (The deleted volume's extents are free once the wiper has zeroed them.)
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match rt.block_on(csi.create_volume(create_request(orphan, &params, "vm1", 32 << 20))) {
            Ok(_) => break,
            Err(e) if e.code() == tonic::Code::ResourceExhausted && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_secs(1))
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    e2e::driver::stop(&mut vm, node_pid).unwrap();
    let quick = Controller::start_with_timeout(&controller_kubeconfig, 10).unwrap();
    let mut quick_csi = rt.block_on(async {
        let ch = dmraid_proto::socket::connect(&quick.socket.display().to_string())
            .await
            .unwrap();
        ControllerClient::new(ch)
    });
    let asked = Instant::now();
    let down = rt
        .block_on(quick_csi.create_volume(create_request(
            "pvc-node-down",
            &params,
            "vm1",
            32 << 20,
        )))
        .unwrap_err();
    println!(
        "node plugin down: {:?} after {:.1?}: {}",
        down.code(),
        asked.elapsed(),
        down.message()
    );
    assert_eq!(down.code(), tonic::Code::DeadlineExceeded, "{down:?}");
    assert!(
        down.message().contains("node vm1 never took it up"),
        "{}",
        down.message()
    );
    assert!(asked.elapsed() < Duration::from_secs(20));
    assert!(
        rt.block_on(volumes.get_opt("pvc-node-down"))
            .unwrap()
            .is_none(),
        "the RaidVolume of a failed create is left for the node to make later"
    );

    // The node is removed from the cluster with its plugin down: deleting a
    // volume on it is reported (NodeGone) and answered at once, not retried
    // forever; the deletion stays recorded on the RaidVolume.
    let cluster_nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(c.clone());
    rt.block_on(cluster_nodes.delete("vm1", &Default::default()))
        .unwrap();
    let asked = Instant::now();
    rt.block_on(quick_csi.delete_volume(DeleteVolumeRequest {
        volume_id: orphan.into(),
        ..Default::default()
    }))
    .unwrap_or_else(|e| panic!("{e:?}\n{}", quick.log_tail(10)));
    println!(
        "DeleteVolume on a removed node answered in {:.1?}",
        asked.elapsed()
    );
    assert!(
        asked.elapsed() < Duration::from_secs(8),
        "it waited for the node"
    );
    let gone = rt.block_on(volumes.get(orphan)).unwrap();
    assert!(gone.metadata.deletion_timestamp.is_some());
    let note = rt.block_on(wait_for("event NodeGone", Duration::from_secs(30), || {
        let c = c.clone();
        async move {
            events_of(&c, orphan)
                .await
                .into_iter()
                .find(|e| e.reason.as_deref() == Some(dmraid_api::EventReason::NodeGone.as_str()))
                .and_then(|e| e.message)
        }
    }));
    println!("NodeGone: {note}");
    assert!(note.contains("node vm1 no longer exists"), "{note}");
    // A node of that name returns with the disks: its plugin carries the
    // deletion out; nothing was made for the failed create.
    // (A new Node object: the plugin needs a token bound to it, as the
    // kubelet of a rejoined node would project.)
    let token = rt
        .block_on(pod_bound_token(&c, "dmraid", "dmraid-csi-node", "vm1"))
        .unwrap();
    let rejoined = server
        .kubeconfig_with_token(&token, true, "node-rejoined")
        .unwrap();
    vm.copy_in(&rejoined, "/etc/kubeconfig").unwrap();
    let node_pid = vm.spawn("exec dmraid-csi node --endpoint /run/csi.sock --node-id vm1 --disks '/dev/vd*' --kubeconfig /etc/kubeconfig --monitor-interval 2 2>>/tmp/node.log")
        .unwrap();
    rt.block_on(wait_for(
        "the removed node's volume torn down when it returns",
        Duration::from_secs(90),
        || {
            let volumes = volumes.clone();
            async move { volumes.get_opt(orphan).await.ok()?.is_none().then_some(()) }
        },
    ));
    let disks = vm.run_ok("dmraid-csi disks --disks '/dev/vd*'").unwrap();
    assert!(
        !disks.contains(orphan) && !disks.contains("pvc-node-down"),
        "{disks}"
    );
    assert!(!vm.run_ok("dmsetup ls").unwrap().contains("pvc-node"));
    drop(quick);
    let _ = node_pid;

    // The controller's call metrics.
    let metrics = Command::new("curl")
        .args([
            "-sf",
            &format!("http://127.0.0.1:{}/metrics", ctl.metrics_port),
        ])
        .output()
        .unwrap();
    let metrics = String::from_utf8_lossy(&metrics.stdout);
    for line in [
        r#"dmraid_grpc_requests_total{service="csi.v1.Controller",method="CreateVolume",code="InvalidArgument"} 1"#,
        r#"dmraid_grpc_requests_total{service="csi.v1.Controller",method="CreateVolume",code="AlreadyExists"} 1"#,
        // the volume, and the three ids that cannot exist
        r#"dmraid_grpc_requests_total{service="csi.v1.Controller",method="DeleteVolume",code="Ok"} 4"#,
        r#"dmraid_grpc_requests_total{service="csi.v1.Controller",method="CreateVolume",code="OutOfRange"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }

    // The API server goes away: UNAVAILABLE with a retryable message, no crash.
    server.stop_apiserver();
    let down = rt
        .block_on(csi.create_volume(create_request("pvc-later", &params, "vm1", 32 << 20)))
        .unwrap_err();
    assert_eq!(down.code(), tonic::Code::Unavailable, "{down:?}");
    println!("API server down: {}", down.message());
    vm.run_ok("dmraid-csi identity --endpoint /run/csi.sock")
        .unwrap();
}
