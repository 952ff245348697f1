//! Why a network, subnet or NIC is refused: one enum carrying the values involved, so the
//! API edge maps each to its status and the CLI prints the reason as it is.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::{MAX_MTU, MAX_VLAN_TAG, MAX_VNI, MIN_MTU};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum NetworkError {
    #[error("Network {0:?} not found")]
    Unknown(String),
    #[error("Network {0:?} already exists")]
    Exists(String),
    #[error("{what} {name:?}: {reason}")]
    Ifname {
        what: String,
        name: String,
        reason: String,
    },
    #[error("VNI {vni} is outside 1..={MAX_VNI}")]
    Vni { vni: u32 },
    #[error("VNI {vni} is in use by network {network:?}")]
    VniTaken { vni: u32, network: String },
    #[error("VLAN tag {tag} is outside 1..={MAX_VLAN_TAG}")]
    VlanTag { tag: u16 },
    #[error("VLAN {tag} on {parent} is in use by network {network:?}")]
    VlanTaken {
        tag: u16,
        parent: String,
        network: String,
    },
    #[error("MTU {mtu} is outside {MIN_MTU}..={MAX_MTU}")]
    Mtu { mtu: u32 },
    #[error("Subnet {cidr}: {reason}")]
    Subnet { cidr: String, reason: String },
    #[error("Subnet {cidr} overlaps subnet {other} of network {network:?}")]
    SubnetOverlap {
        cidr: String,
        other: String,
        network: String,
    },
    #[error("Network {network:?} has no subnet {cidr}")]
    UnknownSubnet { network: String, cidr: String },
    #[error(
        "Network {network:?} is a {kind} network: drover serves DHCP only on its own \
         overlays (vxlan); leave out --dhcp-server"
    )]
    DhcpNeedsOverlay { network: String, kind: String },
    #[error(
        "Subnet {cidr} with DHCP overlaps DHCP subnet {other} of network {network:?}: both \
         servers' addresses would be on one host's bridges"
    )]
    DhcpSubnetOverlap {
        cidr: String,
        other: String,
        network: String,
    },
    #[error("Network {network:?} has at most {max} subnets")]
    TooManySubnets { network: String, max: usize },
    #[error("Subnet {cidr} of network {network:?} has addresses in use by VMs {vms}")]
    SubnetInUse {
        network: String,
        cidr: String,
        vms: String,
    },
    #[error("Network {network:?} has NICs of VMs {vms}; remove them first")]
    InUse { network: String, vms: String },
    #[error("{ip} is not inside an address range of network {network:?}")]
    OutsideRanges { network: String, ip: Ipv4Addr },
    #[error("{ip} on network {network:?} is already held by VM {vm:?}")]
    AddressTaken {
        network: String,
        ip: Ipv4Addr,
        vm: String,
    },
    #[error("{ip} on network {network:?} is reserved (gateway, DNS or a reservation)")]
    AddressReserved { network: String, ip: Ipv4Addr },
    #[error("Network {network:?} has no free address left in its ranges")]
    Exhausted { network: String },
    #[error("Network {network:?} has no subnets: an address cannot be given ({ip})")]
    NoSubnets { network: String, ip: Ipv4Addr },
    #[error("{count} NICs; a VM has at most {max}")]
    TooManyNics { count: usize, max: usize },
    #[error("VM {vm:?} has no NIC {mac}")]
    UnknownNic { vm: String, mac: String },
}
