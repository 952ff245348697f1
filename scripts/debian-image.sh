#!/usr/bin/env bash
# Builds a cloud guest: a BIOS-bootable disk image of Debian 12 (bookworm) made only of
# Debian packages, with real cloud-init (NoCloud datasource only), the kernel of
# linux-image-cloud-amd64 and a serial console on ttyS0. mmdebstrap installs the system
# into a directory; the disk is laid out without loop devices or mounts: an MBR (syslinux's
# mbr.bin), partition 1 a FAT filesystem that syslinux boots (kernel and the system's own
# initramfs, copied in with mtools), partition 2 an ext4 root made with mkfs.ext4 -d, each
# made in a file of its own and written into the disk at its offset. Cached per kernel
# version and script: the second call prints the path at once. Prints the qcow2 image's
# path on the last line; progress and errors go to stderr.
#   usage: scripts/debian-image.sh [CACHE_DIR]     (default /var/cache/drover-guest)
# Booting it: one virtio disk (root is LABEL=drover-root, normally /dev/vda2), a NoCloud
# seed (an ISO labelled cidata) on a CD-ROM or a second virtio disk, 512 MiB of memory or
# more, no NIC needed (cloud-init does not wait for a network).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${1:-/var/cache/drover-guest}
log() { echo "debian-image: $*" >&2; }
die() { log "$*"; exit 1; }
[[ $(id -u) -eq 0 ]] || die "must run as root (mmdebstrap installs as root)"

# tool -> the Debian package that provides it (scripts/deps.sh installs them).
declare -A provider=([mmdebstrap]=mmdebstrap [sfdisk]=fdisk [mkfs.fat]=dosfstools
  [mcopy]=mtools [syslinux]=syslinux [mkfs.ext4]=e2fsprogs [qemu-img]=qemu-utils
  [flock]=util-linux)
if ! command -v mmdebstrap >/dev/null; then
  log "mmdebstrap missing: installing it"
  get() { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mmdebstrap </dev/null >&2; }
  get || { apt-get update -qq </dev/null >&2 && get; } || die "cannot install mmdebstrap"
fi
for tool in "${!provider[@]}"; do
  command -v "$tool" >/dev/null || die "$tool missing (Debian package ${provider[$tool]})"
done
mbr=/usr/lib/syslinux/mbr/mbr.bin
[[ -s $mbr ]] || die "$mbr missing (Debian package syslinux-common)"

# The host's Debian mirrors, from its deb822 sources (bookworm, -updates, -security), given
# to mmdebstrap as explicit sources lines; deb.debian.org when the host has none.
sources=()
if [[ -r /etc/apt/sources.list.d/debian.sources ]]; then
  mapfile -t sources < <(awk '
    function flush() {
      if (uris != "" && suites != "" && types ~ /(^| )deb( |$)/)
        for (i = 1; i <= split(uris, u, " "); i++)
          for (j = 1; j <= split(suites, s, " "); j++)
            if (s[j] ~ /^bookworm/) print "deb " u[i] " " s[j] " main"
      types = uris = suites = ""
    }
    /^[[:space:]]*$/ { flush(); next }
    /^Types:/  { sub(/^Types:[[:space:]]*/, "");  types = $0 }
    /^URIs:/   { sub(/^URIs:[[:space:]]*/, "");   uris = $0 }
    /^Suites:/ { sub(/^Suites:[[:space:]]*/, ""); suites = $0 }
    END { flush() }' /etc/apt/sources.list.d/debian.sources)
fi
((${#sources[@]})) || sources=("deb http://deb.debian.org/debian bookworm main")

# The versioned kernel package the metapackage points at today.
resolve() { apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}'; }
kpkg=$(resolve)
if [[ -z $kpkg ]]; then
  # A machine whose package lists were cleared (deps.sh updates them only when it installs).
  apt-get update -qq >/dev/null 2>&1 </dev/null || true
  kpkg=$(resolve)
fi
[[ -n $kpkg ]] || die "cannot resolve linux-image-cloud-amd64"
# A change to this script makes a new image.
key="bookworm-$kpkg-$(sha256sum <"$here/debian-image.sh" | cut -c1-12)"
out="$cache/$key/debian-guest.qcow2"
if [[ -s $out ]]; then
  echo "$out"
  exit 0
fi
mkdir -p "$cache/$key"
# Two builds at once (tests in parallel) would do the work twice: the second waits.
exec 9>"$cache/$key/.lock"
flock 9
if [[ -s $out ]]; then
  echo "$out"
  exit 0
fi
work=$(mktemp -d)
# --one-file-system: never into what a failed mmdebstrap might have left mounted there.
trap 'rm -rf --one-file-system "$work"' EXIT
start=$SECONDS

# Files laid over the installed system.
ov="$work/overlay"
mkdir -p "$ov/etc/cloud/cloud.cfg.d" "$ov/etc/initramfs-tools/conf.d" \
  "$ov/etc/systemd/system/serial-getty@ttyS0.service.d" "$ov/etc/network" "$ov/etc/default" \
  "$ov/etc/systemd/journald.conf.d" "$ov/etc/modprobe.d"
cat >"$ov/etc/cloud/cloud.cfg.d/90_drover.cfg" <<'EOF'
# drover test guest: the seed is a NoCloud ISO (label cidata); no metadata service.
datasource_list: [ NoCloud, None ]
# C.UTF-8 needs no locale-gen (slow under emulation).
locale: C.UTF-8
# The hostname from the meta-data resolves (127.0.1.1), as on Debian's cloud images.
manage_etc_hosts: true
# No GRUB (syslinux boots it) and no sshd (no NIC): skip what would only fail or wait
# (an empty ssh_keys makes cc_ssh generate no host keys: there is no ssh-keygen).
grub_dpkg: {enabled: false}
ssh_keys: {}
EOF
echo LANG=C.UTF-8 >"$ov/etc/default/locale"
# The root filesystem is on virtio-blk (virtio-scsi, SATA or IDE work too): load only
# those modules in the initramfs; ext4 is built into the cloud kernel.
cat >"$ov/etc/initramfs-tools/conf.d/drover.conf" <<'EOF'
MODULES=list
COMPRESS=zstd
EOF
cat >"$ov/etc/initramfs-tools/modules" <<'EOF'
virtio_pci
virtio_blk
virtio_scsi
sd_mod
ata_piix
ahci
EOF
# Modules a test guest has no use for and that are slow to load under emulation (TCG
# offers SVM, so kvm_amd would load) or probe for nothing.
cat >"$ov/etc/modprobe.d/drover.conf" <<'EOF'
blacklist kvm
blacklist kvm_amd
blacklist kvm_intel
blacklist powernow_k8
blacklist acpi_cpufreq
blacklist pcspkr
blacklist floppy
EOF
# The journal stays in memory: fewer writes under emulation, the console has what matters.
cat >"$ov/etc/systemd/journald.conf.d/drover.conf" <<'EOF'
[Journal]
Storage=volatile
EOF
cat >"$ov/etc/fstab" <<'EOF'
LABEL=drover-root / ext4 rw,errors=remount-ro 0 0
EOF
cat >"$ov/etc/network/interfaces" <<'EOF'
source /etc/network/interfaces.d/*
auto lo
iface lo inet loopback
EOF
cat >"$ov/etc/systemd/system/serial-getty@ttyS0.service.d/autologin.conf" <<'EOF'
[Service]
ExecStart=
ExecStart=-/sbin/agetty --autologin root --noclear --keep-baud 115200,57600,38400,9600 %I $TERM
EOF
echo debian >"$ov/etc/hostname"
printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$ov/etc/hosts"
# mmdebstrap leaves the build host's resolver in the system: none of it belongs there.
: >"$ov/etc/resolv.conf"

# Units that only slow a short-lived guest down (timers, scrubs, network waits).
mask="apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer e2scrub_reap.service
  fstrim.timer man-db.timer systemd-networkd-wait-online.service ifupdown-wait-online.service
  systemd-pstore.service getty@tty1.service modprobe@drm.service modprobe@dm_mod.service"

log "installing bookworm with mmdebstrap from: ${sources[*]}"
mmdebstrap --mode=root --variant=apt --format=directory \
  --aptopt='APT::Install-Recommends "false"' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-include=/usr/share/locale/locale.alias' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --include='linux-image-cloud-amd64 initramfs-tools zstd systemd-sysv udev dbus
    cloud-init ifupdown iproute2 e2fsprogs procps' \
  --customize-hook="cp -a '$ov/.' \"\$1/\"" \
  --customize-hook='chroot "$1" systemctl mask --quiet '"$(echo $mask)" \
  --customize-hook='chroot "$1" passwd -l root >/dev/null' \
  --customize-hook='chroot "$1" update-initramfs -u -k all' \
  --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/* "$1"/var/log/*.log' \
  bookworm "$work/root" "${sources[@]}" </dev/null >&2 || die "mmdebstrap failed"
root="$work/root"
kver=${kpkg#linux-image-}
[[ -f $root/boot/vmlinuz-$kver ]] || kver=$(basename "$(ls "$root"/boot/vmlinuz-* | tail -n1)" | sed 's/^vmlinuz-//')
[[ -f $root/boot/vmlinuz-$kver && -f $root/boot/initrd.img-$kver ]] || die "no kernel or initramfs in the system"
log "system installed in $((SECONDS - start)) s ($(du -sm "$root" | cut -f1) MiB)"

# Partition 1: FAT with syslinux, the kernel and the initramfs.
boot_mib=64
cat >"$work/syslinux.cfg" <<CFG
DEFAULT linux
PROMPT 0
TIMEOUT 0
LABEL linux
  KERNEL /vmlinuz
  APPEND initrd=/initrd.img root=LABEL=drover-root rw console=ttyS0 quiet panic=-1
CFG
truncate -s "${boot_mib}M" "$work/boot.fat"
# -h 2048: the hidden sectors before the partition, which syslinux's boot sector adds.
mkfs.fat -h 2048 -n DROVERBOOT "$work/boot.fat" >/dev/null
MTOOLS_SKIP_CHECK=1 mcopy -i "$work/boot.fat" "$root/boot/vmlinuz-$kver" ::vmlinuz
MTOOLS_SKIP_CHECK=1 mcopy -i "$work/boot.fat" "$root/boot/initrd.img-$kver" ::initrd.img
MTOOLS_SKIP_CHECK=1 mcopy -i "$work/boot.fat" "$work/syslinux.cfg" ::syslinux.cfg
syslinux --install "$work/boot.fat"

# Partition 2: ext4 root with what is installed plus room; the disk is 2 GiB at least
# (qcow2 keeps only what is written).
used_mib=$(du -sm "$root" | cut -f1)
root_mib=$((used_mib + used_mib / 5 + 256))
((root_mib >= 2048 - boot_mib - 2)) || root_mib=$((2048 - boot_mib - 2))
truncate -s "${root_mib}M" "$work/root.ext4"
mkfs.ext4 -q -F -L drover-root -m 1 -E lazy_itable_init=0,root_owner=0:0 -d "$root" "$work/root.ext4" \
  || die "mkfs.ext4 failed"

# The disk: an MBR, partition 1 (bootable) at 1 MiB, partition 2 right after it, and
# syslinux's boot code (which starts the bootable partition) in the MBR's first 440 bytes.
img="$work/disk.raw"
truncate -s "$((1 + boot_mib + root_mib + 1))M" "$img"
sfdisk -q "$img" >/dev/null <<EOF
label: dos
start=2048, size=$((boot_mib * 2048)), type=c, bootable
start=$(((1 + boot_mib) * 2048)), size=$((root_mib * 2048)), type=83
EOF
dd if="$mbr" of="$img" bs=440 count=1 conv=notrunc status=none
dd if="$work/boot.fat" of="$img" bs=1M seek=1 conv=notrunc,sparse status=none
dd if="$work/root.ext4" of="$img" bs=1M seek=$((1 + boot_mib)) conv=notrunc,sparse status=none
qemu-img convert -f raw -O qcow2 "$img" "$out.tmp"
mv "$out.tmp" "$out"
log "built in $((SECONDS - start)) s: $(du -h "$out" | cut -f1) ($(qemu-img info "$out" | awk '/virtual size/ {print $3 $4}') virtual)"
echo "$out"
