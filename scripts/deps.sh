#!/usr/bin/env bash
# Installs the Debian packages drover builds and tests with. Idempotent; skips apt when
# everything is present already.
set -euo pipefail
# libxml2-utils: virt-xml-validate (libvirt-clients) runs xmllint, only a Recommends there.
# iptables: the HA tests cut a host off from the controllers with it (as root).
# libvirt-daemon-system, qemu-system-x86: real QEMU guests for the watchdog and frozen-hostd
# tests (scripts/libvirtd.sh starts the daemon).
# qemu-utils: qemu-img, which libvirt needs to create qcow2 volumes (and tests read them with).
# etcd-server: the side-by-side write benchmark (bench_writes) runs a 3-member etcd;
# protobuf-compiler, libprotobuf-dev: protoc and its well-known types, which the
# etcd-client crate's build needs (drover's own protos use a vendored protoc).
# busybox-static, cpio, syslinux, mtools, dosfstools: scripts/guest-image.sh builds the
# test guest with them (the kernel it takes from linux-image-cloud-amd64's .deb).
# python3: scripts/libvirtd.sh and the multi-host rig run scripts/subreaper.py; the images
# test serves a file over HTTP with it. virtinst: bench_images measures virt-install, what
# an operator would use instead of drover, in the same run.
# genisoimage: hostd writes cloud-init NoCloud seeds (ISO9660 labelled cidata) with it.
# mmdebstrap, fdisk, e2fsprogs: scripts/debian-image.sh builds the Debian guest with real
# cloud-init (from the Debian mirror) that the cloud-init test boots.
# iproute2: hostd makes overlays' VXLAN links with `ip` and `bridge`. dnsmasq-base:
# libvirt serves an overlay's DHCP with it; dnsmasq-utils: hostd ends the leases of
# released addresses with its dhcp_release. iptables also brings ebtables (nft), with
# which hostd keeps an overlay's DHCP server to its host. iputils-ping: bench_network waits for a new
# guest to answer on its address.
PACKAGES=(libvirt-dev pkg-config libvirt-clients libxml2-utils iptables
  libvirt-daemon-system qemu-system-x86 qemu-utils etcd-server protobuf-compiler libprotobuf-dev
  busybox-static cpio syslinux syslinux-common mtools dosfstools python3 virtinst
  genisoimage mmdebstrap fdisk e2fsprogs iproute2 dnsmasq-base dnsmasq-utils iputils-ping)
missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
  echo "installing: ${missing[*]}"
  $SUDO apt-get update -qq
  # Some machines come with a newer qemu-utils (bookworm-backports) than the QEMU their
  # sources offer, and qemu-utils >= 8 Breaks qemu-system-common < 8: apt then refuses the
  # whole install. Take qemu-utils at the version of the qemu-system-x86 being installed.
  qemu=$(apt-cache policy qemu-system-x86 | awk '/Candidate:/ {print $2}')
  utils=$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)
  if [[ " ${missing[*]} " == *" qemu-system-x86 "* && -n $qemu && $qemu != "(none)" && $utils != "$qemu" ]]; then
    rest=()
    for p in "${missing[@]}"; do [[ $p == qemu-utils ]] || rest+=("$p"); done
    missing=("${rest[@]}" "qemu-utils=$qemu")
  fi
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    --allow-downgrades "${missing[@]}"
fi
