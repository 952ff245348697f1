//! The host's own network interfaces, as reported in every heartbeat: the cluster places
//! a VM on a bridge or VLAN network only on hosts that have its bridge or parent.

use std::collections::BTreeSet;

use super::{overlay_link, OVERLAY_BRIDGE, VLAN_BRIDGE, VLAN_LINK};

/// Where the kernel lists this network namespace's interfaces.
const SYS_CLASS_NET: &str = "/sys/class/net";

/// Names under `/sys/class/net` that are the host's own, sorted. Names drover could not
/// use for a network anyway (Linux allows `wg@x`, the cluster's rule does not) are left
/// out, so that one of them does not void the whole report.
pub fn host_links() -> std::io::Result<BTreeSet<String>> {
    let mut links = BTreeSet::new();
    for entry in std::fs::read_dir(SYS_CLASS_NET)? {
        if let Some(name) = entry?.file_name().to_str() {
            if reportable(name) && drover_proto::ifname::validate_ifname(name).is_ok() {
                links.insert(name.to_string());
            }
        }
    }
    // The cluster believes no more than this many.
    let most = drover_proto::ifname::MAX_HOST_LINKS;
    Ok(links.into_iter().take(most).collect())
}

/// Not loopback, and not made for guests: an overlay's or VLAN's bridge or link (hostd's),
/// a guest's tap (libvirt's `vnetN`).
fn reportable(name: &str) -> bool {
    let overlay = overlay_link(0);
    let overlay = overlay.trim_end_matches('0');
    name != "lo"
        && ![OVERLAY_BRIDGE, overlay, VLAN_BRIDGE, VLAN_LINK, "vnet"]
            .iter()
            .any(|prefix| name.starts_with(prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guests_devices_are_not_the_hosts() {
        for name in ["br0", "eth0", "enp1s0", "bond0", "virbr0"] {
            assert!(reportable(name), "{name}");
        }
        for name in [
            "lo",
            "drvb7",
            "drvx7",
            "drvl5-a1b2c3",
            "drvq5-a1b2c3",
            "vnet12",
        ] {
            assert!(!reportable(name), "{name}");
        }
    }

    #[test]
    fn this_host_has_links() {
        // Every namespace has at least loopback, which is left out: the call itself must
        // work here (sysfs is mounted wherever hostd runs).
        let links = host_links().expect("read /sys/class/net");
        assert!(!links.contains("lo"));
    }
}
