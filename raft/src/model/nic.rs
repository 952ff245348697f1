//! A VM's network interfaces: on which network, with which MAC and address. Both are the
//! cluster's: allocated in `apply`, kept through migrations and failovers (the guest and
//! its peers never see them change), released when the NIC or the VM goes.

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// NICs per VM (PCI slots of a default q35/i440fx machine are plenty for this).
pub const MAX_NICS: usize = 8;

/// What the operator asks for: a network, and maybe the address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NicSpec {
    pub network: String,
    /// `None`: the network's next free address (if it has subnets).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nic {
    pub network: String,
    /// Unique in the cluster ([`super::mac_for`]).
    pub mac: String,
    /// Held in the network's `addresses` for this VM; `None` on a network without subnets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<Ipv4Addr>,
}
