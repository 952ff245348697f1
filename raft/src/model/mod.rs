//! The cluster's domain model: what the state machine holds and replicates, and the rules
//! for names and addresses in it.

mod event;
mod host;
mod labels;
mod moves;
mod operation;
mod placement;
mod state;
mod token;
mod vm;

pub use event::{Event, EventKind, EventLog, MAX_EVENTS};
pub use host::{AdminState, Capacity, DeadReason, Host, HostHealth};
pub use labels::{parse_label, validate_labels, Labels};
pub use moves::MayStillRun;
pub use operation::{
    DrainProgress, MigrationPolicy, MigrationProgress, OpKind, OpState, Operation, Operations,
    Progress, MAX_FINISHED_OPS,
};
pub use placement::{PlacementPolicy, Weigher};
pub use state::{ClusterState, HaSettings, LeaseConfig, MAX_LEASE_TTL_MS, MIN_BEATS_PER_TTL};
pub use token::{Token, MAX_TOKENS};
pub use vm::{DesiredState, ObservedState, Vm, VmSpec};

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
    if host.is_empty() {
        return Err("host part is empty".into());
    }
    match port.parse::<u16>() {
        Ok(0) | Err(_) => Err("port must be a number in 1..=65535".into()),
        Ok(_) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::{validate_address, validate_name};

    #[test]
    fn addresses() {
        assert!(validate_address("127.0.0.1:7001").is_ok());
        assert!(validate_address("ctl1.example:1").is_ok());
        for bad in ["nohost", ":80", "h:0", "h:99999", "h:x"] {
            assert!(validate_address(bad).is_err(), "{bad}");
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
