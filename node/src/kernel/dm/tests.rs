//! Unit tests of `activate`, `reload` and `remove_if_present` on the fake,
//! of the fake itself, and of how an ioctl error reads.

use super::*;

fn linear(len: u64) -> Vec<Target> {
    vec![Target::new(0, len, "linear", "8:16 2048")]
}

#[test]
fn activate_creates_loads_and_resumes_once() {
    let dm = FakeDm::new();
    let info = activate(&dm, "v-meta0", Some("DMRAID-v-meta0"), &linear(8)).unwrap();
    assert!(info.live_table);
    assert_eq!(dm.table("v-meta0").unwrap(), linear(8));
    assert_eq!(
        dm.log(),
        ["create v-meta0", "load v-meta0", "resume v-meta0"]
    );
    // The same table again: nothing to do.
    activate(&dm, "v-meta0", None, &linear(8)).unwrap();
    assert_eq!(dm.log().len(), 3);
}

#[test]
fn activate_finishes_a_half_done_create() {
    let dm = FakeDm::new();
    dm.fail_next("load v-data0");
    assert!(activate(&dm, "v-data0", None, &linear(16)).is_err());
    // The device exists without a table; a second run completes it.
    assert!(!dm.info("v-data0").unwrap().unwrap().live_table);
    activate(&dm, "v-data0", None, &linear(16)).unwrap();
    assert_eq!(dm.table("v-data0").unwrap(), linear(16));
}

#[test]
fn activate_replaces_a_different_live_table() {
    let dm = FakeDm::new();
    activate(&dm, "v", None, &linear(8)).unwrap();
    activate(&dm, "v", None, &linear(16)).unwrap();
    assert_eq!(dm.table("v").unwrap(), linear(16));
}

#[test]
fn reload_suspends_between_load_and_resume() {
    let dm = FakeDm::new();
    activate(&dm, "v", None, &linear(8)).unwrap();
    reload(&dm, "v", &linear(24)).unwrap();
    let log = dm.log();
    assert_eq!(&log[log.len() - 3..], ["load v", "suspend v", "resume v"]);
    assert_eq!(dm.table("v").unwrap(), linear(24));
}

#[test]
fn remove_if_present_is_idempotent_but_refuses_open_devices() {
    let dm = FakeDm::new();
    remove_if_present(&dm, "absent").unwrap();
    activate(&dm, "v", None, &linear(8)).unwrap();
    dm.set_open("v", true);
    assert!(remove_if_present(&dm, "v").is_err());
    dm.set_open("v", false);
    remove_if_present(&dm, "v").unwrap();
    assert!(dm.info("v").unwrap().is_none());
}

#[test]
fn fake_raid_status_defaults_to_all_legs_in_sync() {
    let dm = FakeDm::new();
    let raid = vec![Target::new(
        0,
        1024,
        "raid",
        "raid5_ls 3 128 region_size 1024 3 1:1 1:2 1:3 1:4 1:5 1:6",
    )];
    activate(&dm, "r", None, &raid).unwrap();
    let st = dm.status("r").unwrap();
    // In sectors of one leg, as the kernel counts (two data legs here).
    assert_eq!(st[0].params, "raid5_ls 3 AAA 512/512 idle 0 0 -");
    dm.set_status("r", "raid5_ls 3 ADA 1024/1024 idle 0 0 -");
    assert_eq!(
        dm.status("r").unwrap()[0].params,
        "raid5_ls 3 ADA 1024/1024 idle 0 0 -"
    );
}

#[test]
fn bad_names_are_refused() {
    let dm = FakeDm::new();
    assert!(matches!(dm.create("a/b", None), Err(DmError::BadName(_))));
    assert!(matches!(
        dm.create(&"x".repeat(200), None),
        Err(DmError::BadName(_))
    ));
}

#[test]
fn an_ioctl_dump_becomes_words() {
    let raw = "DM Core error: low-level ioctl error due to nix error; header result: Some(DeviceInfo { version: Version { major: 4, minor: 47, patch: 0 }, data_size: 16384, flags: DmFlags(0x0) }), error: EINVAL: Invalid argument";
    assert_eq!(
        super::ioctl_words(raw),
        "EINVAL: Invalid argument; the kernel's reason is in dmesg"
    );
    assert_eq!(super::ioctl_words("plain"), "plain");
}

/// The contract the kernel is held to in the VM (`--test dm_contract`)
/// holds for the fake too.
#[test]
fn the_fake_keeps_the_kernels_contract() {
    let dm = FakeDm::new();
    let held = super::contract::run(&dm, "8:16").unwrap();
    assert!(held.len() >= 20, "{held:?}");
}
