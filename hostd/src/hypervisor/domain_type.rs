//! Which domain type hostd writes into every domain's XML: `test` on libvirt's test driver,
//! else `kvm` or `qemu` (TCG). Owns the `--domain-type auto|kvm|qemu` choice, the pure rule
//! that settles `auto` ([`decide`]) and the thin probe that feeds it from this machine
//! ([`probe`]). The test harness (chaos-tests) asks the same probe for its own guests.
//!
//! `auto` asks whether QEMU can really use KVM, not whether `/dev/kvm` exists: libvirt's
//! system instance runs QEMU as an unprivileged user (`libvirt-qemu` on Debian, with the
//! `kvm` group among its groups), and a device node left at `crw------- root root` (no udev
//! to fix it, as in containers) exists, is advertised by `virsh domcapabilities` (probed as
//! root), and still fails every `<domain type='kvm'>` with "Could not access KVM kernel
//! module: Permission denied". So the rule checks the device's mode, owner and group against
//! the uid and groups QEMU will run with. libvirt runs on the same machine as hostd (it is
//! the host's agent), so this machine's device and users are the ones that count, whatever
//! the URI's transport. POSIX ACLs on the device are not read: a device opened up only by an
//! ACL gets TCG, which is slow but works.

use std::fmt;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::Path;
use std::str::FromStr;

use nix::unistd::{Gid, Group, Uid, User};

use super::domain_xml::DomainType;

/// The KVM device QEMU opens.
pub const KVM_DEVICE: &str = "/dev/kvm";
/// Where the system instance of libvirt's QEMU driver reads the user QEMU runs as.
pub const QEMU_CONF: &str = "/etc/libvirt/qemu.conf";
/// libvirt's built-in QEMU user when `qemu.conf` sets none: Debian's, then Fedora's.
const DEFAULT_QEMU_USERS: [&str; 2] = ["libvirt-qemu", "qemu"];

/// `--domain-type`: what the operator asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DomainTypeChoice {
    /// KVM when QEMU can open the device, else TCG.
    #[default]
    Auto,
    /// KVM, whatever the probe says (an ACL or a device this rule cannot judge).
    Kvm,
    /// TCG always (e.g. a guest that misbehaves under nested KVM).
    Qemu,
}

#[derive(Debug, thiserror::Error)]
#[error("Unknown domain type {0:?}: expected auto, kvm or qemu")]
pub struct UnknownDomainType(String);

impl FromStr for DomainTypeChoice {
    type Err = UnknownDomainType;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(DomainTypeChoice::Auto),
            "kvm" => Ok(DomainTypeChoice::Kvm),
            "qemu" => Ok(DomainTypeChoice::Qemu),
            other => Err(UnknownDomainType(other.to_string())),
        }
    }
}

/// What `stat` says about the KVM device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceStat {
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub char_device: bool,
}

/// The credentials QEMU runs with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QemuUser {
    pub name: String,
    pub uid: u32,
    /// Primary and supplementary groups.
    pub gids: Vec<u32>,
}

/// Why [`decide`] chose what it chose; logged once at start-up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    TestDriver,
    /// `--domain-type kvm|qemu`.
    Requested,
    NoDevice,
    NotACharDevice,
    /// Whom QEMU runs as is unknown (no such user, unreadable qemu.conf): TCG is the choice
    /// that works for any user.
    UnknownUser(String),
    Usable {
        device: DeviceStat,
        user: QemuUser,
    },
    NotUsable {
        device: DeviceStat,
        user: QemuUser,
    },
}

/// A choice and its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub domain_type: DomainType,
    pub reason: Reason,
}

/// Pure: the domain type for connection `uri`, given the operator's `choice`, the KVM
/// device as `stat` shows it (`None`: absent) and the user QEMU runs as.
pub fn decide(
    uri: &str,
    choice: DomainTypeChoice,
    device: Option<DeviceStat>,
    user: Result<QemuUser, String>,
) -> Decision {
    let pick = |domain_type, reason| Decision {
        domain_type,
        reason,
    };
    // The driver is the URI scheme up to an optional `+transport`: `test+unix://...` is
    // still the test driver, which knows only its own domain type.
    let scheme = uri.split(':').next().unwrap_or_default();
    let driver = scheme.split('+').next().unwrap_or_default();
    if driver.eq_ignore_ascii_case("test") {
        return pick(DomainType::Test, Reason::TestDriver);
    }
    match choice {
        DomainTypeChoice::Kvm => return pick(DomainType::Kvm, Reason::Requested),
        DomainTypeChoice::Qemu => return pick(DomainType::Qemu, Reason::Requested),
        DomainTypeChoice::Auto => {}
    }
    let Some(device) = device else {
        return pick(DomainType::Qemu, Reason::NoDevice);
    };
    if !device.char_device {
        return pick(DomainType::Qemu, Reason::NotACharDevice);
    }
    let user = match user {
        Ok(user) => user,
        Err(why) => return pick(DomainType::Qemu, Reason::UnknownUser(why)),
    };
    if can_read_write(&device, &user) {
        pick(DomainType::Kvm, Reason::Usable { device, user })
    } else {
        pick(DomainType::Qemu, Reason::NotUsable { device, user })
    }
}

/// The kernel's permission check for `open(O_RDWR)`: root passes; otherwise exactly one
/// class applies — the owner's bits for the owner (even where the group's would allow
/// more), else the group's for a member of the file's group, else the others'.
fn can_read_write(device: &DeviceStat, user: &QemuUser) -> bool {
    if user.uid == 0 {
        return true;
    }
    let bits = if user.uid == device.uid {
        device.mode >> 6
    } else if user.gids.contains(&device.gid) {
        device.mode >> 3
    } else {
        device.mode
    };
    bits & 0o6 == 0o6
}

/// The decision for `uri` on this machine, from the real KVM device and QEMU user.
pub fn probe(uri: &str, choice: DomainTypeChoice) -> Decision {
    probe_device(uri, choice, Path::new(KVM_DEVICE))
}

/// [`probe`] against another device node (tests make their own with `mknod`).
pub fn probe_device(uri: &str, choice: DomainTypeChoice, device: &Path) -> Decision {
    let stat = std::fs::metadata(device).ok().map(|m| DeviceStat {
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        char_device: m.file_type().is_char_device(),
    });
    decide(uri, choice, stat, qemu_user(uri))
}

/// Whom QEMU runs as for `uri`: the session daemon runs it as the user running hostd, the
/// system daemon as `qemu.conf`'s `user` and `group` (libvirt's defaults without them), with
/// that user's supplementary groups, as libvirt sets them up.
fn qemu_user(uri: &str) -> Result<QemuUser, String> {
    if uri_path(uri) == "/session" {
        let uid = Uid::effective();
        let mut gids: Vec<u32> = nix::unistd::getgroups()
            .map_err(|e| format!("cannot read this process's groups: {e}"))?
            .into_iter()
            .map(Gid::as_raw)
            .collect();
        gids.push(Gid::effective().as_raw());
        let name = User::from_uid(uid)
            .ok()
            .flatten()
            .map_or_else(|| uid.to_string(), |u| u.name);
        return Ok(QemuUser {
            name,
            uid: uid.as_raw(),
            gids,
        });
    }
    let conf = match std::fs::read_to_string(QEMU_CONF) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(format!("cannot read {QEMU_CONF}: {e}")),
    };
    let user = match conf_value(&conf, "user") {
        Some(name) => lookup_user(&name)?,
        None => DEFAULT_QEMU_USERS
            .iter()
            .find_map(|name| User::from_name(name).ok().flatten())
            .ok_or_else(|| {
                format!("{QEMU_CONF} names no user and none of {DEFAULT_QEMU_USERS:?} exists")
            })?,
    };
    let group = match conf_value(&conf, "group") {
        Some(name) => lookup_group(&name)?,
        None => user.gid,
    };
    let c_name = std::ffi::CString::new(user.name.clone())
        .map_err(|_| format!("user name {:?} has a NUL byte", user.name))?;
    let gids = nix::unistd::getgrouplist(&c_name, group)
        .map_err(|e| format!("cannot list the groups of {}: {e}", user.name))?;
    Ok(QemuUser {
        name: user.name,
        uid: user.uid.as_raw(),
        gids: gids.into_iter().map(Gid::as_raw).collect(),
    })
}

/// `qemu.conf` names users as `"name"`, `"+uid"` or `"uid"`.
fn lookup_user(spec: &str) -> Result<User, String> {
    let found = match spec.trim_start_matches('+').parse::<u32>() {
        Ok(uid) => User::from_uid(Uid::from_raw(uid)),
        Err(_) => User::from_name(spec),
    };
    found
        .ok()
        .flatten()
        .ok_or_else(|| format!("{QEMU_CONF} names user {spec:?}, which does not exist"))
}

fn lookup_group(spec: &str) -> Result<Gid, String> {
    match spec.trim_start_matches('+').parse::<u32>() {
        Ok(gid) => Ok(Gid::from_raw(gid)),
        Err(_) => Group::from_name(spec)
            .ok()
            .flatten()
            .map(|g| g.gid)
            .ok_or_else(|| format!("{QEMU_CONF} names group {spec:?}, which does not exist")),
    }
}

/// The value of an uncommented `key = "value"` line of a libvirt config file.
fn conf_value(conf: &str, key: &str) -> Option<String> {
    conf.lines().find_map(|line| {
        let (k, v) = line.split_once('=')?;
        if k.trim() != key {
            return None;
        }
        let v = v.split('#').next()?.trim();
        Some(v.strip_prefix('"')?.strip_suffix('"')?.to_string())
    })
}

/// `/system` of `qemu:///system` or `qemu+tcp://10.0.0.5:16509/system?x=y`.
fn uri_path(uri: &str) -> &str {
    let rest = uri.split_once("://").map_or("", |(_, rest)| rest);
    let path = rest.find('/').map_or("", |i| &rest[i..]);
    path.split('?').next().unwrap_or_default()
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::TestDriver => write!(f, "libvirt's test driver"),
            Reason::Requested => write!(f, "--domain-type asks for it"),
            Reason::NoDevice => write!(f, "{KVM_DEVICE} does not exist"),
            Reason::NotACharDevice => write!(f, "{KVM_DEVICE} is not a character device"),
            Reason::UnknownUser(why) => write!(f, "cannot tell whom QEMU runs as: {why}"),
            Reason::Usable { device, user } => write!(
                f,
                "{KVM_DEVICE} ({:04o} {}:{}) is read-write for QEMU's user {} (uid {}, groups {:?})",
                device.mode, device.uid, device.gid, user.name, user.uid, user.gids
            ),
            Reason::NotUsable { device, user } => write!(
                f,
                "{KVM_DEVICE} ({:04o} {}:{}) is not read-write for QEMU's user {} (uid {}, \
                 groups {:?}); `chgrp kvm {KVM_DEVICE} && chmod 0660 {KVM_DEVICE}` (what udev \
                 does) enables KVM",
                device.mode, device.uid, device.gid, user.name, user.uid, user.gids
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KVM_GID: u32 = 107;

    fn device(mode: u32, uid: u32, gid: u32) -> Option<DeviceStat> {
        Some(DeviceStat {
            mode,
            uid,
            gid,
            char_device: true,
        })
    }

    /// Debian's libvirt-qemu: its own group and kvm.
    fn libvirt_qemu() -> Result<QemuUser, String> {
        Ok(QemuUser {
            name: "libvirt-qemu".into(),
            uid: 64055,
            gids: vec![64055, KVM_GID],
        })
    }

    fn auto(device: Option<DeviceStat>, user: Result<QemuUser, String>) -> DomainType {
        decide("qemu:///system", DomainTypeChoice::Auto, device, user).domain_type
    }

    #[test]
    fn the_test_driver_is_always_test() {
        for uri in [
            "test:///default",
            "test:///tmp/node.xml",
            "test+unix:///default",
        ] {
            for choice in [
                DomainTypeChoice::Auto,
                DomainTypeChoice::Kvm,
                DomainTypeChoice::Qemu,
            ] {
                let d = decide(uri, choice, device(0o666, 0, 0), libvirt_qemu());
                assert_eq!(d.domain_type, DomainType::Test, "{uri} {choice:?}");
            }
        }
    }

    #[test]
    fn an_explicit_choice_wins_over_the_probe() {
        for (choice, dev, want) in [
            (DomainTypeChoice::Kvm, device(0o600, 0, 0), DomainType::Kvm),
            (
                DomainTypeChoice::Qemu,
                device(0o666, 0, 0),
                DomainType::Qemu,
            ),
        ] {
            let d = decide("qemu:///system", choice, dev, libvirt_qemu());
            assert_eq!((d.domain_type, d.reason), (want, Reason::Requested));
        }
    }

    #[test]
    fn auto_decides_by_what_qemus_user_may_open() {
        use DomainType::{Kvm, Qemu};
        let table = [
            // This machine kind as it comes: no udev, root only.
            (device(0o600, 0, 0), Qemu),
            // What udev (and scripts/libvirtd.sh) make of it.
            (device(0o660, 0, KVM_GID), Kvm),
            (device(0o666, 0, 0), Kvm),
            // Group-writable, but not QEMU's group.
            (device(0o660, 0, 0), Qemu),
            // The kvm group may only read.
            (device(0o640, 0, KVM_GID), Qemu),
            // Owned by QEMU's user: the owner's bits decide, not the group's or others'.
            (device(0o600, 64055, 0), Kvm),
            (device(0o066, 64055, KVM_GID), Qemu),
            // A member of the group gets the group's bits even when others get more.
            (device(0o606, 0, KVM_GID), Qemu),
            (None, Qemu),
        ];
        for (dev, want) in table {
            assert_eq!(auto(dev, libvirt_qemu()), want, "{dev:?}");
        }
    }

    #[test]
    fn auto_falls_back_to_tcg_when_in_doubt() {
        let not_char = Some(DeviceStat {
            char_device: false,
            ..device(0o666, 0, 0).unwrap()
        });
        assert_eq!(auto(not_char, libvirt_qemu()), DomainType::Qemu);
        let unknown = Err("no such user".to_string());
        assert_eq!(auto(device(0o666, 0, 0), unknown), DomainType::Qemu);
        // QEMU run as root opens anything.
        let root = Ok(QemuUser {
            name: "root".into(),
            uid: 0,
            gids: vec![0],
        });
        assert_eq!(auto(device(0o600, 0, 0), root), DomainType::Kvm);
    }

    #[test]
    fn reads_qemu_conf_and_uris() {
        let conf = "#user = \"libvirt-qemu\"\n  user = \"+0\"  # root\ngroup=\"kvm\"\n";
        assert_eq!(conf_value(conf, "user").as_deref(), Some("+0"));
        assert_eq!(conf_value(conf, "group").as_deref(), Some("kvm"));
        assert_eq!(conf_value("#group = \"x\"\n", "group"), None);
        assert_eq!(uri_path("qemu:///system"), "/system");
        assert_eq!(uri_path("qemu+tcp://127.0.0.41:16510/system"), "/system");
        assert_eq!(uri_path("qemu:///session?socket=/x"), "/session");
        assert_eq!(uri_path("qemu"), "");
    }
}
