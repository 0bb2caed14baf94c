//! Test harness: real kernels in QEMU with real (virtual) disks and fault
//! injection, for every test that touches device-mapper.

pub mod apiserver;
pub mod control_plane;
pub mod controller;
pub mod driver;
pub mod initramfs;
pub mod kube_util;
pub mod kubelet;
pub mod qmp;
pub mod raid;
pub mod vm;

pub use vm::{Output, Vm, VmBuilder, MIB};
