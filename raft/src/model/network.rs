//! Networks: the layer-2 segments VM NICs attach to, as the operator declared them, with
//! their subnets and the addresses handed out in them. The cluster owns the model and the
//! allocations (made in `apply`, so two creates can never get one address); hostd wires
//! what its VMs need on its host (an existing bridge, or a VXLAN device and a bridge).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::{NetworkError, Subnet};

/// Largest VXLAN network identifier (24 bits).
pub const MAX_VNI: u32 = (1 << 24) - 1;
/// 802.1Q tags 1..=4094 (0 and 4095 are reserved).
pub const MAX_VLAN_TAG: u16 = 4094;
/// MTUs accepted: IPv4's minimum to jumbo frames.
pub const MIN_MTU: u32 = 576;
pub const MAX_MTU: u32 = 9000;
/// A VXLAN overlay's default MTU: a 1500-byte underlay less VXLAN's 50 bytes of headers.
pub const VXLAN_DEFAULT_MTU: u32 = 1450;
/// Subnets per network.
pub const MAX_SUBNETS: usize = 16;

/// What carries a network between hosts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetworkKind {
    /// A bridge the operator set up on every host, on the provider network.
    Bridge { bridge: String },
    /// An overlay among the hosts: hostd creates a VXLAN device with this VNI and a bridge
    /// on each host that carries a VM of the network, its peers the other such hosts.
    Vxlan { vni: u32 },
    /// 802.1Q-tagged frames on `parent`, an interface every host has.
    Vlan { tag: u16, parent: String },
}

impl NetworkKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            NetworkKind::Bridge { .. } => "bridge",
            NetworkKind::Vxlan { .. } => "vxlan",
            NetworkKind::Vlan { .. } => "vlan",
        }
    }
}

/// What the operator declares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSpec {
    pub kind: NetworkKind,
    /// The guests' MTU; `None`: the bridge's own, or [`VXLAN_DEFAULT_MTU`] for an overlay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
}

impl NetworkSpec {
    /// Checks what can be checked without the rest of the state.
    pub fn validate(&self) -> Result<(), NetworkError> {
        match &self.kind {
            NetworkKind::Bridge { bridge } => validate_ifname("bridge", bridge)?,
            NetworkKind::Vxlan { vni } => {
                if !(1..=MAX_VNI).contains(vni) {
                    return Err(NetworkError::Vni { vni: *vni });
                }
            }
            NetworkKind::Vlan { tag, parent } => {
                if !(1..=MAX_VLAN_TAG).contains(tag) {
                    return Err(NetworkError::VlanTag { tag: *tag });
                }
                validate_ifname("parent interface", parent)?;
            }
        }
        if let Some(mtu) = self.mtu {
            if !(MIN_MTU..=MAX_MTU).contains(&mtu) {
                return Err(NetworkError::Mtu { mtu });
            }
        }
        Ok(())
    }

    /// The MTU guests get.
    pub fn guest_mtu(&self) -> Option<u32> {
        match (&self.kind, self.mtu) {
            (_, Some(mtu)) => Some(mtu),
            (NetworkKind::Vxlan { .. }, None) => Some(VXLAN_DEFAULT_MTU),
            (_, None) => None,
        }
    }
}

/// Checks a Linux interface name (`drover_proto::ifname`), naming what it is for.
pub fn validate_ifname(what: &'static str, name: &str) -> Result<(), NetworkError> {
    drover_proto::ifname::validate_ifname(name).map_err(|reason| NetworkError::Ifname {
        what: what.to_string(),
        name: name.to_string(),
        reason: reason.to_string(),
    })
}

/// Who holds an address of a network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressHolder {
    pub vm: String,
    /// The NIC's MAC: one VM may have several NICs on one network.
    pub mac: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub name: String,
    pub spec: NetworkSpec,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subnets: Vec<Subnet>,
    /// Every address handed out, to whom. The one record of who holds what: allocation
    /// consults it, deleting a NIC or VM releases from it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub addresses: BTreeMap<Ipv4Addr, AddressHolder>,
}

impl Network {
    /// The subnet `ip` is in.
    pub fn subnet_of(&self, ip: Ipv4Addr) -> Option<&Subnet> {
        self.subnets.iter().find(|s| s.contains(ip))
    }

    /// The address a new NIC gets: `wanted` if it is free and in a range, else the lowest
    /// free address of the first subnet with one; `None` when the network has no subnets
    /// (the guest configures itself, or something outside drover does).
    pub fn allocate(&self, wanted: Option<Ipv4Addr>) -> Result<Option<Ipv4Addr>, NetworkError> {
        if let Some(ip) = wanted {
            let subnet = self
                .subnets
                .iter()
                .find(|s| s.in_ranges(ip))
                .ok_or_else(|| NetworkError::OutsideRanges {
                    network: self.name.clone(),
                    ip,
                })?;
            if let Some(holder) = self.addresses.get(&ip) {
                return Err(NetworkError::AddressTaken {
                    network: self.name.clone(),
                    ip,
                    vm: holder.vm.clone(),
                });
            }
            if subnet.is_reserved(ip) {
                return Err(NetworkError::AddressReserved {
                    network: self.name.clone(),
                    ip,
                });
            }
            return Ok(Some(ip));
        }
        if self.subnets.is_empty() {
            return Ok(None);
        }
        self.subnets
            .iter()
            .find_map(|s| s.first_free(&self.addresses))
            .map(Some)
            .ok_or_else(|| NetworkError::Exhausted {
                network: self.name.clone(),
            })
    }
}

/// The MAC of the cluster's `seq`-th NIC: locally administered and unicast (`02:` first),
/// then the restore count (a restored cluster's counter starts where its backup left it,
/// while NICs made after the backup may still be on the wire), then 32 bits of the count.
pub fn mac_for(restores: u64, seq: u64) -> String {
    let r = (restores & 0xff) as u8;
    let [a, b, c, d] = ((seq & 0xffff_ffff) as u32).to_be_bytes();
    format!("02:{r:02x}:{a:02x}:{b:02x}:{c:02x}:{d:02x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: NetworkKind) -> NetworkSpec {
        NetworkSpec { kind, mtu: None }
    }

    #[test]
    fn kinds_are_checked_for_what_linux_accepts() {
        let ok = [
            spec(NetworkKind::Bridge {
                bridge: "br0".into(),
            }),
            spec(NetworkKind::Vxlan { vni: MAX_VNI }),
            spec(NetworkKind::Vlan {
                tag: 100,
                parent: "eth0".into(),
            }),
        ];
        for s in ok {
            s.validate().unwrap();
        }
        let bad = [
            (
                spec(NetworkKind::Bridge {
                    bridge: "a-bridge-name-too-long".into(),
                }),
                "longer than 15",
            ),
            (
                spec(NetworkKind::Bridge {
                    bridge: "br 0".into(),
                }),
                "allowed are",
            ),
            (spec(NetworkKind::Vxlan { vni: 0 }), "VNI 0"),
            (spec(NetworkKind::Vxlan { vni: MAX_VNI + 1 }), "VNI"),
            (
                spec(NetworkKind::Vlan {
                    tag: 4095,
                    parent: "eth0".into(),
                }),
                "tag 4095",
            ),
            (
                NetworkSpec {
                    kind: NetworkKind::Vxlan { vni: 5 },
                    mtu: Some(100),
                },
                "MTU 100",
            ),
        ];
        for (s, says) in bad {
            let e = s.validate().unwrap_err().to_string();
            assert!(e.contains(says), "{e} does not say {says}");
        }
    }

    #[test]
    fn an_overlay_defaults_to_an_mtu_its_headers_fit_under() {
        assert_eq!(
            spec(NetworkKind::Vxlan { vni: 1 }).guest_mtu(),
            Some(VXLAN_DEFAULT_MTU)
        );
        let bridge = spec(NetworkKind::Bridge {
            bridge: "br0".into(),
        });
        assert_eq!(bridge.guest_mtu(), None);
    }

    #[test]
    fn macs_are_locally_administered_unicast_and_distinct() {
        let a = mac_for(0, 1);
        assert_eq!(a, "02:00:00:00:00:01");
        let first = u8::from_str_radix(&a[..2], 16).unwrap();
        assert_eq!(first & 0b11, 0b10, "locally administered, unicast");
        assert_ne!(mac_for(1, 1), a, "a restored cluster's NICs differ");
        assert_eq!(mac_for(0, 0x0203_0405), "02:00:02:03:04:05");
    }
}
