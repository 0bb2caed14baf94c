#!/usr/bin/env bash
# Runs the driver standalone on its embedded default and shows it answering.
# The host kernel here has no device-mapper, so the real RAID volume demo runs
# inside the test VM once the node engine lands; today this starts the
# standalone driver on a socket and asks it who it is.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."
source scripts/env.sh

bash scripts/install.sh >/dev/null
cargo build --release --quiet -p dmraid-node
bin="$CARGO_TARGET_DIR/release/dmraid-csi"
work="$(mktemp -d)"
trap 'kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"' EXIT

"$bin" standalone --endpoint "unix://$work/csi.sock" --state-dir "$work/state" --node-id "$(hostname)" &
pid=$!
for _ in $(seq 1 100); do [ -S "$work/csi.sock" ] && break; sleep 0.05; done
echo "--- dmraid-csi identity --endpoint unix://$work/csi.sock"
"$bin" identity --endpoint "unix://$work/csi.sock"
