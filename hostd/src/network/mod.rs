//! Networks on this host: what a VM's NIC asks of it ([`VmNic`]), how a cluster network is
//! wired here ([`NetworkWiring`], a libvirt network `drover-NAME`), and the one device
//! libvirt cannot make, an overlay's VXLAN link ([`vxlan`]) and a VLAN's 802.1Q link
//! ([`vlan`]), both with iproute2.

pub mod confine;
pub mod firewall;
pub mod leases;
mod links;
mod locks;
mod nic;
pub mod taps;
mod vlan;
mod vxlan;
mod wiring;

pub use links::host_links;
pub(crate) use locks::NetworkLocks;
pub use nic::network_config;
pub use nic::VmNic;
pub use vlan::{kernel_makes_vlans, VlanLink};
pub use vxlan::{VxlanLink, VXLAN_PORT};
pub use wiring::{
    overlay_link, vlan_suffix, Dhcp, DhcpHost, NetworkKind, NetworkWiring, NETWORK_PREFIX,
    OVERLAY_BRIDGE, VLAN_BRIDGE, VLAN_LINK,
};
