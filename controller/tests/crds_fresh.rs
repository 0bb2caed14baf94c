//! The chart's CRD YAML must be what `crdgen` makes from the types today.

#[test]
fn chart_crds_match_the_types() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/dmraid-csi/crds");
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
