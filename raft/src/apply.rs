//! `ClusterState::apply`: validates one command and changes the state, or refuses it with a
//! typed error and changes nothing. Pure and deterministic.

use crate::command::{ApplyError, ApplyResult, Command, Reply};
use crate::model::{
    validate_labels, validate_libvirt_uri, validate_name, AdminState, ClusterState, DeadReason,
    DesiredState, Event, Host, HostHealth, ObservedState, OpKind, OpState, Operation, Progress, Vm,
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
    /// The operations table.
    Ops,
    Many(Vec<Touched>),
    Nothing,
}

impl Touched {
    /// The single touches this one stands for.
    pub fn flatten(self) -> Vec<Touched> {
        match self {
            Touched::Many(all) => all.into_iter().flat_map(Touched::flatten).collect(),
            one => vec![one],
        }
    }
}

impl ClusterState {
    /// Applies `cmd`. On `Err` the state is unchanged.
    pub fn apply(&mut self, cmd: &Command) -> (ApplyResult, Touched) {
        let touched = match cmd {
            Command::AddHost { name, .. }
            | Command::RemoveHost { name }
            | Command::HostObserved { name, .. }
            | Command::HostNetworkingObserved { name, .. }
            | Command::DeclareHostDead { name, .. } => Touched::Host(name.clone()),
            // Every host's grants change: the leader re-reads the whole state.
            Command::SetHaArmed { .. }
            | Command::SetLeaseConfig { .. }
            | Command::LeaseSettled { .. } => Touched::AllHosts,
            // Persisted with every batch, like the HA switch.
            Command::SetPlacementPolicy { .. } => Touched::Nothing,
            Command::RecordEvent { .. } => Touched::Nothing,
            // Persisted with every batch, like the placement policy (see `apply_tokens`).
            Command::CreateToken { .. } | Command::RevokeToken { .. } => Touched::Nothing,
            // Host actors compare pools with their host's report at every heartbeat.
            Command::CreatePool { .. }
            | Command::DeletePool { .. }
            | Command::PoolsObserved { .. } => Touched::Nothing,
            // Host actors compare networks with the state at every heartbeat too.
            Command::CreateNetwork { .. }
            | Command::DeleteNetwork { .. }
            | Command::AddSubnet { .. }
            | Command::RemoveSubnet { .. } => Touched::Nothing,
            // The leader updates running guests' filters after the commit.
            Command::PutSecurityGroup { .. } | Command::DeleteSecurityGroup { .. } => {
                Touched::Nothing
            }
            Command::SetVmSecurityGroups { name, .. } => Touched::Vm(name.clone()),
            // Host actors compare images with the state at every heartbeat too.
            Command::BeginImageImport { .. }
            | Command::FinishImageImport(_)
            | Command::DeleteImage { .. }
            | Command::ImageRemoved { .. }
            | Command::BeginImageCopy { .. }
            | Command::FinishImageCopy { .. }
            | Command::ImageCopyRemoved { .. } => Touched::Nothing,
            // The state machine unpacks a batch entry and applies its requests one by one;
            // one that reaches here is nested.
            Command::Batch { .. } => return (Err(ApplyError::NestedBatch), Touched::Nothing),
            Command::StartMigration { vm, dst, .. } => Touched::Many(vec![
                Touched::Vm(vm.clone()),
                Touched::Host(dst.clone()),
                Touched::Ops,
            ]),
            Command::FinishMigration { op, .. } => match self.op_vm(*op) {
                Some(vm) => Touched::Many(vec![Touched::Vm(vm), Touched::Ops]),
                None => Touched::Ops,
            },
            Command::MigrationProgress { .. }
            | Command::DrainProgress { .. }
            | Command::StartDrill { .. }
            | Command::DrillProgress { .. }
            | Command::FinishDrill { .. }
            | Command::StartLeaderDrill { .. }
            | Command::DrillProbe { .. }
            | Command::FinishLeaderDrill { .. }
            | Command::StartMigrationDrill { .. }
            | Command::FinishMigrationDrill { .. }
            | Command::CreateDrillSchedule { .. }
            | Command::DeleteDrillSchedule { .. }
            | Command::StartScheduledDrill { .. }
            | Command::CancelOperation { .. } => Touched::Ops,
            Command::StartDrillLeg { op, dst, .. } => {
                match self.operations.ops.get(op).map(|o| &o.kind) {
                    Some(OpKind::MigrationDrill { vm }) => Touched::Many(vec![
                        Touched::Vm(vm.clone()),
                        Touched::Host(dst.clone()),
                        Touched::Ops,
                    ]),
                    _ => Touched::Ops,
                }
            }
            Command::StartDrain { host, .. } | Command::ActivateHost { name: host, .. } => {
                Touched::Many(vec![Touched::Host(host.clone()), Touched::Ops])
            }
            Command::FinishDrain { op, .. } => match self.operations.ops.get(op).map(|o| &o.kind) {
                Some(OpKind::Drain { host, .. }) => {
                    Touched::Many(vec![Touched::Host(host.clone()), Touched::Ops])
                }
                _ => Touched::Ops,
            },
            Command::CreateVm { name, .. }
            | Command::FailoverVm { name, .. }
            | Command::SetDesiredState { name, .. }
            | Command::PlaceVm { name, .. }
            | Command::BeginStart { name, .. }
            | Command::VmObserved { name, .. }
            | Command::DeleteVm { name, .. }
            | Command::AddDisk { name, .. }
            | Command::ResizeDisk { name, .. }
            | Command::RemoveDisk { name, .. }
            | Command::DiskVolumesDeleted { name, .. }
            | Command::AddNic { name, .. }
            | Command::RemoveNic { name, .. }
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

    /// Start, stop or delete (`keep_disks`: whether a deletion leaves the volumes).
    fn set_desired(
        &mut self,
        name: &str,
        desired: DesiredState,
        keep_disks: Option<bool>,
    ) -> ApplyResult {
        let vm = self
            .vms
            .get_mut(name)
            .ok_or_else(|| ApplyError::UnknownVm(name.to_string()))?;
        if !vm.desired.can_become(desired) {
            return Err(ApplyError::VmDeleting(name.to_string()));
        }
        if let (Some(op), true) = (vm.migration, desired != DesiredState::Running) {
            return Err(ApplyError::VmMigrating {
                vm: name.to_string(),
                op,
            });
        }
        // A kept clone would lose its base once its image is deleted (the image counts
        // only VMs' disks as its users): not until disks can be flattened.
        if keep_disks == Some(true) {
            if let Some((i, d)) = vm
                .disks
                .iter()
                .enumerate()
                .find(|(_, d)| d.backing.is_some())
            {
                return Err(ApplyError::InvalidDisk(format!(
                    "disk {i} of VM {name:?} is a clone of image {:?}; kept, it would lose its \
                     base when the image is deleted (flattening is not implemented): delete \
                     without --keep-disks",
                    d.backing.as_ref().map_or("", |b| b.image.as_str())
                )));
            }
        }
        vm.desired = desired;
        // Once asked to keep, kept: a repeated delete (a retry, a script) must not take
        // back what the operator chose.
        if let Some(keep) = keep_disks {
            vm.keep_disks |= keep;
        }
        // Nothing runs anywhere for an unplaced VM, so deleting it is immediate — unless
        // its volumes exist (it ran, then lost its host), or removed disks' volumes wait
        // for deletion: a host of the pool deletes them first (`drover_actors::vm`), or
        // they would stay behind unnoticed.
        let volumes_left = (vm.volumes_created && !vm.disks.is_empty() && !vm.keep_disks)
            || !vm.dropped_disks.is_empty();
        if desired == DesiredState::Deleted && vm.host.is_none() && !volumes_left {
            self.remove_vm_record(name);
            return Ok(Reply::VmRemoved {
                name: name.to_string(),
            });
        }
        Ok(Reply::Vm(vm.clone()))
    }

    fn apply_inner(&mut self, cmd: &Command) -> ApplyResult {
        match cmd {
            Command::AddHost {
                name,
                address,
                labels,
            } => {
                validate_name(name).map_err(|reason| ApplyError::InvalidName {
                    what: "host".into(),
                    reason,
                })?;
                validate_address(address)?;
                validate_labels(labels).map_err(ApplyError::InvalidLabels)?;
                if self.hosts.contains_key(name) {
                    return Err(ApplyError::HostExists(name.clone()));
                }
                let host = Host {
                    labels: labels.clone(),
                    ..Host::new(name, address)
                };
                self.hosts.insert(name.clone(), host.clone());
                Ok(Reply::Host(host))
            }
            Command::RemoveHost { name } => self.remove_host(name),
            Command::HostObserved {
                name,
                health,
                capacity,
                fencing_armed,
                armed_epoch,
                migration_uri,
            } => {
                if *health == HostHealth::Dead {
                    return Err(ApplyError::DeadNeedsReason(name.clone()));
                }
                if let Some(capacity) = capacity {
                    capacity.validate().map_err(ApplyError::InvalidReport)?;
                }
                // Empty: the host has no migration address (test driver).
                if let Some(uri) = migration_uri.as_ref().filter(|u| !u.is_empty()) {
                    validate_libvirt_uri(uri).map_err(|reason| {
                        ApplyError::InvalidReport(format!("migration URI: {reason}"))
                    })?;
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
                // "Armed" counts only from a report of a grant made under the current HA
                // switch: one that crosses a disarm (or a disarm and a re-arm) in the log
                // is stale, and the host may no longer fence.
                if let Some(armed) = fencing_armed {
                    host.fencing_armed =
                        *armed && !self.ha.disarmed && *armed_epoch == self.ha.epoch;
                }
                if let Some(uri) = migration_uri {
                    host.migration_uri.clone_from(uri);
                }
                Ok(Reply::Host(host.clone()))
            }
            Command::HostNetworkingObserved { name, networking } => {
                networking.validate().map_err(ApplyError::InvalidReport)?;
                let host = self
                    .hosts
                    .get_mut(name)
                    .ok_or_else(|| ApplyError::UnknownHost(name.clone()))?;
                host.networking = Some(networking.clone());
                Ok(Reply::Host(host.clone()))
            }
            // Handled in `apply`, which knows which event it touched.
            Command::RecordEvent { .. } => Ok(Reply::Nothing),
            Command::SetHaArmed { armed } => {
                self.ha.disarmed = !armed;
                self.ha.epoch += 1;
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
            Command::SetLeaseConfig { config } => {
                config.validate().map_err(ApplyError::InvalidLease)?;
                if let Some(previous) = self.ha.previous_lease {
                    return Err(ApplyError::LeaseSettling {
                        lapse_ms: previous.lapse_ms(),
                    });
                }
                if self.ha.lease != Some(*config) {
                    // Grants under the old lease may outlive the switch; a shorter new
                    // ttl must not let a leader call such a host dead early.
                    self.ha.previous_lease = self.ha.lease;
                    self.ha.lease = Some(*config);
                }
                Ok(Reply::Nothing)
            }
            Command::LeaseSettled { previous } => {
                if self.ha.previous_lease == Some(*previous) {
                    self.ha.previous_lease = None;
                }
                Ok(Reply::Nothing)
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
                if let Some(op) = vm.migration {
                    return Err(ApplyError::VmMigrating {
                        vm: name.clone(),
                        op,
                    });
                }
                let health = self.hosts.get(&on).map_or(HostHealth::Dead, |h| h.health);
                if health != HostHealth::Dead {
                    return Err(ApplyError::HostNotDead {
                        host: on,
                        health: health.as_str().into(),
                    });
                }
                self.vm_at(name, *expected_generation)?;
                self.place(name, None, *expected_generation + 1);
                let vm = self.vm_at(name, *expected_generation + 1)?;
                vm.observed = ObservedState::Unknown;
                vm.reason = format!("failed over from dead host {on}");
                Ok(Reply::Vm(vm.clone()))
            }
            Command::CreateVm {
                name,
                spec,
                start,
                options,
            } => self.create_vm(name, spec, *start, options),
            Command::SetDesiredState { name, desired } => self.set_desired(name, *desired, None),
            Command::DeleteVm { name, keep_disks } => {
                self.set_desired(name, DesiredState::Deleted, Some(*keep_disks))
            }
            Command::AddDisk { name, disk } => self.add_disk(name, disk),
            Command::ResizeDisk {
                name,
                index,
                size_bytes,
            } => self.resize_disk(name, *index, *size_bytes),
            Command::RemoveDisk { name, index } => self.remove_disk(name, *index),
            Command::DiskVolumesDeleted { name, volumes } => {
                self.disk_volumes_deleted(name, volumes)
            }
            Command::PlaceVm {
                name,
                host,
                expected_generation,
            } => {
                let target = self
                    .hosts
                    .get(host)
                    .ok_or_else(|| ApplyError::UnknownHost(host.clone()))?;
                if target.admin != AdminState::Active {
                    return Err(ApplyError::HostNotActive {
                        host: host.clone(),
                        admin: target.admin.as_str().into(),
                    });
                }
                if let Some(vm) = self.vms.get(name) {
                    self.room_for(target, vm)
                        .map_err(|reason| ApplyError::NoRoom {
                            host: host.clone(),
                            vm: name.clone(),
                            reason,
                        })?;
                }
                let vm = self.vm_at(name, *expected_generation)?;
                if let Some(op) = vm.migration {
                    return Err(ApplyError::VmMigrating {
                        vm: name.clone(),
                        op,
                    });
                }
                if vm.desired == DesiredState::Deleted {
                    return Err(ApplyError::VmDeleting(name.clone()));
                }
                // The last guard of never-twice, whatever the placer believed.
                let current = vm.clone();
                // Once placed, a VM's local volumes exist on its host only: placed anywhere
                // else it would boot an empty disk there (a cold move after a fence, a
                // drain), whatever the placer believed.
                let moves = current.host.as_deref() != Some(host.as_str());
                if current.generation > 0 && moves {
                    if let Some(pool) = self.local_disk_pool(&current) {
                        return Err(ApplyError::LocalDisk {
                            vm: name.clone(),
                            pool: pool.to_string(),
                        });
                    }
                }
                self.may_leave_host(&current)
                    .map_err(|why| ApplyError::VmMayStillRun {
                        vm: name.clone(),
                        why,
                    })?;
                self.place(name, Some(host.clone()), *expected_generation + 1);
                let vm = self.vm_at(name, *expected_generation + 1)?;
                vm.observed = ObservedState::Unknown;
                vm.reason.clear();
                Ok(Reply::Vm(vm.clone()))
            }
            Command::BeginStart {
                name,
                expected_generation,
            } => {
                let vm = self.vm_at(name, *expected_generation)?;
                if vm.host.is_none() {
                    return Err(ApplyError::VmNotPlaced(name.clone()));
                }
                if let Some(op) = vm.migration {
                    return Err(ApplyError::VmMigrating {
                        vm: name.clone(),
                        op,
                    });
                }
                if vm.desired != DesiredState::Running {
                    return Err(ApplyError::NotToStart {
                        vm: name.clone(),
                        desired: vm.desired.as_str().into(),
                    });
                }
                let host = vm.host.clone();
                self.place(name, host, *expected_generation + 1);
                let vm = self.vm_at(name, *expected_generation + 1)?;
                vm.observed = ObservedState::Starting;
                vm.reason.clear();
                Ok(Reply::Vm(vm.clone()))
            }
            Command::VmObserved {
                name,
                generation,
                observed,
                reason,
                listed_after,
            } => {
                let vm = self.vm_at(name, *generation)?;
                // Only the change to "missing" needs the proof; keeping it (a new reason)
                // does not.
                if *observed == ObservedState::Missing
                    && vm.observed != ObservedState::Missing
                    && *listed_after < vm.placed_at
                {
                    return Err(ApplyError::StaleListing {
                        vm: name.clone(),
                        listed_after: *listed_after,
                        placed_at: vm.placed_at,
                    });
                }
                // "Not listed" says nothing about a start that has not arrived yet; only
                // a report of the domain at this generation (it carries the start's
                // generation once the start was handled) or the start's answer does.
                if vm.observed == ObservedState::Starting && *observed == ObservedState::Missing {
                    return Err(ApplyError::StartUnconfirmed(name.clone()));
                }
                let came_up = !vm.observed.is_active() && observed.is_active();
                vm.observed = *observed;
                vm.reason.clone_from(reason);
                // Its volumes exist from now on: a later start that does not find one must
                // fail, not create an empty one (see `Vm::volumes_created`).
                if came_up {
                    vm.volumes_created = true;
                    for d in &mut vm.disks {
                        d.new_volume = false;
                    }
                }
                // A domain that came up counts like a placement: a listing made before the
                // start was handled (and delivered after its answer) must not call it
                // missing; only one made after the host heard of this may.
                if came_up {
                    let (host, generation) = (vm.host.clone(), vm.generation);
                    self.place(name, host, generation);
                }
                Ok(self
                    .vms
                    .get(name)
                    .map_or(Reply::Nothing, |vm| Reply::Vm(vm.clone())))
            }
            Command::CreateToken { token } => self.create_token(token),
            Command::RevokeToken { id } => self.revoke_token(id),
            Command::Batch { .. } => Err(ApplyError::NestedBatch),
            Command::CreatePool { name, spec } => self.create_pool(name, spec),
            Command::DeletePool { name } => self.delete_pool(name),
            Command::CreateNetwork { name, spec } => self.create_network(name, spec),
            Command::DeleteNetwork { name } => self.delete_network(name),
            Command::PutSecurityGroup { name, rules } => self.put_security_group(name, rules),
            Command::DeleteSecurityGroup { name } => self.delete_security_group(name),
            Command::SetVmSecurityGroups { name, groups } => {
                self.set_vm_security_groups(name, groups)
            }
            Command::AddSubnet { network, subnet } => self.add_subnet(network, subnet),
            Command::RemoveSubnet { network, cidr } => self.remove_subnet(network, cidr),
            Command::AddNic {
                name,
                nic,
                hot_plug,
            } => self.add_nic(name, nic, *hot_plug),
            Command::RemoveNic {
                name,
                mac,
                unplugged_at,
            } => self.remove_nic(name, mac, *unplugged_at),
            Command::PoolsObserved { host, pools } => self.pools_observed(host, pools),
            Command::BeginImageImport {
                name,
                pool,
                host,
                term,
            } => self.begin_image_import(name, pool, host, *term),
            Command::FinishImageImport(done) => self.finish_image_import(done),
            Command::DeleteImage { name, volume } => self.delete_image(name, volume.as_deref()),
            Command::ImageRemoved { name, volume } => self.image_removed(name, volume),
            Command::BeginImageCopy { name, host, term } => {
                self.begin_image_copy(name, host, *term)
            }
            Command::FinishImageCopy {
                name,
                volume,
                host,
                ok,
            } => self.finish_image_copy(name, volume, host, *ok),
            Command::ImageCopyRemoved { name, volume, host } => {
                self.image_copy_removed(name, volume, host)
            }
            Command::RemoveVm {
                name,
                expected_generation,
            } => {
                let vm = self.vm_at(name, *expected_generation)?;
                if vm.desired != DesiredState::Deleted {
                    return Err(ApplyError::VmNotDeleted(name.clone()));
                }
                self.remove_vm_record(name);
                Ok(Reply::VmRemoved { name: name.clone() })
            }
            Command::StartMigration {
                vm,
                expected_generation,
                dst,
                policy,
                at_ms,
                limits,
            } => {
                if let Some((per_host, cluster)) = limits {
                    self.check_migration_limits(vm, *per_host, *cluster)?;
                }
                self.start_migration(vm, *expected_generation, dst, policy, *at_ms)
            }
            Command::MigrationProgress { op, progress } => {
                let o = self.running_op(*op, "migrate")?;
                o.progress = Progress::Migration(*progress);
                Ok(Reply::Nothing)
            }
            Command::FinishMigration {
                op,
                state,
                message,
                progress,
                at_ms,
            } => self.finish_migration(*op, *state, message, progress.as_ref(), *at_ms),
            Command::StartDrain {
                host,
                stop_when_blocked,
                at_ms,
            } => {
                if let Some(drill) = self.operations.running_drill() {
                    if drill.kind.involves_host(host) {
                        return Err(ApplyError::HostBusy {
                            host: host.clone(),
                            op: drill.id,
                            kind: drill.kind.as_str().into(),
                        });
                    }
                }
                let h = self
                    .hosts
                    .get_mut(host)
                    .ok_or_else(|| ApplyError::UnknownHost(host.clone()))?;
                if h.admin != AdminState::Active {
                    return Err(ApplyError::HostAlreadyDraining {
                        host: host.clone(),
                        admin: h.admin.as_str().into(),
                    });
                }
                h.admin = AdminState::Draining;
                let id = self.operations.start(
                    OpKind::Drain {
                        host: host.clone(),
                        stop_when_blocked: *stop_when_blocked,
                    },
                    *at_ms,
                );
                Ok(Reply::Operation(self.operations.ops[&id].clone()))
            }
            Command::DrainProgress { op, progress } => {
                let o = self.running_op(*op, "drain")?;
                o.progress = Progress::Drain(progress.clone());
                Ok(Reply::Nothing)
            }
            Command::FinishDrain {
                op,
                state,
                message,
                at_ms,
            } => {
                let host = match &self.running_op(*op, "drain")?.kind {
                    OpKind::Drain { host, .. } => host.clone(),
                    OpKind::Migrate { .. }
                    | OpKind::Drill { .. }
                    | OpKind::LeaderDrill { .. }
                    | OpKind::MigrationDrill { .. } => unreachable_kind(*op)?,
                };
                let admin = if *state == OpState::Succeeded {
                    let left: Vec<&str> = self
                        .vms
                        .values()
                        .filter(|v| {
                            v.host.as_deref() == Some(host.as_str())
                                || self.migrating_to(v) == Some(host.as_str())
                        })
                        .map(|v| v.name.as_str())
                        .collect();
                    if !left.is_empty() {
                        return Err(ApplyError::HostNotEmpty {
                            host,
                            vms: left.join(", "),
                        });
                    }
                    AdminState::Maintenance
                } else {
                    AdminState::Active
                };
                if let Some(h) = self.hosts.get_mut(&host) {
                    h.admin = admin;
                }
                if admin == AdminState::Maintenance {
                    // Nothing is left: say so, whatever the last progress report held.
                    if let Some(Progress::Drain(p)) =
                        self.operations.ops.get_mut(op).map(|o| &mut o.progress)
                    {
                        p.remaining.clear();
                        p.blocked.clear();
                    }
                }
                self.operations.finish(*op, *state, message, *at_ms);
                Ok(Reply::Nothing)
            }
            Command::StartDrill {
                host,
                mode,
                max_duration_ms,
                at_ms,
            } => self.start_drill(host, *mode, *max_duration_ms, *at_ms),
            Command::DrillProgress { op, report } => self.drill_progress(*op, report),
            Command::FinishDrill {
                op,
                state,
                message,
                report,
                at_ms,
            } => self.finish_drill(*op, *state, message, report, *at_ms),
            Command::StartLeaderDrill {
                mode,
                leader,
                observer,
                max_duration_ms,
                at_ms,
            } => self.start_leader_drill(*mode, *leader, *observer, *max_duration_ms, *at_ms),
            Command::DrillProbe { op, seq } => self.drill_probe(*op, *seq),
            Command::FinishLeaderDrill { op, measure, at_ms } => {
                self.finish_leader_drill(*op, measure, *at_ms)
            }
            Command::StartMigrationDrill { vm, at_ms } => self.start_migration_drill(vm, *at_ms),
            Command::CreateDrillSchedule {
                name,
                mode,
                every_ms,
                hosts,
                window,
                at_ms,
            } => self.create_drill_schedule(name, *mode, *every_ms, hosts, *window, *at_ms),
            Command::DeleteDrillSchedule { name } => self.drill_schedules.remove(name).map_or_else(
                || Err(ApplyError::UnknownSchedule(name.clone())),
                |_| Ok(Reply::Nothing),
            ),
            Command::StartScheduledDrill {
                schedule,
                host,
                max_duration_ms,
                at_ms,
            } => self.start_scheduled_drill(schedule, host, *max_duration_ms, *at_ms),
            Command::StartDrillLeg { op, dst, at_ms } => self.start_drill_leg(*op, dst, *at_ms),
            Command::FinishMigrationDrill {
                op,
                state,
                message,
                report,
                at_ms,
            } => self.finish_migration_drill(*op, *state, message, report, *at_ms),
            Command::CancelOperation { op } => {
                let o = self
                    .operations
                    .ops
                    .get_mut(op)
                    .ok_or(ApplyError::UnknownOperation(*op))?;
                if o.state.is_finished() {
                    return Err(ApplyError::OperationFinished {
                        id: *op,
                        state: o.state.as_str().into(),
                    });
                }
                o.cancel_requested = true;
                Ok(Reply::Operation(o.clone()))
            }
            Command::SetPlacementPolicy { policy } => {
                policy.validate().map_err(ApplyError::InvalidPlacement)?;
                self.placement = *policy;
                Ok(Reply::Placement(*policy))
            }
            Command::ActivateHost { name, at_ms } => {
                let h = self
                    .hosts
                    .get_mut(name)
                    .ok_or_else(|| ApplyError::UnknownHost(name.clone()))?;
                h.admin = AdminState::Active;
                let h = h.clone();
                if let Some(id) = self.operations.drain_of(name).map(|o| o.id) {
                    self.operations.finish(
                        id,
                        OpState::Cancelled,
                        "cancelled: the host was activated",
                        *at_ms,
                    );
                }
                Ok(Reply::Host(h))
            }
        }
    }

    fn remove_host(&mut self, name: &str) -> ApplyResult {
        if !self.hosts.contains_key(name) {
            return Err(ApplyError::UnknownHost(name.to_string()));
        }
        let left: Vec<&str> = self
            .vms
            .values()
            .filter(|v| v.host.as_deref() == Some(name) || self.migrating_to(v) == Some(name))
            .map(|v| v.name.as_str())
            .collect();
        if !left.is_empty() {
            return Err(ApplyError::HostNotEmpty {
                host: name.to_string(),
                vms: left.join(", "),
            });
        }
        if let Some(op) = self
            .operations
            .running()
            .find(|o| o.kind.involves_host(name))
        {
            return Err(ApplyError::HostBusy {
                host: name.to_string(),
                op: op.id,
                kind: op.kind.as_str().into(),
            });
        }
        // An image in an unshared pool lives on its host only: forgetting the host would
        // leave the image unreachable and its record undeletable.
        let held: Vec<&str> = self
            .images
            .values()
            .filter(|i| i.host == name)
            .filter(|i| self.pools.get(&i.pool).is_none_or(|p| !p.spec.shared))
            .map(|i| i.name.as_str())
            .collect();
        if !held.is_empty() {
            return Err(ApplyError::HostHoldsImages {
                host: name.to_string(),
                images: held.join(", "),
            });
        }
        self.hosts.remove(name);
        for pool in self.pools.values_mut() {
            pool.on_hosts.remove(name);
        }
        // Its copies of images were caches, gone with the host.
        for image in self.images.values_mut() {
            image.copies.remove(name);
        }
        Ok(Reply::HostRemoved {
            name: name.to_string(),
        })
    }

    pub(crate) fn start_migration(
        &mut self,
        name: &str,
        expected_generation: u64,
        dst: &str,
        policy: &crate::model::MigrationPolicy,
        at_ms: u64,
    ) -> ApplyResult {
        policy.validate().map_err(ApplyError::InvalidPolicy)?;
        let vm = self
            .vms
            .get(name)
            .ok_or_else(|| ApplyError::UnknownVm(name.to_string()))?;
        if let Some(op) = vm.migration {
            return Err(ApplyError::VmMigrating {
                vm: name.to_string(),
                op,
            });
        }
        let src = vm
            .host
            .clone()
            .ok_or_else(|| ApplyError::VmNotPlaced(name.to_string()))?;
        if vm.desired != DesiredState::Running || vm.observed != ObservedState::Running {
            return Err(ApplyError::VmNotRunning {
                vm: name.to_string(),
                state: vm.observed.as_str().into(),
            });
        }
        if src == dst {
            return Err(ApplyError::SameHost {
                vm: name.to_string(),
                host: src,
            });
        }
        // A drilled host is failing on purpose: nothing moves onto or off it meanwhile.
        if let Some(drill) = self.operations.running_drill() {
            if drill.kind.involves_host(&src) || drill.kind.involves_host(dst) {
                return Err(ApplyError::HostBusy {
                    host: if drill.kind.involves_host(&src) {
                        src
                    } else {
                        dst.to_string()
                    },
                    op: drill.id,
                    kind: drill.kind.as_str().into(),
                });
            }
        }
        // Local disks are copied with the memory (created on the destination first), so
        // their pools must be set up there; `room_for` checks that, and refuses a clone of
        // an image only one host has.
        for (host, need_active) in [(src.as_str(), false), (dst, true)] {
            let h = self
                .hosts
                .get(host)
                .ok_or_else(|| ApplyError::UnknownHost(host.to_string()))?;
            if h.health != HostHealth::Up {
                return Err(ApplyError::HostNotUp {
                    host: host.to_string(),
                    health: h.health.as_str().into(),
                });
            }
            if need_active && h.admin != AdminState::Active {
                return Err(ApplyError::HostNotActive {
                    host: host.to_string(),
                    admin: h.admin.as_str().into(),
                });
            }
            if need_active && h.migration_uri.is_empty() {
                return Err(ApplyError::NoMigrationUri {
                    host: host.to_string(),
                });
            }
            if need_active {
                self.room_for(h, vm).map_err(|reason| ApplyError::NoRoom {
                    host: host.to_string(),
                    vm: name.to_string(),
                    reason,
                })?;
            }
        }
        let vm = self.vm_at(name, expected_generation)?;
        let generation = vm.generation + 1;
        let id = self.operations.start(
            OpKind::Migrate {
                vm: name.to_string(),
                src,
                dst: dst.to_string(),
                generation,
                policy: *policy,
            },
            at_ms,
        );
        if let Some(vm) = self.vms.get_mut(name) {
            vm.migration = Some(id);
        }
        Ok(Reply::Operation(self.operations.ops[&id].clone()))
    }

    fn finish_migration(
        &mut self,
        op: u64,
        state: OpState,
        message: &str,
        progress: Option<&crate::model::MigrationProgress>,
        at_ms: u64,
    ) -> ApplyResult {
        let (vm_name, dst, generation) = match &self.running_op(op, "migrate")?.kind {
            OpKind::Migrate {
                vm,
                dst,
                generation,
                ..
            } => (vm.clone(), dst.clone(), *generation),
            OpKind::Drain { .. }
            | OpKind::Drill { .. }
            | OpKind::LeaderDrill { .. }
            | OpKind::MigrationDrill { .. } => unreachable_kind(op)?,
        };
        if state == OpState::Running {
            return Err(ApplyError::OperationFinished {
                id: op,
                state: "running (a finish must end it)".into(),
            });
        }
        if let Some(p) = progress {
            if let Some(o) = self.operations.ops.get_mut(&op) {
                o.progress = Progress::Migration(*p);
            }
        }
        self.operations.finish(op, state, message, at_ms);
        let Some(vm) = self.vms.get_mut(&vm_name) else {
            return Ok(Reply::Nothing);
        };
        if vm.migration != Some(op) {
            return Ok(Reply::Vm(vm.clone()));
        }
        vm.migration = None;
        if state == OpState::Succeeded {
            self.place(&vm_name, Some(dst), generation);
            let vm = self.vm_at(&vm_name, generation)?;
            vm.observed = ObservedState::Running;
            vm.reason.clear();
        }
        Ok(self
            .vms
            .get(&vm_name)
            .map_or(Reply::Nothing, |vm| Reply::Vm(vm.clone())))
    }

    /// Refuses a new migration of `vm` when `per_host` already run out of its host or
    /// `cluster` in the whole cluster.
    fn check_migration_limits(
        &self,
        vm: &str,
        per_host: u32,
        cluster: u32,
    ) -> Result<(), ApplyError> {
        let src = self.vms.get(vm).and_then(|v| v.host.clone());
        let (mut from_src, mut all) = (0u32, 0u32);
        for op in self.operations.running() {
            if let OpKind::Migrate { src: s, .. } = &op.kind {
                all += 1;
                if Some(s) == src.as_ref() {
                    from_src += 1;
                }
            }
        }
        if from_src >= per_host {
            return Err(ApplyError::MigrationLimit {
                scope: format!("out of {}", src.unwrap_or_default()),
                running: from_src,
                limit: per_host,
            });
        }
        if all >= cluster {
            return Err(ApplyError::MigrationLimit {
                scope: "in the cluster".into(),
                running: all,
                limit: cluster,
            });
        }
        Ok(())
    }

    /// The running operation `id`, which must be of `kind`.
    pub(crate) fn running_op(&mut self, id: u64, kind: &str) -> Result<&mut Operation, ApplyError> {
        let o = self
            .operations
            .ops
            .get_mut(&id)
            .ok_or(ApplyError::UnknownOperation(id))?;
        if o.kind.as_str() != kind {
            return Err(ApplyError::WrongOperation {
                id,
                kind: o.kind.as_str().into(),
                expected: kind.into(),
            });
        }
        if o.state.is_finished() {
            return Err(ApplyError::OperationFinished {
                id,
                state: o.state.as_str().into(),
            });
        }
        Ok(o)
    }

    /// The VM a migration operation moves.
    fn op_vm(&self, id: u64) -> Option<String> {
        match &self.operations.ops.get(&id)?.kind {
            OpKind::Migrate { vm, .. } => Some(vm.clone()),
            OpKind::Drain { .. }
            | OpKind::Drill { .. }
            | OpKind::LeaderDrill { .. }
            | OpKind::MigrationDrill { .. } => None,
        }
    }

    /// Gives `name` its new `host` and `generation` and counts the placement
    /// ([`ClusterState::placements`]). Callers check everything first: this cannot fail.
    fn place(&mut self, name: &str, host: Option<String>, generation: u64) {
        let Some(vm) = self.vms.get_mut(name) else {
            return;
        };
        self.placements += 1;
        vm.host = host;
        vm.generation = generation;
        vm.placed_at = self.placements;
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

/// `running_op` already checked the kind; this arm cannot be reached, and says so as an
/// error rather than a panic.
fn unreachable_kind<T>(id: u64) -> Result<T, ApplyError> {
    Err(ApplyError::WrongOperation {
        id,
        kind: "other".into(),
        expected: "checked kind".into(),
    })
}

fn validate_address(address: &str) -> Result<(), ApplyError> {
    crate::model::validate_address(address).map_err(|reason| ApplyError::InvalidAddress {
        address: address.to_string(),
        reason,
    })
}
