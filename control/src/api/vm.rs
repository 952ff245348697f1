//! `drover.v1.VmService`.

use drover_actors::scheduler::{batch::refuse, host_views, place_vm, request_for};
use drover_actors::AgentPool;
use drover_proto::v1 as pb;
use drover_proto::v1::vm_service_server::VmService;
use drover_raft::model::{CloudInit, DesiredState, DiskSpec, MigrationPolicy, VmOptions, VmSpec};
use drover_raft::{wall_clock_ms, Command, RaftNode, Reply};
use tonic::{Request, Response, Status, Streaming};

use super::cluster::{applied, fresh_read, read_response};
use super::convert;
use super::write::commit;

pub struct VmApi {
    node: RaftNode,
    /// Clients of the hosts' agents: consoles, disk grows, NIC hot-plug.
    agents: AgentPool,
    nic_locks: super::nics::NicLocks,
}

impl VmApi {
    pub fn new(node: RaftNode, agents: AgentPool) -> Self {
        Self {
            node,
            agents,
            nic_locks: Default::default(),
        }
    }

    async fn set_desired(
        &self,
        req: Request<pb::VmNameRequest>,
        desired: DesiredState,
    ) -> Result<Response<pb::Vm>, Status> {
        let (meta, _, req) = req.into_parts();
        if req.name.is_empty() {
            return Err(Status::invalid_argument("VM name is empty"));
        }
        let cmd = Command::SetDesiredState {
            name: req.name.clone(),
            desired,
        };
        vm_reply(commit(&self.node, &meta, cmd).await?, &req.name)
    }
}

fn nonzero_or(value: u64, default: u64) -> u64 {
    if value == 0 {
        default
    } else {
        value
    }
}

fn vm_reply(reply: Reply, name: &str) -> Result<Response<pb::Vm>, Status> {
    match reply {
        Reply::Vm(vm) => Ok(Response::new(convert::vm(&vm))),
        // Deleted before it was ever placed: gone already.
        Reply::VmRemoved { .. } => Ok(Response::new(pb::Vm {
            name: name.to_string(),
            desired_state: pb::DesiredState::Deleted as i32,
            observed_state: pb::ObservedState::Missing as i32,
            ..Default::default()
        })),
        other => Err(Status::internal(format!("unexpected reply {other:?}"))),
    }
}

#[tonic::async_trait]
impl VmService for VmApi {
    type VmConsoleStream = super::console::Output;

    async fn vm_console(
        &self,
        req: Request<Streaming<pb::VmConsoleInput>>,
    ) -> Result<Response<Self::VmConsoleStream>, Status> {
        super::console::attach(&self.node, &self.agents, req.into_inner())
            .await
            .map(Response::new)
    }

    async fn create_vm(
        &self,
        req: Request<pb::CreateVmRequest>,
    ) -> Result<Response<pb::Vm>, Status> {
        let (meta, _, req) = req.into_parts();
        let spec = req
            .spec
            .ok_or_else(|| Status::invalid_argument("VM spec is missing"))?;
        let cmd = Command::CreateVm {
            name: req.name.clone(),
            spec: VmSpec {
                vcpus: spec.vcpus,
                memory_mib: spec.memory_mib,
            },
            start: req.start,
            options: VmOptions {
                ha: req.ha,
                ha_priority: req.ha_priority,
                require_labels: req.require_labels.into_iter().collect(),
                anti_affinity: (!req.anti_affinity.is_empty()).then_some(req.anti_affinity),
                disks: req
                    .disks
                    .into_iter()
                    .map(|d| DiskSpec {
                        pool: d.pool,
                        size_bytes: d.size_bytes,
                    })
                    .collect(),
                image: (!req.image.is_empty()).then_some(req.image),
                cloud_init: req.cloud_init.map(|c| CloudInit {
                    // As Proxmox does: the VM's name unless told otherwise.
                    hostname: if c.hostname.is_empty() {
                        req.name.clone()
                    } else {
                        c.hostname
                    },
                    user_data: (!c.user_data.is_empty()).then_some(c.user_data),
                    ssh_keys: c.ssh_keys,
                }),
                nics: req
                    .nics
                    .into_iter()
                    .map(super::network::nic_spec)
                    .collect::<Result<_, _>>()?,
            },
        };
        vm_reply(commit(&self.node, &meta, cmd).await?, &req.name)
    }

    async fn migrate_vm(
        &self,
        req: Request<pb::MigrateVmRequest>,
    ) -> Result<Response<pb::Operation>, Status> {
        let (meta, _, req) = req.into_parts();
        if req.name.is_empty() {
            return Err(Status::invalid_argument("VM name is empty"));
        }
        let defaults = MigrationPolicy::default();
        let policy = MigrationPolicy {
            max_downtime_ms: nonzero_or(req.max_downtime_ms, defaults.max_downtime_ms),
            bandwidth_mibps: req.bandwidth_mibps,
            auto_converge: !req.no_auto_converge,
            progress_timeout_ms: nonzero_or(req.progress_timeout_ms, defaults.progress_timeout_ms),
        };
        // The destination is chosen (or checked) against a current state: only the leader
        // answers (a follower says where the leader is, and the client retries there), after
        // a quorum round. Apply re-checks what must hold at commit time anyway (generation,
        // hosts up, active, with room), so a race can only make the command fail.
        fresh_read(&self.node, false).await?;
        let (dst, generation) = self.node.view().read(|d| {
            let vm = d
                .state
                .vms
                .get(&req.name)
                .ok_or_else(|| Status::not_found(format!("VM {:?} not found", req.name)))?;
            let src = vm.host.as_deref();
            let policy = d.state.placement;
            let dst = if req.to.is_empty() {
                place_vm(vm, src, &d.state, &policy).map_err(|r| {
                    Status::failed_precondition(format!("VM {:?} cannot move: {r}", req.name))
                })?
            } else {
                let views = host_views(&d.state);
                let host = views
                    .iter()
                    .find(|h| h.name == req.to)
                    .ok_or_else(|| Status::not_found(format!("Host {:?} not found", req.to)))?;
                if src == Some(req.to.as_str()) {
                    return Err(Status::invalid_argument(format!(
                        "VM {:?} is already on host {:?}",
                        req.name, req.to
                    )));
                }
                if let Some(why) = refuse(&request_for(vm, src, &d.state), host, &policy) {
                    return Err(Status::failed_precondition(format!(
                        "Host {:?} cannot take VM {:?}: {why}",
                        req.to, req.name
                    )));
                }
                req.to.clone()
            };
            Ok::<_, Status>((dst, vm.generation))
        })?;
        let cmd = Command::StartMigration {
            vm: req.name.clone(),
            expected_generation: generation,
            dst,
            policy,
            at_ms: wall_clock_ms(),
            limits: None,
        };
        match commit(&self.node, &meta, cmd).await? {
            Reply::Operation(op) => Ok(Response::new(convert::operation(&op))),
            other => Err(Status::internal(format!("unexpected reply {other:?}"))),
        }
    }

    async fn get_vm(&self, req: Request<pb::GetVmRequest>) -> Result<Response<pb::Vm>, Status> {
        let req = req.into_inner();
        fresh_read(&self.node, req.stale).await?;
        let (index, vm) = self.node.view().read(|d| {
            let vm = d.state.vms.get(&req.name);
            (applied(d), vm.map(|vm| convert::vm_in(vm, &d.state)))
        });
        let vm = vm.ok_or_else(|| Status::not_found(format!("VM {:?} not found", req.name)))?;
        Ok(read_response(&self.node, index, vm))
    }

    async fn list_vms(
        &self,
        req: Request<pb::ListVmsRequest>,
    ) -> Result<Response<pb::ListVmsResponse>, Status> {
        let req = req.into_inner();
        fresh_read(&self.node, req.stale).await?;
        let limit = match req.limit {
            0 => usize::MAX,
            n => n as usize,
        };
        let (index, vms, more) = self.node.view().read(|d| {
            use std::ops::Bound::{Excluded, Unbounded};
            let from = match req.after.as_str() {
                "" => Unbounded,
                after => Excluded(after),
            };
            let mut page = d.state.vms.range::<_, str>((from, Unbounded));
            let vms: Vec<pb::Vm> = page
                .by_ref()
                .take(limit)
                .map(|(_, vm)| convert::vm(vm))
                .collect();
            (applied(d), vms, page.next().is_some())
        });
        let next_after = match (more, vms.last()) {
            (true, Some(last)) => last.name.clone(),
            _ => String::new(),
        };
        Ok(read_response(
            &self.node,
            index,
            pb::ListVmsResponse { vms, next_after },
        ))
    }

    async fn start_vm(&self, req: Request<pb::VmNameRequest>) -> Result<Response<pb::Vm>, Status> {
        self.set_desired(req, DesiredState::Running).await
    }

    async fn stop_vm(&self, req: Request<pb::VmNameRequest>) -> Result<Response<pb::Vm>, Status> {
        self.set_desired(req, DesiredState::Stopped).await
    }

    async fn delete_vm(
        &self,
        req: Request<pb::DeleteVmRequest>,
    ) -> Result<Response<pb::Vm>, Status> {
        let (meta, _, req) = req.into_parts();
        if req.name.is_empty() {
            return Err(Status::invalid_argument("VM name is empty"));
        }
        let cmd = Command::DeleteVm {
            name: req.name.clone(),
            keep_disks: req.keep_disks,
        };
        vm_reply(commit(&self.node, &meta, cmd).await?, &req.name)
    }

    async fn add_disk(&self, req: Request<pb::AddDiskRequest>) -> Result<Response<pb::Vm>, Status> {
        let (meta, _, req) = req.into_parts();
        let disk = req
            .disk
            .ok_or_else(|| Status::invalid_argument("The disk to add is missing"))?;
        let cmd = Command::AddDisk {
            name: req.vm.clone(),
            disk: DiskSpec {
                pool: disk.pool,
                size_bytes: disk.size_bytes,
            },
        };
        vm_reply(commit(&self.node, &meta, cmd).await?, &req.vm)
    }

    async fn resize_disk(
        &self,
        req: Request<pb::ResizeDiskRequest>,
    ) -> Result<Response<pb::Vm>, Status> {
        let (meta, _, req) = req.into_parts();
        // A running guest's disk is grown by its host right after the commit, on the
        // leader's authority and in the term it committed in: only the leader takes
        // resizes (a follower sends the client there).
        super::errors::leader_only(&self.node)?;
        let term = self.node.metrics().current_term;
        let cmd = Command::ResizeDisk {
            name: req.vm.clone(),
            index: req.index,
            size_bytes: req.size_bytes,
        };
        let reply = vm_reply(commit(&self.node, &meta, cmd).await?, &req.vm)?;
        super::disks::grow_online(&self.node, &self.agents, term, &req.vm, req.index).await?;
        Ok(reply)
    }

    async fn add_nic(&self, req: Request<pb::AddNicRequest>) -> Result<Response<pb::Vm>, Status> {
        let (meta, _, req) = req.into_parts();
        let nic = req
            .nic
            .ok_or_else(|| Status::invalid_argument("The NIC to add is missing"))?;
        // A running guest gets the NIC from its host right after the commit, on the
        // leader's authority and in the term it committed in (as a disk's resize).
        super::errors::leader_only(&self.node)?;
        let term = self.node.metrics().current_term;
        let _changing = self.nic_locks.lock(&req.vm).await;
        let cmd = Command::AddNic {
            name: req.vm.clone(),
            nic: super::network::nic_spec(nic)?,
            hot_plug: true,
        };
        let reply = vm_reply(commit(&self.node, &meta, cmd).await?, &req.vm)?;
        // The new NIC is the last: `apply` appends it.
        if let Some(mac) = reply.get_ref().nics.last().map(|n| n.mac.clone()) {
            super::nics::plug_online(&self.node, &self.agents, term, &req.vm, &mac).await?;
        }
        Ok(reply)
    }

    async fn remove_nic(
        &self,
        req: Request<pb::RemoveNicRequest>,
    ) -> Result<Response<pb::Vm>, Status> {
        let (meta, _, req) = req.into_parts();
        let _changing = self.nic_locks.lock(&req.vm).await;
        // Off the running guest first: its address is free once the commit is.
        let unplugged_at =
            super::nics::unplug_for_removal(&self.node, &self.agents, &req.vm, &req.mac).await?;
        let mac = req.mac.clone();
        let cmd = Command::RemoveNic {
            name: req.vm.clone(),
            mac: req.mac,
            unplugged_at,
        };
        match commit(&self.node, &meta, cmd).await {
            Ok(reply) => vm_reply(reply, &req.vm),
            // The guest has lost the device; the state still has it (its address too),
            // and the next start brings it back.
            Err(s) if unplugged_at.is_some() => Err(Status::new(
                s.code(),
                format!(
                    "NIC {mac} was unplugged from VM {:?}'s running guest, but its removal \
                     was refused: {}. The state keeps the NIC (the guest has it again at its \
                     next start); repeat the removal",
                    req.vm,
                    s.message()
                ),
            )),
            Err(s) => Err(s),
        }
    }

    async fn set_vm_security_groups(
        &self,
        req: Request<pb::SetVmSecurityGroupsRequest>,
    ) -> Result<Response<pb::Vm>, Status> {
        let (meta, _, req) = req.into_parts();
        // A running guest's filters change right after the commit, on the leader's
        // authority and in the term it committed in.
        super::errors::leader_only(&self.node)?;
        let term = self.node.metrics().current_term;
        let cmd = Command::SetVmSecurityGroups {
            name: req.vm.clone(),
            groups: req.groups,
        };
        let reply = vm_reply(commit(&self.node, &meta, cmd).await?, &req.vm)?;
        super::security_groups::refresh_filters(
            &self.node,
            &self.agents,
            term,
            std::slice::from_ref(&req.vm),
        )
        .await?;
        Ok(reply)
    }

    async fn remove_disk(
        &self,
        req: Request<pb::RemoveDiskRequest>,
    ) -> Result<Response<pb::Vm>, Status> {
        let (meta, _, req) = req.into_parts();
        let cmd = Command::RemoveDisk {
            name: req.vm.clone(),
            index: req.index,
        };
        vm_reply(commit(&self.node, &meta, cmd).await?, &req.vm)
    }
}
