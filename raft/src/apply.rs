//! `ClusterState::apply`: validates one command and changes the state, or refuses it with a
//! typed error and changes nothing. Pure and deterministic.

use crate::command::{ApplyError, ApplyResult, Command, Reply};
use crate::model::{
    validate_name, ClusterState, DeadReason, DesiredState, Event, Host, HostHealth, ObservedState,
    Vm,
};

/// Which entity an applied command touched; the store persists exactly these keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Touched {
    Host(String),
    Vm(String),
    /// The HA switch and every host.
    AllHosts,
    /// An event appended, and maybe the oldest one dropped.
    Event {
        added: u64,
        evicted: Option<u64>,
    },
    Nothing,
}

impl ClusterState {
    /// Applies `cmd`. On `Err` the state is unchanged.
    pub fn apply(&mut self, cmd: &Command) -> (ApplyResult, Touched) {
        let touched = match cmd {
            Command::AddHost { name, .. }
            | Command::HostObserved { name, .. }
            | Command::DeclareHostDead { name, .. } => Touched::Host(name.clone()),
            Command::SetHaArmed { .. } => Touched::AllHosts,
            Command::RecordEvent { .. } => Touched::Nothing,
            Command::CreateVm { name, .. }
            | Command::FailoverVm { name, .. }
            | Command::SetDesiredState { name, .. }
            | Command::PlaceVm { name, .. }
            | Command::VmObserved { name, .. }
            | Command::RemoveVm { name, .. } => Touched::Vm(name.clone()),
        };
        if let Command::RecordEvent {
            at_ms,
            kind,
            host,
            vm,
            message,
        } = cmd
        {
            let (added, evicted) = self.events.push(Event {
                seq: 0,
                at_ms: *at_ms,
                kind: *kind,
                host: host.clone(),
                vm: vm.clone(),
                message: message.clone(),
            });
            return (Ok(Reply::Nothing), Touched::Event { added, evicted });
        }
        match self.apply_inner(cmd) {
            Ok(reply) => (Ok(reply), touched),
            Err(e) => (Err(e), Touched::Nothing),
        }
    }

    fn apply_inner(&mut self, cmd: &Command) -> ApplyResult {
        match cmd {
            Command::AddHost { name, address } => {
                validate_name(name).map_err(|reason| ApplyError::InvalidName {
                    what: "host".into(),
                    reason,
                })?;
                validate_address(address)?;
                if self.hosts.contains_key(name) {
                    return Err(ApplyError::HostExists(name.clone()));
                }
                let host = Host {
                    name: name.clone(),
                    address: address.clone(),
                    health: HostHealth::Unknown,
                    capacity: Default::default(),
                    dead_reason: None,
                    fencing_armed: false,
                };
                self.hosts.insert(name.clone(), host.clone());
                Ok(Reply::Host(host))
            }
            Command::HostObserved {
                name,
                health,
                capacity,
                fencing_armed,
            } => {
                if *health == HostHealth::Dead {
                    return Err(ApplyError::DeadNeedsReason(name.clone()));
                }
                let host = self
                    .hosts
                    .get_mut(name)
                    .ok_or_else(|| ApplyError::UnknownHost(name.clone()))?;
                host.health = *health;
                host.dead_reason = None;
                if let Some(capacity) = capacity {
                    host.capacity = *capacity;
                }
                // A report of "armed" that crosses a disarm in the log is stale: ignore it.
                if let Some(armed) = fencing_armed {
                    host.fencing_armed = *armed && !self.ha.disarmed;
                }
                Ok(Reply::Host(host.clone()))
            }
            // Handled in `apply`, which knows which event it touched.
            Command::RecordEvent { .. } => Ok(Reply::Nothing),
            Command::SetHaArmed { armed } => {
                self.ha.disarmed = !armed;
                if !armed {
                    for host in self.hosts.values_mut() {
                        host.fencing_armed = false;
                    }
                }
                Ok(Reply::Ha {
                    disarmed: self.ha.disarmed,
                    hosts_not_armed: self.hosts_not_armed(),
                })
            }
            Command::DeclareHostDead { name, reason } => {
                let disarmed = self.ha.disarmed;
                let host = self
                    .hosts
                    .get_mut(name)
                    .ok_or_else(|| ApplyError::UnknownHost(name.clone()))?;
                if *reason == DeadReason::LeaseLapsed && (disarmed || !host.fencing_armed) {
                    return Err(ApplyError::FencingNotArmed(name.clone()));
                }
                host.health = HostHealth::Dead;
                host.dead_reason = Some(*reason);
                Ok(Reply::Host(host.clone()))
            }
            Command::FailoverVm {
                name,
                expected_generation,
            } => {
                let vm = self
                    .vms
                    .get(name)
                    .ok_or_else(|| ApplyError::UnknownVm(name.clone()))?;
                let on = vm
                    .host
                    .clone()
                    .ok_or_else(|| ApplyError::VmNotPlaced(name.clone()))?;
                if !vm.ha {
                    return Err(ApplyError::VmNotHa(name.clone()));
                }
                let health = self.hosts.get(&on).map_or(HostHealth::Dead, |h| h.health);
                if health != HostHealth::Dead {
                    return Err(ApplyError::HostNotDead {
                        host: on,
                        health: health.as_str().into(),
                    });
                }
                let vm = self.vm_at(name, *expected_generation)?;
                vm.host = None;
                vm.generation += 1;
                vm.observed = ObservedState::Unknown;
                vm.reason = format!("failed over from dead host {on}");
                Ok(Reply::Vm(vm.clone()))
            }
            Command::CreateVm {
                name,
                spec,
                start,
                ha,
                ha_priority,
            } => {
                validate_name(name).map_err(|reason| ApplyError::InvalidName {
                    what: "VM".into(),
                    reason,
                })?;
                spec.validate().map_err(ApplyError::InvalidSpec)?;
                if self.vms.contains_key(name) {
                    return Err(ApplyError::VmExists(name.clone()));
                }
                let vm = Vm {
                    name: name.clone(),
                    spec: *spec,
                    desired: if *start {
                        DesiredState::Running
                    } else {
                        DesiredState::Stopped
                    },
                    observed: ObservedState::Unknown,
                    host: None,
                    generation: 0,
                    reason: String::new(),
                    ha: *ha,
                    ha_priority: *ha_priority,
                };
                self.vms.insert(name.clone(), vm.clone());
                Ok(Reply::Vm(vm))
            }
            Command::SetDesiredState { name, desired } => {
                let vm = self
                    .vms
                    .get_mut(name)
                    .ok_or_else(|| ApplyError::UnknownVm(name.clone()))?;
                if !vm.desired.can_become(*desired) {
                    return Err(ApplyError::VmDeleting(name.clone()));
                }
                vm.desired = *desired;
                // Nothing runs anywhere for an unplaced VM, so deleting it is immediate.
                if *desired == DesiredState::Deleted && vm.host.is_none() {
                    self.vms.remove(name);
                    return Ok(Reply::VmRemoved { name: name.clone() });
                }
                Ok(Reply::Vm(vm.clone()))
            }
            Command::PlaceVm {
                name,
                host,
                expected_generation,
            } => {
                if !self.hosts.contains_key(host) {
                    return Err(ApplyError::UnknownHost(host.clone()));
                }
                let vm = self.vm_at(name, *expected_generation)?;
                if vm.desired == DesiredState::Deleted {
                    return Err(ApplyError::VmDeleting(name.clone()));
                }
                vm.host = Some(host.clone());
                vm.generation += 1;
                vm.observed = ObservedState::Unknown;
                vm.reason.clear();
                Ok(Reply::Vm(vm.clone()))
            }
            Command::VmObserved {
                name,
                generation,
                observed,
                reason,
            } => {
                let vm = self.vm_at(name, *generation)?;
                vm.observed = *observed;
                vm.reason.clone_from(reason);
                Ok(Reply::Vm(vm.clone()))
            }
            Command::RemoveVm {
                name,
                expected_generation,
            } => {
                let vm = self.vm_at(name, *expected_generation)?;
                if vm.desired != DesiredState::Deleted {
                    return Err(ApplyError::VmNotDeleted(name.clone()));
                }
                self.vms.remove(name);
                Ok(Reply::VmRemoved { name: name.clone() })
            }
        }
    }

    fn vm_at(&mut self, name: &str, generation: u64) -> Result<&mut Vm, ApplyError> {
        let vm = self
            .vms
            .get_mut(name)
            .ok_or_else(|| ApplyError::UnknownVm(name.to_string()))?;
        if vm.generation != generation {
            return Err(ApplyError::StaleGeneration {
                vm: name.to_string(),
                expected: generation,
                actual: vm.generation,
            });
        }
        Ok(vm)
    }
}

fn validate_address(address: &str) -> Result<(), ApplyError> {
    crate::model::validate_address(address).map_err(|reason| ApplyError::InvalidAddress {
        address: address.to_string(),
        reason,
    })
}
