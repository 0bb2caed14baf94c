//! Unit tests of the health monitor: rounds over an engine on fake disks
//! and a fake device-mapper, and the event-driven `run` loop.

use super::*;
use crate::engine::EngineConfig;
use crate::kernel::disks::FakeDisks;
use crate::kernel::dm::{DeviceMapper, FakeDm};

/// An engine over fake disks `disks` (64 MiB each), all claimed.
fn engine_on(disks: &[&str]) -> (Arc<FakeDm>, FakeDisks, Arc<Engine>) {
    let dm = Arc::new(FakeDm::new());
    let fake = FakeDisks::new();
    for d in disks {
        fake.add(d, 64 << 20);
    }
    let engine = Arc::new(Engine::new(
        dm.clone(),
        Arc::new(fake.clone()),
        EngineConfig {
            node: "n".into(),
            globs: vec!["/dev/vd*".into()],
            wipe: false,
        },
    ));
    engine.claim_disks().unwrap();
    (dm, fake, engine)
}

/// Volume `v`: an 8 MiB raid5_ls over three of the disks, nosync (no
/// initial resync for the rate policy to retune).
fn raid5_v(engine: &Engine) -> crate::engine::VolumeInfo {
    let p: BTreeMap<String, String> = [
        ("raidType".to_string(), "raid5_ls".to_string()),
        ("sync".to_string(), "nosync".to_string()),
    ]
    .into();
    let spec = dmraid_api::RaidSpec::from_parameters(&p).unwrap();
    engine.create_volume("v", &spec, 8 << 20).unwrap()
}

/// An 8 MiB raid1 volume `id` on `legs` legs, nosync.
fn nosync_raid1(engine: &Engine, id: &str, legs: &str) -> crate::engine::VolumeInfo {
    let p: BTreeMap<String, String> = [
        ("raidType".to_string(), "raid1".to_string()),
        ("legs".to_string(), legs.to_string()),
        ("sync".to_string(), "nosync".to_string()),
    ]
    .into();
    let spec = dmraid_api::RaidSpec::from_parameters(&p).unwrap();
    engine.create_volume(id, &spec, 8 << 20).unwrap()
}

fn config(auto_rebuild: bool, interval: Duration) -> MonitorConfig {
    MonitorConfig {
        rebuild_delay: Duration::ZERO,
        rate: crate::health::rate::RatePolicy::default(),
        auto_rebuild,
        interval,
        scrub_every: None,
        state_dir: None,
    }
}

/// [`run`] on its own thread with a 600 s interval (only events wake it).
fn spawn_run(
    engine: &Arc<Engine>,
) -> (
    std::thread::JoinHandle<()>,
    Arc<AtomicBool>,
    tokio::sync::mpsc::UnboundedReceiver<Notice>,
) {
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let stop = Arc::new(AtomicBool::new(false));
    let (engine, flag) = (engine.clone(), stop.clone());
    let cfg = config(false, Duration::from_secs(600));
    let worker = std::thread::spawn(move || run(engine, cfg, flag, None, Some(tx)));
    (worker, stop, rx)
}

/// Stop a [`spawn_run`] monitor: set the flag and keep waking it (an
/// event raised before its next arm is absorbed) until it is gone.
fn stop_run(dm: &FakeDm, worker: std::thread::JoinHandle<()>, stop: &AtomicBool) {
    stop.store(true, Ordering::SeqCst);
    while !worker.is_finished() {
        dm.raise_event();
        std::thread::sleep(Duration::from_millis(5));
    }
    worker.join().unwrap();
}

#[test]
fn volumes_with_no_redundancy_left_are_rebuilt_first() {
    let (dm, _disks, engine) =
        engine_on(&["/dev/vdb", "/dev/vdc", "/dev/vdd", "/dev/vde", "/dev/vdf"]);
    let raid1 = |id: &str, legs: &str| {
        nosync_raid1(&engine, id, legs);
    };
    // "a" keeps a mirror after losing one; "z" (later in every order
    // but this one) has none left.
    raid1("a", "3");
    raid1("z", "2");
    let cfg = config(true, Duration::from_millis(1));
    let mut st = RoundState::default();
    round(&engine, &cfg, &mut st, None, None);
    dm.set_status("dmraid-a", "raid1 3 ADA 16384/16384 idle 0");
    dm.set_status("dmraid-z", "raid1 2 AD 16384/16384 idle 0");
    let before = dm.log().len();
    round(&engine, &cfg, &mut st, None, None);
    let arrays: Vec<String> = dm.log()[before..]
        .iter()
        .filter(|l| *l == "load dmraid-a" || *l == "load dmraid-z")
        .cloned()
        .collect();
    assert_eq!(
        arrays.first().map(String::as_str),
        Some("load dmraid-z"),
        "{arrays:?}"
    );
    for id in ["dmraid-a", "dmraid-z"] {
        assert!(
            dm.loads(id).iter().any(|t| t.contains(" rebuild ")),
            "{id}: {:?}",
            dm.loads(id)
        );
    }
}

#[test]
fn a_lost_leg_is_rebuilt_onto_a_spare_and_reaped_when_in_sync() {
    let (dm, disks, engine) = engine_on(&["/dev/vdb", "/dev/vdc", "/dev/vdd"]);
    let old = raid5_v(&engine).legs[1].disk.clone().unwrap();
    let cfg = config(true, Duration::from_millis(1));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut st = RoundState::default();
    round(&engine, &cfg, &mut st, None, Some(&tx));
    dm.set_status("dmraid-v", "raid5_ls 3 ADA 8192/8192 idle 0");
    round(&engine, &cfg, &mut st, None, Some(&tx));
    let last = &st.last;
    assert!(last["v"].contains("failed"), "{last:?}");
    assert!(
        last["rebuild:v"].contains("no room"),
        "no spare yet: {last:?}"
    );
    let mut reasons = Vec::new();
    while let Ok(n) = rx.try_recv() {
        if let Notice::Event(v, e) = n {
            assert_eq!(v, "v");
            reasons.push(e.reason);
        }
    }
    assert_eq!(reasons, ["LegFailed", "RebuildBlocked"]);
    // The operator adds a disk: the next round claims it and rebuilds onto it.
    disks.add("/dev/vde", 64 << 20);
    round(&engine, &cfg, &mut st, None, Some(&tx));
    let v = engine.volume("v").unwrap();
    let started: Vec<_> = std::iter::from_fn(|| rx.try_recv().ok())
        .filter_map(|n| match n {
            Notice::Event(_, e) if e.reason == "RebuildStarted" => Some(e.message),
            _ => None,
        })
        .collect();
    assert_eq!(
        started,
        ["rebuilding raid5_ls leg 1 onto /dev/vde"],
        "{:?}",
        st.last
    );
    assert_eq!(
        v.legs[1].disk.as_deref(),
        Some(std::path::Path::new("/dev/vde"))
    );
    assert!(dm.table("dmraid-v").unwrap()[0].params.contains("3 "));
    // In sync (the fake reports healthy after the swap): the old extents are wiped and freed.
    round(&engine, &cfg, &mut st, None, Some(&tx));
    engine.wipe_pending().unwrap();
    let free: u64 = engine
        .disks()
        .iter()
        .filter(|d| d.0 == old)
        .map(|d| d.2)
        .sum();
    assert!(
        free > 60 << 20,
        "old leg freed on {}: {free}",
        old.display()
    );
}

#[test]
fn a_lost_leg_waits_for_its_disk_while_the_volume_keeps_redundancy_and_not_once_it_has_none() {
    let (dm, _disks, engine) =
        engine_on(&["/dev/vdb", "/dev/vdc", "/dev/vdd", "/dev/vde", "/dev/vdf"]);
    let p: BTreeMap<String, String> = [("raidType".to_string(), "raid6_zr".to_string())].into();
    let spec = dmraid_api::RaidSpec::from_parameters(&p).unwrap();
    let before = engine.create_volume("v", &spec, 8 << 20).unwrap().legs;
    let mut cfg = config(true, Duration::from_secs(10));
    cfg.rebuild_delay = Duration::from_secs(3600);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut st = RoundState::default();
    round(&engine, &cfg, &mut st, None, Some(&tx));
    // One leg lost: raid6 still survives one more, so it waits.
    dm.set_status("dmraid-v", "raid6_zr 4 ADAA 8192/8192 idle 0");
    round(&engine, &cfg, &mut st, None, Some(&tx));
    round(&engine, &cfg, &mut st, None, Some(&tx));
    let reasons = |rx: &mut tokio::sync::mpsc::UnboundedReceiver<Notice>| {
        std::iter::from_fn(|| rx.try_recv().ok())
            .filter_map(|n| match n {
                Notice::Event(_, e) => Some(e.reason),
                _ => None,
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(reasons(&mut rx), ["LegFailed", "RebuildDelayed"]);
    assert_eq!(
        engine.volume("v").unwrap().legs,
        before,
        "nothing replaced yet"
    );
    assert!(
        st.wake_in.is_some_and(|w| w <= Duration::from_secs(3600)),
        "the round asks to wake when the delay ends: {:?}",
        st.wake_in
    );
    // A second leg lost: no redundancy left, the spare is taken at once.
    dm.set_status("dmraid-v", "raid6_zr 4 ADDA 8192/8192 idle 0");
    round(&engine, &cfg, &mut st, None, Some(&tx));
    let after = reasons(&mut rx);
    assert!(after.contains(&EventReason::RebuildStarted), "{after:?}");
    assert_ne!(engine.volume("v").unwrap().legs, before);
}

#[test]
fn with_auto_rebuild_off_nothing_is_replaced() {
    let (dm, _disks, engine) = engine_on(&["/dev/vdb", "/dev/vdc", "/dev/vdd", "/dev/vde"]);
    raid5_v(&engine);
    let before = engine.volume("v").unwrap().legs;
    dm.set_status("dmraid-v", "raid5_ls 3 ADA 8192/8192 idle 0");
    let mut st = RoundState::default();
    round(
        &engine,
        &config(false, Duration::from_millis(1)),
        &mut st,
        None,
        None,
    );
    assert_eq!(engine.volume("v").unwrap().legs, before);
    assert!(st.last["v"].contains("failed"));
}

#[test]
fn a_leg_failing_while_a_round_reads_wakes_the_next_round_at_once() {
    let (dm, _disks, engine) = engine_on(&["/dev/vdb", "/dev/vdc", "/dev/vdd"]);
    raid5_v(&engine);
    // The first round reads a healthy array; the leg fails (and the
    // kernel raises its event) just after.
    dm.change_after_read("dmraid-v", "raid5_ls 3 ADA 8192/8192 idle 0");
    // The interval (600 s) is far longer than the wait below: only the
    // event can wake it.
    let (worker, stop, mut rx) = spawn_run(&engine);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut rounds = 0;
    let failed = loop {
        match rx.try_recv() {
            Ok(Notice::Event(v, e)) if e.reason == "LegFailed" => break Some(v),
            Ok(Notice::Round) => rounds += 1,
            Ok(_) => {}
            Err(_) if std::time::Instant::now() > deadline => break None,
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    };
    stop_run(&dm, worker, &stop);
    assert_eq!(
        failed.as_deref(),
        Some("v"),
        "the failure was not seen before the 600 s round ({rounds} rounds ran)"
    );
    assert_eq!(rounds, 1, "seen in the round the event woke");
}

#[test]
fn a_storm_of_events_is_held_to_a_few_rounds_a_second() {
    let (dm, _disks, engine) = engine_on(&[]);
    let (worker, stop, mut rx) = spawn_run(&engine);
    let until = std::time::Instant::now() + Duration::from_secs(1);
    while std::time::Instant::now() < until {
        dm.raise_event();
        std::thread::sleep(Duration::from_millis(1));
    }
    stop_run(&dm, worker, &stop);
    let rounds = std::iter::from_fn(|| rx.try_recv().ok())
        .filter(|n| *n == Notice::Round)
        .count();
    // Woken by the events (the interval is 600 s), at most
    // ROUNDS_PER_SECOND a second, plus the last (woken to stop).
    assert!(
        (2..=ROUNDS_PER_SECOND + 2).contains(&rounds),
        "{rounds} rounds in 1 s"
    );
}

/// A create not yet finished (here its array's load failed, so its record
/// still says in flight) is neither reported nor acted on: no "array is
/// not active" condition or Event for a volume no one was told of.
#[test]
fn a_create_in_flight_is_not_reported() {
    let (dm, _disks, engine) = engine_on(&["/dev/vdb", "/dev/vdc", "/dev/vdd"]);
    dm.fail_next("load dmraid-v");
    let p: BTreeMap<String, String> = [("raidType".to_string(), "raid5_ls".to_string())].into();
    let spec = dmraid_api::RaidSpec::from_parameters(&p).unwrap();
    assert!(engine.create_volume("v", &spec, 8 << 20).is_err());
    assert!(engine.volume("v").unwrap().creating);
    let cfg = config(true, Duration::from_millis(1));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut st = RoundState::default();
    round(&engine, &cfg, &mut st, None, Some(&tx));
    assert!(!st.last.contains_key("v"), "{:?}", st.last);
    let told: Vec<Notice> = std::iter::from_fn(|| rx.try_recv().ok())
        .filter(|n| *n != Notice::Round)
        .collect();
    assert!(told.is_empty(), "{told:?}");
    // Retried, it is made and reported.
    engine.create_volume("v", &spec, 8 << 20).unwrap();
    round(&engine, &cfg, &mut st, None, Some(&tx));
    assert!(st.last.contains_key("v"), "{:?}", st.last);
}

/// A round woken by a device-mapper event alone (a table loaded, a create
/// or delete) does not list the disks, unless the last listing is an
/// interval old; one woken by a disk added or removed, or run by hand,
/// does.
#[test]
fn only_a_disk_event_or_the_interval_lists_the_disks() {
    use crate::kernel::dm::Wake;
    let (_dm, disks, engine) = engine_on(&["/dev/vdb", "/dev/vdc"]);
    let cfg = config(false, Duration::from_secs(600));
    let mut st = RoundState::default();
    round(&engine, &cfg, &mut st, None, None);
    let claims = engine.claim_count();
    disks.add("/dev/vdd", 64 << 20);
    st.woken_by = Some(Wake::Device);
    round(&engine, &cfg, &mut st, None, None);
    st.woken_by = Some(Wake::Timeout);
    round(&engine, &cfg, &mut st, None, None);
    assert_eq!(engine.claim_count(), claims, "listed on a device event");
    st.woken_by = Some(Wake::Disk);
    round(&engine, &cfg, &mut st, None, None);
    assert_eq!(engine.claim_count(), claims + 1, "/dev/vdd not claimed");
    disks.add("/dev/vde", 64 << 20);
    st.woken_by = Some(Wake::Device);
    st.disks_listed = Some(std::time::Instant::now() - Duration::from_secs(601));
    round(&engine, &cfg, &mut st, None, None);
    assert_eq!(engine.claim_count(), claims + 2, "/dev/vde not claimed");
    disks.add("/dev/vdf", 64 << 20);
    st.woken_by = None;
    round(&engine, &cfg, &mut st, None, None);
    assert_eq!(engine.claim_count(), claims + 3, "/dev/vdf not claimed");
}

/// A volume a delete is taking apart (its array already gone) is not
/// reported as "not active"; once the delete has given up, it is.
#[test]
fn a_volume_being_deleted_is_not_reported() {
    let (dm, _disks, engine) = engine_on(&["/dev/vdb", "/dev/vdc", "/dev/vdd"]);
    raid5_v(&engine);
    let cfg = config(false, Duration::from_secs(600));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut st = RoundState::default();
    round(&engine, &cfg, &mut st, None, Some(&tx));
    let healthy = st.last.get("v").cloned().expect("v reported");
    while rx.try_recv().is_ok() {}
    let deleting = engine.mark_deleting("v");
    dm.remove("dmraid-v").unwrap();
    round(&engine, &cfg, &mut st, None, Some(&tx));
    assert_eq!(st.last.get("v"), Some(&healthy));
    let told: Vec<Notice> = std::iter::from_fn(|| rx.try_recv().ok())
        .filter(|n| *n != Notice::Round)
        .collect();
    assert!(told.is_empty(), "{told:?}");
    drop(deleting);
    round(&engine, &cfg, &mut st, None, Some(&tx));
    assert_ne!(st.last.get("v"), Some(&healthy), "{:?}", st.last);
}

#[test]
fn a_round_reports_the_volumes_that_lost_a_disk_before_the_others() {
    let (dm, disks, engine) = engine_on(&["/dev/vdb", "/dev/vdc", "/dev/vdd", "/dev/vde"]);
    let raid1 = |id: &str, legs: &str| nosync_raid1(&engine, id, legs);
    // "a" comes first in the volumes' order; "z" has a leg on a disk "a"
    // does not use.
    let a = raid1("a", "2");
    let z = raid1("z", "3");
    let pulled = z
        .legs
        .iter()
        .filter_map(|l| l.disk.clone())
        .find(|d| !a.legs.iter().any(|l| l.disk.as_ref() == Some(d)))
        .unwrap();
    let cfg = config(false, Duration::from_millis(1));
    let mut st = RoundState::default();
    round(&engine, &cfg, &mut st, None, None);
    // In the same round "a" has news of its own (a check started), and
    // "z" lost a disk.
    dm.set_status("dmraid-a", "raid1 2 AA 100/16384 check 0");
    disks.remove(&pulled.display().to_string());
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    round(&engine, &cfg, &mut st, None, Some(&tx));
    let mut order: Vec<String> = Vec::new();
    while let Ok(n) = rx.try_recv() {
        if let Notice::Changed(id) | Notice::Event(id, _) = n {
            if !order.contains(&id) {
                order.push(id);
            }
        }
    }
    assert_eq!(order, ["z", "a"]);
}

#[test]
fn a_round_replaces_legs_for_as_long_as_it_reported_and_at_least_a_second() {
    use super::act::act_budget;
    assert_eq!(
        act_budget(Duration::from_millis(30)),
        Duration::from_secs(1)
    );
    assert_eq!(act_budget(Duration::from_secs(6)), Duration::from_secs(6));
}
