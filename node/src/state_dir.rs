//! The driver's state directory: checked at start-up so a bad path fails
//! at once with its name, never later with a confusing error.

use std::path::{Path, PathBuf};

/// Why the state directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StateDirError {
    /// The path exists and is not a directory.
    #[error("state dir {0} exists and is not a directory; choose another --state-dir")]
    NotADirectory(PathBuf),
    /// The directory cannot be created or written.
    #[error("state dir {path} is not writable: {source}")]
    NotWritable {
        /// The directory.
        path: PathBuf,
        /// What failed.
        source: std::io::Error,
    },
}

/// Create `dir` if needed and prove it writable by creating and removing a probe file.
/// Nothing already in the directory is touched.
pub fn ensure_writable(dir: &Path) -> Result<(), StateDirError> {
    if dir.exists() && !dir.is_dir() {
        return Err(StateDirError::NotADirectory(dir.to_path_buf()));
    }
    let not_writable = |source| StateDirError::NotWritable {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(not_writable)?;
    let probe = dir.join(format!(".write-probe-{}", std::process::id()));
    std::fs::write(&probe, b"").map_err(not_writable)?;
    std::fs::remove_file(&probe).map_err(not_writable)?;
    Ok(())
}

/// Write `spec` as `<dir>/volumes/<id>.yaml` (for people: the disk labels
/// stay the truth). Written aside and renamed, so a reader never sees half a file.
pub fn save_volume<T: serde::Serialize>(dir: &Path, id: &str, spec: &T) -> std::io::Result<()> {
    let vols = dir.join("volumes");
    std::fs::create_dir_all(&vols)?;
    let text = serde_saphyr::to_string(spec).map_err(|e| std::io::Error::other(e.to_string()))?;
    let tmp = vols.join(format!(".{id}.yaml.tmp"));
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, vols.join(format!("{id}.yaml")))
}

/// Read `<dir>/volumes/<id>.yaml`.
pub fn load_volume<T: serde::de::DeserializeOwned>(dir: &Path, id: &str) -> std::io::Result<T> {
    let text = std::fs::read_to_string(dir.join("volumes").join(format!("{id}.yaml")))?;
    serde_saphyr::from_str(&text)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))
}

/// Remove `<dir>/volumes/<id>.yaml`; a missing file is fine.
pub fn forget_volume(dir: &Path, id: &str) -> std::io::Result<()> {
    match std::fs::remove_file(dir.join("volumes").join(format!("{id}.yaml"))) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_specs_round_trip_as_yaml() {
        let dir = tempfile::tempdir().unwrap();
        let p: std::collections::BTreeMap<String, String> = [
            ("raidType".to_string(), "raid6_zr".to_string()),
            ("legs".into(), "5".into()),
        ]
        .into();
        let spec = dmraid_api::RaidSpec::from_parameters(&p).unwrap();
        save_volume(dir.path(), "v1", &spec).unwrap();
        let text = std::fs::read_to_string(dir.path().join("volumes/v1.yaml")).unwrap();
        assert!(text.contains("raidType: raid6_zr"), "{text}");
        assert_eq!(
            load_volume::<dmraid_api::RaidSpec>(dir.path(), "v1").unwrap(),
            spec
        );
        forget_volume(dir.path(), "v1").unwrap();
        forget_volume(dir.path(), "v1").unwrap();
        assert!(load_volume::<dmraid_api::RaidSpec>(dir.path(), "v1").is_err());
    }

    #[test]
    fn a_file_is_not_a_state_dir_and_is_left_intact() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("state");
        std::fs::write(&file, b"keep").unwrap();
        let err = ensure_writable(&file).unwrap_err();
        assert!(err.to_string().contains("is not a directory"), "{err}");
        assert_eq!(std::fs::read(&file).unwrap(), b"keep");
    }

    #[test]
    fn a_missing_dir_is_created() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("a/b");
        ensure_writable(&state).unwrap();
        assert!(state.is_dir());
        assert_eq!(std::fs::read_dir(&state).unwrap().count(), 0);
    }
}
