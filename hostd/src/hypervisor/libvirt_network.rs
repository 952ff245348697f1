//! drover's networks as libvirt networks (`drover-NAME`): defined persistently,
//! autostarted and started, redefined when the cluster's wiring changed, and for an
//! overlay joined by its VXLAN link (`crate::network::vxlan`). On the test driver the
//! libvirt network is all there is: no kernel bridge exists to join.

use std::collections::BTreeSet;

use virt::connect::Connect;
use virt::network::Network;
use virt::sys;

use super::libvirt_leases;
use crate::error::HostdError;
use crate::network::{
    confine, leases, overlay_link, Dhcp, NetworkWiring, VlanLink, VxlanLink, OVERLAY_BRIDGE,
    VLAN_BRIDGE, VLAN_LINK,
};

fn lookup(conn: &Connect, name: &str) -> Option<Network> {
    conn.lookup_network_by_name(name).ok()
}

/// Whether the network libvirt has is built as `wiring` wants it, by what hostd sets: its
/// bridge, forward mode, MTU, DHCP server address and (`dnsmasq`: a real daemon; the test
/// driver drops them) dnsmasq options. libvirt adds a UUID, a MAC and defaults of its
/// own. DHCP's host entries are not structure: they are updated in place.
fn same(existing: &str, wiring: &NetworkWiring, dnsmasq: bool) -> bool {
    let bridged = existing.contains("<forward mode='bridge'");
    let want_bridged = matches!(wiring.kind, crate::network::NetworkKind::Bridge { .. });
    let server = match &wiring.dhcp {
        Some(d) => existing.contains(&format!("<ip address='{}' prefix='{}'", d.server, d.prefix)),
        None => !existing.contains("<ip "),
    };
    // Only the bridges libvirt makes (overlays', VLANs') carry the MTU; an operator's keeps
    // its own.
    let mtu = match (&wiring.kind, wiring.mtu) {
        (
            crate::network::NetworkKind::Vxlan { .. } | crate::network::NetworkKind::Vlan { .. },
            Some(m),
        ) => existing.contains(&format!("<mtu size='{m}'/>")),
        _ => true,
    };
    let options = !dnsmasq || dnsmasq_options(existing) == wanted_options(wiring);
    existing.contains(&format!("<bridge name='{}'", wiring.bridge()))
        && bridged == want_bridged
        && server
        && mtu
        && options
}

/// The dnsmasq options of a network's XML, as libvirt writes them.
fn dnsmasq_options(xml: &str) -> BTreeSet<String> {
    xml.lines()
        .filter_map(|l| l.trim().strip_prefix("<dnsmasq:option value='"))
        .filter_map(|l| l.strip_suffix("'/>"))
        .map(String::from)
        .collect()
}

fn wanted_options(wiring: &NetworkWiring) -> BTreeSet<String> {
    wiring
        .dhcp
        .as_ref()
        .map(Dhcp::dnsmasq_options)
        .unwrap_or_default()
        .into_iter()
        .collect()
}

/// The DHCP host entries of a network's XML, as libvirt writes them.
fn dhcp_hosts(xml: &str) -> BTreeSet<String> {
    xml.lines()
        .map(str::trim)
        .filter(|l| l.starts_with("<host mac="))
        .map(String::from)
        .collect()
}

/// Sets `wiring` up here; returns the bridge guests join.
pub(super) fn ensure(
    conn: &Connect,
    wiring: &NetworkWiring,
    kernel_devices: bool,
) -> Result<String, HostdError> {
    let xml = wiring.libvirt_xml()?;
    let vxlan = if kernel_devices {
        wiring.vxlan()?
    } else {
        None
    };
    let vlan = wiring.vlan().filter(|_| kernel_devices);
    // First: a host that cannot make it is refused before anything is defined.
    if let Some(link) = &vlan {
        link.ensure_link()?;
    }
    let name = wiring.libvirt_name();
    let network = match lookup(conn, &name) {
        Some(n) => {
            let current = n
                .xml_desc(0)
                .map_err(HostdError::libvirt("network_get_xml_desc"))?;
            if same(&current, wiring, kernel_devices) {
                update_dhcp_hosts(&n, &current, wiring, true)?;
                n
            } else if n.is_active().unwrap_or(false) && !users(conn, &name)?.is_empty() {
                // Tearing the bridge down would cut the guests on it off: the new
                // definition waits for the network's next start (defined once: the
                // inactive definition has it then). DHCP entries change in place
                // meanwhile, so new guests are still answered.
                let pending = n
                    .xml_desc(sys::VIR_NETWORK_XML_INACTIVE)
                    .map_err(HostdError::libvirt("network_get_xml_desc"))?;
                if !same(&pending, wiring, kernel_devices) {
                    tracing::warn!(network = %wiring.name, "network wiring changed while guests use it; the change applies when none does");
                }
                // The definition as wanted, DHCP entries included; the running network's
                // entries are brought to it in place.
                define(conn, &xml)?;
                update_dhcp_hosts(&n, &current, wiring, false)?;
                n
            } else {
                tracing::info!(network = %wiring.name, "network wiring changed; redefining it");
                if n.is_active().unwrap_or(false) {
                    n.destroy()
                        .map_err(HostdError::libvirt("network_destroy"))?;
                }
                n.undefine()
                    .map_err(HostdError::libvirt("network_undefine"))?;
                // The network was another overlay or VLAN before (deleted and declared
                // again otherwise): its link goes with it.
                if let (true, Some(old)) = (kernel_devices, vxlan_link_of(&current)) {
                    if wiring.vxlan_link().as_deref() != Some(old.as_str()) {
                        remove_overlay_devices(&old)?;
                    }
                }
                if let (true, Some(old)) = (kernel_devices, vlan_link_of(&current)) {
                    if wiring.vlan().map(|l| l.name).as_deref() != Some(old.as_str()) {
                        VlanLink::remove(&old)?;
                    }
                }
                define(conn, &xml)?
            }
        }
        None => define(conn, &xml)?,
    };
    if !network
        .is_active()
        .map_err(HostdError::libvirt("network_is_active"))?
    {
        network
            .create()
            .map_err(HostdError::libvirt("network_create"))?;
    }
    if !network.autostart().unwrap_or(false) {
        network
            .set_autostart(true)
            .map_err(HostdError::libvirt("network_set_autostart"))?;
    }
    if let Some(link) = &vlan {
        link.attach()?;
    }
    if let Some(link) = vxlan {
        link.ensure()?;
        // Without the fence guests hear every host's (identical) answers: logged, and
        // the network still serves.
        if let Err(e) = confine::ensure(&link.name, wiring.dhcp.as_ref().map(|d| d.server)) {
            tracing::warn!(network = %wiring.name, error = %crate::error::error_chain(&e), "cannot keep the DHCP server to this host");
        }
    }
    if let (true, Some(dhcp)) = (kernel_devices, &wiring.dhcp) {
        release_stale_leases(&network, wiring, dhcp);
    }
    Ok(wiring.bridge())
}

/// Ends every lease dnsmasq holds that the cluster does not give (`network::leases`): an
/// address released while the network stayed up, or one whose lease outlived the network
/// (libvirt keeps a bridge's leases across a network's removal and definition again). A
/// lease left behind blocks one address for DHCP, not the network: logged.
fn release_stale_leases(network: &Network, wiring: &NetworkWiring, dhcp: &Dhcp) {
    let held = match libvirt_leases::leases(network) {
        Ok(held) => held,
        Err(e) => {
            tracing::warn!(network = %wiring.name, error = %crate::error::error_chain(&e), "cannot read the DHCP leases");
            return;
        }
    };
    let given: BTreeSet<(String, std::net::Ipv4Addr)> = dhcp
        .hosts
        .iter()
        .map(|h| (h.mac.to_ascii_lowercase(), h.ip))
        .collect();
    for (mac, ip) in held {
        if given.contains(&(mac.to_ascii_lowercase(), ip)) {
            continue;
        }
        tracing::info!(network = %wiring.name, %ip, %mac, "releasing a DHCP lease the cluster no longer gives");
        if let Err(e) = leases::release(&wiring.bridge(), ip, &mac) {
            tracing::warn!(network = %wiring.name, %ip, error = %crate::error::error_chain(&e), "cannot release a stale DHCP lease");
        }
    }
}

/// Brings DHCP's host entries to the cluster's, in place (`virNetworkUpdate`, live, and
/// with `config` in the persistent definition too, which is then the one `current` shows):
/// the network, and the guests on it, keep running.
fn update_dhcp_hosts(
    n: &Network,
    current: &str,
    wiring: &NetworkWiring,
    config: bool,
) -> Result<(), HostdError> {
    let Some(dhcp) = &wiring.dhcp else {
        return Ok(());
    };
    let have = dhcp_hosts(current);
    let want: BTreeSet<String> = dhcp.hosts.iter().map(|h| h.xml()).collect();
    let mut flags = 0;
    if config {
        flags |= sys::VIR_NETWORK_UPDATE_AFFECT_CONFIG;
    }
    if n.is_active().unwrap_or(false) {
        flags |= sys::VIR_NETWORK_UPDATE_AFFECT_LIVE;
    }
    if flags == 0 {
        return Ok(());
    }
    let section = sys::VIR_NETWORK_SECTION_IP_DHCP_HOST;
    for gone in have.difference(&want) {
        n.update(
            sys::VIR_NETWORK_UPDATE_COMMAND_DELETE,
            section,
            -1,
            gone,
            flags,
        )
        .map_err(HostdError::libvirt("network_update"))?;
    }
    for new in want.difference(&have) {
        n.update(
            sys::VIR_NETWORK_UPDATE_COMMAND_ADD_LAST,
            section,
            -1,
            new,
            flags,
        )
        .map_err(HostdError::libvirt("network_update"))?;
    }
    Ok(())
}

fn define(conn: &Connect, xml: &str) -> Result<Network, HostdError> {
    tracing::info!(xml, "defining network");
    conn.define_network_xml(xml)
        .map_err(HostdError::libvirt("network_define_xml"))
}

/// Stops and undefines network `name` (the cluster's name), and deletes an overlay's
/// VXLAN link; `false` if it was not defined.
pub(super) fn remove(conn: &Connect, name: &str, kernel_devices: bool) -> Result<bool, HostdError> {
    let libvirt_name = NetworkWiring::libvirt_name_of(name);
    let Some(n) = lookup(conn, &libvirt_name) else {
        return Ok(false);
    };
    // The last guard: a controller's view may lag (a migration arriving), and tearing the
    // bridge down under a guest cuts it off.
    let users = users(conn, &libvirt_name)?;
    if !users.is_empty() {
        return Err(HostdError::NetworkInUse {
            network: name.to_string(),
            domains: users.join(", "),
        });
    }
    let xml = n.xml_desc(0).unwrap_or_default();
    if n.is_active().unwrap_or(false) {
        n.destroy()
            .map_err(HostdError::libvirt("network_destroy"))?;
    }
    n.undefine()
        .map_err(HostdError::libvirt("network_undefine"))?;
    if let (true, Some(link)) = (kernel_devices, vxlan_link_of(&xml)) {
        remove_overlay_devices(&link)?;
    }
    if let (true, Some(link)) = (kernel_devices, vlan_link_of(&xml)) {
        VlanLink::remove(&link)?;
    }
    Ok(true)
}

/// Removes an overlay's VXLAN link and its DHCP fence, both attempted whatever the other
/// does (a retry finds the network gone and would not come back for them).
fn remove_overlay_devices(link: &str) -> Result<(), HostdError> {
    let fence = confine::remove(link);
    let device = VxlanLink::remove(link);
    fence.and(device)
}

/// What follows `prefix` in the bridge name of libvirt network XML `xml`.
fn bridge_suffix<'a>(xml: &'a str, prefix: &str) -> Option<&'a str> {
    xml.split(&format!("<bridge name='{prefix}"))
        .nth(1)?
        .split('\'')
        .next()
}

/// The VXLAN link of the overlay whose libvirt network XML is `xml`, from its bridge's
/// VNI.
fn vxlan_link_of(xml: &str) -> Option<String> {
    bridge_suffix(xml, OVERLAY_BRIDGE)?
        .parse()
        .ok()
        .map(overlay_link)
}

/// The 802.1Q link of the VLAN network whose libvirt network XML is `xml`: its bridge's
/// suffix names it too.
fn vlan_link_of(xml: &str) -> Option<String> {
    bridge_suffix(xml, VLAN_BRIDGE).map(|s| format!("{VLAN_LINK}{s}"))
}

/// The cluster names of the networks hostd defined here.
pub(super) fn list(conn: &Connect) -> Result<Vec<String>, HostdError> {
    let flags = sys::VIR_CONNECT_LIST_NETWORKS_ACTIVE | sys::VIR_CONNECT_LIST_NETWORKS_INACTIVE;
    let mut names: Vec<String> = conn
        .list_all_networks(flags)
        .map_err(HostdError::libvirt("list_all_networks"))?
        .iter()
        .filter_map(|n| n.name().ok())
        .filter_map(|n| {
            n.strip_prefix(crate::network::NETWORK_PREFIX)
                .map(String::from)
        })
        .collect();
    names.sort();
    Ok(names)
}

/// The domains here, drover's or not, with an interface on libvirt network `libvirt_name`.
fn users(conn: &Connect, libvirt_name: &str) -> Result<Vec<String>, HostdError> {
    let needle = format!("<source network='{libvirt_name}'");
    let mut names = Vec::new();
    for dom in conn
        .list_all_domains(0)
        .map_err(HostdError::libvirt("list_all_domains"))?
    {
        // A domain gone since the listing uses nothing.
        let Ok(xml) = dom.xml_desc(0) else {
            continue;
        };
        if xml.contains(&needle) {
            names.push(dom.name().unwrap_or_default());
        }
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_changed_mtu_or_dhcp_server_is_a_changed_network() {
        use crate::network::{Dhcp, NetworkKind};
        let wiring = |mtu, dhcp: Option<Dhcp>| NetworkWiring {
            name: "blue".into(),
            kind: NetworkKind::Vxlan {
                vni: 7,
                local: None,
                peers: vec![],
            },
            mtu,
            dhcp,
        };
        let have = wiring(Some(1450), None).libvirt_xml().unwrap();
        assert!(same(&have, &wiring(Some(1450), None), true));
        assert!(!same(&have, &wiring(Some(1400), None), true));
        let dhcp = Dhcp {
            server: std::net::Ipv4Addr::new(10, 0, 0, 2),
            prefix: 24,
            hosts: vec![],
            gateway: None,
            dns: vec![],
        };
        assert!(!same(&have, &wiring(Some(1450), Some(dhcp.clone())), true));

        // A gateway or DNS change is structure on a real daemon (dnsmasq reads its
        // options at start); the test driver keeps no options to compare.
        let have = wiring(Some(1450), Some(dhcp.clone()))
            .libvirt_xml()
            .unwrap();
        assert!(same(&have, &wiring(Some(1450), Some(dhcp.clone())), true));
        let routed = Dhcp {
            gateway: Some(std::net::Ipv4Addr::new(10, 0, 0, 1)),
            ..dhcp.clone()
        };
        assert!(!same(
            &have,
            &wiring(Some(1450), Some(routed.clone())),
            true
        ));
        assert!(same(
            &have,
            &wiring(Some(1450), Some(routed.clone())),
            false
        ));
        let have = wiring(Some(1450), Some(routed.clone()))
            .libvirt_xml()
            .unwrap();
        assert!(same(&have, &wiring(Some(1450), Some(routed)), true));
        assert!(!same(&have, &wiring(Some(1450), Some(dhcp)), true));
    }

    #[test]
    fn an_overlays_link_is_found_from_its_bridge() {
        let xml = "<network>\n  <name>drover-blue</name>\n  <bridge name='drvb77' stp='off' delay='0'/>\n</network>";
        assert_eq!(vxlan_link_of(xml).as_deref(), Some("drvx77"));
        assert_eq!(vxlan_link_of("<bridge name='br0'/>"), None);
        let vlan = "<network>\n  <name>drover-v</name>\n  <bridge name='drvl42-abc123' stp='off' delay='0'/>\n</network>";
        assert_eq!(vlan_link_of(vlan).as_deref(), Some("drvq42-abc123"));
        assert_eq!(vxlan_link_of(vlan), None);
        assert_eq!(vlan_link_of(xml), None);
    }
}
