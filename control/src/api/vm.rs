//! `drover.v1.VmService`.

use drover_proto::v1 as pb;
use drover_proto::v1::vm_service_server::VmService;
use drover_raft::model::{DesiredState, VmSpec};
use drover_raft::{Command, RaftNode, Reply};
use tonic::{Request, Response, Status};

use super::cluster::fresh_read;
use super::convert;
use super::errors::committed;

pub struct VmApi {
    node: RaftNode,
}

impl VmApi {
    pub fn new(node: RaftNode) -> Self {
        Self { node }
    }

    async fn set_desired(
        &self,
        name: String,
        desired: DesiredState,
    ) -> Result<Response<pb::Vm>, Status> {
        if name.is_empty() {
            return Err(Status::invalid_argument("VM name is empty"));
        }
        let reply = committed(
            self.node
                .write(Command::SetDesiredState {
                    name: name.clone(),
                    desired,
                })
                .await,
        )?;
        vm_reply(reply, &name)
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
        let req = req.into_inner();
        let spec = req
            .spec
            .ok_or_else(|| Status::invalid_argument("VM spec is missing"))?;
        let reply = committed(
            self.node
                .write(Command::CreateVm {
                    name: req.name.clone(),
                    spec: VmSpec {
                        vcpus: spec.vcpus,
                        memory_mib: spec.memory_mib,
                    },
                    start: req.start,
                })
                .await,
        )?;
        vm_reply(reply, &req.name)
    }

    async fn get_vm(&self, req: Request<pb::GetVmRequest>) -> Result<Response<pb::Vm>, Status> {
        let name = req.into_inner().name;
        fresh_read(&self.node).await?;
        self.node
            .view()
            .read(|d| d.state.vms.get(&name).map(convert::vm))
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("VM {name:?} not found")))
    }

    async fn list_vms(
        &self,
        _: Request<pb::ListVmsRequest>,
    ) -> Result<Response<pb::ListVmsResponse>, Status> {
        fresh_read(&self.node).await?;
        let vms = self
            .node
            .view()
            .read(|d| d.state.vms.values().map(convert::vm).collect());
        Ok(Response::new(pb::ListVmsResponse { vms }))
    }

    async fn start_vm(&self, req: Request<pb::VmNameRequest>) -> Result<Response<pb::Vm>, Status> {
        self.set_desired(req.into_inner().name, DesiredState::Running)
            .await
    }

    async fn stop_vm(&self, req: Request<pb::VmNameRequest>) -> Result<Response<pb::Vm>, Status> {
        self.set_desired(req.into_inner().name, DesiredState::Stopped)
            .await
    }

    async fn delete_vm(&self, req: Request<pb::VmNameRequest>) -> Result<Response<pb::Vm>, Status> {
        self.set_desired(req.into_inner().name, DesiredState::Deleted)
            .await
    }
}
