//! Leases libvirt's dnsmasq handed out for addresses the cluster has since released.
//!
//! Why: dnsmasq will not give a static host entry's address to its new MAC while the old
//! MAC's lease on it runs (an hour), even after the old entry is gone: a VM created with
//! an address a deleted VM held would ask DHCP in vain. When an entry goes, hostd tells
//! dnsmasq the lease is over with `dhcp_release` (Debian package dnsmasq-utils), as
//! OpenStack's DHCP agent does for deleted ports.
//! Blocking: called from `spawn_blocking` like every libvirt call.

use std::net::Ipv4Addr;

use super::vxlan::run;
use crate::error::HostdError;

/// Ends the lease of `ip` held by `mac` at the dnsmasq serving `bridge`.
pub fn release(bridge: &str, ip: Ipv4Addr, mac: &str) -> Result<(), HostdError> {
    drover_proto::ifname::validate_ifname(bridge)
        .map_err(|why| HostdError::InvalidArgument(format!("bridge {bridge:?}: {why}")))?;
    if !super::taps::is_mac(mac) {
        return Err(HostdError::InvalidArgument(format!("MAC {mac:?}")));
    }
    run("dhcp_release", &[bridge, &ip.to_string(), mac]).map(drop)
}

/// The MAC and address of a DHCP host entry as libvirt writes it
/// (`<host mac='02:…' ip='10.0.0.5'/>`).
pub fn entry(xml: &str) -> Option<(String, Ipv4Addr)> {
    let value = |name: &str| {
        let at = xml.find(&format!("{name}="))? + name.len() + 1;
        let quote = xml[at..].chars().next()?;
        let rest = &xml[at + 1..];
        Some(rest[..rest.find(quote)?].to_string())
    };
    Some((value("mac")?, value("ip")?.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_read_as_libvirt_writes_them() {
        assert_eq!(
            entry("<host mac='02:00:00:00:00:07' ip='10.77.0.12'/>"),
            Some(("02:00:00:00:00:07".into(), Ipv4Addr::new(10, 77, 0, 12)))
        );
        assert_eq!(entry("<host mac='02:00:00:00:00:07'/>"), None);
    }
}
