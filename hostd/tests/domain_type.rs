//! hostd's KVM-or-TCG rule against real device nodes, checked with the kernel: for this
//! machine's /dev/kvm as it is, and for KVM device nodes made like it (root only, as a
//! machine without udev leaves it; root:kvm 0660, as udev and scripts/libvirtd.sh leave it),
//! `auto` must pick KVM exactly when QEMU's user can really open the device read-write.
//! The nodes are private copies (`mknod`, same major/minor), so the test never changes the
//! machine's /dev/kvm under other tests. Needs root and Debian's `libvirt-qemu` user.

mod common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;

use drover_hostd::hypervisor::domain_type::{self, DomainTypeChoice, KVM_DEVICE};
use drover_hostd::hypervisor::domain_xml::DomainType;
use nix::unistd::{Group, User};

/// libvirt's QEMU user and group on Debian (qemu.conf leaves both at the built-in default).
const QEMU_USER: &str = "libvirt-qemu";

fn prerequisites() -> Result<(), String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Err("needs root (mknod, chown, setpriv)".into());
    }
    match User::from_name(QEMU_USER) {
        Ok(Some(_)) => Ok(()),
        _ => Err(format!(
            "no {QEMU_USER} user (install libvirt-daemon-system)"
        )),
    }
}

/// Whether QEMU's user can open `path` read-write, as the kernel answers it: a child with
/// the credentials libvirt gives QEMU (its user, its group, and the user's supplementary
/// groups) opens it. Independent of the rule under test.
fn qemu_user_can_open(path: &Path) -> bool {
    Command::new("setpriv")
        .args([
            &format!("--reuid={QEMU_USER}"),
            &format!("--regid={QEMU_USER}"),
            "--init-groups",
            "sh",
            "-c",
            "exec 3<>\"$1\"",
            "sh",
        ])
        .arg(path)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run setpriv")
        .success()
}

/// A KVM device node at `path` with `mode`, owned by root and group `gid`.
fn make_node(path: &Path, mode: u32, gid: u32) {
    let status = Command::new("mknod")
        .arg(path)
        .args(["c", "10", "232"])
        .status()
        .expect("run mknod");
    assert!(status.success(), "mknod {}", path.display());
    std::os::unix::fs::chown(path, Some(0), Some(gid)).expect("chown");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

#[test]
fn auto_picks_kvm_exactly_when_qemus_user_can_open_the_device() {
    if !common::prerequisite(prerequisites()) {
        return;
    }
    let kvm_gid = Group::from_name("kvm")
        .expect("group lookup")
        .map_or(0, |g| g.gid.as_raw());
    assert_ne!(
        kvm_gid, 0,
        "no kvm group (libvirt-daemon-system creates it)"
    );
    let dir = tempfile::tempdir().expect("tempdir");
    // QEMU's user must be able to reach the nodes at all.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).expect("chmod");

    let cases = [
        ("root-only", 0o600, 0, DomainType::Qemu),
        ("udev's root:kvm 0660", 0o660, kvm_gid, DomainType::Kvm),
        ("group-writable, root's group", 0o660, 0, DomainType::Qemu),
        ("world read-write", 0o666, 0, DomainType::Kvm),
    ];
    for (what, mode, gid, want) in cases {
        let node = dir.path().join(format!("kvm-{mode:o}-{gid}"));
        make_node(&node, mode, gid);
        let decision = domain_type::probe_device("qemu:///system", DomainTypeChoice::Auto, &node);
        eprintln!(
            "{what}: {} ({})",
            decision.domain_type.as_str(),
            decision.reason
        );
        assert_eq!(decision.domain_type, want, "{what}: {}", decision.reason);
        assert_eq!(
            decision.domain_type == DomainType::Kvm,
            qemu_user_can_open(&node),
            "{what}: the rule and the kernel disagree ({})",
            decision.reason
        );
    }

    // The machine's own device, whatever state setup left it in.
    let decision = domain_type::probe("qemu:///system", DomainTypeChoice::Auto);
    eprintln!(
        "this machine: {} ({})",
        decision.domain_type.as_str(),
        decision.reason
    );
    let device = Path::new(KVM_DEVICE);
    let usable = device.exists() && qemu_user_can_open(device);
    assert_eq!(
        decision.domain_type == DomainType::Kvm,
        usable,
        "{}",
        decision.reason
    );
}
