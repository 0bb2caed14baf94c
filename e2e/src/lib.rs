//! Test harness: real kernels in QEMU, real API servers.
