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

    /// The destination of `vm`'s running migration.
    pub fn migrating_to(&self, vm: &Vm) -> Option<&str> {
        let op = self.operations.ops.get(&vm.migration?)?;
        match &op.kind {
            OpKind::Migrate { dst, .. } => Some(dst),
            OpKind::Drain { .. } => None,
        }
    }
}
