//! Where the Node service may mount: every staging, target and volume path
//! a request names is resolved against the allowed root (the kubelet's
//! directory, `--paths-under`) before anything is created or mounted there.
//! mount(2) follows symlinks, so a text check alone would let a symlink
//! under the root mount a volume over `/` or anywhere else. This module only
//! reads the filesystem (lstat, realpath, readlink).

use std::path::{Component, Path, PathBuf};

/// Why a request's path is refused. The messages read after the field's
/// name ("staging_target_path ...").
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    /// No path given.
    #[error("is required")]
    Empty,
    /// A relative path, or one with `..`.
    #[error("{0:?} must be an absolute path without '..'")]
    NotPlain(PathBuf),
    /// The path (through its symlinks) is not below the allowed root.
    #[error("{path:?} resolves to {resolved:?}, which is not below {root:?}; use a real directory under {root:?}")]
    Outside {
        /// As the request named it.
        path: PathBuf,
        /// With every symlink resolved.
        resolved: PathBuf,
        /// The allowed root, resolved.
        root: PathBuf,
    },
    /// The path itself is a symlink: mounting on it would mount on whatever
    /// it points to, which can change after the check.
    #[error(
        "{path:?} is a symlink (to {to:?}); it must be a real directory or file, or not exist yet"
    )]
    Symlink {
        /// As the request named it.
        path: PathBuf,
        /// The link's text.
        to: PathBuf,
    },
    /// A component could not be resolved (a dangling symlink on the way, no permission).
    #[error("{path:?} cannot be resolved: {source}")]
    Unresolvable {
        /// The path, or the part of it that failed.
        path: PathBuf,
        /// What the kernel said.
        source: std::io::Error,
    },
}

/// The real path of `p` when it lies strictly below `root`: every symlink
/// in the part of `p` that exists is resolved (and must not lead out of
/// `root`, itself resolved), the part that does not exist yet is kept as
/// written (it will be created as real directories), and an existing final
/// component must not be a symlink. Mount on the returned path, not on `p`.
pub fn confine(root: &Path, p: &Path) -> Result<PathBuf, PathError> {
    if p.as_os_str().is_empty() {
        return Err(PathError::Empty);
    }
    if !p.is_absolute() || p.components().any(|c| c == Component::ParentDir) {
        return Err(PathError::NotPlain(p.to_path_buf()));
    }
    let root = resolve(root).map_err(|source| PathError::Unresolvable {
        path: root.to_path_buf(),
        source,
    })?;
    if let Ok(meta) = std::fs::symlink_metadata(p) {
        if meta.file_type().is_symlink() {
            let to = std::fs::read_link(p).unwrap_or_default();
            return Err(PathError::Symlink {
                path: p.to_path_buf(),
                to,
            });
        }
    }
    let resolved = resolve(p).map_err(|source| PathError::Unresolvable {
        path: p.to_path_buf(),
        source,
    })?;
    if resolved == root || !resolved.starts_with(&root) {
        return Err(PathError::Outside {
            path: p.to_path_buf(),
            resolved,
            root,
        });
    }
    Ok(resolved)
}

/// `p` with its longest existing prefix canonicalized and the rest (names
/// that do not exist yet) appended as written. `p` is absolute, without `..`.
fn resolve(p: &Path) -> std::io::Result<PathBuf> {
    let parts: Vec<Component> = p.components().collect();
    // `/` always exists, so some prefix does.
    let existing = (1..=parts.len())
        .rev()
        .find(|&n| std::fs::symlink_metadata(parts[..n].iter().collect::<PathBuf>()).is_ok())
        .unwrap_or(1);
    let real = parts[..existing]
        .iter()
        .collect::<PathBuf>()
        .canonicalize()?;
    Ok(parts[existing..].iter().fold(real, |acc, c| acc.join(c)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// A root directory `root` and a sibling `outside` in a fresh tempdir.
    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().join("root");
        let outside = d.path().join("outside");
        std::fs::create_dir_all(root.join("staging")).unwrap();
        std::fs::create_dir(&outside).unwrap();
        (d, root, outside)
    }

    #[test]
    fn a_symlink_to_slash_is_refused() {
        let (_d, root, _) = setup();
        let p = root.join("staging/v");
        symlink("/", &p).unwrap();
        let e = confine(&root, &p).unwrap_err();
        assert!(matches!(e, PathError::Symlink { .. }), "{e}");
        assert!(e.to_string().contains("symlink"), "{e}");
        assert!(e.to_string().contains(&*p.to_string_lossy()), "{e}");
    }

    #[test]
    fn a_symlink_to_a_directory_outside_the_root_is_refused() {
        let (_d, root, outside) = setup();
        let p = root.join("staging/v");
        symlink(&outside, &p).unwrap();
        assert!(matches!(
            confine(&root, &p).unwrap_err(),
            PathError::Symlink { .. }
        ));
    }

    #[test]
    fn a_symlink_as_the_final_component_is_refused_even_inside_the_root() {
        let (_d, root, _) = setup();
        let p = root.join("pods-link");
        symlink(root.join("staging"), &p).unwrap();
        assert!(matches!(
            confine(&root, &p).unwrap_err(),
            PathError::Symlink { .. }
        ));
    }

    #[test]
    fn a_dangling_symlink_as_the_final_component_is_refused() {
        let (_d, root, outside) = setup();
        let p = root.join("staging/v");
        symlink(outside.join("not-yet"), &p).unwrap();
        assert!(matches!(
            confine(&root, &p).unwrap_err(),
            PathError::Symlink { .. }
        ));
    }

    #[test]
    fn a_symlink_in_a_middle_component_that_leads_out_is_refused() {
        let (_d, root, outside) = setup();
        symlink(&outside, root.join("pods")).unwrap();
        let p = root.join("pods/p/vol");
        let e = confine(&root, &p).unwrap_err();
        match &e {
            PathError::Outside { resolved, .. } => {
                assert_eq!(resolved, &outside.canonicalize().unwrap().join("p/vol"))
            }
            other => panic!("{other}"),
        }
        assert!(e.to_string().contains("not below"), "{e}");
    }

    #[test]
    fn a_middle_symlink_to_slash_is_refused() {
        let (_d, root, _) = setup();
        symlink("/", root.join("pods")).unwrap();
        let e = confine(&root, &root.join("pods/tmp")).unwrap_err();
        assert!(matches!(e, PathError::Outside { .. }), "{e}");
    }

    #[test]
    fn a_middle_symlink_that_stays_inside_the_root_resolves_to_the_real_path() {
        let (_d, root, _) = setup();
        symlink(root.join("staging"), root.join("st")).unwrap();
        assert_eq!(
            confine(&root, &root.join("st/v")).unwrap(),
            root.canonicalize().unwrap().join("staging/v")
        );
    }

    #[test]
    fn a_dangling_middle_symlink_is_refused() {
        let (_d, root, outside) = setup();
        symlink(outside.join("gone"), root.join("pods")).unwrap();
        let e = confine(&root, &root.join("pods/p/vol")).unwrap_err();
        assert!(matches!(e, PathError::Unresolvable { .. }), "{e}");
    }

    #[test]
    fn dot_dot_and_relative_paths_are_refused() {
        let (_d, root, _) = setup();
        for p in [
            root.join("staging/../../outside"),
            root.join("staging/.."),
            PathBuf::from("staging/v"),
        ] {
            assert!(
                matches!(confine(&root, &p).unwrap_err(), PathError::NotPlain(_)),
                "{p:?}"
            );
        }
        assert!(matches!(
            confine(&root, Path::new("")).unwrap_err(),
            PathError::Empty
        ));
    }

    #[test]
    fn the_root_itself_and_paths_beside_it_are_refused() {
        let (_d, root, outside) = setup();
        assert!(matches!(
            confine(&root, &root).unwrap_err(),
            PathError::Outside { .. }
        ));
        assert!(matches!(
            confine(&root, &outside.join("v")).unwrap_err(),
            PathError::Outside { .. }
        ));
        // A name that merely starts with the root's name is beside it.
        let beside = PathBuf::from(format!("{}-x/v", root.display()));
        assert!(matches!(
            confine(&root, &beside).unwrap_err(),
            PathError::Outside { .. }
        ));
    }

    #[test]
    fn a_path_that_does_not_exist_yet_under_the_root_is_fine() {
        let (_d, root, _) = setup();
        assert_eq!(
            confine(&root, &root.join("staging/new/deeper")).unwrap(),
            root.canonicalize().unwrap().join("staging/new/deeper")
        );
    }

    #[test]
    fn an_existing_directory_and_file_under_the_root_are_fine() {
        let (_d, root, _) = setup();
        let dir = root.join("staging");
        assert_eq!(confine(&root, &dir).unwrap(), dir.canonicalize().unwrap());
        let file = root.join("staging/blk");
        std::fs::write(&file, b"").unwrap();
        assert_eq!(confine(&root, &file).unwrap(), file.canonicalize().unwrap());
    }

    #[test]
    fn a_root_behind_a_symlink_or_not_there_yet_still_confines() {
        let (d, root, _) = setup();
        // The kubelet's directory may itself be a symlink (e.g. to a data disk).
        let link = d.path().join("kubelet");
        symlink(&root, &link).unwrap();
        assert_eq!(
            confine(&link, &link.join("staging/v")).unwrap(),
            root.canonicalize().unwrap().join("staging/v")
        );
        let absent = d.path().join("absent");
        assert_eq!(
            confine(&absent, &absent.join("staging/v")).unwrap(),
            d.path().canonicalize().unwrap().join("absent/staging/v")
        );
    }
}
