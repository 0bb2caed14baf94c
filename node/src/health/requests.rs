//! Operator requests to a running driver that CSI has no call for (today:
//! rebuild a leg on demand), passed through the state directory: the CLI
//! writes `requests/rebuild-<vol>.json`, the monitor carries it out on its
//! next round and writes `rebuild-<vol>.result`, which the CLI prints.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A rebuild asked for by the operator.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RebuildRequest {
    /// Volume id.
    pub volume: String,
    /// The leg (None: the first failed or missing one).
    pub leg: Option<u32>,
    /// The disk to rebuild onto (None: the roomiest disk the volume does not use).
    pub disk: Option<PathBuf>,
}

/// What became of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// Whether it was done.
    pub ok: bool,
    /// What happened, in words.
    pub message: String,
}

/// The requests directory under a state directory.
pub fn dir(state_dir: &Path) -> PathBuf {
    state_dir.join("requests")
}

fn check_volume(id: &str) -> Result<(), String> {
    crate::engine::parse_id(id).map(|_| ()).map_err(|_| {
        format!(
            "{id:?} is not a volume id: use {}",
            dmraid_api::ids::VOLUME_ID_RULE
        )
    })
}

/// CLI side: hand the request to the running driver and wait for its outcome.
pub fn submit(state_dir: &Path, req: &RebuildRequest, within: Duration) -> Result<Outcome, String> {
    check_volume(&req.volume)?;
    // The driver holds the lock; if we can take it, nobody will read the request.
    if let Ok(lock) = crate::lock::take(&crate::lock::path(state_dir)) {
        drop(lock);
        return Err(format!(
            "no dmraid-csi driver is running with state directory {} (use `dmraid-csi engine ... rebuild` without a driver)",
            state_dir.display()
        ));
    }
    let d = dir(state_dir);
    std::fs::create_dir_all(&d).map_err(|e| format!("{}: {e}", d.display()))?;
    let result = d.join(format!("rebuild-{}.result", req.volume));
    let _ = std::fs::remove_file(&result);
    let tmp = d.join(format!(".rebuild-{}.tmp", req.volume));
    let body = serde_json::to_vec(req).map_err(|e| e.to_string())?;
    std::fs::write(&tmp, body).map_err(|e| format!("{}: {e}", tmp.display()))?;
    std::fs::rename(&tmp, d.join(format!("rebuild-{}.json", req.volume)))
        .map_err(|e| format!("{}: {e}", d.display()))?;
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Ok(text) = std::fs::read(&result) {
            let _ = std::fs::remove_file(&result);
            return serde_json::from_slice(&text).map_err(|e| format!("{}: {e}", result.display()));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = std::fs::remove_file(d.join(format!("rebuild-{}.json", req.volume)));
    Err(format!(
        "the driver did not answer within {within:?}; its next health round carries out requests (see --monitor-interval)"
    ))
}

/// Driver side: every pending rebuild request (removed as it is read).
pub fn take_rebuilds(state_dir: &Path) -> Vec<RebuildRequest> {
    let Ok(entries) = std::fs::read_dir(dir(state_dir)) else {
        return vec![];
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !(name.starts_with("rebuild-") && name.ends_with(".json")) {
            continue;
        }
        let path = e.path();
        let parsed = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<RebuildRequest>(&b).ok());
        let _ = std::fs::remove_file(&path);
        if let Some(r) = parsed.filter(|r| check_volume(&r.volume).is_ok()) {
            out.push(r);
        }
    }
    out
}

/// Driver side: tell the CLI what became of its request.
pub fn answer(state_dir: &Path, volume: &str, outcome: &Outcome) {
    if check_volume(volume).is_err() {
        return;
    }
    let d = dir(state_dir);
    let tmp = d.join(format!(".rebuild-{volume}.result.tmp"));
    if let Ok(body) = serde_json::to_vec(outcome) {
        if std::fs::write(&tmp, body).is_ok() {
            let _ = std::fs::rename(&tmp, d.join(format!("rebuild-{volume}.result")));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_travels_to_the_driver_and_back() {
        let state = tempfile::tempdir().unwrap();
        let _driver = crate::lock::take(&crate::lock::path(state.path())).unwrap();
        let sp = state.path().to_path_buf();
        let driver = std::thread::spawn(move || loop {
            let reqs = take_rebuilds(&sp);
            if let Some(r) = reqs.first() {
                assert_eq!(r.leg, Some(1));
                answer(
                    &sp,
                    &r.volume,
                    &Outcome {
                        ok: true,
                        message: "rebuilding leg 1".into(),
                    },
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        });
        let req = RebuildRequest {
            volume: "v".into(),
            leg: Some(1),
            disk: None,
        };
        let out = submit(state.path(), &req, Duration::from_secs(10)).unwrap();
        assert!(out.ok && out.message == "rebuilding leg 1");
        driver.join().unwrap();
    }

    #[test]
    fn without_a_driver_the_request_is_refused_at_once() {
        let state = tempfile::tempdir().unwrap();
        let req = RebuildRequest {
            volume: "v".into(),
            leg: None,
            disk: None,
        };
        let e = submit(state.path(), &req, Duration::from_secs(10)).unwrap_err();
        assert!(e.contains("no dmraid-csi driver is running"), "{e}");
        let bad = RebuildRequest {
            volume: "../x".into(),
            leg: None,
            disk: None,
        };
        assert!(submit(state.path(), &bad, Duration::from_secs(1))
            .unwrap_err()
            .contains("not a volume id"));
    }
}
