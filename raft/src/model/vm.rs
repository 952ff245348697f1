//! A virtual machine: its spec, what the operator wants, what the host reports, where it is.

use serde::{Deserialize, Serialize};

use super::{CloudInit, Disk, DiskSpec, Labels, Nic, NicSpec};

/// Upper bounds that catch typos (`--memory-mib 40960000`) before any scheduler sees them.
pub const MAX_VCPUS: u32 = 512;
pub const MAX_MEMORY_MIB: u64 = 16 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmSpec {
    pub vcpus: u32,
    pub memory_mib: u64,
}

impl VmSpec {
    pub fn validate(&self) -> Result<(), String> {
        if self.vcpus == 0 {
            return Err("vcpus must be at least 1".into());
        }
        if self.vcpus > MAX_VCPUS {
            return Err(format!(
                "vcpus {} exceeds the limit of {MAX_VCPUS}",
                self.vcpus
            ));
        }
        if self.memory_mib == 0 {
            return Err("memory_mib must be at least 1".into());
        }
        if self.memory_mib > MAX_MEMORY_MIB {
            return Err(format!(
                "memory_mib {} exceeds the limit of {MAX_MEMORY_MIB}",
                self.memory_mib
            ));
        }
        Ok(())
    }
}

/// Everything about a new VM besides its name, size and whether it starts; every field
/// has a default, so a new option is one field here (and one in `Vm`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmOptions {
    #[serde(default)]
    pub ha: bool,
    #[serde(default)]
    pub ha_priority: i32,
    #[serde(default)]
    pub require_labels: Labels,
    #[serde(default)]
    pub anti_affinity: Option<String>,
    /// Volumes to create, the first one is the boot disk.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<DiskSpec>,
    /// The image the boot disk is a linked clone of; the other disks start empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Its NoCloud seed's settings; `None`: no seed is attached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_init: Option<CloudInit>,
    /// Its network interfaces, in the guest's order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nics: Vec<NicSpec>,
}

/// What the operator asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DesiredState {
    Running,
    Stopped,
    /// Being removed: the leader undefines it on its host, then drops it from the state.
    Deleted,
}

impl ObservedState {
    /// The domain runs or is paused: it holds the guest's memory.
    pub fn is_active(self) -> bool {
        matches!(self, ObservedState::Running | ObservedState::Paused)
    }
}

impl Vm {
    /// A new VM as `CreateVm` makes it: unplaced, generation 0, nothing observed, no
    /// placement policy and not HA. Everything else is set on the result.
    pub fn new(name: &str, spec: VmSpec, desired: DesiredState) -> Self {
        Self {
            name: name.to_string(),
            spec,
            desired,
            observed: ObservedState::Unknown,
            host: None,
            generation: 0,
            reason: String::new(),
            ha: false,
            ha_priority: 0,
            require_labels: Labels::new(),
            anti_affinity: None,
            migration: None,
            placed_at: 0,
            uid: 0,
            disks: Vec::new(),
            volumes_created: false,
            keep_disks: false,
            dropped_disks: Vec::new(),
            disks_made: 0,
            cloud_init: None,
            nics: Vec::new(),
            security_groups: Vec::new(),
        }
    }
}

impl Vm {
    /// The volume its cloud-init seed lives in (the boot disk's pool), if it has one.
    pub fn seed_volume(&self) -> Option<(&str, String)> {
        self.cloud_init.as_ref()?;
        let boot = self.disks.first()?;
        Some((
            boot.pool.as_str(),
            super::seed_volume_name(&self.name, self.uid),
        ))
    }

    /// Every pool the VM's host must have set up: its disks' and their images'.
    pub fn pools(&self) -> impl Iterator<Item = &str> {
        self.disks.iter().flat_map(|d| {
            std::iter::once(d.pool.as_str()).chain(d.backing.as_ref().map(|b| b.pool.as_str()))
        })
    }
}

impl DesiredState {
    pub fn as_str(self) -> &'static str {
        match self {
            DesiredState::Running => "running",
            DesiredState::Stopped => "stopped",
            DesiredState::Deleted => "deleted",
        }
    }
}

/// What the VM's host last reported for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ObservedState {
    Unknown,
    /// A start was sent (or is about to be) at this generation and its outcome is not
    /// known yet: the copy may be running. Left only by a report that post-dates it.
    Starting,
    Running,
    Paused,
    ShutOff,
    Crashed,
    /// Its host does not list the domain.
    Missing,
}

impl ObservedState {
    pub fn as_str(self) -> &'static str {
        match self {
            ObservedState::Unknown => "unknown",
            ObservedState::Starting => "starting",
            ObservedState::Running => "running",
            ObservedState::Paused => "paused",
            ObservedState::ShutOff => "shut off",
            ObservedState::Crashed => "crashed",
            ObservedState::Missing => "missing",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vm {
    pub name: String,
    pub spec: VmSpec,
    pub desired: DesiredState,
    pub observed: ObservedState,
    /// The host the VM is placed on; `None` while unplaced.
    pub host: Option<String>,
    /// Bumped on every placement change; hostd refuses commands carrying an older one, so
    /// a stale actor or deposed leader cannot act on a VM that has moved.
    pub generation: u64,
    /// Why the VM is not where it should be (no capacity, start failed), empty otherwise.
    pub reason: String,
    /// Restarted elsewhere when its host dies; destroyed by its host when the host's lease
    /// lapses (self-fencing). Non-HA VMs are never moved without a confirmed fence.
    #[serde(default)]
    pub ha: bool,
    /// Higher restarts first in a failover.
    #[serde(default)]
    pub ha_priority: i32,
    // Left out of the JSON when empty: snapshots hold every VM, and 100k VMs × these
    // fields' empty forms is megabytes a learner must receive.
    /// Only hosts carrying all of these labels may run it.
    #[serde(default, skip_serializing_if = "Labels::is_empty")]
    pub require_labels: Labels,
    /// Never on one host with another VM of the same group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub anti_affinity: Option<String>,
    /// The running migration operation; while set, only that operation moves the VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub migration: Option<u64>,
    /// [`ClusterState::placements`](super::ClusterState::placements) when the VM got its
    /// current host and generation, or its domain was last recorded coming up there. A
    /// host's listing without the domain proves it is not there only if the listing was
    /// made after this: a migration's destination has the domain before the state says
    /// so, and a start may be answered before a listing made just before it arrives.
    #[serde(default)]
    pub placed_at: u64,
    /// This VM's incarnation: unique in the cluster's history (`ClusterState::vm_uids`
    /// when it was created), unlike its name, which a later VM may reuse.
    #[serde(default)]
    pub uid: u64,
    /// Its volumes, the boot disk first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub disks: Vec<Disk>,
    /// It has run, so its volumes exist: from now on a host that does not find one must
    /// refuse to start it rather than create an empty disk (a shared filesystem not
    /// mounted on that host, a local disk lost) and boot the VM without its data.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub volumes_created: bool,
    /// Deleted with `--keep-disks`: its volumes stay in their pools.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub keep_disks: bool,
    /// Disks removed from the VM whose volumes its host has yet to delete.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropped_disks: Vec<Disk>,
    /// Disks ever given to this VM: numbers the next one's volume, so a disk added after
    /// one was removed never takes a name still in use (0 in older states: the count of
    /// its disks is the floor).
    #[serde(default)]
    pub disks_made: u32,
    /// What its cloud-init seed says (see [`VmOptions::cloud_init`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cloud_init: Option<CloudInit>,
    /// Its network interfaces, MACs and addresses allocated by the cluster.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub nics: Vec<Nic>,
    /// Its security groups: none, every incoming packet is let in; else only what one of
    /// their rules allows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_groups: Vec<String>,
}

impl DesiredState {
    /// Whether the operator may move the VM from `self` to `to`. Every pair is listed: a
    /// new state must decide its transitions here.
    pub fn can_become(self, to: DesiredState) -> bool {
        use DesiredState::*;
        match (self, to) {
            (Running, Running) | (Running, Stopped) | (Running, Deleted) => true,
            (Stopped, Running) | (Stopped, Stopped) | (Stopped, Deleted) => true,
            // Deletion is one-way; asking again is harmless.
            (Deleted, Deleted) => true,
            (Deleted, Running) | (Deleted, Stopped) => false,
        }
    }
}
