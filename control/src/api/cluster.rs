//! `drover.v1.ClusterService` and the read-freshness rule shared by all read RPCs.

use std::time::Duration;

use drover_proto::v1 as pb;
use drover_proto::v1::cluster_service_client::ClusterServiceClient;
use drover_proto::v1::cluster_service_server::ClusterService;
use drover_raft::RaftNode;
use openraft::error::{CheckIsLeaderError, RaftError};
use openraft::ServerState;
use tonic::{Request, Response, Status};

use super::errors::not_leader;

/// How long the answering controller waits for each peer's own status.
const PEER_STATUS_TIMEOUT: Duration = Duration::from_millis(800);

/// Makes a read linearizable: the leader confirms it still leads with a quorum round and
/// waits until it has applied everything committed before the read. A follower cannot
/// promise that on its own, so it sends the client to the leader (`--stale` local reads
/// come with the Raft hardening issue).
pub async fn fresh_read(node: &RaftNode) -> Result<(), Status> {
    match node.raft().ensure_linearizable().await {
        Ok(_) => Ok(()),
        Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
            Err(not_leader(f.leader_node.as_ref().map(|n| n.addr.as_str())))
        }
        Err(e) => Err(Status::unavailable(format!(
            "Cannot confirm leadership: {e}"
        ))),
    }
}

pub struct ClusterApi {
    node: RaftNode,
}

impl ClusterApi {
    pub fn new(node: RaftNode) -> Self {
        Self { node }
    }

    fn local_member(&self) -> pb::Member {
        let m = self.node.metrics();
        let role = match m.state {
            ServerState::Leader => "leader",
            ServerState::Follower => "follower",
            ServerState::Candidate => "candidate",
            ServerState::Learner => "learner",
            ServerState::Shutdown => "shutdown",
        };
        let address = m
            .membership_config
            .membership()
            .get_node(&self.node.id())
            .map(|n| n.addr.clone())
            .unwrap_or_default();
        pb::Member {
            id: self.node.id(),
            address,
            role: role.into(),
            term: m.current_term,
            last_applied: m.last_applied.map(|l| l.index).unwrap_or(0),
            leader_id: m.current_leader.unwrap_or(0),
            error: String::new(),
        }
    }
}

async fn ask_peer(id: u64, addr: String) -> pb::Member {
    let unreachable = |error: String| pb::Member {
        id,
        address: addr.clone(),
        role: "unreachable".into(),
        error,
        ..Default::default()
    };
    let endpoint = match tonic::transport::Endpoint::from_shared(format!("http://{addr}")) {
        Ok(e) => e
            .connect_timeout(PEER_STATUS_TIMEOUT)
            .timeout(PEER_STATUS_TIMEOUT),
        Err(e) => return unreachable(e.to_string()),
    };
    let channel = match endpoint.connect().await {
        Ok(c) => c,
        Err(e) => return unreachable(format!("cannot connect: {e}")),
    };
    match ClusterServiceClient::new(channel)
        .status(pb::ClusterStatusRequest { local_only: true })
        .await
    {
        Ok(resp) => resp
            .into_inner()
            .members
            .into_iter()
            .next()
            .unwrap_or_else(|| unreachable("empty answer".into())),
        Err(s) => unreachable(s.message().to_string()),
    }
}

#[tonic::async_trait]
impl ClusterService for ClusterApi {
    async fn status(
        &self,
        req: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        let me = self.local_member();
        if req.into_inner().local_only {
            return Ok(Response::new(pb::ClusterStatusResponse {
                leader_id: me.leader_id,
                members: vec![me],
            }));
        }
        let peers: Vec<(u64, String)> = self
            .node
            .metrics()
            .membership_config
            .membership()
            .nodes()
            .filter(|(id, _)| **id != self.node.id())
            .map(|(id, n)| (*id, n.addr.clone()))
            .collect();
        let answers =
            futures::future::join_all(peers.into_iter().map(|(id, addr)| ask_peer(id, addr))).await;
        let mut members = vec![me.clone()];
        members.extend(answers);
        members.sort_by_key(|m| m.id);
        Ok(Response::new(pb::ClusterStatusResponse {
            leader_id: me.leader_id,
            members,
        }))
    }
}
