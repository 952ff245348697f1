#!/usr/bin/env bash
# Builds the test guest: a BIOS-bootable disk image made only of Debian packages — the
# kernel of linux-image-cloud-amd64 and a busybox initramfs whose /init is
# scripts/guest/init, on a FAT filesystem that syslinux boots (no loop device or mount
# needed). Cached per kernel version, init and script: the second call prints the path at
# once. Prints the qcow2 image's path on the last line.
#   usage: scripts/guest-image.sh [CACHE_DIR]     (default /var/cache/drover-guest)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${1:-/var/cache/drover-guest}
for tool in syslinux mcopy mkfs.fat busybox qemu-img; do
  command -v "$tool" >/dev/null || { echo "guest-image: $tool missing (scripts/deps.sh installs it)" >&2; exit 1; }
done
# The versioned kernel package the metapackage points at today.
resolve() { apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'; }
kpkg=$(resolve)
if [[ -z $kpkg ]]; then
  # A machine whose package lists were cleared (deps.sh updates them only when it installs).
  apt-get update -qq >/dev/null 2>&1 || true
  kpkg=$(resolve)
fi
[[ -n $kpkg ]] || { echo "guest-image: cannot resolve linux-image-cloud-amd64" >&2; exit 1; }
# A change to this script or to the init makes a new image.
key="$kpkg-$(cat "$here/guest/init" "$here/guest-image.sh" | sha256sum | cut -c1-12)"
out="$cache/$key/busybox-guest.qcow2"
if [[ -s $out ]]; then
  echo "$out"
  exit 0
fi
mkdir -p "$cache/$key"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download -q "$kpkg" >/dev/null 2>&1) || { echo "guest-image: cannot download $kpkg" >&2; exit 1; }
dpkg-deb -x "$work"/linux-image-*.deb "$work/k"
kver=${kpkg#linux-image-}
mods="$work/k/lib/modules/$kver/kernel"

root="$work/initramfs"
mkdir -p "$root"/{bin,dev,proc,sys,lib/modules}
cp "$(command -v busybox)" "$root/bin/busybox"
cp "$here/guest/init" "$root/init"
chmod 0755 "$root/init" "$root/bin/busybox"
for m in drivers/virtio/virtio drivers/virtio/virtio_ring drivers/virtio/virtio_pci_legacy_dev \
  drivers/virtio/virtio_pci_modern_dev drivers/virtio/virtio_pci drivers/block/virtio_blk \
  net/core/failover drivers/net/net_failover drivers/net/virtio_net drivers/cdrom/cdrom fs/isofs/isofs; do
  cp "$mods/$m.ko" "$root/lib/modules/"
done
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -9) > "$work/initrd.gz"

img="$work/boot.raw"
truncate -s 64M "$img"
mkfs.fat -n DROVER "$img" >/dev/null
cat > "$work/syslinux.cfg" <<CFG
DEFAULT linux
PROMPT 0
TIMEOUT 0
LABEL linux
  KERNEL /vmlinuz
  APPEND initrd=/initrd.gz console=ttyS0 quiet panic=-1
CFG
MTOOLS_SKIP_CHECK=1 mcopy -i "$img" "$work/k/boot/vmlinuz-$kver" ::vmlinuz
MTOOLS_SKIP_CHECK=1 mcopy -i "$img" "$work/initrd.gz" ::initrd.gz
MTOOLS_SKIP_CHECK=1 mcopy -i "$img" "$work/syslinux.cfg" ::syslinux.cfg
syslinux --install "$img"
qemu-img convert -f raw -O qcow2 "$img" "$out.tmp"
mv "$out.tmp" "$out"
echo "$out"
