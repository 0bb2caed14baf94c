//! The Node service's unit tests: capabilities, request checks, paths.

use super::*;

#[tokio::test]
async fn node_expansion_is_advertised_so_the_kubelet_grows_the_filesystem() {
    use node_service_capability::rpc::Type;
    let svc = NodeService::new("n".into(), None, "/var/lib/kubelet".into());
    let caps = svc
        .node_get_capabilities(Request::new(NodeGetCapabilitiesRequest {}))
        .await
        .unwrap()
        .into_inner()
        .capabilities;
    let has = |t: Type| {
        caps.iter().any(|c| {
            matches!(&c.r#type, Some(node_service_capability::Type::Rpc(r)) if r.r#type == t as i32)
        })
    };
    assert!(has(Type::ExpandVolume) && has(Type::StageUnstageVolume));
}
/// A service rooted at `root/` of a fresh tempdir (with a sibling
/// `outside/`), without device-mapper: every refusal below happens
/// before the volume is looked up.
fn rooted() -> (tempfile::TempDir, NodeService, PathBuf, PathBuf) {
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("root");
    let outside = d.path().join("outside");
    std::fs::create_dir_all(root.join("staging")).unwrap();
    std::fs::create_dir_all(root.join("pods/p")).unwrap();
    std::fs::create_dir(&outside).unwrap();
    let svc = NodeService::new("n".into(), None, root.clone());
    (d, svc, root, outside)
}

fn mount_cap() -> Option<VolumeCapability> {
    Some(VolumeCapability {
        access_type: Some(AccessType::Mount(Default::default())),
        ..Default::default()
    })
}

fn stage(svc: &NodeService, staging: &Path) -> Status {
    run(svc.node_stage_volume(Request::new(NodeStageVolumeRequest {
        volume_id: "v".into(),
        staging_target_path: staging.to_string_lossy().into_owned(),
        volume_capability: mount_cap(),
        ..Default::default()
    })))
    .unwrap_err()
}

/// Run one call to completion (the calls here never reach a device).
fn run<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(f)
}

fn assert_refused(st: &Status, path: &Path, why: &str) {
    assert_eq!(st.code(), tonic::Code::InvalidArgument, "{st:?}");
    assert!(st.message().contains(&*path.to_string_lossy()), "{st:?}");
    assert!(st.message().contains(why), "{st:?}");
}

#[test]
fn a_staging_path_that_is_a_symlink_to_slash_is_refused() {
    let (_d, svc, root, _) = rooted();
    let staging = root.join("staging/v");
    std::os::unix::fs::symlink("/", &staging).unwrap();
    let st = stage(&svc, &staging);
    assert_refused(&st, &staging, "symlink");
    assert!(st.message().starts_with("staging_target_path "), "{st:?}");
}

#[test]
fn a_staging_path_through_a_symlink_out_of_the_root_is_refused() {
    let (_d, svc, root, outside) = rooted();
    std::os::unix::fs::symlink(&outside, root.join("staging/out")).unwrap();
    let staging = root.join("staging/out/v");
    assert_refused(&stage(&svc, &staging), &staging, "not below");
}

#[test]
fn a_publish_target_that_is_a_symlink_out_of_the_root_is_refused() {
    let (_d, svc, root, outside) = rooted();
    let target = root.join("pods/p/vol");
    std::os::unix::fs::symlink(&outside, &target).unwrap();
    let st = run(
        svc.node_publish_volume(Request::new(NodePublishVolumeRequest {
            volume_id: "v".into(),
            staging_target_path: root.join("staging/v").to_string_lossy().into_owned(),
            target_path: target.to_string_lossy().into_owned(),
            volume_capability: mount_cap(),
            ..Default::default()
        })),
    )
    .unwrap_err();
    assert_refused(&st, &target, "symlink");
}

#[test]
fn stats_and_expand_refuse_a_volume_path_outside_the_root() {
    let (_d, svc, root, outside) = rooted();
    let link = root.join("pods/p/vol");
    std::os::unix::fs::symlink(&outside, root.join("pods/p/out")).unwrap();
    std::os::unix::fs::symlink("/", &link).unwrap();
    for path in [outside.clone(), link, root.join("pods/p/out")] {
        let p = path.to_string_lossy().into_owned();
        let st = run(
            svc.node_get_volume_stats(Request::new(NodeGetVolumeStatsRequest {
                volume_id: "v".into(),
                volume_path: p.clone(),
                ..Default::default()
            })),
        )
        .unwrap_err();
        assert_eq!(st.code(), tonic::Code::InvalidArgument, "{path:?}: {st:?}");
        assert!(st.message().starts_with("volume_path "), "{st:?}");
        let st = run(
            svc.node_expand_volume(Request::new(NodeExpandVolumeRequest {
                volume_id: "v".into(),
                volume_path: p,
                ..Default::default()
            })),
        )
        .unwrap_err();
        assert_eq!(st.code(), tonic::Code::InvalidArgument, "{path:?}: {st:?}");
    }
}

#[test]
fn stats_of_a_path_that_is_not_there_is_not_found() {
    let (_d, svc, _, _) = rooted();
    let st = run(
        svc.node_get_volume_stats(Request::new(NodeGetVolumeStatsRequest {
            volume_id: "v".into(),
            volume_path: "some/path".into(),
            ..Default::default()
        })),
    )
    .unwrap_err();
    assert_eq!(st.code(), tonic::Code::NotFound, "{st:?}");
}

#[test]
fn a_path_under_the_root_gets_past_the_path_check() {
    let (_d, svc, root, _) = rooted();
    // No device-mapper here: the next check is the engine's.
    let st = stage(&svc, &root.join("staging/new"));
    assert_eq!(st.code(), tonic::Code::FailedPrecondition, "{st:?}");
}

fn entry(devno: &str, root: &str, fstype: &str, source: &str) -> mount::MountEntry {
    mount::MountEntry {
        devno: devno.into(),
        root: root.into(),
        target: "/var/lib/kubelet/x".into(),
        fstype: fstype.into(),
        source: source.into(),
        options: "rw".into(),
    }
}

#[test]
fn a_mount_of_the_volumes_array_is_the_volume() {
    let m = entry("253:3", "/", "xfs", "/dev/mapper/dmraid-v");
    assert_eq!(judge(&m, false, None, "253:3"), AtPath::This);
}

#[test]
fn another_filesystem_at_the_path_is_named_and_not_the_volume() {
    let m = entry("8:1", "/", "ext4", "/dev/sda1");
    match judge(&m, false, None, "253:3") {
        AtPath::Other(found) => assert!(
            found.contains("/dev/sda1") && found.contains("8:1"),
            "{found}"
        ),
        other => panic!("{other:?}"),
    }
    // A bind of a subdirectory of the same filesystem is not what publish made.
    let sub = entry("253:3", "/data", "xfs", "/dev/mapper/dmraid-v");
    assert!(matches!(
        judge(&sub, false, None, "253:3"),
        AtPath::Other(_)
    ));
}

#[test]
fn a_block_bind_is_judged_by_the_device_node_it_shows() {
    let m = entry("0:5", "/mapper/dmraid-b", "devtmpfs", "udev");
    assert_eq!(judge(&m, true, Some("253:4"), "253:4"), AtPath::This);
    assert!(matches!(
        judge(&m, true, Some("253:9"), "253:4"),
        AtPath::Other(_)
    ));
    // A directory or file bound there instead of a device node.
    match judge(&entry("0:40", "/", "tmpfs", "tmpfs"), true, None, "253:4") {
        AtPath::Other(found) => assert!(found.contains("not a block device"), "{found}"),
        other => panic!("{other:?}"),
    }
}
