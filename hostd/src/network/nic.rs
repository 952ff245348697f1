//! A VM's NIC as hostd attaches it: the libvirt interface XML (pure, tested), and the
//! address settings the cloud-init seed's network config carries.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use crate::hypervisor::domain_xml::escape;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmNic {
    /// The cluster network (libvirt network `drover-NAME` here).
    pub network: String,
    pub mac: String,
    /// The address the cluster gave it; `None` on a network without subnets.
    pub ip: Option<Ipv4Addr>,
    pub prefix: u8,
    pub gateway: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    pub mtu: Option<u32>,
    /// The VM is in security groups: only what these rules allow comes in. `None`:
    /// everything comes in.
    pub firewall: Option<Vec<super::firewall::AllowRule>>,
}

impl VmNic {
    /// The `<interface>` element. With an address, libvirt's `clean-traffic` filter lets
    /// the guest send only from its own MAC and IP (and only IPv4 and ARP): a guest that
    /// changes either cannot talk to anyone.
    pub fn interface_xml(&self) -> String {
        let mut xml = String::new();
        let _ = writeln!(xml, "    <interface type='network'>");
        let _ = writeln!(
            xml,
            "      <source network='{}'/>",
            escape(&super::NetworkWiring::libvirt_name_of(&self.network))
        );
        let _ = writeln!(xml, "      <mac address='{}'/>", escape(&self.mac));
        let _ = writeln!(xml, "      <model type='virtio'/>");
        if let Some(mtu) = self.mtu {
            let _ = writeln!(xml, "      <mtu size='{mtu}'/>");
        }
        match (self.ip, &self.firewall) {
            (ip, Some(rules)) => xml.push_str(&super::firewall::filterref(ip, rules)),
            (Some(ip), None) => {
                let _ = writeln!(
                    xml,
                    "      <filterref filter='clean-traffic'>\n        <parameter name='IP' value='{ip}'/>\n      </filterref>"
                );
            }
            (None, _) => {}
        }
        let _ = writeln!(xml, "    </interface>");
        xml
    }

    /// This NIC's entry in a cloud-init network config (version 2), matched by MAC: a
    /// static address, or DHCP when the cluster gave none.
    pub fn netplan(&self, index: usize) -> (String, serde_json::Value) {
        let mut eth = serde_json::json!({
            "match": { "macaddress": self.mac },
            "set-name": format!("eth{index}"),
        });
        match self.ip {
            Some(ip) => {
                eth["addresses"] = serde_json::json!([format!("{ip}/{}", self.prefix)]);
                if let Some(gw) = self.gateway {
                    eth["routes"] = serde_json::json!([{ "to": "default", "via": gw.to_string() }]);
                }
                if !self.dns.is_empty() {
                    let dns: Vec<String> = self.dns.iter().map(|d| d.to_string()).collect();
                    eth["nameservers"] = serde_json::json!({ "addresses": dns });
                }
            }
            None => eth["dhcp4"] = serde_json::json!(true),
        }
        if let Some(mtu) = self.mtu {
            eth["mtu"] = serde_json::json!(mtu);
        }
        (format!("eth{index}"), eth)
    }
}

/// The seed's `network-config` file for `nics` (JSON, which is YAML cloud-init reads;
/// serde quotes every value, so nothing can inject a key).
pub fn network_config(nics: &[VmNic]) -> String {
    let ethernets: serde_json::Map<String, serde_json::Value> =
        nics.iter().enumerate().map(|(i, n)| n.netplan(i)).collect();
    let config = serde_json::json!({ "version": 2, "ethernets": ethernets });
    format!("{config}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nic(ip: Option<&str>) -> VmNic {
        VmNic {
            network: "blue".into(),
            mac: "02:00:00:00:00:07".into(),
            ip: ip.map(|i| i.parse().unwrap()),
            prefix: 24,
            gateway: Some("10.10.0.1".parse().unwrap()),
            dns: vec!["10.10.0.2".parse().unwrap()],
            mtu: Some(1450),
            firewall: None,
        }
    }

    #[test]
    fn an_addressed_nic_is_filtered_to_its_mac_and_ip() {
        let xml = nic(Some("10.10.0.10")).interface_xml();
        assert!(xml.contains("<source network='drover-blue'/>"), "{xml}");
        assert!(xml.contains("<mac address='02:00:00:00:00:07'/>"), "{xml}");
        assert!(xml.contains("<mtu size='1450'/>"), "{xml}");
        assert!(
            xml.contains("<filterref filter='clean-traffic'>")
                && xml.contains("<parameter name='IP' value='10.10.0.10'/>"),
            "{xml}"
        );
        assert!(!nic(None).interface_xml().contains("filterref"));
        // In security groups: the groups' filter, which keeps clean-traffic's rules.
        let guarded = VmNic {
            firewall: Some(vec![]),
            ..nic(Some("10.10.0.10"))
        };
        let xml = guarded.interface_xml();
        assert!(xml.contains("<filterref filter='drover-sg'>"), "{xml}");
        assert!(!xml.contains("filter='clean-traffic'"), "{xml}");
        assert!(
            xml.contains("<parameter name='IP' value='10.10.0.10'/>"),
            "{xml}"
        );
    }

    #[test]
    fn the_network_config_is_static_where_the_cluster_gave_an_address() {
        let text = network_config(&[nic(Some("10.10.0.10")), nic(None)]);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let eth0 = &v["ethernets"]["eth0"];
        assert_eq!(v["version"], 2);
        assert_eq!(eth0["match"]["macaddress"], "02:00:00:00:00:07");
        assert_eq!(eth0["addresses"][0], "10.10.0.10/24");
        assert_eq!(eth0["routes"][0]["via"], "10.10.0.1");
        assert_eq!(eth0["nameservers"]["addresses"][0], "10.10.0.2");
        assert_eq!(v["ethernets"]["eth1"]["dhcp4"], true);
    }
}
