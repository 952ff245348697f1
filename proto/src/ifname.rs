//! The one rule for Linux interface names (bridges, VLAN parents), shared by the
//! controllers (which refuse a bad one before it is replicated) and hostd (which refuses
//! one from anywhere else: the name goes into libvirt XML and iproute2's arguments).

/// Linux interface names are at most 15 bytes (IFNAMSIZ less the NUL).
pub const MAX_IFNAME_LEN: usize = 15;

/// Most interface names a host reports (hostd) and the cluster believes (`apply`): a
/// host with more is mis-reporting.
pub const MAX_HOST_LINKS: usize = 4096;

/// 1–15 bytes of `[A-Za-z0-9_.-]`; the reason otherwise.
pub fn validate_ifname(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty");
    }
    if name.len() > MAX_IFNAME_LEN {
        return Err("longer than 15 bytes");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
    {
        return Err("allowed are A-Z a-z 0-9 _ . -");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_linux_accepts() {
        assert!(validate_ifname("br0").is_ok());
        assert!(validate_ifname("drvb16777215").is_ok());
        assert_eq!(validate_ifname(""), Err("empty"));
        assert_eq!(
            validate_ifname("a-name-far-too-long"),
            Err("longer than 15 bytes")
        );
        assert!(validate_ifname("br0'/><x").is_err());
    }
}
