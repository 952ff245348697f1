//! A hypervisor host as the cluster knows it.

use serde::{Deserialize, Serialize};

use super::{HostNetworking, Labels};

/// What a host offers, as its hostd last reported it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    pub vcpus: u32,
    pub memory_mib: u64,
}

/// Most vCPUs one host may report: above the largest machines libvirt runs on today.
pub const MAX_HOST_VCPUS: u32 = 16_384;
/// Most memory one host may report: 64 TiB.
pub const MAX_HOST_MEMORY_MIB: u64 = 64 * 1024 * 1024;

impl Capacity {
    /// A host's report is input like any other: a broken or hostile hostd must not make
    /// the scheduler believe in a machine of a billion cores.
    pub fn validate(&self) -> Result<(), String> {
        if self.vcpus > MAX_HOST_VCPUS {
            return Err(format!(
                "{} vCPUs reported; at most {MAX_HOST_VCPUS} are believed",
                self.vcpus
            ));
        }
        if self.memory_mib > MAX_HOST_MEMORY_MIB {
            return Err(format!(
                "{} MiB of memory reported; at most {MAX_HOST_MEMORY_MIB} MiB are believed",
                self.memory_mib
            ));
        }
        Ok(())
    }
}

/// The leader's verdict on a host, committed only when it changes (heartbeats themselves
/// never go through the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostHealth {
    /// Registered; the current leader has not heard from it yet.
    Unknown,
    Up,
    /// Session broken or heartbeats missed. Not a death certificate: its VMs stay put.
    #[serde(alias = "Unreachable")]
    Suspect,
    /// Its lease has certainly lapsed (so it has fenced itself), or an operator confirmed
    /// it is off: its HA VMs may run elsewhere. Left only by reconnecting and reporting.
    Dead,
}

impl HostHealth {
    pub fn as_str(self) -> &'static str {
        match self {
            HostHealth::Unknown => "unknown",
            HostHealth::Up => "up",
            HostHealth::Suspect => "suspect",
            HostHealth::Dead => "dead",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Host {
    pub name: String,
    /// hostd's gRPC address (`host:port`).
    pub address: String,
    pub health: HostHealth,
    /// Zero until the host has reported; the scheduler skips such hosts.
    pub capacity: Capacity,
    /// Why it is `Dead`; `None` otherwise.
    #[serde(default)]
    pub dead_reason: Option<DeadReason>,
    /// The host reported that it will fence itself when its lease lapses (it applied a
    /// grant from an armed cluster). Only such a host may be declared dead by its lease:
    /// a host still holding a disarmed grant keeps its guests running.
    #[serde(default)]
    pub fencing_armed: bool,
    /// `key=value` pairs VMs can require (`vm create --require-label`).
    #[serde(default)]
    pub labels: Labels,
    /// Whether the scheduler may place VMs here.
    #[serde(default)]
    pub admin: AdminState,
    /// How peers' libvirt reaches this host's libvirt for live migration
    /// (`qemu+tcp://10.0.0.5:16509/system`), as hostd reported it; empty: cannot take
    /// migrations.
    #[serde(default)]
    pub migration_uri: String,
    /// Its VXLAN underlay address and interfaces, as hostd last reported them; `None`
    /// until it has (a hostd of an older version never does): then placements are not
    /// refused for networks, and overlays use the registered address's IPv4. Log entries
    /// from before hosts reported apply as they did when they were written.
    #[serde(default)]
    pub networking: Option<HostNetworking>,
}

impl Host {
    /// A host as `AddHost` registers it: health unknown and no capacity until it reports,
    /// in service, no labels. Everything else is set on the result.
    pub fn new(name: &str, address: &str) -> Self {
        Self {
            name: name.to_string(),
            address: address.to_string(),
            health: HostHealth::Unknown,
            capacity: Capacity::default(),
            dead_reason: None,
            fencing_armed: false,
            labels: Labels::new(),
            admin: AdminState::Active,
            migration_uri: String::new(),
            networking: None,
        }
    }
}

/// The operator's say over a host, apart from its health.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminState {
    #[default]
    Active,
    /// A drain is moving its VMs off; no new placements.
    Draining,
    /// Empty and out of service until `drover host activate`.
    Maintenance,
}

impl AdminState {
    pub fn as_str(self) -> &'static str {
        match self {
            AdminState::Active => "active",
            AdminState::Draining => "draining",
            AdminState::Maintenance => "maintenance",
        }
    }
}

/// What entitles the cluster to call a host dead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeadReason {
    /// The leader's last grant plus ttl and margin has passed: the host fenced itself.
    LeaseLapsed,
    /// An operator confirmed the host is powered off (`drover host fence`).
    Operator,
    /// The controllers' fence agent (an IPMI/Redfish power-off script) reported success.
    FenceAgent,
}

impl DeadReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DeadReason::LeaseLapsed => "lease",
            DeadReason::Operator => "operator",
            DeadReason::FenceAgent => "fence-agent",
        }
    }
}
