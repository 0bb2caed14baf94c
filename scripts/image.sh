#!/usr/bin/env bash
# Builds the driver's container image here, without a container engine and
# without pulling anything: a root filesystem holding the release binaries
# (dmraid-csi, dmraid-csi-controller), dmsetup and the mkfs/resize tools with
# their shared libraries, all taken from this machine's Debian packages,
# packed as an OCI image layout archive that `ctr images import` (containerd)
# and `skopeo copy oci-archive:...` accept. Same contents as the Dockerfile.
#
#   scripts/image.sh [--no-build] [NAME[:TAG]]   default ghcr.io/dmraid-csi/dmraid-csi:<version>
#     --no-build: use the release binaries already built (the tests do)
#
# Prints the archive's path: $DMRAID_CACHE/image/dmraid-csi.oci.tar
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/env.sh"
cd "$here/.."

build=1
if [ "${1:-}" = "--no-build" ]; then build=0; shift; fi
version=$(awk -F'"' '/^version *=/ {print $2; exit}' Cargo.toml)
name="${1:-ghcr.io/dmraid-csi/dmraid-csi:$version}"
out="$DMRAID_CACHE/image"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"
mkdir -p "$rootfs" "$out"

[ "$build" = 0 ] || cargo build --release -q --workspace --bins >&2
bin="$CARGO_TARGET_DIR/release"
for b in dmraid-csi dmraid-csi-controller; do
  [ -x "$bin/$b" ] || { echo "image: $bin/$b is not built (cargo build --release --workspace --bins)" >&2; exit 1; }
done

# copy FILE DEST: a file and the shared libraries it loads.
copy() {
  local src="$1" dst="$2"
  mkdir -p "$(dirname "$rootfs$dst")"
  cp -L "$src" "$rootfs$dst"
  ldd "$src" 2>/dev/null | awk '/=>/ {print $3} /^[[:space:]]*\/lib/ {print $1}' | while read -r lib; do
    [ -n "$lib" ] && [ -e "$lib" ] || continue
    mkdir -p "$rootfs$(dirname "$lib")"
    [ -e "$rootfs$lib" ] || cp -L "$lib" "$rootfs$lib"
  done
}
copy "$bin/dmraid-csi" /usr/bin/dmraid-csi
copy "$bin/dmraid-csi-controller" /usr/bin/dmraid-csi-controller
for tool in dmsetup mkfs.ext4 mke2fs resize2fs e2fsck mkfs.xfs xfs_growfs xfs_io xfs_repair blockdev; do
  p=$(command -v "$tool") || { echo "image: $tool not found: run scripts/install.sh" >&2; exit 1; }
  copy "$p" "/usr/sbin/$tool"
done
mkdir -p "$rootfs/etc" "$rootfs/tmp" "$rootfs/var/lib/dmraid-csi" "$rootfs/csi"
cp /etc/mke2fs.conf "$rootfs/etc/"
# Where 64-bit libraries are found with or without the usrmerge symlinks.
[ -e "$rootfs/lib64" ] || ln -s usr/lib64 "$rootfs/lib64" 2>/dev/null || true
chmod 1777 "$rootfs/tmp"

"$here/oci-pack.sh" "$rootfs" "$name" '["/usr/bin/dmraid-csi"]' "$out/dmraid-csi.oci.tar" "dmraid-csi" "$version"
echo "$out/dmraid-csi.oci.tar"
