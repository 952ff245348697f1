//! The whole replicated state. `BTreeMap`s keep iteration order, and so every derived
//! decision, identical on every node.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{EventLog, Host, OpKind, Operations, PlacementPolicy, Vm};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    pub hosts: BTreeMap<String, Host>,
    pub vms: BTreeMap<String, Vm>,
    #[serde(default)]
    pub ha: HaSettings,
    #[serde(default)]
    pub events: EventLog,
    #[serde(default)]
    pub operations: Operations,
    #[serde(default)]
    pub placement: PlacementPolicy,
    /// Users' bearer tokens by id (hashes only; see [`super::Token`]).
    #[serde(default)]
    pub tokens: BTreeMap<String, super::Token>,
}

/// The cluster-wide HA switch. Disarmed (planned network maintenance): grants tell hosts
/// not to fence themselves, and no host is declared dead by its lease, so nothing fails
/// over. Re-arming does not re-arm hosts by itself: each host counts as armed again only
/// once it reports that it applied an armed grant (`Host::fencing_armed`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaSettings {
    pub disarmed: bool,
}

impl ClusterState {
    /// Hosts that would not fence themselves today (so cannot be declared dead by lease).
    pub fn hosts_not_armed(&self) -> Vec<String> {
        self.hosts
            .values()
            .filter(|h| !h.fencing_armed)
            .map(|h| h.name.clone())
            .collect()
    }

    /// vCPUs and memory of the VMs placed on `host` (running or not: a placed VM keeps its
    /// reservation so that starting it again cannot fail for lack of room), and of the VMs
    /// migrating to it (booked on both ends until the migration ends).
    pub fn allocated(&self, host: &str) -> (u32, u64, u32) {
        self.vms
            .values()
            .filter(|vm| vm.host.as_deref() == Some(host) || self.migrating_to(vm) == Some(host))
            .fold((0, 0, 0), |(c, m, n), vm| {
                (c + vm.spec.vcpus, m + vm.spec.memory_mib, n + 1)
            })
    }

    /// Whether `host` has room for `vm` under the placement policy: vCPUs and memory within
    /// capacity × overcommit (counting every VM placed on or migrating to it, except `vm`
    /// itself), and no other VM of `vm`'s anti-affinity group there. The scheduler picks
    /// hosts by the same rules; `apply` checks them again so that placements decided
    /// concurrently (many VM actors after a failover) can never overbook a host together.
    pub fn room_for(&self, host: &Host, vm: &Vm) -> Result<(), String> {
        let mut used = (0u64, 0u64);
        let mut group_there = false;
        for other in self.vms.values() {
            let here = other.host.as_deref() == Some(host.name.as_str())
                || self.migrating_to(other) == Some(host.name.as_str());
            if !here || other.name == vm.name {
                continue;
            }
            used.0 += u64::from(other.spec.vcpus);
            used.1 += other.spec.memory_mib;
            group_there |= other.anti_affinity.is_some() && other.anti_affinity == vm.anti_affinity;
        }
        let cpu_limit = self.placement.cpu_limit(host.capacity.vcpus);
        let mem_limit = self.placement.memory_limit(host.capacity.memory_mib);
        if used.0 + u64::from(vm.spec.vcpus) > cpu_limit {
            return Err(format!(
                "{} of {cpu_limit} vCPUs allocated, needs {}",
                used.0, vm.spec.vcpus
            ));
        }
        if used.1 + vm.spec.memory_mib > mem_limit {
            return Err(format!(
                "{} of {mem_limit} MiB allocated, needs {}",
                used.1, vm.spec.memory_mib
            ));
        }
        if group_there {
            return Err(format!(
                "already runs a VM of anti-affinity group {}",
                vm.anti_affinity.as_deref().unwrap_or_default()
            ));
        }
        Ok(())
    }

    /// The destination of `vm`'s running migration.
    pub fn migrating_to(&self, vm: &Vm) -> Option<&str> {
        let op = self.operations.ops.get(&vm.migration?)?;
        match &op.kind {
            OpKind::Migrate { dst, .. } => Some(dst),
            OpKind::Drain { .. } => None,
        }
    }
}
