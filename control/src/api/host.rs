//! `drover.v1.HostService`.

use drover_actors::host::GrantBook;
use drover_proto::v1 as pb;
use drover_proto::v1::host_service_server::HostService;
use drover_raft::model::{ClusterState, DeadReason, EventKind, Host};
use drover_raft::{Command, RaftNode, Reply};
use tonic::{Request, Response, Status};

use super::cluster::{applied, fresh_read, read_response};
use super::convert;
use super::write::commit;

pub struct HostApi {
    node: RaftNode,
    grants: GrantBook,
}

impl HostApi {
    pub fn new(node: RaftNode, grants: GrantBook) -> Self {
        Self { node, grants }
    }

    fn to_pb(&self, host: &Host, state: &ClusterState) -> pb::Host {
        let granted = self.grants.last(&host.name).map(|t| t.elapsed());
        convert::host(host, state, granted)
    }

    fn host_reply(&self, reply: Reply) -> Result<Response<pb::Host>, Status> {
        match reply {
            Reply::Host(h) => Ok(Response::new(
                self.node.view().read(|d| self.to_pb(&h, &d.state)),
            )),
            other => Err(Status::internal(format!("unexpected reply {other:?}"))),
        }
    }
}

#[tonic::async_trait]
impl HostService for HostApi {
    async fn add_host(
        &self,
        req: Request<pb::AddHostRequest>,
    ) -> Result<Response<pb::Host>, Status> {
        let (meta, _, req) = req.into_parts();
        let cmd = Command::AddHost {
            name: req.name,
            address: req.address,
            labels: req.labels.into_iter().collect(),
        };
        self.host_reply(commit(&self.node, &meta, cmd).await?)
    }

    async fn drain_host(
        &self,
        req: Request<pb::DrainHostRequest>,
    ) -> Result<Response<pb::Operation>, Status> {
        let (meta, _, req) = req.into_parts();
        let cmd = Command::StartDrain {
            host: req.name,
            stop_when_blocked: req.stop_when_blocked,
            at_ms: drover_raft::wall_clock_ms(),
        };
        match commit(&self.node, &meta, cmd).await? {
            Reply::Operation(op) => Ok(Response::new(convert::operation(&op))),
            other => Err(Status::internal(format!("unexpected reply {other:?}"))),
        }
    }

    async fn remove_host(
        &self,
        req: Request<pb::RemoveHostRequest>,
    ) -> Result<Response<pb::RemoveHostResponse>, Status> {
        let (meta, _, req) = req.into_parts();
        let cmd = Command::RemoveHost { name: req.name };
        match commit(&self.node, &meta, cmd).await? {
            Reply::HostRemoved { .. } => Ok(Response::new(pb::RemoveHostResponse {})),
            other => Err(Status::internal(format!("unexpected reply {other:?}"))),
        }
    }

    async fn activate_host(
        &self,
        req: Request<pb::ActivateHostRequest>,
    ) -> Result<Response<pb::Host>, Status> {
        let (meta, _, req) = req.into_parts();
        let cmd = Command::ActivateHost {
            name: req.name,
            at_ms: drover_raft::wall_clock_ms(),
        };
        self.host_reply(commit(&self.node, &meta, cmd).await?)
    }

    async fn fence_host(
        &self,
        req: Request<pb::FenceHostRequest>,
    ) -> Result<Response<pb::Host>, Status> {
        let (meta, _, req) = req.into_parts();
        if !req.confirm_powered_off {
            return Err(Status::invalid_argument(format!(
                "Fencing host {:?} needs confirm_powered_off: its HA VMs will be started \
                 elsewhere at once, so if it still runs they run twice",
                req.name
            )));
        }
        tracing::warn!(host = %req.name, "operator confirms the host is off; declaring it dead");
        let cmd = Command::DeclareHostDead {
            name: req.name.clone(),
            reason: DeadReason::Operator,
        };
        let reply = self.host_reply(commit(&self.node, &meta, cmd).await?)?;
        let event = Command::event(
            EventKind::HostDead,
            Some(&req.name),
            None,
            "an operator confirmed it is powered off (drover host fence)",
        );
        if let Err(e) = self
            .node
            .write(drover_raft::Request::anonymous(event))
            .await
        {
            tracing::warn!(host = %req.name, error = %e, "cannot record the fence event");
        }
        Ok(reply)
    }

    async fn get_host(
        &self,
        req: Request<pb::GetHostRequest>,
    ) -> Result<Response<pb::Host>, Status> {
        let req = req.into_inner();
        fresh_read(&self.node, req.stale).await?;
        let (index, host) = self.node.view().read(|d| {
            let host = d
                .state
                .hosts
                .get(&req.name)
                .map(|h| self.to_pb(h, &d.state));
            (applied(d), host)
        });
        let host =
            host.ok_or_else(|| Status::not_found(format!("Host {:?} not found", req.name)))?;
        Ok(read_response(&self.node, index, host))
    }

    async fn list_hosts(
        &self,
        req: Request<pb::ListHostsRequest>,
    ) -> Result<Response<pb::ListHostsResponse>, Status> {
        fresh_read(&self.node, req.into_inner().stale).await?;
        let (index, hosts) = self.node.view().read(|d| {
            let hosts = d.state.hosts.values().map(|h| self.to_pb(h, &d.state));
            (applied(d), hosts.collect())
        });
        Ok(read_response(
            &self.node,
            index,
            pb::ListHostsResponse { hosts },
        ))
    }
}
