//! How a cluster network is wired on this host, and the libvirt network that carries it
//! (pure, tested). Every kind becomes a libvirt network `drover-NAME`, so a domain's NIC
//! names the network, not a bridge, and a migration's destination resolves it to its own:
//! - `bridge`: libvirt's bridge forwarding onto the operator's existing bridge;
//! - `vxlan`: an isolated libvirt network, whose bridge libvirt creates, plus the VXLAN
//!   link hostd enslaves to it (`super::vxlan`: libvirt has no VXLAN device);
//! - `vlan`: like an overlay, an isolated libvirt network whose bridge libvirt creates,
//!   plus the 802.1Q link on `parent` hostd enslaves to it (`super::vlan`) — refused on
//!   kernels without 802.1Q (this machine kind's), before anything is defined.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use crate::error::HostdError;

/// libvirt network names hostd owns start with this (networks carry no metadata mark).
pub const NETWORK_PREFIX: &str = "drover-";

/// An overlay's bridge is this and its VNI, which is unique in the cluster and keeps the
/// name within 15 bytes (`drvb16777215`); its VXLAN link is [`overlay_link`].
pub const OVERLAY_BRIDGE: &str = "drvb";

pub fn overlay_link(vni: u32) -> String {
    format!("drvx{vni}")
}

/// A VLAN network's bridge is this and [`vlan_suffix`]; its 802.1Q link is
/// [`VLAN_LINK`] and the same suffix.
pub const VLAN_BRIDGE: &str = "drvl";
pub const VLAN_LINK: &str = "drvq";

/// What names a VLAN network's devices on a host: its tag, and a hash of its parent's
/// name, since a tag is one network per parent (`drvl4094-abc123`: 15 bytes, the kernel's
/// most). FNV-1a folded to 24 bits, fixed for good: the names must be the same in every
/// version of hostd. Two parents of one host that collide are refused, not confused
/// (`VlanLink::ensure_link`).
pub fn vlan_suffix(tag: u16, parent: &str) -> String {
    let hash = parent.bytes().fold(0x811c_9dc5_u32, |h, b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    });
    format!("{tag}-{:06x}", (hash >> 24) ^ (hash & 0x00ff_ffff))
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NetworkKind {
    Bridge {
        bridge: String,
    },
    Vxlan {
        vni: u32,
        /// This host's underlay address (hostd's `--vtep-address`); `None`: not known.
        local: Option<Ipv4Addr>,
        peers: Vec<Ipv4Addr>,
    },
    Vlan {
        tag: u16,
        parent: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkWiring {
    pub name: String,
    pub kind: NetworkKind,
    /// The guests' MTU (an overlay's bridge gets it too); `None`: the bridge's own.
    pub mtu: Option<u32>,
    /// DHCP on an overlay's bridge (libvirt's dnsmasq, static entries only).
    pub dhcp: Option<Dhcp>,
}

/// A subnet this host serves DHCP on: from `server` (on the bridge), the cluster's
/// addresses by MAC, with the subnet's gateway and DNS servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dhcp {
    pub server: Ipv4Addr,
    pub prefix: u8,
    pub hosts: Vec<DhcpHost>,
    /// Given as the router; `None`: none (libvirt's isolated networks give none either).
    pub gateway: Option<Ipv4Addr>,
    /// Given as DNS servers; empty: libvirt's default, the server's own address.
    pub dns: Vec<Ipv4Addr>,
}

/// The XML namespace of libvirt's pass-through options to a network's dnsmasq.
const DNSMASQ_NS: &str = "http://libvirt.org/schemas/network/dnsmasq/1.0";

impl Dhcp {
    /// dnsmasq options for what libvirt's network XML cannot say: the router and DNS
    /// servers of an isolated network. dnsmasq takes the last of repeated options, so
    /// these win over libvirt's empty `dhcp-option=3`.
    pub fn dnsmasq_options(&self) -> Vec<String> {
        let mut options = Vec::new();
        if let Some(gw) = self.gateway {
            options.push(format!("dhcp-option=option:router,{gw}"));
        }
        if !self.dns.is_empty() {
            let dns: Vec<String> = self.dns.iter().map(ToString::to_string).collect();
            options.push(format!("dhcp-option=option:dns-server,{}", dns.join(",")));
        }
        options
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DhcpHost {
    pub mac: String,
    pub ip: Ipv4Addr,
}

impl DhcpHost {
    /// The `<host>` element, as the network XML and `virNetworkUpdate` take it.
    pub fn xml(&self) -> String {
        format!("<host mac='{}' ip='{}'/>", self.mac, self.ip)
    }
}

impl NetworkWiring {
    pub fn libvirt_name_of(name: &str) -> String {
        format!("{NETWORK_PREFIX}{name}")
    }

    pub fn libvirt_name(&self) -> String {
        Self::libvirt_name_of(&self.name)
    }

    /// The Linux bridge guests' NICs join here ([`OVERLAY_BRIDGE`] for an overlay).
    pub fn bridge(&self) -> String {
        match &self.kind {
            NetworkKind::Bridge { bridge } => bridge.clone(),
            NetworkKind::Vxlan { vni, .. } => format!("{OVERLAY_BRIDGE}{vni}"),
            NetworkKind::Vlan { tag, parent } => {
                format!("{VLAN_BRIDGE}{}", vlan_suffix(*tag, parent))
            }
        }
    }

    /// The overlay's VXLAN link's name, for `vxlan` networks.
    pub fn vxlan_link(&self) -> Option<String> {
        match &self.kind {
            NetworkKind::Vxlan { vni, .. } => Some(overlay_link(*vni)),
            NetworkKind::Bridge { .. } | NetworkKind::Vlan { .. } => None,
        }
    }

    /// The VLAN's 802.1Q link, for `vlan` networks.
    pub fn vlan(&self) -> Option<super::VlanLink> {
        let NetworkKind::Vlan { tag, parent } = &self.kind else {
            return None;
        };
        Some(super::VlanLink {
            name: format!("{VLAN_LINK}{}", vlan_suffix(*tag, parent)),
            parent: parent.clone(),
            tag: *tag,
            bridge: self.bridge(),
            mtu: self.mtu,
        })
    }

    /// The overlay's VXLAN link, for `vxlan` networks; refused without an underlay
    /// address to send from.
    pub fn vxlan(&self) -> Result<Option<super::VxlanLink>, HostdError> {
        let NetworkKind::Vxlan { vni, local, peers } = &self.kind else {
            return Ok(None);
        };
        let local = local.ok_or_else(|| {
            HostdError::InvalidArgument(format!(
                "network {} is a VXLAN overlay and this hostd has no underlay address \
                 (start it with --vtep-address)",
                self.name
            ))
        })?;
        Ok(Some(super::VxlanLink {
            name: overlay_link(*vni),
            vni: *vni,
            local,
            port: super::VXLAN_PORT,
            bridge: self.bridge(),
            mtu: self.mtu,
            // Never to itself: its own flooding entry would loop every broadcast back.
            peers: peers.iter().copied().filter(|p| *p != local).collect(),
        }))
    }

    /// The libvirt network's XML. Names come validated by the cluster (interface names:
    /// `[A-Za-z0-9_.-]`, network names likewise), so nothing needs escaping.
    pub fn libvirt_xml(&self) -> Result<String, HostdError> {
        let mut xml = String::new();
        let options = self
            .dhcp
            .as_ref()
            .map(Dhcp::dnsmasq_options)
            .unwrap_or_default();
        if options.is_empty() {
            let _ = writeln!(xml, "<network>");
        } else {
            let _ = writeln!(xml, "<network xmlns:dnsmasq='{DNSMASQ_NS}'>");
        }
        let _ = writeln!(xml, "  <name>{}</name>", self.libvirt_name());
        match &self.kind {
            NetworkKind::Bridge { bridge } => {
                let _ = writeln!(xml, "  <forward mode='bridge'/>");
                let _ = writeln!(xml, "  <bridge name='{bridge}'/>");
            }
            NetworkKind::Vxlan { .. } | NetworkKind::Vlan { .. } => {
                // No <forward>: isolated. libvirt creates the bridge; the VXLAN or 802.1Q
                // link is its way off the host.
                let _ = writeln!(
                    xml,
                    "  <bridge name='{}' stp='off' delay='0'/>",
                    self.bridge()
                );
                if let Some(mtu) = self.mtu {
                    let _ = writeln!(xml, "  <mtu size='{mtu}'/>");
                }
                if let Some(dhcp) = &self.dhcp {
                    // No <range>: libvirt's dnsmasq answers only the hosts listed.
                    let _ = writeln!(
                        xml,
                        "  <ip address='{}' prefix='{}'>\n    <dhcp>",
                        dhcp.server, dhcp.prefix
                    );
                    for host in &dhcp.hosts {
                        let _ = writeln!(xml, "      {}", host.xml());
                    }
                    let _ = writeln!(xml, "    </dhcp>\n  </ip>");
                }
                if !options.is_empty() {
                    let _ = writeln!(xml, "  <dnsmasq:options>");
                    for option in &options {
                        let _ = writeln!(xml, "    <dnsmasq:option value='{option}'/>");
                    }
                    let _ = writeln!(xml, "  </dnsmasq:options>");
                }
            }
        }
        let _ = writeln!(xml, "</network>");
        Ok(xml)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bridge_network_forwards_onto_the_operators_bridge() {
        let w = NetworkWiring {
            name: "prod".into(),
            kind: NetworkKind::Bridge {
                bridge: "br0".into(),
            },
            mtu: None,
            dhcp: None,
        };
        let xml = w.libvirt_xml().unwrap();
        assert!(xml.contains("<name>drover-prod</name>"), "{xml}");
        assert!(xml.contains("<forward mode='bridge'/>"), "{xml}");
        assert!(xml.contains("<bridge name='br0'/>"), "{xml}");
        assert_eq!(w.vxlan_link(), None);
    }

    #[test]
    fn an_overlay_is_an_isolated_bridge_named_for_its_vni() {
        let w = NetworkWiring {
            name: "blue".into(),
            kind: NetworkKind::Vxlan {
                vni: 16_777_215,
                local: None,
                peers: vec![],
            },
            mtu: Some(1450),
            dhcp: Some(Dhcp {
                server: Ipv4Addr::new(10, 10, 0, 2),
                prefix: 24,
                hosts: vec![DhcpHost {
                    mac: "02:00:00:00:00:01".into(),
                    ip: Ipv4Addr::new(10, 10, 0, 10),
                }],
                gateway: Some(Ipv4Addr::new(10, 10, 0, 1)),
                dns: vec![Ipv4Addr::new(10, 10, 0, 53), Ipv4Addr::new(10, 10, 0, 54)],
            }),
        };
        let xml = w.libvirt_xml().unwrap();
        assert!(
            xml.contains("<ip address='10.10.0.2' prefix='24'>"),
            "{xml}"
        );
        assert!(
            xml.contains("<host mac='02:00:00:00:00:01' ip='10.10.0.10'/>"),
            "{xml}"
        );
        assert!(!xml.contains("<range"), "static entries only: {xml}");
        assert!(!xml.contains("<forward"), "isolated: {xml}");
        assert!(
            xml.contains("<bridge name='drvb16777215' stp='off' delay='0'/>"),
            "{xml}"
        );
        assert!(xml.contains("<mtu size='1450'/>"), "{xml}");
        assert!(w.bridge().len() <= 15 && w.vxlan_link().unwrap().len() <= 15);
        // The router and DNS servers go to dnsmasq, which libvirt's XML cannot tell.
        assert!(
            xml.starts_with(&format!("<network xmlns:dnsmasq='{DNSMASQ_NS}'>")),
            "{xml}"
        );
        assert!(
            xml.contains("<dnsmasq:option value='dhcp-option=option:router,10.10.0.1'/>"),
            "{xml}"
        );
        assert!(
            xml.contains(
                "<dnsmasq:option value='dhcp-option=option:dns-server,10.10.0.53,10.10.0.54'/>"
            ),
            "{xml}"
        );
    }

    #[test]
    fn without_gateway_or_dns_dnsmasq_gets_no_options() {
        let dhcp = Dhcp {
            server: Ipv4Addr::new(10, 10, 0, 2),
            prefix: 24,
            hosts: vec![],
            gateway: None,
            dns: vec![],
        };
        assert!(dhcp.dnsmasq_options().is_empty());
        let w = NetworkWiring {
            name: "blue".into(),
            kind: NetworkKind::Vxlan {
                vni: 7,
                local: None,
                peers: vec![],
            },
            mtu: None,
            dhcp: Some(dhcp),
        };
        let xml = w.libvirt_xml().unwrap();
        assert!(xml.starts_with("<network>\n"), "{xml}");
        assert!(!xml.contains("dnsmasq"), "{xml}");
    }

    #[test]
    fn a_vlans_devices_are_named_for_tag_and_parent_within_15_bytes() {
        let vlan = |tag, parent: &str| NetworkWiring {
            name: "v".into(),
            kind: NetworkKind::Vlan {
                tag,
                parent: parent.into(),
            },
            mtu: None,
            dhcp: None,
        };
        let w = vlan(4094, "enp129s0f1np1");
        let link = w.vlan().unwrap();
        assert!(w.bridge().starts_with("drvl4094-"), "{}", w.bridge());
        assert_eq!(link.name, w.bridge().replacen(VLAN_BRIDGE, VLAN_LINK, 1));
        assert!(w.bridge().len() <= 15 && link.name.len() <= 15);
        assert_eq!(link.bridge, w.bridge());
        // One tag on two parents is two networks: two bridges.
        assert_ne!(vlan(5, "eth0").bridge(), vlan(5, "eth1").bridge());
        assert_eq!(vlan(5, "eth0").bridge(), vlan(5, "eth0").bridge());
        // Fixed for good: a new hostd must find the devices an older one made.
        assert_eq!(vlan_suffix(5, "eth0"), "5-b19743", "the hash changed");
        let xml = w.libvirt_xml().unwrap();
        assert!(
            !xml.contains("<forward"),
            "isolated, like an overlay: {xml}"
        );
        assert!(
            xml.contains(&format!(
                "<bridge name='{}' stp='off' delay='0'/>",
                w.bridge()
            )),
            "{xml}"
        );
    }
}
