//! `RealDisks` over image files and `FakeDisks` over buffers: discovery,
//! I/O, hot-removal.

use super::*;

#[test]
fn real_discover_expands_globs_over_files() {
    let dir = tempfile::tempdir().unwrap();
    for n in ["a.img", "b.img", "c.txt"] {
        let f = std::fs::File::create(dir.path().join(n)).unwrap();
        f.set_len(1 << 20).unwrap();
    }
    let found = RealDisks
        .discover(&[format!("{}/*.img", dir.path().display())])
        .unwrap()
        .disks;
    assert_eq!(found.len(), 2);
    assert_eq!(found[0].size, 1 << 20);
    let mut h = RealDisks.open(&found[0].path).unwrap();
    h.write_all(b"hello").unwrap();
    h.sync_data().unwrap();
    assert_eq!(&std::fs::read(&found[0].path).unwrap()[..5], b"hello");
    assert!(
        RealDisks.discover(&["[".into()]).is_err(),
        "a bad glob is an error"
    );
}

#[test]
fn fake_disks_behave_like_files() {
    let f = FakeDisks::new();
    f.add("/dev/vdb", 4096);
    f.add("/dev/vdc", 4096);
    let found = f.discover(&["/dev/vd[b-z]".into()]).unwrap().disks;
    assert_eq!(found.len(), 2);
    assert!(found.iter().all(|d| f.present(d)));
    let mut h = f.open(Path::new("/dev/vdb")).unwrap();
    h.seek(std::io::SeekFrom::Start(100)).unwrap();
    h.write_all(b"xy").unwrap();
    assert_eq!(&f.bytes("/dev/vdb")[100..102], b"xy");
    f.remove("/dev/vdb");
    assert!(!f.present(&found[0]));
    assert!(f.open(Path::new("/dev/vdb")).is_err());
    // Another disk under the same name is not the one that left.
    f.add("/dev/vdb", 4096);
    assert!(!f.present(&found[0]));
}
