//! `drover.v1.PoolService`: storage pools, declared through Raft and set up by each host's
//! hostd (the leader's host actors carry that out; see `drover_actors::host::pools`).

use std::collections::BTreeSet;

use drover_proto::v1 as pb;
use drover_proto::v1::pool_service_server::PoolService;
use drover_raft::model::{ClusterState, Pool, PoolHosts, PoolKind, PoolOnHost, PoolSpec};
use drover_raft::{Command, RaftNode, Reply};
use tonic::{Request, Response, Status};

use super::cluster::{applied, fresh_read, read_response};
use super::write::commit;

pub struct PoolApi {
    node: RaftNode,
}

impl PoolApi {
    pub fn new(node: RaftNode) -> Self {
        Self { node }
    }
}

/// The pool as the API shows it: one entry per registered host it includes, "pending"
/// where that host has not reported it yet.
fn to_pb(pool: &Pool, state: &ClusterState) -> pb::Pool {
    let (hosts, all_hosts) = match &pool.spec.hosts {
        PoolHosts::All => (Vec::new(), true),
        PoolHosts::Only(h) => (h.iter().cloned().collect(), false),
    };
    let on_hosts = state
        .hosts
        .keys()
        .filter(|h| pool.spec.hosts.includes(h))
        .map(|h| match pool.on_hosts.get(h) {
            Some(PoolOnHost::Active {
                capacity_bytes,
                available_bytes,
            }) => pb::PoolOnHost {
                host: h.clone(),
                state: "active".into(),
                capacity_bytes: *capacity_bytes,
                available_bytes: *available_bytes,
                reason: String::new(),
            },
            Some(PoolOnHost::Failed { reason }) => pb::PoolOnHost {
                host: h.clone(),
                state: "failed".into(),
                reason: reason.clone(),
                ..Default::default()
            },
            None => pb::PoolOnHost {
                host: h.clone(),
                state: "pending".into(),
                ..Default::default()
            },
        })
        .collect();
    pb::Pool {
        name: pool.name.clone(),
        r#type: pool.spec.kind.as_str().into(),
        path: pool.spec.kind.path().into(),
        shared: pool.spec.shared,
        hosts,
        all_hosts,
        on_hosts,
    }
}

/// The request's spec; `InvalidArgument` for what no state could make valid.
fn spec(req: &pb::CreatePoolRequest) -> Result<PoolSpec, Status> {
    let kind = match req.r#type.as_str() {
        "dir" => PoolKind::Dir {
            path: req.path.clone(),
        },
        other => {
            return Err(Status::invalid_argument(format!(
                "Unknown pool type {other:?}; supported: dir"
            )))
        }
    };
    let mut hosts = BTreeSet::new();
    for h in &req.hosts {
        if !hosts.insert(h.clone()) {
            return Err(Status::invalid_argument(format!(
                "Host {h:?} is listed twice"
            )));
        }
    }
    Ok(PoolSpec {
        kind,
        shared: req.shared,
        hosts: if hosts.is_empty() {
            PoolHosts::All
        } else {
            PoolHosts::Only(hosts)
        },
    })
}

#[tonic::async_trait]
impl PoolService for PoolApi {
    async fn create_pool(
        &self,
        req: Request<pb::CreatePoolRequest>,
    ) -> Result<Response<pb::Pool>, Status> {
        let (meta, _, req) = req.into_parts();
        let cmd = Command::CreatePool {
            spec: spec(&req)?,
            name: req.name,
        };
        match commit(&self.node, &meta, cmd).await? {
            Reply::Pool(p) => Ok(Response::new(
                self.node.view().read(|d| to_pb(&p, &d.state)),
            )),
            other => Err(Status::internal(format!("unexpected reply {other:?}"))),
        }
    }

    async fn get_pool(
        &self,
        req: Request<pb::GetPoolRequest>,
    ) -> Result<Response<pb::Pool>, Status> {
        let req = req.into_inner();
        fresh_read(&self.node, req.stale).await?;
        let (index, pool) = self.node.view().read(|d| {
            let pool = d.state.pools.get(&req.name).map(|p| to_pb(p, &d.state));
            (applied(d), pool)
        });
        let pool =
            pool.ok_or_else(|| Status::not_found(format!("Pool {:?} not found", req.name)))?;
        Ok(read_response(&self.node, index, pool))
    }

    async fn list_pools(
        &self,
        req: Request<pb::ListPoolsRequest>,
    ) -> Result<Response<pb::ListPoolsResponse>, Status> {
        fresh_read(&self.node, req.into_inner().stale).await?;
        let (index, pools) = self.node.view().read(|d| {
            let pools = d.state.pools.values().map(|p| to_pb(p, &d.state));
            (applied(d), pools.collect())
        });
        Ok(read_response(
            &self.node,
            index,
            pb::ListPoolsResponse { pools },
        ))
    }

    async fn delete_pool(
        &self,
        req: Request<pb::DeletePoolRequest>,
    ) -> Result<Response<pb::DeletePoolResponse>, Status> {
        let (meta, _, req) = req.into_parts();
        match commit(&self.node, &meta, Command::DeletePool { name: req.name }).await? {
            Reply::PoolDeleted { .. } => Ok(Response::new(pb::DeletePoolResponse {})),
            other => Err(Status::internal(format!("unexpected reply {other:?}"))),
        }
    }
}
