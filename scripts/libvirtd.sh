#!/usr/bin/env bash
# Starts the system libvirt daemon (and virtlogd) if none answers at qemu:///system, for the
# tests that run real QEMU guests. There is no systemd here, so the daemons are started by
# hand, under a child subreaper (scripts/subreaper.py) so that QEMU processes are reaped at
# once. Idempotent.
#
# It also does what udev does on a normal host: a /dev/kvm left root-only (machines without
# udev, such as containers) becomes root:kvm 0660, so that QEMU, which libvirt runs as
# libvirt-qemu (a member of kvm), can use KVM. Nothing depends on it: hostd's
# `--domain-type auto` checks what QEMU's user may open and runs guests under TCG otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $(id -u) -eq 0 && -c /dev/kvm && $(stat -c '%a %U %G' /dev/kvm) == "600 root root" ]] &&
  getent group kvm >/dev/null; then
  chgrp kvm /dev/kvm && chmod 0660 /dev/kvm
  echo "/dev/kvm was root-only: made it root:kvm 0660, as udev would"
fi
if virsh -c qemu:///system version >/dev/null 2>&1; then
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  # The tests that need it say so and skip (CI runs as root and requires them).
  echo "not root: not starting libvirtd; real-QEMU tests will skip" >&2
  exit 0
fi
mkdir -p /var/log/libvirt /var/run/libvirt
# -f: foreground, so the subreaper stays their parent; setsid + nohup detach from this shell.
setsid nohup python3 scripts/subreaper.py sh -c 'virtlogd -d && exec libvirtd' \
  >/var/log/libvirt/drover-libvirtd.log 2>&1 < /dev/null &
for _ in $(seq 1 100); do
  if virsh -c qemu:///system version >/dev/null 2>&1; then
    echo "libvirtd is up"
    exit 0
  fi
  sleep 0.1
done
echo "libvirtd did not come up; see /var/log/libvirt/drover-libvirtd.log" >&2
exit 1
