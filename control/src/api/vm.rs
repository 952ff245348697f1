//! `drover.v1.VmService`.

use drover_proto::v1 as pb;
use drover_proto::v1::vm_service_server::VmService;
use drover_raft::model::{DesiredState, VmSpec};
use drover_raft::{Command, RaftNode, Reply};
use tonic::{Request, Response, Status};

use super::cluster::{applied, fresh_read, read_response};
use super::convert;
use super::write::commit;

pub struct VmApi {
    node: RaftNode,
}

impl VmApi {
    pub fn new(node: RaftNode) -> Self {
        Self { node }
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
            ha: req.ha,
            ha_priority: req.ha_priority,
        };
        vm_reply(commit(&self.node, &meta, cmd).await?, &req.name)
    }

    async fn get_vm(&self, req: Request<pb::GetVmRequest>) -> Result<Response<pb::Vm>, Status> {
        let req = req.into_inner();
        fresh_read(&self.node, req.stale).await?;
        let (index, vm) = self
            .node
            .view()
            .read(|d| (applied(d), d.state.vms.get(&req.name).map(convert::vm)));
        let vm = vm.ok_or_else(|| Status::not_found(format!("VM {:?} not found", req.name)))?;
        Ok(read_response(&self.node, index, vm))
    }

    async fn list_vms(
        &self,
        req: Request<pb::ListVmsRequest>,
    ) -> Result<Response<pb::ListVmsResponse>, Status> {
        fresh_read(&self.node, req.into_inner().stale).await?;
        let (index, vms) = self
            .node
            .view()
            .read(|d| (applied(d), d.state.vms.values().map(convert::vm).collect()));
        Ok(read_response(
            &self.node,
            index,
            pb::ListVmsResponse { vms },
        ))
    }

    async fn start_vm(&self, req: Request<pb::VmNameRequest>) -> Result<Response<pb::Vm>, Status> {
        self.set_desired(req, DesiredState::Running).await
    }

    async fn stop_vm(&self, req: Request<pb::VmNameRequest>) -> Result<Response<pb::Vm>, Status> {
        self.set_desired(req, DesiredState::Stopped).await
    }

    async fn delete_vm(&self, req: Request<pb::VmNameRequest>) -> Result<Response<pb::Vm>, Status> {
        self.set_desired(req, DesiredState::Deleted).await
    }
}
