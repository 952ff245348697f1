//! `drover.v1.NetworkService`: networks and their subnets, declared through Raft. The
//! addresses in a network are handed out by `apply` when NICs are created (`VmService`);
//! this service shows who holds which.

use std::net::Ipv4Addr;

use drover_proto::v1 as pb;
use drover_proto::v1::network_service_server::NetworkService;
use drover_raft::model::{
    parse_cidr, parse_range, parse_relative, Network, NetworkKind, NetworkSpec, NicSpec, Subnet,
};
use drover_raft::{Command, RaftNode, Reply};
use tonic::{Request, Response, Status};

use super::cluster::{applied, fresh_read, read_response};
use super::write::commit;

pub struct NetworkApi {
    node: RaftNode,
}

impl NetworkApi {
    pub fn new(node: RaftNode) -> Self {
        Self { node }
    }
}

fn subnet_to_pb(s: &Subnet) -> pb::Subnet {
    let ranges = |rs: &[drover_raft::model::AddrRange]| rs.iter().map(|r| r.to_string()).collect();
    pb::Subnet {
        cidr: s.cidr(),
        ranges: ranges(&s.ranges),
        gateway: s.gateway.map(|g| g.to_string()).unwrap_or_default(),
        dns: s.dns.iter().map(Ipv4Addr::to_string).collect(),
        reserved: ranges(&s.reserved),
        dhcp_server: s.dhcp_server.map(|d| d.to_string()).unwrap_or_default(),
    }
}

pub(crate) fn to_pb(n: &Network) -> pb::Network {
    let mut out = pb::Network {
        name: n.name.clone(),
        r#type: n.spec.kind.as_str().into(),
        mtu: n.spec.guest_mtu().unwrap_or(0),
        subnets: n.subnets.iter().map(subnet_to_pb).collect(),
        addresses: n
            .addresses
            .iter()
            .map(|(ip, h)| pb::AddressLease {
                ip: ip.to_string(),
                vm: h.vm.clone(),
                mac: h.mac.clone(),
            })
            .collect(),
        ..Default::default()
    };
    match &n.spec.kind {
        NetworkKind::Bridge { bridge } => out.bridge = bridge.clone(),
        NetworkKind::Vxlan { vni } => out.vni = *vni,
        NetworkKind::Vlan { tag, parent } => {
            out.vlan_tag = u32::from(*tag);
            out.parent = parent.clone();
        }
    }
    out
}

/// The request's spec; `InvalidArgument` for what no state could make valid.
fn spec(req: &pb::CreateNetworkRequest) -> Result<NetworkSpec, Status> {
    let kind = match req.r#type.as_str() {
        "bridge" => NetworkKind::Bridge {
            bridge: req.bridge.clone(),
        },
        "vxlan" => NetworkKind::Vxlan { vni: req.vni },
        "vlan" => NetworkKind::Vlan {
            tag: u16::try_from(req.vlan_tag).map_err(|_| {
                Status::invalid_argument(format!("VLAN tag {} is outside 1..=4094", req.vlan_tag))
            })?,
            parent: req.parent.clone(),
        },
        other => {
            return Err(Status::invalid_argument(format!(
                "Unknown network type {other:?}; supported: bridge, vxlan, vlan"
            )))
        }
    };
    Ok(NetworkSpec {
        kind,
        mtu: (req.mtu != 0).then_some(req.mtu),
    })
}

/// The subnet as asked for. Addresses may be written relative to the subnet (`.10-.200`,
/// `.1`), as the CLI lets operators type them.
fn subnet(req: &pb::Subnet) -> Result<Subnet, Status> {
    let bad = |e: String| Status::invalid_argument(format!("Subnet {}: {e}", req.cidr));
    let (address, prefix) = parse_cidr(&req.cidr).map_err(bad)?;
    let ranges = |list: &[String]| -> Result<Vec<_>, Status> {
        list.iter()
            .map(|r| parse_range(address, r).map_err(bad))
            .collect()
    };
    let one = |text: &str| parse_relative(address, text).map_err(bad);
    Ok(Subnet {
        address,
        prefix,
        ranges: ranges(&req.ranges)?,
        gateway: match req.gateway.as_str() {
            "" => None,
            g => Some(one(g)?),
        },
        dns: req.dns.iter().map(|d| one(d)).collect::<Result<_, _>>()?,
        reserved: ranges(&req.reserved)?,
        dhcp_server: match req.dhcp_server.as_str() {
            "" => None,
            d => Some(one(d)?),
        },
    })
}

/// A NIC as asked for at VM creation or `vm nic add`.
pub(crate) fn nic_spec(req: pb::NicSpec) -> Result<NicSpec, Status> {
    let ip = match req.ip.as_str() {
        "" => None,
        text => Some(text.parse().map_err(|_| {
            Status::invalid_argument(format!(
                "NIC on network {:?}: {text:?} is not an IPv4 address",
                req.network
            ))
        })?),
    };
    Ok(NicSpec {
        network: req.network,
        ip,
    })
}

fn network_reply(reply: Reply) -> Result<Response<pb::Network>, Status> {
    match reply {
        Reply::Network(n) => Ok(Response::new(to_pb(&n))),
        other => Err(Status::internal(format!("unexpected reply {other:?}"))),
    }
}

#[tonic::async_trait]
impl NetworkService for NetworkApi {
    async fn create_network(
        &self,
        req: Request<pb::CreateNetworkRequest>,
    ) -> Result<Response<pb::Network>, Status> {
        let (meta, _, req) = req.into_parts();
        let cmd = Command::CreateNetwork {
            spec: spec(&req)?,
            name: req.name,
        };
        network_reply(commit(&self.node, &meta, cmd).await?)
    }

    async fn get_network(
        &self,
        req: Request<pb::GetNetworkRequest>,
    ) -> Result<Response<pb::Network>, Status> {
        let req = req.into_inner();
        fresh_read(&self.node, req.stale).await?;
        let (index, network) = self
            .node
            .view()
            .read(|d| (applied(d), d.state.networks.get(&req.name).map(to_pb)));
        let network = network
            .ok_or_else(|| Status::not_found(format!("Network {:?} not found", req.name)))?;
        Ok(read_response(&self.node, index, network))
    }

    async fn list_networks(
        &self,
        req: Request<pb::ListNetworksRequest>,
    ) -> Result<Response<pb::ListNetworksResponse>, Status> {
        fresh_read(&self.node, req.into_inner().stale).await?;
        let (index, networks) = self
            .node
            .view()
            .read(|d| (applied(d), d.state.networks.values().map(to_pb).collect()));
        Ok(read_response(
            &self.node,
            index,
            pb::ListNetworksResponse { networks },
        ))
    }

    async fn delete_network(
        &self,
        req: Request<pb::DeleteNetworkRequest>,
    ) -> Result<Response<pb::DeleteNetworkResponse>, Status> {
        let (meta, _, req) = req.into_parts();
        match commit(&self.node, &meta, Command::DeleteNetwork { name: req.name }).await? {
            Reply::NetworkDeleted { .. } => Ok(Response::new(pb::DeleteNetworkResponse {})),
            other => Err(Status::internal(format!("unexpected reply {other:?}"))),
        }
    }

    async fn add_subnet(
        &self,
        req: Request<pb::AddSubnetRequest>,
    ) -> Result<Response<pb::Network>, Status> {
        let (meta, _, req) = req.into_parts();
        let asked = req
            .subnet
            .as_ref()
            .ok_or_else(|| Status::invalid_argument("the subnet is missing"))?;
        let cmd = Command::AddSubnet {
            subnet: subnet(asked)?,
            network: req.network,
        };
        network_reply(commit(&self.node, &meta, cmd).await?)
    }

    async fn remove_subnet(
        &self,
        req: Request<pb::RemoveSubnetRequest>,
    ) -> Result<Response<pb::Network>, Status> {
        let (meta, _, req) = req.into_parts();
        let cmd = Command::RemoveSubnet {
            network: req.network,
            cidr: req.cidr,
        };
        network_reply(commit(&self.node, &meta, cmd).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_are_read_with_addresses_relative_to_them() {
        let s = subnet(&pb::Subnet {
            cidr: "10.10.0.0/24".into(),
            ranges: vec![".10-.200".into()],
            gateway: ".1".into(),
            dns: vec!["10.10.0.2".into()],
            reserved: vec![".50".into()],
            dhcp_server: ".2".into(),
        })
        .unwrap();
        assert_eq!(s.dhcp_server, Some(Ipv4Addr::new(10, 10, 0, 2)));
        assert_eq!(s.gateway, Some(Ipv4Addr::new(10, 10, 0, 1)));
        assert_eq!(s.ranges[0].last, Ipv4Addr::new(10, 10, 0, 200));
        assert_eq!(subnet_to_pb(&s).ranges, ["10.10.0.10-10.10.0.200"]);
        let e = subnet(&pb::Subnet {
            cidr: "10.10.0.0".into(),
            ..Default::default()
        })
        .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("not a subnet like"), "{e}");
    }
}
