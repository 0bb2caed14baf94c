//! Test harness: real kernels in QEMU with real (virtual) disks and fault
//! injection, for every test that touches device-mapper.

pub mod apiserver;
pub mod chart;
pub mod control_plane;
pub mod controller;
pub mod driver;
pub mod initramfs;
pub mod kube_util;
pub mod kubectl;
pub mod kubelet;
pub mod qmp;
pub mod raid;
pub mod vm;

pub use vm::{Output, Vm, VmBuilder, MIB};

/// The checkout this code runs from (the workspace root). Read at run time:
/// cargo's target dir is shared between checkouts (it lives in
/// $DMRAID_CACHE), and an up-to-date binary built in another checkout keeps
/// that checkout's compile-time `CARGO_MANIFEST_DIR`. Outside cargo, the
/// compile-time path is the fallback.
pub fn repo_root() -> std::path::PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into())
        .join("..")
}
