#!/usr/bin/env bash
# Every test: formatting, lints, unit and property tests, and the suites that
# boot real kernels in QEMU (e2e/). CI runs exactly this (.ci/run).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."
source scripts/env.sh

step() { printf '\n=== %s ===\n' "$*"; }

step "install"
bash scripts/install.sh
step "Go-built test tools (kube-apiserver, etcd, csi-sanity, helm)"
bash scripts/k8s-tools.sh
step "shellcheck"
shellcheck -S warning scripts/*.sh e2e/scripts/*.sh
step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
step "cargo build --release (the VM tests run the release binaries)"
cargo build --release --workspace --bins
step "cargo test --workspace"
cargo test --workspace
step "all tests passed"
