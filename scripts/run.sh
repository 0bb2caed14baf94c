#!/usr/bin/env bash
# Runs the driver standalone on its embedded default and shows it working on
# real dm-raid. The host kernel here has no device-mapper, so the driver runs
# inside the test VM (Debian's cloud kernel under QEMU): it creates a raid5
# volume through its CSI socket, mounts it, writes, then loses a disk and
# reports it. On a machine with device-mapper, run the driver directly:
#   dmraid-csi standalone --disks '/dev/disk/by-id/...' --endpoint unix:///run/dmraid-csi/csi.sock
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."
source scripts/env.sh

bash scripts/install.sh >/dev/null
echo "building (release) ..."
cargo build --release --quiet --workspace --bins
exec "$CARGO_TARGET_DIR/release/dmraid-demo"
