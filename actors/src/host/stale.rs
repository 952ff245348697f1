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
    /// The VM's current generation (or the domain's own when the VM is gone).
    pub generation: u64,
    /// The state does not place the VM on this host: hostd destroys the copy whatever
    /// generation it carries (it may be newer than the state's: a migration that went on
    /// after it was recorded failed, a restore from an older backup).
    pub stray: bool,
}

/// The running or paused domains on `host` that the state places elsewhere, places
/// nowhere, or knows only at a newer generation.
pub fn stale_domains(host: &str, domains: &[Domain], state: &ClusterState) -> Vec<Stale> {
    domains
        .iter()
        .filter(|d| matches!(d.state(), DomainState::Running | DomainState::Paused))
        .filter_map(|d| {
            let (generation, stray) = match state.vms.get(&d.name) {
                // Deleted from the state while this host was away.
                None => (d.generation, true),
                // The incoming copy of a running migration to this host.
                Some(vm) if state.migrating_to(vm) == Some(host) => return None,
                Some(vm) if vm.host.as_deref() != Some(host) => (vm.generation, true),
                Some(vm) if vm.generation > d.generation => (vm.generation, false),
                Some(_) => return None,
            };
            Some(Stale {
                name: d.name.clone(),
                generation,
                stray,
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
            busy: false,
        }
    }

    fn vm(name: &str, host: Option<&str>, generation: u64) -> Vm {
        let spec = VmSpec {
            vcpus: 1,
            memory_mib: 64,
        };
        Vm {
            observed: ObservedState::Running,
            host: host.map(Into::into),
            generation,
            ha: true,
            ..Vm::new(name, spec, DesiredState::Running)
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
            // Recorded as migrated back (failed) to h2 at 8 while h1 runs it at 9.
            vm("stray-newer", Some("h2"), 8),
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
            domain("stray-newer", 9, DomainState::Running),
        ];
        let stale = stale_domains("h1", &domains, &state);
        let names: Vec<(&str, u64, bool)> = stale
            .iter()
            .map(|s| (s.name.as_str(), s.generation, s.stray))
            .collect();
        // Copies the state places elsewhere or nowhere are strays: hostd destroys them
        // whatever their generation (a fenced destroy at 8 would be refused by a copy at 9).
        assert_eq!(
            names,
            [
                ("moved", 5, true),
                ("unplaced", 4, true),
                ("newer", 7, false),
                ("gone", 9, true),
                ("stray-newer", 8, true),
            ]
        );
    }
}
