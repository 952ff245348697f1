//! The cluster's domain model: what the state machine holds and replicates, and the rules
//! for names and addresses in it.

mod cloud_init;
mod disk;
mod drill;
mod drill_schedule;
mod event;
mod host;
mod host_networking;
mod image;
mod labels;
mod leader_drill;
mod migration_drill;
mod moves;
mod network;
mod network_error;
mod nic;
mod operation;
mod placement;
mod pool;
mod security_group;
mod state;
mod subnet;
mod token;
mod vm;

pub use cloud_init::{
    instance_id, seed_volume_name, validate_hostname, CloudInit, CloudInitError,
    MAX_USER_DATA_BYTES,
};
pub use disk::{
    volume_name, Disk, DiskFormat, DiskSpec, MAX_DISKS, MAX_DISK_BYTES, MIN_DISK_BYTES,
};
pub use drill::{
    DrillMode, DrillPhase, DrillReport, DrillVm, Verdict, MAX_DRILL_DURATION_MS,
    MIN_DRILL_DURATION_MS,
};
pub use drill_schedule::{DrillSchedule, ScheduledRun, Window, MAX_SCHEDULED_RUNS, MIN_EVERY_MS};
pub use drover_proto::pool_path::{validate_pool_path, MAX_POOL_PATH_LEN};
pub use event::{Event, EventKind, EventLog, MAX_EVENTS};
pub use host::{AdminState, Capacity, DeadReason, Host, HostHealth};
pub use host_networking::{HostNetworking, MAX_HOST_LINKS};
pub use image::{image_volume_name, DiskBacking, Image, ImageCopy, ImageFormat, ImageState};
pub use labels::{parse_label, validate_labels, Labels};
pub use leader_drill::{
    LeaderDrillMeasure, LeaderDrillMode, LeaderDrillReport, MAX_LEADER_DRILL_MS, MAX_PROBES,
};
pub use migration_drill::{DrillLeg, MigrationDrillReport};
pub use moves::MayStillRun;
pub use network::{
    mac_for, validate_ifname, AddressHolder, Network, NetworkKind, NetworkSpec, MAX_MTU,
    MAX_SUBNETS, MAX_VLAN_TAG, MAX_VNI, MIN_MTU, VXLAN_DEFAULT_MTU,
};
pub use network_error::NetworkError;
pub use nic::{Nic, NicSpec, MAX_NICS};
pub use operation::{
    DrainProgress, MigrationPolicy, MigrationProgress, OpKind, OpState, Operation, Operations,
    Progress, MAX_FINISHED_DRILLS, MAX_FINISHED_OPS,
};
pub use placement::{PlacementPolicy, Weigher};
pub use pool::{Pool, PoolHosts, PoolKind, PoolOnHost, PoolSpec, MAX_POOL_REASON_LEN};
pub use security_group::{SecurityGroup, SgProto, SgRule, MAX_SG_RULES, MAX_VM_GROUPS};
pub use state::{ClusterState, HaSettings, LeaseConfig, MAX_LEASE_TTL_MS, MIN_BEATS_PER_TTL};
pub use subnet::{parse_cidr, parse_range, parse_relative, AddrRange, Subnet};
pub use token::{Token, MAX_TOKENS};
pub use vm::{DesiredState, ObservedState, Vm, VmOptions, VmSpec};

/// Longest accepted host or VM name; libvirt and DNS labels both stay happy below this.
pub const MAX_NAME_LEN: usize = 63;

/// Checks a host or VM name: 1–63 characters of `[A-Za-z0-9._-]`, starting alphanumeric.
/// Names become libvirt domain names and file names, so anything else is refused.
pub fn validate_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("name is empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("name is longer than {MAX_NAME_LEN} characters"));
    }
    let mut chars = name.chars();
    let first = chars.next().unwrap_or('-');
    if !first.is_ascii_alphanumeric() {
        return Err(format!("name {name:?} must start with a letter or digit"));
    }
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "name {name:?} contains {bad:?}; allowed are A-Z a-z 0-9 . _ -"
        ));
    }
    Ok(())
}

/// Checks a `host:port` address: a non-empty host and a port in 1..=65535. The one rule
/// for host addresses, controller addresses and membership changes alike.
pub fn validate_address(address: &str) -> Result<(), String> {
    let (host, port) = address
        .rsplit_once(':')
        .ok_or_else(|| "expected host:port".to_string())?;
    validate_host_part(host)?;
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err("port must be a number in 1..=65535".into()),
        Ok(_) => Ok(()),
    }
}

/// Longest DNS name (RFC 1035).
const MAX_HOSTNAME_LEN: usize = 253;

/// The host part of an address: an IPv4 address, a bracketed IPv6 one, or a DNS name
/// (labels of letters, digits and inner hyphens, 63 at most each, 253 in all). Addresses
/// end up in URIs, logs and certificates: anything else is refused, not escaped.
pub fn validate_host_part(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("host part is empty".into());
    }
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        return inner
            .parse::<std::net::Ipv6Addr>()
            .map(drop)
            .map_err(|_| format!("{host} is not an IPv6 address"));
    }
    if host.parse::<std::net::Ipv4Addr>().is_ok() {
        return Ok(());
    }
    if host.len() > MAX_HOSTNAME_LEN {
        return Err(format!(
            "host name is longer than {MAX_HOSTNAME_LEN} characters"
        ));
    }
    for label in host.split('.') {
        let plain = label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if label.is_empty()
            || label.len() > MAX_NAME_LEN
            || !plain
            || label.starts_with('-')
            || label.ends_with('-')
        {
            return Err(format!(
                "host {host:?} is neither an IP address nor a DNS name \
                 (labels of A-Z a-z 0-9 and inner -, at most {MAX_NAME_LEN} each)"
            ));
        }
    }
    Ok(())
}

/// Longest libvirt URI a host may report as its migration URI.
pub const MAX_URI_LEN: usize = 1024;

/// Checks a libvirt URI a host reports (`qemu+tcp://10.0.0.5/system`): `scheme:` of
/// lower-case letters, digits and `+`, then printable ASCII without spaces. hostd's
/// reports are input like any other: a broken or hostile host must not put arbitrary
/// text into the replicated state (it is handed to other hosts' libvirt as is).
pub fn validate_libvirt_uri(uri: &str) -> Result<(), String> {
    if uri.len() > MAX_URI_LEN {
        return Err(format!("URI is longer than {MAX_URI_LEN} characters"));
    }
    let (scheme, _) = uri
        .split_once(':')
        .ok_or_else(|| format!("{uri:?} has no scheme"))?;
    let scheme_ok = !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '+');
    if !scheme_ok {
        return Err(format!("{uri:?} has no valid scheme"));
    }
    if let Some(bad) = uri.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(format!("{uri:?} contains {bad:?}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{validate_address, validate_libvirt_uri, validate_name};

    #[test]
    fn addresses() {
        assert!(validate_address("127.0.0.1:7001").is_ok());
        assert!(validate_address("ctl1.example:1").is_ok());
        assert!(validate_address("[::1]:7001").is_ok());
        assert!(validate_address("host-1.rack-2.example.org:7001").is_ok());
        let long_label = format!("{}:1", "a".repeat(64));
        let long_name = format!("{}:1", ["abc"; 70].join("."));
        for bad in [
            "nohost",
            ":80",
            "h:0",
            "h:99999",
            "h:x",
            "a b:80",
            "evil/path:80",
            "h..x:80",
            "-h:80",
            "[not-v6]:80",
            "h\n:80",
            "user@h:80",
            &long_label,
            &long_name,
        ] {
            assert!(validate_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn libvirt_uris() {
        for good in [
            "qemu+tcp://127.0.0.41:16510/system",
            "qemu:///system",
            "test:///default",
            "qemu+ssh://root@h1/system?keyfile=/k",
        ] {
            assert!(validate_libvirt_uri(good).is_ok(), "{good}");
        }
        let long = format!("qemu+tcp://{}/system", "a".repeat(1100));
        for bad in [
            "",
            "nouri",
            "QEMU://x",
            "qemu://a b",
            "qemu://a\u{7f}",
            "qemu://\u{e9}",
            &long,
        ] {
            assert!(validate_libvirt_uri(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn names() {
        assert!(validate_name("web-1").is_ok());
        assert!(validate_name("a").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("-x").is_err());
        assert!(validate_name("a b").is_err());
        assert!(validate_name("a/b").is_err());
        assert!(validate_name(&"x".repeat(64)).is_err());
    }
}
