//! Domain types → `drover.v1` messages.

use std::time::Duration;

use drover_proto::v1 as pb;
use drover_raft::model::{ClusterState, DesiredState, Host, HostHealth, ObservedState, Vm};

pub fn vm(vm: &Vm) -> pb::Vm {
    pb::Vm {
        name: vm.name.clone(),
        spec: Some(pb::VmSpec {
            vcpus: vm.spec.vcpus,
            memory_mib: vm.spec.memory_mib,
        }),
        desired_state: desired(vm.desired) as i32,
        observed_state: observed(vm.observed) as i32,
        host: vm.host.clone().unwrap_or_default(),
        generation: vm.generation,
        reason: vm.reason.clone(),
        ha: vm.ha,
        ha_priority: vm.ha_priority,
    }
}

/// `lease_granted` is how long ago this leader last granted the host a lease, if it did.
pub fn host(host: &Host, state: &ClusterState, lease_granted: Option<Duration>) -> pb::Host {
    let (vcpus, memory, count) = state.allocated(&host.name);
    pb::Host {
        name: host.name.clone(),
        address: host.address.clone(),
        health: health(host.health) as i32,
        vcpus: host.capacity.vcpus,
        memory_mib: host.capacity.memory_mib,
        allocated_vcpus: vcpus,
        allocated_memory_mib: memory,
        vm_count: count,
        lease_granted_ms_ago: lease_granted.map(|d| d.as_millis() as u64),
        dead_reason: host
            .dead_reason
            .map(|r| r.as_str().to_string())
            .unwrap_or_default(),
    }
}

fn desired(d: DesiredState) -> pb::DesiredState {
    match d {
        DesiredState::Running => pb::DesiredState::Running,
        DesiredState::Stopped => pb::DesiredState::Stopped,
        DesiredState::Deleted => pb::DesiredState::Deleted,
    }
}

fn observed(o: ObservedState) -> pb::ObservedState {
    match o {
        ObservedState::Unknown => pb::ObservedState::Unknown,
        ObservedState::Running => pb::ObservedState::Running,
        ObservedState::Paused => pb::ObservedState::Paused,
        ObservedState::ShutOff => pb::ObservedState::ShutOff,
        ObservedState::Crashed => pb::ObservedState::Crashed,
        ObservedState::Missing => pb::ObservedState::Missing,
    }
}

fn health(h: HostHealth) -> pb::HostHealth {
    match h {
        HostHealth::Unknown => pb::HostHealth::Unknown,
        HostHealth::Up => pb::HostHealth::Up,
        HostHealth::Suspect => pb::HostHealth::Suspect,
        HostHealth::Dead => pb::HostHealth::Dead,
    }
}
