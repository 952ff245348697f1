//! A VM's disks, cloud-init seed and NICs as hostd's requests carry them (StartVm,
//! UndefineVm, MigrateVm, EnsureNetwork): one conversion for every actor that sends them.

use std::collections::BTreeSet;

use drover_proto::agent::v1::{
    CloudInitSeed, DhcpHost, DhcpSubnet, Firewall, FirewallRule, NetworkWiring, VmDisk, VmNic,
    VolumeRef,
};
use drover_raft::model::{instance_id, ClusterState, Disk, Network, NetworkKind, SgRule, Vm};

/// `vm`'s disks as hostd takes them, the boot disk first.
pub fn vm_disks(vm: &Vm) -> Vec<VmDisk> {
    vm.disks.iter().map(vm_disk).collect()
}

/// The volumes deleting `vm` deletes: its disks' and those of disks removed from it whose
/// volumes are not deleted yet; none of its disks' when it is deleted with `--keep-disks`.
/// Its cloud-init seed goes with its disks (kept with them, too: it is the VM's identity
/// to the guest).
pub(crate) fn doomed_disks(vm: &Vm) -> Vec<VmDisk> {
    let dropped = vm.dropped_disks.iter().map(vm_disk);
    if vm.keep_disks {
        dropped.collect()
    } else {
        let seed = vm.seed_volume().map(|(pool, volume)| VmDisk {
            pool: pool.to_string(),
            volume,
            format: "raw".into(),
            ..Default::default()
        });
        vm.disks
            .iter()
            .map(vm_disk)
            .chain(dropped)
            .chain(seed)
            .collect()
    }
}

/// The NoCloud seed hostd attaches to `vm`, if it has cloud-init settings and a disk.
pub(crate) fn seed(vm: &Vm) -> Option<CloudInitSeed> {
    let c = vm.cloud_init.as_ref()?;
    let (_, volume) = vm.seed_volume()?;
    Some(CloudInitSeed {
        volume,
        instance_id: instance_id(&vm.name, vm.uid),
        hostname: c.hostname.clone(),
        user_data: c.user_data.clone().unwrap_or_default(),
        ssh_keys: c.ssh_keys.clone(),
    })
}

pub fn vm_disk(d: &Disk) -> VmDisk {
    VmDisk {
        pool: d.pool.clone(),
        volume: d.volume.clone(),
        size_bytes: d.size_bytes,
        format: d.format.as_str().into(),
        backing: d.backing.as_ref().map(|b| VolumeRef {
            pool: b.pool.clone(),
            volume: b.volume.clone(),
            format: b.format.as_str().into(),
        }),
        create: d.new_volume,
    }
}

/// `vm`'s NICs as hostd takes them: each with its subnet's prefix, gateway and DNS
/// servers (for the seed's network config), its network's MTU, and the VM's security
/// groups' rules.
pub fn vm_nics(vm: &Vm, state: &ClusterState) -> Vec<VmNic> {
    let firewall = state.firewall_of(vm).map(|rules| Firewall {
        allow: rules.iter().map(firewall_rule).collect(),
    });
    vm.nics
        .iter()
        .map(|n| {
            let network = state.networks.get(&n.network);
            let subnet = network.zip(n.ip).and_then(|(net, ip)| net.subnet_of(ip));
            VmNic {
                network: n.network.clone(),
                mac: n.mac.clone(),
                ip: n.ip.map(|ip| ip.to_string()).unwrap_or_default(),
                prefix: subnet.map_or(0, |s| u32::from(s.prefix)),
                gateway: subnet
                    .and_then(|s| s.gateway)
                    .map(|g| g.to_string())
                    .unwrap_or_default(),
                dns: subnet
                    .map(|s| s.dns.iter().map(|d| d.to_string()).collect())
                    .unwrap_or_default(),
                mtu: network.and_then(|net| net.spec.guest_mtu()).unwrap_or(0),
                firewall: firewall.clone(),
            }
        })
        .collect()
}

fn firewall_rule(r: &SgRule) -> FirewallRule {
    let (port_lo, port_hi) = r.wire_ports();
    FirewallRule {
        proto: r.proto.as_str().into(),
        port_lo,
        port_hi,
        from: r.wire_from(),
    }
}

/// How each network `vm`'s NICs use is wired on host `host`.
pub(crate) fn wirings(vm: &Vm, state: &ClusterState, host: &str) -> Vec<NetworkWiring> {
    let names: BTreeSet<&str> = vm.nics.iter().map(|n| n.network.as_str()).collect();
    names
        .into_iter()
        .filter_map(|name| state.networks.get(name))
        .map(|net| wiring(net, state, host))
        .collect()
}

/// How network `net` is wired on host `host`: for an overlay, with every other host's
/// underlay address as a peer, so that wherever the guests on it run, broadcasts reach
/// them.
pub fn wiring(net: &Network, state: &ClusterState, host: &str) -> NetworkWiring {
    let mut w = NetworkWiring {
        name: net.name.clone(),
        r#type: net.spec.kind.as_str().into(),
        mtu: net.spec.guest_mtu().unwrap_or(0),
        ..Default::default()
    };
    match &net.spec.kind {
        NetworkKind::Bridge { bridge } => w.bridge = bridge.clone(),
        NetworkKind::Vxlan { vni } => {
            w.vni = *vni;
            w.peers = state
                .hosts
                .values()
                .filter(|h| h.name != host)
                .filter_map(underlay)
                .collect();
            w.dhcp = dhcp_subnets(net);
        }
        NetworkKind::Vlan { tag, parent } => {
            w.vlan_tag = u32::from(*tag);
            w.parent = parent.clone();
        }
    }
    w
}

/// The subnets of `net` that have DHCP, each with every address held in it: a guest that
/// moves to any host carrying the network is answered there.
fn dhcp_subnets(net: &Network) -> Vec<DhcpSubnet> {
    net.subnets
        .iter()
        .filter_map(|s| {
            let server = s.dhcp_server?;
            Some(DhcpSubnet {
                server: server.to_string(),
                prefix: u32::from(s.prefix),
                gateway: s.gateway.map(|g| g.to_string()).unwrap_or_default(),
                dns: s.dns.iter().map(ToString::to_string).collect(),
                hosts: net
                    .addresses
                    .iter()
                    .filter(|(ip, _)| s.contains(**ip))
                    .map(|(ip, h)| DhcpHost {
                        mac: h.mac.clone(),
                        ip: ip.to_string(),
                    })
                    .collect(),
            })
        })
        .collect()
}

/// A host's underlay address: the one its hostd reported; a host that reported none
/// cannot carry overlays (the scheduler keeps their VMs off it) and is no peer. One that
/// never reported (an older hostd) is taken at its registered address's IPv4, as before
/// hosts reported.
fn underlay(host: &drover_raft::model::Host) -> Option<String> {
    match &host.networking {
        Some(n) => n.underlay.map(|ip| ip.to_string()),
        None => match host.address.parse::<std::net::SocketAddr>().ok()?.ip() {
            std::net::IpAddr::V4(ip) => Some(ip.to_string()),
            std::net::IpAddr::V6(_) => None,
        },
    }
}
