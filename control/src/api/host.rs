//! `drover.v1.HostService`.

use drover_proto::v1 as pb;
use drover_proto::v1::host_service_server::HostService;
use drover_raft::{Command, RaftNode, Reply};
use tonic::{Request, Response, Status};

use super::cluster::fresh_read;
use super::convert;
use super::errors::committed;

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
        let req = req.into_inner();
        let reply = committed(
            self.node
                .write(Command::AddHost {
                    name: req.name,
                    address: req.address,
                })
                .await,
        )?;
        match reply {
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
        let name = req.into_inner().name;
        fresh_read(&self.node).await?;
        self.node
            .view()
            .read(|d| d.state.hosts.get(&name).map(|h| convert::host(h, &d.state)))
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("Host {name:?} not found")))
    }

    async fn list_hosts(
        &self,
        _: Request<pb::ListHostsRequest>,
    ) -> Result<Response<pb::ListHostsResponse>, Status> {
        fresh_read(&self.node).await?;
        let hosts = self.node.view().read(|d| {
            d.state
                .hosts
                .values()
                .map(|h| convert::host(h, &d.state))
                .collect()
        });
        Ok(Response::new(pb::ListHostsResponse { hosts }))
    }
}
