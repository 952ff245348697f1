//! A hypervisor host as the cluster knows it.

use serde::{Deserialize, Serialize};

/// What a host offers, as its hostd last reported it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    pub vcpus: u32,
    pub memory_mib: u64,
}

/// The leader's verdict on a host, committed only when it changes (heartbeats themselves
/// never go through the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostHealth {
    /// Registered; the current leader has not heard from it yet.
    Unknown,
    Up,
    /// Session broken or heartbeats missed. Not a death certificate: the HA issue adds
    /// leases and `Dead`.
    Unreachable,
}

impl HostHealth {
    pub fn as_str(self) -> &'static str {
        match self {
            HostHealth::Unknown => "unknown",
            HostHealth::Up => "up",
            HostHealth::Unreachable => "unreachable",
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
}
