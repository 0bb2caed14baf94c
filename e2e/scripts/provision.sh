#!/usr/bin/env bash
# Provisions the real-kernel test VM's pieces into $DMRAID_CACHE/vm:
#   kernel/     Debian's cloud kernel package, unpacked (vmlinuz + modules)
#   base/       the initramfs tree without our binaries: busybox, dmsetup,
#               mkfs/resize tools and lvm (for the bench's lvcreate
#               comparison) with their libraries, the kernel modules
#               dm-raid needs, and /init
# The test harness (e2e/src/initramfs.rs) adds the agent and the driver
# binaries per run, and fio for the VMs that ask (VmBuilder::with_fio: its
# rbd, gluster and rdma engines bring ~75 MB of libraries, three times this
# base, that no other VM should unpack into its memory). Idempotent: a
# warm cache returns at once.
#
# DMRAID_KERNEL picks the kernel: 6.1 (default: Debian 12's) or 6.12
# (Debian 12's newer kernel line), each pinned to one cloud kernel package so
# every machine tests the same kernels, or any Debian cloud kernel package
# apt can fetch here, by name (linux-image-<version>-cloud-amd64). Each
# kernel gets its own VM directory; the e2e harness reads the same variable
# (e2e/src/initramfs.rs). DMRAID_KERNEL_PKG, if set, names the package for
# the kernel DMRAID_KERNEL labels.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/../../scripts/env.sh"

kernel="${DMRAID_KERNEL:-6.1}"
case "$kernel" in
  6.1) default_pkg=linux-image-6.1.0-50-cloud-amd64 ;;
  6.12) default_pkg=linux-image-6.12.118+deb12-cloud-amd64 ;;
  linux-image-*) default_pkg="$kernel" ;;
  *) echo "provision: DMRAID_KERNEL=$kernel: one of 6.1, 6.12 or a package name linux-image-<version>-cloud-amd64" >&2; exit 2 ;;
esac
pkg="${DMRAID_KERNEL_PKG:-$default_pkg}"
if [ "$kernel" = 6.1 ]; then vm="$DMRAID_CACHE/vm"; else vm="$DMRAID_CACHE/vm-$kernel"; fi
stamp="$vm/base/.provisioned-$pkg-v8"
if [ -f "$stamp" ]; then
  echo "provision: VM pieces cached ($pkg)"
  exit 0
fi

need() {
  command -v "$1" >/dev/null 2>&1 || { echo "provision: $1 not found: run scripts/install.sh (Debian package $2)" >&2; exit 1; }
}
need qemu-system-x86_64 qemu-system-x86
need dmsetup dmsetup
need cpio cpio
need depmod kmod
need mkfs.ext4 e2fsprogs
need mkfs.xfs xfsprogs
need lvm lvm2
[ -x /bin/busybox ] || [ -x /usr/bin/busybox ] || { echo "provision: busybox not found: run scripts/install.sh (busybox-static)" >&2; exit 1; }
busybox="$(command -v busybox)"
file -L "$busybox" 2>/dev/null | grep -q "statically linked" || true

mkdir -p "$vm/kernel"
deb=$(ls "$vm/kernel/${pkg}"_*.deb 2>/dev/null | head -n1 || true)
if [ -z "$deb" ]; then
  echo "provision: downloading $pkg"
  ( cd "$vm/kernel" && { apt-get download "$pkg" 2>/dev/null || { apt-get update -qq && apt-get download "$pkg"; }; } )
  deb=$(ls "$vm/kernel/${pkg}"_*.deb | head -n1)
fi
rm -rf "$vm/kernel/root"
dpkg-deb -x "$deb" "$vm/kernel/root"
kver=$(ls "$vm/kernel/root/lib/modules" | head -n1)
cp "$vm/kernel/root/boot/vmlinuz-$kver" "$vm/kernel/vmlinuz"
echo "$kver" > "$vm/kernel/version"
depmod -b "$vm/kernel/root" "$kver"

base="$vm/base"
rm -rf "$base"
mkdir -p "$base"/{bin,sbin,lib,lib64,usr/bin,usr/sbin,usr/lib,etc,proc,sys,dev,tmp,run,mnt,root,var/lib}
ln -s lib "$base/usr/lib64" 2>/dev/null || true

# busybox and its applets (never a busybox -> busybox link: ELOOP)
cp "$busybox" "$base/bin/busybox"
for applet in $("$busybox" --list); do
  [ "$applet" = busybox ] && continue
  [ -e "$base/bin/$applet" ] || ln -s busybox "$base/bin/$applet"
done

# host tools and the libraries they load
copy_with_libs() {
  local src="$1" dst="$2"
  mkdir -p "$(dirname "$base$dst")"
  rm -f "$base$dst"
  cp -L "$src" "$base$dst"
  # (POSIX classes only: Debian's default awk is mawk, which has no \s, and
  # a base without the dynamic loader runs no tool at all)
  ldd "$src" 2>/dev/null | awk '/=>/ {print $3} /^[[:space:]]*\/lib/ {print $1}' | while read -r lib; do
    [ -n "$lib" ] && [ -e "$lib" ] || continue
    mkdir -p "$base$(dirname "$lib")"
    [ -e "$base$lib" ] || cp -L "$lib" "$base$lib"
  done
}
for tool in dmsetup mkfs.ext4 mke2fs resize2fs e2fsck dumpe2fs mkfs.xfs xfs_growfs xfs_repair xfs_db blockdev; do
  p=$(command -v "$tool" || true)
  [ -n "$p" ] || { echo "provision: $tool not found: run scripts/install.sh" >&2; exit 1; }
  copy_with_libs "$p" "/usr/sbin/$tool"
done
# disks shaped like a real node's (the disk-selection suite): a GPT with a FAT
# ESP, an md superblock
for tool in sfdisk mkfs.vfat mdadm; do
  p=$(command -v "$tool" || true)
  [ -n "$p" ] || { echo "provision: $tool not found: run scripts/install.sh" >&2; exit 1; }
  copy_with_libs "$p" "/usr/sbin/$tool"
done
# xfs_growfs is a script on some releases; it calls xfs_io
p=$(command -v xfs_io || true); [ -n "$p" ] && copy_with_libs "$p" "/usr/sbin/xfs_io"
mkdir -p "$base/etc"; cp /etc/mke2fs.conf "$base/etc/" 2>/dev/null || true
# lvm dispatches on its name; its config runs it without udev or daemons
copy_with_libs "$(command -v lvm)" /usr/sbin/lvm
for c in pvcreate vgcreate lvcreate lvremove lvs vgremove pvremove; do
  ln -sf lvm "$base/usr/sbin/$c"
done
mkdir -p "$base/etc/lvm" "$base/run/lock/lvm"
cp "$here/lvm.conf" "$base/etc/lvm/lvm.conf"

# kernel modules and their dependencies, decompressed (busybox insmod can't read .xz)
mods="dm-mod dm-raid raid456 raid1 raid10 raid0 dm-delay dm-flakey virtio_blk virtio_pci virtio_console virtio_net xfs vfat nls_cp437 nls_ascii nls_utf8"
order="$base/modules.order"
: > "$order"
for m in $mods; do
  modprobe -d "$vm/kernel/root" -S "$kver" --show-depends "$m" | awk '$1 == "insmod" {print $2}'
done | awk '!seen[$0]++' | while read -r ko; do
  rel="${ko#"$vm/kernel/root"}"
  dst="$base/lib/modules/$(basename "$rel" | sed 's/\.xz$//; s/\.zst$//')"
  mkdir -p "$(dirname "$dst")"
  case "$ko" in
    *.xz) xz -dc "$ko" > "$dst" ;;
    *.zst) zstd -dcq "$ko" > "$dst" ;;
    *) cp "$ko" "$dst" ;;
  esac
  echo "/lib/modules/$(basename "$dst")" >> "$order"
done

# Every copied tool is dynamically linked: without its loader in the base
# the VM can run none of them ("not found").
interp=$(ldd "$(command -v dmsetup)" | awk '/^[[:space:]]*\// {print $1}')
[ -n "$interp" ] && [ -e "$base$interp" ] || {
  echo "provision: the dynamic loader ${interp:-?} is missing from $base" >&2
  exit 1
}

cp "$here/init" "$base/init"
chmod +x "$base/init"
touch "$stamp"
echo "provision: VM pieces ready in $vm (kernel $kver, $(wc -l < "$order") modules)"
