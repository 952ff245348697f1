//! Test-only builders of hosts, VMs and states, shared by the decision modules' unit tests.

use drover_raft::model::{
    AdminState, Capacity, ClusterState, DesiredState, Host, HostHealth, ObservedState, Vm, VmSpec,
};

/// An up, active, armed host with this capacity, reachable for migrations.
pub fn host(name: &str, vcpus: u32, memory_mib: u64) -> Host {
    Host {
        name: name.into(),
        address: "127.0.0.1:1".into(),
        health: HostHealth::Up,
        capacity: Capacity { vcpus, memory_mib },
        dead_reason: None,
        fencing_armed: true,
        labels: Default::default(),
        admin: AdminState::Active,
        migration_uri: format!("qemu+tcp://{name}/system"),
    }
}

/// A VM that should run and runs, on `host` (placed once: generation 1).
pub fn vm(name: &str, host: Option<&str>, vcpus: u32, memory_mib: u64) -> Vm {
    Vm {
        observed: ObservedState::Running,
        host: host.map(String::from),
        generation: 1,
        ..Vm::new(name, VmSpec { vcpus, memory_mib }, DesiredState::Running)
    }
}

pub fn state(hosts: Vec<Host>, vms: Vec<Vm>) -> ClusterState {
    ClusterState {
        hosts: hosts.into_iter().map(|h| (h.name.clone(), h)).collect(),
        vms: vms.into_iter().map(|v| (v.name.clone(), v)).collect(),
        ..Default::default()
    }
}
