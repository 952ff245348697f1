//! The cluster's domain model: what the state machine holds and replicates.

mod host;
mod state;
mod vm;

pub use host::{Capacity, Host, HostHealth};
pub use state::ClusterState;
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

#[cfg(test)]
mod tests {
    use super::validate_name;

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
