//! Which networks one host must have wired, and which it must drop: a pure comparison of
//! the networks its VMs use (placed there, or migrating there) with what its heartbeat
//! reports and what the actor last wired there. The host actor carries the plan out
//! (EnsureNetwork, RemoveNetwork).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use drover_proto::agent::v1::NetworkWiring;
use drover_raft::model::ClusterState;

use crate::vm::wire::wiring;

/// A network that could not be wired is tried again after this long.
pub const RETRY_FAILED_NETWORK: Duration = Duration::from_secs(10);

#[derive(Debug, Default, PartialEq)]
pub struct NetworkPlan {
    /// Networks to wire: missing on the host, or wired differently than now (an overlay's
    /// peers changed when a host joined or left).
    pub ensure: Vec<NetworkWiring>,
    /// Networks the host has that none of its VMs uses any more.
    pub remove: Vec<String>,
}

/// The networks the VMs placed on (or migrating to) `host` use.
pub fn needed<'a>(state: &'a ClusterState, host: &str) -> BTreeSet<&'a str> {
    state
        .vms
        .values()
        .filter(|vm| vm.host.as_deref() == Some(host) || state.migrating_to(vm) == Some(host))
        .flat_map(|vm| vm.nics.iter().map(|n| n.network.as_str()))
        .collect()
}

/// `reported`: the host's last heartbeat; `wired`: what the actor last wired there (and
/// the host confirmed); `failed`: when a network last failed to be wired.
pub fn plan(
    state: &ClusterState,
    host: &str,
    reported: &[String],
    wired: &BTreeMap<String, NetworkWiring>,
    failed: &BTreeMap<String, Instant>,
    now: Instant,
) -> NetworkPlan {
    let needed = needed(state, host);
    let mut out = NetworkPlan::default();
    for name in &needed {
        let Some(net) = state.networks.get(*name) else {
            continue;
        };
        let want = wiring(net, state, host);
        let here = reported.iter().any(|r| r == name);
        if here && wired.get(*name) == Some(&want) {
            continue;
        }
        if failed
            .get(*name)
            .is_some_and(|at| now.duration_since(*at) < RETRY_FAILED_NETWORK)
        {
            continue;
        }
        out.ensure.push(want);
    }
    out.remove = reported
        .iter()
        .filter(|r| !needed.contains(r.as_str()))
        .cloned()
        .collect();
    out
}

#[cfg(test)]
mod tests {
    use drover_raft::model::{
        DesiredState, Host, HostNetworking, Network, NetworkKind, NetworkSpec, Nic, Vm, VmSpec,
    };

    use super::*;

    /// Host `hN`, registered at a management address, its tunnels on 10.0.0.N.
    fn host(n: u8) -> Host {
        let mut h = Host::new(&format!("h{n}"), &format!("mgmt-h{n}.example:7001"));
        h.networking = Some(HostNetworking {
            underlay: Some(std::net::Ipv4Addr::new(10, 0, 0, n)),
            ..Default::default()
        });
        h
    }

    fn state() -> ClusterState {
        let mut s = ClusterState::default();
        for n in [1, 2] {
            let h = host(n);
            s.hosts.insert(h.name.clone(), h);
        }
        s.networks.insert(
            "blue".into(),
            Network {
                name: "blue".into(),
                spec: NetworkSpec {
                    kind: NetworkKind::Vxlan { vni: 7 },
                    mtu: None,
                },
                subnets: vec![],
                addresses: Default::default(),
            },
        );
        let mut vm = Vm::new(
            "web",
            VmSpec {
                vcpus: 1,
                memory_mib: 64,
            },
            DesiredState::Running,
        );
        vm.host = Some("h1".into());
        vm.nics = vec![Nic {
            network: "blue".into(),
            mac: "02:00:00:00:00:01".into(),
            ip: None,
        }];
        s.vms.insert("web".into(), vm);
        s
    }

    #[test]
    fn a_host_wires_what_its_vms_use_and_drops_the_rest() {
        let s = state();
        let now = Instant::now();
        let (none, never) = (BTreeMap::new(), BTreeMap::new());
        let p = plan(&s, "h1", &["old".into()], &none, &never, now);
        assert_eq!(p.ensure.len(), 1);
        assert_eq!(p.ensure[0].peers, ["10.0.0.2"]);
        assert_eq!(p.remove, ["old"]);
        // Wired as wanted: nothing to do; h2 has no VM on it.
        let wired = BTreeMap::from([("blue".to_string(), p.ensure[0].clone())]);
        let p = plan(&s, "h1", &["blue".into()], &wired, &never, now);
        assert_eq!(p, NetworkPlan::default());
        let p = plan(&s, "h2", &["blue".into()], &none, &never, now);
        assert_eq!(p.remove, ["blue"]);
    }

    #[test]
    fn a_new_peer_rewires_and_a_failure_waits() {
        let mut s = state();
        let now = Instant::now();
        let (none, never) = (BTreeMap::new(), BTreeMap::new());
        let first = plan(&s, "h1", &[], &none, &never, now).ensure.remove(0);
        let wired = BTreeMap::from([("blue".to_string(), first)]);
        s.hosts.insert("h3".into(), host(3));
        // A host that reported no underlay cannot carry overlays: no peer.
        let mut h4 = Host::new("h4", "10.0.0.4:7001");
        h4.networking = Some(HostNetworking::default());
        s.hosts.insert("h4".into(), h4);
        // One that never reported (an older hostd): its registered address.
        s.hosts
            .insert("h5".into(), Host::new("h5", "10.0.0.5:7001"));
        let p = plan(&s, "h1", &["blue".into()], &wired, &never, now);
        assert_eq!(p.ensure[0].peers, ["10.0.0.2", "10.0.0.3", "10.0.0.5"]);
        let failed = BTreeMap::from([("blue".to_string(), now)]);
        let p = plan(&s, "h1", &["blue".into()], &wired, &failed, now);
        assert!(p.ensure.is_empty(), "retried too soon");
        let later = now + RETRY_FAILED_NETWORK;
        let p = plan(&s, "h1", &["blue".into()], &wired, &failed, later);
        assert_eq!(p.ensure.len(), 1);
    }
}
