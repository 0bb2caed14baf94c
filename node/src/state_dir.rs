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

#[cfg(test)]
mod tests {
    use super::*;

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
