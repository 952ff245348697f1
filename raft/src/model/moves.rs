//! The never-twice rule for cold moves: when a placed VM may be given another host.
//!
//! `apply` is the last guard (ARCHITECTURE.md, "Why no VM runs twice"): whatever an actor
//! believed, a VM that has a host gets another only when its current copy cannot run. The
//! drain plan asks the same question, so that it lists a VM as blocked instead of
//! proposing a move `apply` would refuse.

use serde::{Deserialize, Serialize};

use super::{ClusterState, DeadReason, HostHealth, ObservedState, Vm};

/// Why a placed VM may still run on its host, so it may not be placed elsewhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MayStillRun {
    pub host: String,
    /// What the host last confirmed for the VM's current generation.
    pub observed: ObservedState,
    pub health: HostHealth,
    pub ha: bool,
}

impl MayStillRun {
    /// What an operator can do about it, for refusals and drain reports.
    pub fn remedy(&self) -> String {
        let host = &self.host;
        match self.health {
            HostHealth::Up => {
                format!("stop it first (drover vm stop), or wait until {host} reports it shut off")
            }
            HostHealth::Unknown | HostHealth::Suspect | HostHealth::Dead => format!(
                "{host} may still run it: once the host is really off, confirm it with \
                 `drover host fence {host} --yes-it-is-off`"
            ),
        }
    }
}

impl std::fmt::Display for MayStillRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "it may still run on {} (host {}, VM {}{}); {}",
            self.host,
            self.health.as_str(),
            self.observed.as_str(),
            if self.ha { "" } else { ", not HA" },
            self.remedy()
        )
    }
}

impl ObservedState {
    /// Whether a host's report of this state proves no copy runs there. `Missing` and
    /// `ShutOff` do only because a report is recorded against the generation the domain
    /// carries, and every start first moves the VM to a new generation (`Starting`): a
    /// start still in flight can never hide behind an older "shut off".
    pub fn confirms_off(self) -> bool {
        match self {
            ObservedState::ShutOff | ObservedState::Crashed | ObservedState::Missing => true,
            ObservedState::Unknown
            | ObservedState::Starting
            | ObservedState::Running
            | ObservedState::Paused => false,
        }
    }
}

impl ClusterState {
    /// Whether `vm` may be given another host. An unplaced VM may. A placed one only if
    /// (a) its host confirmed it off at its current generation, (b) the host is `Dead`
    /// and the VM is HA (the host fenced its HA guests when its lease lapsed), or (c) the
    /// host is `Dead` because an operator or a fence agent confirmed it is powered off.
    pub fn may_leave_host(&self, vm: &Vm) -> Result<(), MayStillRun> {
        let Some(on) = vm.host.as_deref() else {
            return Ok(());
        };
        if vm.observed.confirms_off() {
            return Ok(());
        }
        // A host missing from the state was removed empty; nothing can run there.
        let Some(host) = self.hosts.get(on) else {
            return Ok(());
        };
        let fenced = host.health == HostHealth::Dead
            && match host.dead_reason {
                Some(DeadReason::Operator | DeadReason::FenceAgent) => true,
                Some(DeadReason::LeaseLapsed) => vm.ha,
                None => false,
            };
        if fenced {
            return Ok(());
        }
        Err(MayStillRun {
            host: on.to_string(),
            observed: vm.observed,
            health: host.health,
            ha: vm.ha,
        })
    }
}
