//! `HostAgent`'s network calls and the NICs of `StartVm`: what the controller sends is
//! checked here (names and addresses go into libvirt XML and iproute2 arguments), then
//! carried out on a blocking thread.

use std::net::Ipv4Addr;

use drover_proto::agent::v1 as pb;
use drover_proto::identity::valid_name;
use tonic::Status;
use tracing::info;

use super::AgentService;
use crate::error::HostdError;
use crate::network::firewall::{AllowRule, Proto};
use crate::network::{Dhcp, DhcpHost, NetworkKind, NetworkWiring, VmNic};

fn invalid(what: String) -> HostdError {
    HostdError::InvalidArgument(what)
}

fn ipv4(what: &str, text: &str) -> Result<Ipv4Addr, HostdError> {
    text.parse()
        .map_err(|_| invalid(format!("{what} {text:?} is not an IPv4 address")))
}

/// An address that may be absent (`""`).
fn opt_ipv4(what: &str, text: &str) -> Result<Option<Ipv4Addr>, HostdError> {
    match text {
        "" => Ok(None),
        text => ipv4(what, text).map(Some),
    }
}

fn ipv4s(what: &str, texts: &[String]) -> Result<Vec<Ipv4Addr>, HostdError> {
    texts.iter().map(|t| ipv4(what, t)).collect()
}

/// An interface name, by the cluster's rule (`drover_proto::ifname`).
fn ifname(what: &str, name: &str) -> Result<String, HostdError> {
    drover_proto::ifname::validate_ifname(name)
        .map(|()| name.to_string())
        .map_err(|why| invalid(format!("{what} {name:?} is not an interface name: {why}")))
}

fn network_name(name: &str) -> Result<(), HostdError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(invalid(format!(
            "network name {name:?} must be 1-128 of A-Z a-z 0-9 . _ -"
        )))
    }
}

/// A MAC as `aa:bb:cc:dd:ee:ff`, lower case, unicast.
pub(super) fn mac(text: &str) -> Result<String, HostdError> {
    let octets: Vec<&str> = text.split(':').collect();
    let hex = octets.len() == 6
        && octets
            .iter()
            .all(|o| o.len() == 2 && o.chars().all(|c| c.is_ascii_hexdigit()));
    let unicast = u8::from_str_radix(octets.first().copied().unwrap_or("01"), 16)
        .is_ok_and(|first| first & 1 == 0);
    if hex && unicast {
        Ok(text.to_ascii_lowercase())
    } else {
        Err(invalid(format!("{text:?} is not a unicast MAC address")))
    }
}

pub(crate) fn nics_from_pb(nics: Vec<pb::VmNic>) -> Result<Vec<VmNic>, HostdError> {
    nics.into_iter()
        .map(|n| {
            network_name(&n.network)?;
            let ip = opt_ipv4("NIC address", &n.ip)?;
            if ip.is_some() && !(1..=32).contains(&n.prefix) {
                return Err(invalid(format!("NIC prefix /{} is not 1-32", n.prefix)));
            }
            Ok(VmNic {
                mac: mac(&n.mac)?,
                ip,
                prefix: n.prefix as u8,
                gateway: opt_ipv4("gateway", &n.gateway)?,
                dns: ipv4s("DNS server", &n.dns)?,
                mtu: (n.mtu != 0).then_some(n.mtu),
                firewall: n
                    .firewall
                    .map(|f| f.allow.iter().map(allow_rule).collect())
                    .transpose()?,
                network: n.network,
            })
        })
        .collect()
}

/// A security group rule as sent: checked, as it becomes filter parameters.
fn allow_rule(r: &pb::FirewallRule) -> Result<AllowRule, HostdError> {
    let proto = match r.proto.as_str() {
        "tcp" => Proto::Tcp,
        "udp" => Proto::Udp,
        "icmp" => Proto::Icmp,
        other => return Err(invalid(format!("unknown firewall protocol {other:?}"))),
    };
    let ports = match (r.port_lo, r.port_hi) {
        (0, 0) => (1, u16::MAX),
        (lo, hi) => u16::try_from(lo)
            .ok()
            .zip(u16::try_from(hi).ok())
            .filter(|(lo, hi)| *lo >= 1 && lo <= hi)
            .ok_or_else(|| {
                invalid(format!(
                    "firewall ports {lo}-{hi} are not 1-65535, low first"
                ))
            })?,
    };
    let from = match r.from.as_str() {
        "" => (Ipv4Addr::UNSPECIFIED, 0),
        cidr => cidr
            .split_once('/')
            .and_then(|(net, prefix)| Some((net.parse().ok()?, prefix.parse().ok()?)))
            .filter(|(_, prefix): &(Ipv4Addr, u8)| *prefix <= 32)
            .ok_or_else(|| invalid(format!("firewall source {cidr:?} is not an IPv4 network")))?,
    };
    Ok(AllowRule { proto, ports, from })
}

/// The wiring as sent, with this host's underlay address for an overlay.
pub(crate) fn wiring_from_pb(
    w: pb::NetworkWiring,
    vtep: Option<Ipv4Addr>,
) -> Result<NetworkWiring, HostdError> {
    network_name(&w.name)?;
    let kind = match w.r#type.as_str() {
        "bridge" => NetworkKind::Bridge {
            bridge: ifname("bridge", &w.bridge)?,
        },
        "vxlan" => {
            if !(1..(1 << 24)).contains(&w.vni) {
                return Err(invalid(format!("VNI {} is outside 1..=16777215", w.vni)));
            }
            NetworkKind::Vxlan {
                vni: w.vni,
                local: vtep,
                peers: ipv4s("peer", &w.peers)?,
            }
        }
        "vlan" => NetworkKind::Vlan {
            tag: u16::try_from(w.vlan_tag)
                .ok()
                .filter(|t| (1..=4094).contains(t))
                .ok_or_else(|| invalid(format!("VLAN tag {} is outside 1..=4094", w.vlan_tag)))?,
            parent: ifname("parent interface", &w.parent)?,
        },
        other => return Err(invalid(format!("unknown network type {other:?}"))),
    };
    let dhcp = match (w.dhcp.first(), &kind) {
        (None, _) => None,
        (Some(d), NetworkKind::Vxlan { .. }) => Some(Dhcp {
            server: ipv4("DHCP server", &d.server)?,
            prefix: u8::try_from(d.prefix)
                .ok()
                .filter(|p| (1..=30).contains(p))
                .ok_or_else(|| invalid(format!("DHCP prefix /{} is not 1-30", d.prefix)))?,
            gateway: opt_ipv4("DHCP gateway", &d.gateway)?,
            dns: ipv4s("DHCP DNS server", &d.dns)?,
            hosts: d
                .hosts
                .iter()
                .map(|h| {
                    Ok(DhcpHost {
                        mac: mac(&h.mac)?,
                        ip: ipv4("DHCP host address", &h.ip)?,
                    })
                })
                .collect::<Result<_, HostdError>>()?,
        }),
        (Some(_), _) => {
            return Err(invalid(format!(
                "network {}: DHCP is served only on overlays",
                w.name
            )))
        }
    };
    Ok(NetworkWiring {
        name: w.name,
        kind,
        mtu: (w.mtu != 0).then_some(w.mtu),
        dhcp,
    })
}

impl AgentService {
    /// Wires each of `networks` here; the first failure is the answer (naming the network).
    pub(super) async fn wire(&self, networks: Vec<NetworkWiring>) -> Result<(), HostdError> {
        for wiring in networks {
            info!(host = %self.host(), network = %wiring.name, "EnsureNetwork");
            self.shared
                .blocking(move |hv| hv.ensure_network(&wiring))
                .await?;
        }
        Ok(())
    }

    pub(super) async fn ensure_network_inner(
        &self,
        req: pb::EnsureNetworkRequest,
    ) -> Result<pb::EnsureNetworkResponse, Status> {
        let op = "EnsureNetwork";
        let w = req
            .network
            .ok_or_else(|| Status::invalid_argument("the network is missing"))?;
        let name = w.name.clone();
        let wiring =
            wiring_from_pb(w, self.shared.config.vtep_address).map_err(self.failed(op, &name))?;
        self.admit_pool_term(op, &name, req.term).await?;
        let bridge = wiring.bridge();
        let _exclusive = self.shared.network_locks.changing(&name).await;
        self.wire(vec![wiring])
            .await
            .map_err(self.failed(op, &name))?;
        Ok(pb::EnsureNetworkResponse { bridge })
    }
}

impl AgentService {
    pub(super) async fn remove_network_inner(
        &self,
        req: pb::RemoveNetworkRequest,
    ) -> Result<pb::RemoveNetworkResponse, Status> {
        let op = "RemoveNetwork";
        network_name(&req.name).map_err(self.failed(op, &req.name))?;
        self.admit_pool_term(op, &req.name, req.term).await?;
        let _exclusive = self.shared.network_locks.changing(&req.name).await;
        info!(host = %self.host(), network = %req.name, term = req.term, "RemoveNetwork");
        let name = req.name.clone();
        let existed = self
            .shared
            .blocking(move |hv| hv.remove_network(&name))
            .await
            .map_err(self.failed(op, &req.name))?;
        Ok(pb::RemoveNetworkResponse { existed })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_reaches_xml_and_iproute2_is_checked() {
        assert_eq!(mac("02:AB:00:00:00:01").unwrap(), "02:ab:00:00:00:01");
        assert!(mac("03:00:00:00:00:01").is_err(), "multicast");
        assert!(mac("02:00:00:00:00").is_err());
        let wiring = |r#type: &str, bridge: &str| pb::NetworkWiring {
            name: "blue".into(),
            r#type: r#type.into(),
            bridge: bridge.into(),
            vni: 7,
            peers: vec!["10.99.0.2".into()],
            ..Default::default()
        };
        assert!(wiring_from_pb(wiring("bridge", "br0'x"), None).is_err());
        assert!(wiring_from_pb(wiring("bridge", "a-name-far-too-long"), None).is_err());
        let w = wiring_from_pb(wiring("vxlan", ""), Some(Ipv4Addr::new(10, 99, 0, 1))).unwrap();
        assert_eq!(
            w.kind,
            NetworkKind::Vxlan {
                vni: 7,
                local: Some(Ipv4Addr::new(10, 99, 0, 1)),
                peers: vec![Ipv4Addr::new(10, 99, 0, 2)]
            }
        );
        let nic = |ip: &str, prefix| pb::VmNic {
            network: "blue".into(),
            mac: "02:00:00:00:00:01".into(),
            ip: ip.into(),
            prefix,
            ..Default::default()
        };
        assert!(nics_from_pb(vec![nic("10.0.0.5", 24)]).is_ok());
        assert!(nics_from_pb(vec![nic("10.0.0.5", 0)]).is_err());
        assert!(nics_from_pb(vec![nic("10.0.0.500", 24)]).is_err());
    }
}
