//! Domain types → `drover.v1` messages.

use std::time::Duration;

use drover_actors::scheduler::place_vm;
use drover_proto::v1 as pb;
use drover_raft::model::{
    instance_id, ClusterState, DesiredState, DrillReport, Host, HostHealth, LeaderDrillReport,
    MigrationDrillReport, ObservedState, OpKind, Operation, Progress, Verdict, Vm,
};

/// `vm` with, when it waits for a placement, each host's reason for refusing it now.
pub fn vm_in(vm_: &Vm, state: &ClusterState) -> pb::Vm {
    let mut out = vm(vm_);
    if vm_.host.is_none() && vm_.desired == DesiredState::Running {
        if let Err(refusal) = place_vm(vm_, None, state, &state.placement) {
            out.placement_refusals = refusal.reasons.into_iter().collect();
        }
    }
    out
}

pub fn operation(op: &Operation) -> pb::Operation {
    let mut out = pb::Operation {
        id: op.id,
        kind: op.kind.as_str().into(),
        state: op.state.as_str().into(),
        started_at_ms: op.started_at_ms,
        finished_at_ms: op.finished_at_ms,
        cancel_requested: op.cancel_requested,
        message: op.message.clone(),
        ..Default::default()
    };
    match &op.kind {
        OpKind::Migrate { vm, src, dst, .. } => {
            out.vm.clone_from(vm);
            out.src.clone_from(src);
            out.dst.clone_from(dst);
        }
        OpKind::Drain { host, .. } => out.host.clone_from(host),
        OpKind::Drill { host, .. } => out.host.clone_from(host),
        OpKind::LeaderDrill { .. } => {}
        OpKind::MigrationDrill { vm } => out.vm.clone_from(vm),
    }
    match &op.progress {
        Progress::Migration(p) => {
            out.migration = Some(pb::MigrationProgress {
                data_total: p.data_total,
                data_processed: p.data_processed,
                data_remaining: p.data_remaining,
                dirty_rate: p.dirty_rate,
                iteration: p.iteration,
                elapsed_ms: p.elapsed_ms,
                downtime_ms: p.downtime_ms,
            })
        }
        Progress::Drain(p) => {
            out.drain = Some(pb::DrainProgress {
                total: p.total,
                remaining: p.remaining.clone(),
                blocked: p.blocked.clone().into_iter().collect(),
            })
        }
        Progress::Drill(r) => out.drill = Some(drill_report(op, r)),
        Progress::LeaderDrill(r) => out.leader_drill = Some(leader_drill_report(op, r)),
        Progress::MigrationDrill(r) => out.migration_drill = Some(migration_drill_report(op, r)),
        Progress::None => {}
    }
    out
}

fn verdict_pb(v: Option<&Verdict>) -> (String, Vec<String>) {
    match v {
        None => (String::new(), Vec::new()),
        Some(Verdict::Passed) => ("passed".to_string(), Vec::new()),
        Some(Verdict::Failed(why)) => ("failed".to_string(), why.clone()),
    }
}

fn leader_drill_report(op: &Operation, r: &LeaderDrillReport) -> pb::LeaderDrillReport {
    let OpKind::LeaderDrill {
        mode,
        leader,
        observer,
        max_duration_ms,
    } = &op.kind
    else {
        return pb::LeaderDrillReport::default();
    };
    let (verdict, failures) = verdict_pb(r.verdict.as_ref());
    let m = r.measure.clone().unwrap_or_default();
    pb::LeaderDrillReport {
        mode: mode.as_str().into(),
        leader: *leader,
        observer: *observer,
        new_leader: m.new_leader.unwrap_or(0),
        probes_sent: m.sent,
        probes_acked: m.acked.len() as u64,
        probes_failed: m.failed,
        probes_unknown: m.unknown,
        probes_applied: r.applied_count,
        unavailable_ms: m.unavailable_ms,
        time_to_leader_ms: m.time_to_leader_ms,
        lost: r.lost.clone(),
        verdict,
        failures,
        max_duration_ms: *max_duration_ms,
    }
}

fn migration_drill_report(op: &Operation, r: &MigrationDrillReport) -> pb::MigrationDrillReport {
    let (verdict, failures) = verdict_pb(r.verdict.as_ref());
    pb::MigrationDrillReport {
        vm: match &op.kind {
            OpKind::MigrationDrill { vm } => vm.clone(),
            _ => String::new(),
        },
        home: r.home.clone(),
        legs: r
            .legs
            .iter()
            .map(|l| pb::DrillLeg {
                op: l.op,
                from: l.from.clone(),
                to: l.to.clone(),
                state: l.state.map(|s| s.as_str().to_string()).unwrap_or_default(),
                downtime_ms: l.downtime_ms,
                elapsed_ms: l.elapsed_ms,
                message: l.message.clone(),
            })
            .collect(),
        verdict,
        failures,
    }
}

fn drill_report(op: &Operation, r: &DrillReport) -> pb::DrillReport {
    let (host, mode, max_duration_ms) = match &op.kind {
        OpKind::Drill {
            host,
            mode,
            max_duration_ms,
        } => (host.clone(), mode.as_str().to_string(), *max_duration_ms),
        _ => Default::default(),
    };
    let (verdict, failures) = verdict_pb(r.verdict.as_ref());
    pb::DrillReport {
        host,
        mode,
        phase: r.phase.as_str().into(),
        isolated_at_ms: r.isolated_at_ms.unwrap_or(0),
        dead_at_ms: r.dead_at_ms.unwrap_or(0),
        dead_reason: r.dead_reason.clone().unwrap_or_default(),
        fence_path: r.fence_path.clone(),
        vms: r
            .vms
            .iter()
            .map(|(name, v)| pb::DrillVm {
                name: name.clone(),
                ha: v.ha,
                planned: v.planned.clone().unwrap_or_default(),
                restarted_on: v.restarted_on.clone().unwrap_or_default(),
                running_at_ms: v.running_at_ms.unwrap_or(0),
                down_reason: v.down_reason.clone().unwrap_or_default(),
            })
            .collect(),
        restored_at_ms: r.restored_at_ms.unwrap_or(0),
        back_at_ms: r.back_at_ms.unwrap_or(0),
        samples: r.samples,
        violations: r.violations.clone(),
        verdict,
        failures,
        max_duration_ms,
        restore_reason: r.restore_reason.clone().unwrap_or_default(),
    }
}

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
        require_labels: vm.require_labels.clone().into_iter().collect(),
        anti_affinity: vm.anti_affinity.clone().unwrap_or_default(),
        migration_op: vm.migration.unwrap_or(0),
        placement_refusals: Default::default(),
        disks: vm
            .disks
            .iter()
            .map(|d| pb::Disk {
                pool: d.pool.clone(),
                volume: d.volume.clone(),
                size_bytes: d.size_bytes,
                format: d.format.as_str().into(),
                image: d
                    .backing
                    .as_ref()
                    .map_or(String::new(), |b| b.image.clone()),
            })
            .collect(),
        cloud_init: vm.cloud_init.as_ref().map(|c| pb::CloudInitInfo {
            hostname: c.hostname.clone(),
            ssh_keys: c.ssh_keys.clone(),
            user_data_bytes: c.user_data.as_ref().map_or(0, |d| d.len() as u32),
            instance_id: instance_id(&vm.name, vm.uid),
        }),
        nics: vm
            .nics
            .iter()
            .map(|n| pb::Nic {
                network: n.network.clone(),
                mac: n.mac.clone(),
                ip: n.ip.map(|ip| ip.to_string()).unwrap_or_default(),
            })
            .collect(),
        security_groups: vm.security_groups.clone(),
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
        labels: host.labels.clone().into_iter().collect(),
        admin_state: host.admin.as_str().into(),
        migration_uri: host.migration_uri.clone(),
        underlay: host
            .networking
            .as_ref()
            .and_then(|n| n.underlay)
            .map(|ip| ip.to_string())
            .unwrap_or_default(),
        links: host
            .networking
            .iter()
            .flat_map(|n| n.links.iter().cloned())
            .collect(),
        vlan_links: host.networking.as_ref().and_then(|n| n.vlan_links),
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
        ObservedState::Starting => pb::ObservedState::Starting,
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
