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
# The Go-built tools (kube-apiserver, etcd, the kubelet, csi-sanity, helm,
# the upstream sidecars) build beside the Rust steps below: on a cold cache
# both take tens of minutes, and neither keeps both cores busy all the time.
step "Go-built test tools: started in the background ($DMRAID_CACHE/k8s-tools.log)"
golog="$DMRAID_CACHE/k8s-tools.log"
setsid bash scripts/k8s-tools.sh >"$golog" 2>&1 &
gopid=$!
# A failed Rust step stops the Go builds too.
trap 'kill -- -"$gopid" 2>/dev/null || true' EXIT
step "shellcheck"
shellcheck -S warning scripts/*.sh e2e/scripts/*.sh
step "cargo fmt --check"
cargo fmt --all -- --check
step "cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
step "cargo build --release (the VM tests run the release binaries)"
cargo build --release --workspace --bins
step "cargo test --workspace --no-run (the test binaries, still beside the Go builds)"
cargo test --workspace --no-run
step "Go-built test tools: waiting for them"
if ! wait "$gopid"; then
  cat "$golog"
  echo "k8s-tools.sh failed (log above)" >&2
  exit 1
fi
cat "$golog"
step "cargo test --workspace --doc"
cargo test --workspace --doc
# Every other test binary of `cargo test --workspace`, and the suites that
# touch kernel behaviour (the model against dm-raid, power cuts and the
# crash fix, the driver's crash points, a returned disk's catch-up) again
# on Debian's 6.12 kernel line (README "Kernels"), side by side on the
# machine's cores, the longest first.
step "every test binary, side by side (scripts/suites.sh)"
bash scripts/suites.sh
step "all tests passed"
