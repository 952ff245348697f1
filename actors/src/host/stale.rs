//! Which of a host's running domains the cluster no longer places there. Pure.
//!
//! After a failover the VM's generation moved on and its placement points elsewhere; if the
//! old host comes back with the domain still running (its fence failed, or it was only
//! frozen), that copy must be destroyed before the host is trusted with a lease again.

use drover_proto::agent::v1::{Domain, DomainState};
use drover_raft::model::ClusterState;

/// A domain to destroy, with the generation to fence the command with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stale {
    pub name: String,
    /// The VM's current generation (or the domain's own when the VM is gone): hostd
    /// accepts it because it is not lower than what the domain carries.
    pub generation: u64,
}

/// The running or paused domains on `host` that the state places elsewhere, places
/// nowhere, or knows only at a newer generation.
pub fn stale_domains(host: &str, domains: &[Domain], state: &ClusterState) -> Vec<Stale> {
    domains
        .iter()
        .filter(|d| matches!(d.state(), DomainState::Running | DomainState::Paused))
        .filter_map(|d| {
            let stale = match state.vms.get(&d.name) {
                // Deleted from the state while this host was away.
                None => Some(d.generation),
                // The incoming copy of a running migration to this host.
                Some(vm) if state.migrating_to(vm) == Some(host) => None,
                Some(vm) if vm.host.as_deref() != Some(host) => Some(vm.generation),
                Some(vm) if vm.generation > d.generation => Some(vm.generation),
                Some(_) => None,
            };
            stale.map(|generation| Stale {
                name: d.name.clone(),
                generation,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use drover_raft::model::{DesiredState, ObservedState, Vm, VmSpec};

    use super::*;

    fn domain(name: &str, generation: u64, state: DomainState) -> Domain {
        Domain {
            name: name.into(),
            state: state as i32,
            generation,
            vcpus: 1,
            memory_mib: 64,
            ha: true,
        }
    }

    fn vm(name: &str, host: Option<&str>, generation: u64) -> Vm {
        Vm {
            name: name.into(),
            spec: VmSpec {
                vcpus: 1,
                memory_mib: 64,
            },
            desired: DesiredState::Running,
            observed: ObservedState::Running,
            host: host.map(Into::into),
            generation,
            reason: String::new(),
            ha: true,
            ha_priority: 0,
            require_labels: Default::default(),
            anti_affinity: None,
            migration: None,
        }
    }

    #[test]
    fn finds_moved_newer_and_deleted_but_not_current_or_stopped() {
        let mut state = ClusterState::default();
        for v in [
            vm("current", Some("h1"), 3),
            vm("moved", Some("h2"), 5),
            vm("unplaced", None, 4),
            vm("newer", Some("h1"), 7),
            vm("moved-but-off", Some("h2"), 2),
        ] {
            state.vms.insert(v.name.clone(), v);
        }
        let domains = [
            domain("current", 3, DomainState::Running),
            domain("moved", 4, DomainState::Running),
            domain("unplaced", 3, DomainState::Paused),
            domain("newer", 6, DomainState::Running),
            domain("gone", 9, DomainState::Running),
            domain("moved-but-off", 1, DomainState::ShutOff),
        ];
        let stale = stale_domains("h1", &domains, &state);
        let names: Vec<(&str, u64)> = stale
            .iter()
            .map(|s| (s.name.as_str(), s.generation))
            .collect();
        assert_eq!(
            names,
            [("moved", 5), ("unplaced", 4), ("newer", 7), ("gone", 9)]
        );
    }
}
