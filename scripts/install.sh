#!/usr/bin/env bash
# Brings a fresh machine to a working state: Debian packages for building and
# for the real-kernel tests, the Rust components CI checks with, then the VM
# pieces (kernel package, initramfs base) via e2e/scripts/provision.sh.
# Idempotent: a warm machine passes through in seconds.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/env.sh"

packages=(
  # build: the devicemapper and libblkid bindings need the headers and libclang
  libdevmapper-dev libblkid-dev libclang-dev pkg-config
  # real-kernel tests: the VM, its initramfs and the tools copied into it
  qemu-system-x86 qemu-utils busybox-static dmsetup cpio kmod xz-utils
  e2fsprogs xfsprogs socat
  # disks shaped like a real node's: partition tables, a FAT ESP, md superblocks
  fdisk dosfstools mdadm
  # the bench's lvcreate comparison (lvm copied into the VM) and its data
  # path figures (fio, added to the bench's VMs with its libraries)
  lvm2 fio
  # real API server tests: certificates and readiness probes
  openssl curl
  # lint of the shell scripts
  shellcheck
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install: Debian packages missing: ${missing[*]}"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if command -v rustup >/dev/null 2>&1; then
  for c in rustfmt clippy; do
    rustup component list --installed 2>/dev/null | grep -q "^$c" || rustup component add "$c"
  done
fi

if [ -f "$here/../e2e/scripts/provision.sh" ]; then
  bash "$here/../e2e/scripts/provision.sh"
fi
echo "install: ok (cache: $DMRAID_CACHE)"
