//! The first scheduler: among hosts that are up, have reported their capacity and have
//! room for the VM, the one with the most free memory wins (ties: fewer allocated vCPUs,
//! then name, so the answer is the same on every run).

use std::collections::BTreeMap;
use std::fmt;

use drover_raft::model::{ClusterState, HostHealth, VmSpec};

/// No host can take the VM; why, per host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoCapacity {
    pub reasons: BTreeMap<String, String>,
}

impl fmt::Display for NoCapacity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.reasons.is_empty() {
            return write!(f, "no hosts registered");
        }
        write!(f, "no host can take it: ")?;
        for (i, (host, why)) in self.reasons.iter().enumerate() {
            if i > 0 {
                write!(f, "; ")?;
            }
            write!(f, "{host}: {why}")?;
        }
        Ok(())
    }
}

/// Picks a host for a VM with `spec` that is not placed yet.
pub fn place(spec: &VmSpec, state: &ClusterState) -> Result<String, NoCapacity> {
    let mut reasons = BTreeMap::new();
    let mut best: Option<(u64, u32, &str)> = None;
    for host in state.hosts.values() {
        if host.health != HostHealth::Up {
            reasons.insert(
                host.name.clone(),
                format!("health is {}", host.health.as_str()),
            );
            continue;
        }
        let (used_cpu, used_mem, _) = state.allocated(&host.name);
        let free_mem = host.capacity.memory_mib.saturating_sub(used_mem);
        let free_cpu = host.capacity.vcpus.saturating_sub(used_cpu);
        if free_mem < spec.memory_mib {
            reasons.insert(
                host.name.clone(),
                format!("{free_mem} MiB free, needs {}", spec.memory_mib),
            );
            continue;
        }
        if free_cpu < spec.vcpus {
            reasons.insert(
                host.name.clone(),
                format!("{free_cpu} vCPUs free, needs {}", spec.vcpus),
            );
            continue;
        }
        // Larger free memory first, then fewer allocated vCPUs; BTreeMap order breaks ties
        // by name because only a strictly better host replaces the current best.
        let better = match best {
            None => true,
            Some((m, c, _)) => free_mem > m || (free_mem == m && used_cpu < c),
        };
        if better {
            best = Some((free_mem, used_cpu, &host.name));
        }
    }
    best.map(|(_, _, name)| name.to_string())
        .ok_or(NoCapacity { reasons })
}

#[cfg(test)]
mod tests {
    use drover_raft::model::{Capacity, DesiredState, Host, ObservedState, Vm};
    use proptest::prelude::*;

    use super::*;

    fn host(name: &str, vcpus: u32, memory_mib: u64, health: HostHealth) -> Host {
        Host {
            name: name.into(),
            address: "127.0.0.1:1".into(),
            health,
            capacity: Capacity { vcpus, memory_mib },
            dead_reason: None,
            fencing_armed: true,
        }
    }

    fn vm_on(name: &str, host: &str, vcpus: u32, memory_mib: u64) -> Vm {
        Vm {
            name: name.into(),
            spec: VmSpec { vcpus, memory_mib },
            desired: DesiredState::Running,
            observed: ObservedState::Running,
            host: Some(host.into()),
            generation: 1,
            reason: String::new(),
            ha: false,
            ha_priority: 0,
        }
    }

    fn state(hosts: Vec<Host>, vms: Vec<Vm>) -> ClusterState {
        ClusterState {
            hosts: hosts.into_iter().map(|h| (h.name.clone(), h)).collect(),
            vms: vms.into_iter().map(|v| (v.name.clone(), v)).collect(),
            ..Default::default()
        }
    }

    const SMALL: VmSpec = VmSpec {
        vcpus: 1,
        memory_mib: 512,
    };

    #[test]
    fn most_free_memory_wins() {
        let s = state(
            vec![
                host("h1", 8, 4096, HostHealth::Up),
                host("h2", 8, 4096, HostHealth::Up),
            ],
            vec![vm_on("a", "h1", 1, 1024)],
        );
        assert_eq!(place(&SMALL, &s).unwrap(), "h2");
    }

    #[test]
    fn ties_break_by_name() {
        let s = state(
            vec![
                host("h2", 8, 4096, HostHealth::Up),
                host("h1", 8, 4096, HostHealth::Up),
            ],
            vec![],
        );
        assert_eq!(place(&SMALL, &s).unwrap(), "h1");
    }

    #[test]
    fn skips_hosts_not_up_and_explains() {
        let s = state(
            vec![
                host("h1", 8, 4096, HostHealth::Suspect),
                host("h2", 8, 256, HostHealth::Up),
                host("h3", 0, 0, HostHealth::Unknown),
            ],
            vec![],
        );
        let err = place(&SMALL, &s).unwrap_err();
        assert_eq!(err.reasons.len(), 3);
        assert!(err.reasons["h1"].contains("suspect"), "{err}");
        assert!(err.reasons["h2"].contains("256 MiB free"), "{err}");
        assert!(err.to_string().contains("h3: health is unknown"));
        assert_eq!(
            place(&SMALL, &ClusterState::default())
                .unwrap_err()
                .to_string(),
            "no hosts registered"
        );
    }

    #[test]
    fn respects_vcpus() {
        let s = state(
            vec![host("h1", 2, 8192, HostHealth::Up)],
            vec![vm_on("a", "h1", 2, 512)],
        );
        assert!(place(&SMALL, &s).unwrap_err().reasons["h1"].contains("vCPUs"));
    }

    proptest! {
        /// Placing VMs one after another never overbooks a host, and a VM is refused only
        /// when no up host has room.
        #[test]
        fn never_overbooks(
            caps in prop::collection::vec((1u32..16, 256u64..8192), 1..5),
            vms in prop::collection::vec((1u32..4, 64u64..2048), 0..30),
        ) {
            let hosts = caps.iter().enumerate()
                .map(|(i, (c, m))| host(&format!("h{i}"), *c, *m, HostHealth::Up))
                .collect();
            let mut s = state(hosts, vec![]);
            for (i, (c, m)) in vms.into_iter().enumerate() {
                let spec = VmSpec { vcpus: c, memory_mib: m };
                match place(&spec, &s) {
                    Ok(h) => {
                        let name = format!("vm{i}");
                        s.vms.insert(name.clone(), vm_on(&name, &h, c, m));
                    }
                    Err(e) => {
                        for host in s.hosts.values() {
                            let (uc, um, _) = s.allocated(&host.name);
                            prop_assert!(
                                host.capacity.vcpus - uc < c || host.capacity.memory_mib - um < m,
                                "{} had room but was refused: {e}", host.name
                            );
                        }
                    }
                }
                for host in s.hosts.values() {
                    let (uc, um, _) = s.allocated(&host.name);
                    prop_assert!(uc <= host.capacity.vcpus && um <= host.capacity.memory_mib);
                }
            }
        }
    }
}
