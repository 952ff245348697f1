//! What a host can carry, network-wise, as its hostd reports it: the address its VXLAN
//! tunnels run over, the interfaces (bridges, VLAN parents) it has, and whether its kernel
//! makes 802.1Q links. The scheduler
//! places a VM only on hosts that carry all its networks, and overlays name their peers by
//! these addresses (not by hostd's gRPC address: the management and tunnel networks of a
//! real host are often apart).

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::NetworkKind;

pub use drover_proto::ifname::MAX_HOST_LINKS;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostNetworking {
    /// The host's VXLAN underlay address (hostd's `--vtep-address`); `None`: overlays
    /// cannot run there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub underlay: Option<Ipv4Addr>,
    /// Names of the host's network interfaces other than those drover and libvirt make
    /// for guests.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub links: BTreeSet<String>,
    /// Whether VLAN networks can be wired there (its kernel makes 802.1Q links). `None`:
    /// not reported (a hostd from before this field, or log entries written then): not a
    /// reason to refuse, so that old entries replay as they were applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan_links: Option<bool>,
}

impl HostNetworking {
    /// A report is input like any other: names must be names, the address an address a
    /// tunnel can use.
    pub fn validate(&self) -> Result<(), String> {
        if let Some(ip) = self.underlay {
            if ip.is_unspecified() || ip.is_multicast() || ip.is_broadcast() {
                return Err(format!("underlay address {ip} cannot carry tunnels"));
            }
        }
        if self.links.len() > MAX_HOST_LINKS {
            return Err(format!(
                "{} interfaces reported; at most {MAX_HOST_LINKS} are believed",
                self.links.len()
            ));
        }
        for link in &self.links {
            drover_proto::ifname::validate_ifname(link)
                .map_err(|why| format!("interface name {link:?}: {why}"))?;
        }
        Ok(())
    }

    /// Why a network of kind `kind` cannot run on this host, or `None` if it can.
    pub fn cannot_carry(&self, kind: &NetworkKind) -> Option<String> {
        match kind {
            NetworkKind::Bridge { bridge } if !self.links.contains(bridge) => {
                Some(format!("has no bridge {bridge}"))
            }
            NetworkKind::Vlan { parent, .. } if !self.links.contains(parent) => {
                Some(format!("has no interface {parent} for VLANs"))
            }
            NetworkKind::Vlan { .. } if self.vlan_links == Some(false) => {
                Some("its kernel makes no 802.1Q VLAN links".into())
            }
            NetworkKind::Vxlan { .. } if self.underlay.is_none() => {
                Some("has no underlay address for overlays (hostd --vtep-address)".into())
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(underlay: Option<[u8; 4]>, links: &[&str]) -> HostNetworking {
        HostNetworking {
            underlay: underlay.map(Ipv4Addr::from),
            links: links.iter().map(|l| l.to_string()).collect(),
            vlan_links: Some(true),
        }
    }

    #[test]
    fn a_host_carries_what_it_has() {
        let h = host(Some([10, 0, 0, 1]), &["br0", "eth1"]);
        let bridge = |b: &str| NetworkKind::Bridge { bridge: b.into() };
        assert_eq!(h.cannot_carry(&bridge("br0")), None);
        assert_eq!(
            h.cannot_carry(&bridge("br9")).as_deref(),
            Some("has no bridge br9")
        );
        let vlan = NetworkKind::Vlan {
            tag: 5,
            parent: "eth1".into(),
        };
        assert_eq!(h.cannot_carry(&vlan), None);
        let no_8021q = HostNetworking {
            vlan_links: Some(false),
            ..h.clone()
        };
        assert_eq!(
            no_8021q.cannot_carry(&vlan).as_deref(),
            Some("its kernel makes no 802.1Q VLAN links")
        );
        assert_eq!(no_8021q.cannot_carry(&bridge("br0")), None);
        // Not reported (an older hostd's report): not refused for it.
        let unreported = HostNetworking {
            vlan_links: None,
            ..h.clone()
        };
        assert_eq!(unreported.cannot_carry(&vlan), None);
        assert_eq!(h.cannot_carry(&NetworkKind::Vxlan { vni: 1 }), None);
        let no_underlay = host(None, &["br0"]);
        assert!(no_underlay
            .cannot_carry(&NetworkKind::Vxlan { vni: 1 })
            .is_some_and(|why| why.contains("underlay")));
    }

    #[test]
    fn reports_are_checked() {
        assert!(host(Some([10, 0, 0, 1]), &["br0"]).validate().is_ok());
        assert!(host(Some([0, 0, 0, 0]), &[]).validate().is_err());
        assert!(host(Some([224, 0, 0, 1]), &[]).validate().is_err());
        assert!(host(None, &["br0'/>"]).validate().is_err());
        let many: Vec<String> = (0..=MAX_HOST_LINKS).map(|i| format!("l{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(host(None, &many).validate().is_err());
    }
}
