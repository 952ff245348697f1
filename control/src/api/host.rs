//! `drover.v1.HostService`.

use drover_proto::v1 as pb;
use drover_proto::v1::host_service_server::HostService;
use drover_raft::{Command, RaftNode, Reply};
use tonic::{Request, Response, Status};

use super::cluster::{applied, fresh_read, read_response};
use super::convert;
use super::write::commit;

pub struct HostApi {
    node: RaftNode,
}

impl HostApi {
    pub fn new(node: RaftNode) -> Self {
        Self { node }
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
        };
        match commit(&self.node, &meta, cmd).await? {
            Reply::Host(h) => Ok(Response::new(
                self.node.view().read(|d| convert::host(&h, &d.state)),
            )),
            other => Err(Status::internal(format!("unexpected reply {other:?}"))),
        }
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
                .map(|h| convert::host(h, &d.state));
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
            let hosts = d.state.hosts.values().map(|h| convert::host(h, &d.state));
            (applied(d), hosts.collect())
        });
        Ok(read_response(
            &self.node,
            index,
            pb::ListHostsResponse { hosts },
        ))
    }
}
