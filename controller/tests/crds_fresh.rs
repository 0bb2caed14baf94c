//! The chart's CRD YAML must be what `crdgen` makes from the types today.

#[test]
fn chart_crds_match_the_types() {
    // The run-time manifest dir: the target dir is shared between checkouts,
    // and a fresh binary built in another one keeps that one's compile-time path.
    let manifest = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
    let dir = manifest.join("../charts/dmraid-csi/crds");
    for (name, yaml) in dmraid_controller::crds::all() {
        let path = dir.join(name);
        let on_disk =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            on_disk == yaml,
            "{} is stale: run `cargo run -p dmraid-controller --bin crdgen -- --write charts/dmraid-csi/crds`",
            path.display()
        );
    }
}
