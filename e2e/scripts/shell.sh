#!/usr/bin/env bash
# An interactive shell in the test VM, for debugging: the same kernel,
# modules and tools the tests use, with N blank disks (default 4 x 256 MiB)
# and the release dmraid-csi binary when built. `poweroff -f` leaves.
#   e2e/scripts/shell.sh [DISKS] [SIZE_MIB]
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/../../scripts/env.sh"
bash "$here/provision.sh" >/dev/null
vm="$DMRAID_CACHE/vm"
n="${1:-4}"; size="${2:-256}"
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
mkdir -p "$work/extra/bin"
bin="$CARGO_TARGET_DIR/release/dmraid-csi"
if [ -x "$bin" ]; then
  cp "$bin" "$work/extra/bin/"
  ldd "$bin" | awk '/=>/ {print $3}' | while read -r lib; do
    [ -e "$vm/base$lib" ] || { mkdir -p "$work/extra$(dirname "$lib")"; cp -L "$lib" "$work/extra$lib"; }
  done
fi
( cd "$vm/base" && find . | cpio -o -H newc --quiet ) > "$work/initrd"
( cd "$work/extra" && find . | cpio -o -H newc --quiet ) >> "$work/initrd"
drives=()
for i in $(seq 0 $((n - 1))); do
  truncate -s "${size}M" "$work/d$i.img"
  drives+=(-drive "file=$work/d$i.img,format=raw,if=none,id=d$i,cache=none,aio=threads"
           -device "virtio-blk-pci,drive=d$i,id=vd$i,serial=d$i")
done
qemu-system-x86_64 -accel tcg -smp 1 -m 512 -nodefaults -display none -no-reboot \
  -kernel "$vm/kernel/vmlinuz" -initrd "$work/initrd" \
  -append "console=ttyS0 panic=-1 rdinit=/init loglevel=4 dmraid.shell" \
  -serial mon:stdio "${drives[@]}"
