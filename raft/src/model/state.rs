//! The whole replicated state. Ordered maps keep iteration order, and so every derived
//! decision, identical on every node.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{EventLog, Host, HostHealth, Image, OpKind, Operations, PlacementPolicy, Pool, Vm};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    pub hosts: BTreeMap<String, Host>,
    /// A persistent map: cloning it for a snapshot shares its nodes instead of copying
    /// them, so taking a snapshot holds the state's lock for microseconds even at millions
    /// of VMs (a `BTreeMap` clone of 2 M VMs took 2 s, during which `apply` and every
    /// reader waited; issue 10).
    pub vms: imbl::OrdMap<String, Vm>,
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
    /// Storage pools by name.
    #[serde(default)]
    pub pools: BTreeMap<String, Pool>,
    /// Images by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub images: BTreeMap<String, super::Image>,
    /// Images ever imported: numbers their volumes (see [`super::image_volume_name`]).
    #[serde(default)]
    pub image_uids: u64,
    /// Counts every placement change of every VM (a new host or generation); each VM keeps
    /// the count of its latest in [`Vm::placed_at`]. A leader notes this count in each lease
    /// grant it sends, so it knows which placements a host had been told of when it listed
    /// its domains (see `Command::VmObserved`).
    #[serde(default)]
    pub placements: u64,
    /// VMs ever created: the next one's [`Vm::uid`] is this + 1.
    #[serde(default)]
    pub vm_uids: u64,
    /// Networks by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub networks: BTreeMap<String, super::Network>,
    /// NICs ever created: numbers their MACs (see [`super::mac_for`]).
    #[serde(default)]
    pub nic_uids: u64,
    /// Scheduled drills by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub drill_schedules: BTreeMap<String, super::DrillSchedule>,
    /// Security groups by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub security_groups: BTreeMap<String, super::SecurityGroup>,
}

/// The cluster-wide HA switch. Disarmed (planned network maintenance): grants tell hosts
/// not to fence themselves, and no host is declared dead by its lease, so nothing fails
/// over. Re-arming does not re-arm hosts by itself: each host counts as armed again only
/// once it reports that it applied an armed grant (`Host::fencing_armed`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaSettings {
    pub disarmed: bool,
    /// Bumped by every arm and disarm. Grants carry it and hosts report the epoch of the
    /// grant they applied, so a report made before the latest switch (a heartbeat built
    /// before the host saw the disarmed grant, committed after a quick re-arm) cannot
    /// count the host as armed.
    #[serde(default)]
    pub epoch: u64,
    /// How many restores from a backup this cluster descends from. A restored cluster's
    /// Raft terms start again at 1, below what its hosts have seen from the cluster it
    /// replaces; the fencing term hostd compares is `restores << 32 | raft term`, so every
    /// restored leader outranks every leader before the restore.
    #[serde(default)]
    pub restores: u64,
    /// The lease every leader grants and every host is judged by; `None` until the first
    /// leader of a cluster commits its `drover server` flags.
    #[serde(default)]
    pub lease: Option<LeaseConfig>,
    /// The configuration `lease` replaced, while grants made under it may still be live;
    /// the leader clears it once they certainly are not. No other change is accepted
    /// meanwhile, so there is only ever one older configuration to wait out.
    #[serde(default)]
    pub previous_lease: Option<LeaseConfig>,
}

/// Lease timings, in milliseconds: how often hosts beat, how long a grant lasts, and the
/// margin a leader adds before it calls a silent host's lease certainly lapsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseConfig {
    pub heartbeat_ms: u64,
    pub ttl_ms: u64,
    pub margin_ms: u64,
}

/// A heartbeat interval must fit this many times into the lease ttl, so that a few lost
/// beats do not lapse a lease that the host keeps renewing.
pub const MIN_BEATS_PER_TTL: u64 = 3;
/// Longest ttl accepted: a host stays unreplaceable this long after it goes silent.
pub const MAX_LEASE_TTL_MS: u64 = 10 * 60 * 1000;

impl Default for LeaseConfig {
    fn default() -> Self {
        Self {
            heartbeat_ms: 1000,
            ttl_ms: 5000,
            margin_ms: 1000,
        }
    }
}

impl LeaseConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.heartbeat_ms == 0 {
            return Err("heartbeat interval must be positive".into());
        }
        if self.ttl_ms < self.heartbeat_ms.saturating_mul(MIN_BEATS_PER_TTL) {
            return Err(format!(
                "lease ttl {} ms must be at least {MIN_BEATS_PER_TTL} heartbeats ({} ms)",
                self.ttl_ms,
                self.heartbeat_ms.saturating_mul(MIN_BEATS_PER_TTL)
            ));
        }
        if self.ttl_ms > MAX_LEASE_TTL_MS {
            return Err(format!(
                "lease ttl {} ms exceeds the limit of {MAX_LEASE_TTL_MS} ms",
                self.ttl_ms
            ));
        }
        if self.margin_ms == 0 || self.margin_ms > MAX_LEASE_TTL_MS {
            return Err(format!(
                "lease margin {} ms must be in 1..={MAX_LEASE_TTL_MS}",
                self.margin_ms
            ));
        }
        Ok(())
    }

    /// How long after its last grant a silent host's lease has certainly lapsed.
    pub fn lapse_ms(&self) -> u64 {
        self.ttl_ms + self.margin_ms
    }
}

/// Raft terms stay below this in the fencing term (an election a second for 136 years).
const TERM_BITS: u32 = 32;

impl HaSettings {
    /// The fencing token hostd compares for a leader of Raft `term` (see `restores`).
    pub fn fencing_term(&self, term: u64) -> u64 {
        (self.restores << TERM_BITS) | (term & ((1 << TERM_BITS) - 1))
    }
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

    /// The networks `vm`'s NICs are on, by name (a network deleted meanwhile is left out:
    /// NICs keep their network from being deleted).
    pub fn nic_networks(&self, vm: &Vm) -> BTreeMap<String, super::NetworkKind> {
        vm.nics
            .iter()
            .filter_map(|nic| self.networks.get(&nic.network))
            .map(|net| (net.name.clone(), net.spec.kind.clone()))
            .collect()
    }

    /// Whether `host` has room for `vm` under the placement policy: vCPUs and memory within
    /// capacity × overcommit (counting every VM placed on or migrating to it, except `vm`
    /// itself), and no other VM of `vm`'s anti-affinity group there. The scheduler picks
    /// hosts by the same rules; `apply` checks them again so that placements decided
    /// concurrently (many VM actors after a failover) can never overbook a host together.
    pub fn room_for(&self, host: &Host, vm: &Vm) -> Result<(), String> {
        self.image_reachable(vm, &host.name)?;
        if let Some(networking) = &host.networking {
            for (network, kind) in self.nic_networks(vm) {
                if let Some(why) = networking.cannot_carry(&kind) {
                    return Err(format!("cannot carry network {network}: {why}"));
                }
            }
        }
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
        // Space is the scheduler's to judge (reports lag); a pool that is not set up
        // here at all is a certain failure to start.
        for pool in vm.pools() {
            let active = self.pools.get(pool).is_some_and(|p| {
                matches!(
                    p.on_hosts.get(&host.name),
                    Some(super::PoolOnHost::Active { .. })
                )
            });
            if !active {
                return Err(format!("storage pool {pool} is not set up there"));
            }
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

    /// The image `vm`'s boot disk is a clone of, when it is in a pool its hosts do not
    /// share and `host` has no ready copy of it yet: the copy must be made there before
    /// the VM starts or arrives.
    pub fn image_to_copy<'a>(&'a self, vm: &Vm, host: &str) -> Option<&'a Image> {
        vm.disks
            .iter()
            .filter_map(|d| d.backing.as_ref())
            .find_map(|b| {
                let image = self.images.get(&b.image)?;
                (self.is_local_pool(&b.pool) && !image.ready_on(host)).then_some(image)
            })
    }

    /// Why `host` cannot get `vm`'s image, if it cannot: a copy is made from the host that
    /// received the image, which must be up.
    pub fn image_reachable(&self, vm: &Vm, host: &str) -> Result<(), String> {
        let Some(image) = self.image_to_copy(vm, host) else {
            return Ok(());
        };
        let source_up = self
            .hosts
            .get(&image.host)
            .is_some_and(|h| h.health == HostHealth::Up);
        if source_up {
            Ok(())
        } else {
            Err(format!(
                "image {} has no copy here and its host {} is not up to copy it from",
                image.name, image.host
            ))
        }
    }

    /// The first pool of `vm`'s disks (or of the images they are clones of) that is
    /// local to each host (or gone): once the VM has been placed, its volume there exists
    /// only on its host.
    pub fn local_disk_pool<'a>(&self, vm: &'a Vm) -> Option<&'a str> {
        vm.pools().find(|pool| self.is_local_pool(pool))
    }

    /// Each host has its own files in `pool` (or the pool is gone): a volume there is on
    /// one host only.
    pub fn is_local_pool(&self, pool: &str) -> bool {
        self.pools.get(pool).is_none_or(|p| !p.spec.shared)
    }

    /// The destination of `vm`'s running migration.
    pub fn migrating_to(&self, vm: &Vm) -> Option<&str> {
        let op = self.operations.ops.get(&vm.migration?)?;
        match &op.kind {
            OpKind::Migrate { dst, .. } => Some(dst),
            OpKind::Drain { .. }
            | OpKind::Drill { .. }
            | OpKind::LeaderDrill { .. }
            | OpKind::MigrationDrill { .. } => None,
        }
    }
}
