//! Leases libvirt's dnsmasq handed out for addresses the cluster has since released.
//!
//! Why: dnsmasq will not give a static host entry's address to its new MAC while the old
//! MAC's lease on it runs (an hour), even after the old entry is gone, and libvirt keeps
//! a bridge's leases when its network is removed and defined again: a VM created with an
//! address a deleted VM held would ask DHCP in vain. Whenever hostd wires a network, it
//! tells dnsmasq every lease the cluster does not give is over, with `dhcp_release`
//! (Debian package dnsmasq-utils), as OpenStack's DHCP agent does for deleted ports.
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
