//! `drover.v1.ClusterService` and the read-freshness rule shared by all read RPCs.

use std::time::Duration;

use drover_proto::v1 as pb;
use drover_proto::v1::cluster_service_client::ClusterServiceClient;
use drover_proto::v1::cluster_service_server::ClusterService;
use std::collections::BTreeSet;

use drover_proto::transport::{endpoint, TlsHandle};
use drover_proto::{APPLIED_INDEX_METADATA_KEY, SERVED_BY_METADATA_KEY};
use drover_raft::{MembershipError, RaftNode, RaftTimings};
use openraft::error::{CheckIsLeaderError, RaftError};
use openraft::ServerState;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

use super::errors::not_leader;

/// How long the answering controller waits for each peer's own status.
const PEER_STATUS_TIMEOUT: Duration = Duration::from_millis(800);

/// Makes a read linearizable: the leader confirms it still leads with a quorum round and
/// waits until it has applied everything committed before the read. A follower cannot
/// promise that on its own, so it sends the client to the leader. A `stale` read skips all
/// of this and reads the local state machine as it is.
pub async fn fresh_read(node: &RaftNode, stale: bool) -> Result<(), Status> {
    if stale {
        return Ok(());
    }
    match node.raft().ensure_linearizable().await {
        Ok(_) => {}
        Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
            return Err(not_leader(f.leader_node.as_ref().map(|n| n.addr.as_str())))
        }
        Err(e) => {
            return Err(Status::unavailable(format!(
                "Cannot confirm leadership: {e}"
            )))
        }
    }
    // openraft confirms a read against the first entry of the leader's term. A leader that
    // restarted and resumed its term without an election (a committed vote) has that entry
    // applied long ago, yet may not know yet that later entries of its log — writes it
    // acknowledged before the restart — are committed: its state machine can lag them.
    // Everything in the leader's log will be committed by it, so waiting until all of it
    // is applied makes the read see every acknowledged write (found by the chaos run;
    // `chaos-tests/tests/read_after_restart.rs`).
    let Some(last) = node.metrics().last_log_index else {
        return Ok(());
    };
    node.raft()
        .wait(Some(READ_CATCH_UP))
        .applied_index_at_least(Some(last), "linearizable read")
        .await
        .map(drop)
        .map_err(|e| {
            Status::unavailable(format!(
                "the leader has not applied its log up to {last} yet: {e}"
            ))
        })
}

/// How long a linearizable read waits for the leader to apply its own log.
const READ_CATCH_UP: std::time::Duration = std::time::Duration::from_secs(5);

/// The applied index of the state machine data `d`.
pub fn applied(d: &drover_raft::store::SmData) -> u64 {
    d.last_applied.map(|l| l.index).unwrap_or(0)
}

/// Attaches what a read reflects: the applied index and the answering controller.
pub fn read_response<T>(node: &RaftNode, applied_index: u64, msg: T) -> Response<T> {
    let mut resp = Response::new(msg);
    let meta = resp.metadata_mut();
    meta.insert(
        APPLIED_INDEX_METADATA_KEY,
        MetadataValue::from(applied_index),
    );
    meta.insert(SERVED_BY_METADATA_KEY, MetadataValue::from(node.id()));
    resp
}

fn membership_error(e: MembershipError) -> Status {
    match e {
        MembershipError::NotLeader { leader_addr } => not_leader(leader_addr.as_deref()),
        MembershipError::Invalid(_) => Status::invalid_argument(e.to_string()),
        MembershipError::UnknownNode(_) => Status::not_found(e.to_string()),
        MembershipError::Refused(_) => Status::failed_precondition(e.to_string()),
        MembershipError::Raft(_) => Status::unavailable(e.to_string()),
    }
}

pub struct ClusterApi {
    node: RaftNode,
    timings: RaftTimings,
    tls: TlsHandle,
}

impl ClusterApi {
    pub fn new(node: RaftNode, timings: RaftTimings, tls: TlsHandle) -> Self {
        Self { node, timings, tls }
    }

    /// Every member's own view, asked of each in parallel (unreachable ones say so).
    async fn all_members(&self) -> Vec<pb::Member> {
        members(&self.node, self.local_member(), &self.tls).await
    }

    async fn status_response(&self) -> Response<pb::ClusterStatusResponse> {
        let members = self.all_members().await;
        Response::new(pb::ClusterStatusResponse {
            leader_id: self.node.metrics().current_leader.unwrap_or(0),
            members,
        })
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
        let membership = m.membership_config.membership();
        let address = membership
            .get_node(&self.node.id())
            .map(|n| n.addr.clone())
            .unwrap_or_default();
        let voter = membership.voter_ids().any(|v| v == self.node.id());
        pb::Member {
            id: self.node.id(),
            address,
            role: role.into(),
            term: m.current_term,
            last_applied: m.last_applied.map(|l| l.index).unwrap_or(0),
            leader_id: m.current_leader.unwrap_or(0),
            error: String::new(),
            voter,
            snapshot_index: m.snapshot.map(|l| l.index).unwrap_or(0),
            purged_index: m.purged.map(|l| l.index).unwrap_or(0),
            last_log_index: m.last_log_index.unwrap_or(0),
            insecure: self.tls.is_none(),
        }
    }
}

/// Every member's own view, `me` this node's, the others asked in parallel (unreachable
/// ones say so in `error`), each marked voter or not by this node's view.
pub async fn members(node: &RaftNode, me: pb::Member, tls: &TlsHandle) -> Vec<pb::Member> {
    let peers: Vec<(u64, String)> = node
        .metrics()
        .membership_config
        .membership()
        .nodes()
        .filter(|(id, _)| **id != node.id())
        .map(|(id, n)| (*id, n.addr.clone()))
        .collect();
    let answers = futures::future::join_all(
        peers
            .into_iter()
            .map(|(id, addr)| ask_peer(id, addr, tls.clone())),
    )
    .await;
    let mut members = vec![me];
    members.extend(answers);
    members.sort_by_key(|m| m.id);
    // Who votes is this node's (committed) view: a member that is still catching up
    // does not know yet.
    let voters = node.voters();
    for m in &mut members {
        m.voter = voters.contains(&m.id);
    }
    members
}

async fn ask_peer(id: u64, addr: String, tls: TlsHandle) -> pb::Member {
    let unreachable = |error: String| pb::Member {
        id,
        address: addr.clone(),
        role: "unreachable".into(),
        error,
        ..Default::default()
    };
    let endpoint = match endpoint(&addr, tls.as_deref()) {
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

/// Backup chunks: small enough for gRPC's default message limits.
const BACKUP_CHUNK: usize = 1024 * 1024;

type ChunkStream =
    std::pin::Pin<Box<dyn futures::Stream<Item = Result<pb::SnapshotChunk, Status>> + Send>>;

#[tonic::async_trait]
impl ClusterService for ClusterApi {
    type SaveSnapshotStream = ChunkStream;

    async fn save_snapshot(
        &self,
        _: Request<pb::SaveSnapshotRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        // A linearizable read on the leader: the backup holds every acknowledged write.
        fresh_read(&self.node, false).await?;
        let data = self.node.view().read(|d| d.clone());
        let applied_index = applied(&data);
        let bytes =
            drover_raft::backup::encode(&data).map_err(|e| Status::internal(e.to_string()))?;
        tracing::info!(applied_index, bytes = bytes.len(), "streaming a backup");
        let chunks: Vec<Result<pb::SnapshotChunk, Status>> = bytes
            .chunks(BACKUP_CHUNK)
            .map(|c| {
                Ok(pb::SnapshotChunk {
                    data: c.to_vec(),
                    applied_index,
                })
            })
            .collect();
        Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
    }

    async fn status(
        &self,
        req: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        if req.into_inner().local_only {
            let me = self.local_member();
            return Ok(Response::new(pb::ClusterStatusResponse {
                leader_id: me.leader_id,
                members: vec![me],
            }));
        }
        Ok(self.status_response().await)
    }

    async fn add_node(
        &self,
        req: Request<pb::AddNodeRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        let req = req.into_inner();
        if req.id == 0 {
            return Err(Status::invalid_argument("Node id must be at least 1"));
        }
        self.node
            .add_node(req.id, &req.address)
            .await
            .map_err(membership_error)?;
        Ok(self.status_response().await)
    }

    async fn remove_node(
        &self,
        req: Request<pb::RemoveNodeRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        let id = req.into_inner().id;
        // Ask everyone now: a removal must leave a quorum that is actually up.
        let reachable: BTreeSet<u64> = self
            .all_members()
            .await
            .into_iter()
            .filter(|m| m.error.is_empty())
            .map(|m| m.id)
            .collect();
        self.node
            .remove_node(id, &reachable)
            .await
            .map_err(membership_error)?;
        Ok(self.status_response().await)
    }

    async fn set_ha_armed(
        &self,
        req: Request<pb::SetHaArmedRequest>,
    ) -> Result<Response<pb::HaStatus>, Status> {
        let (meta, _, req) = req.into_parts();
        Ok(Response::new(
            super::ha::set_armed(&self.node, &meta, req.armed).await?,
        ))
    }

    async fn get_ha_status(
        &self,
        req: Request<pb::GetHaStatusRequest>,
    ) -> Result<Response<pb::HaStatus>, Status> {
        let stale = req.into_inner().stale;
        Ok(Response::new(super::ha::get(&self.node, stale).await?))
    }

    async fn set_lease(
        &self,
        req: Request<pb::SetLeaseRequest>,
    ) -> Result<Response<pb::HaStatus>, Status> {
        let (meta, _, req) = req.into_parts();
        Ok(Response::new(
            super::ha::set_lease(&self.node, &meta, req).await?,
        ))
    }

    async fn get_placement_policy(
        &self,
        req: Request<pb::GetPlacementPolicyRequest>,
    ) -> Result<Response<pb::PlacementPolicy>, Status> {
        let stale = req.into_inner().stale;
        Ok(Response::new(
            super::placement::get(&self.node, stale).await?,
        ))
    }

    async fn set_placement_policy(
        &self,
        req: Request<pb::PlacementPolicy>,
    ) -> Result<Response<pb::PlacementPolicy>, Status> {
        let (meta, _, req) = req.into_parts();
        Ok(Response::new(
            super::placement::set(&self.node, &meta, req).await?,
        ))
    }

    async fn list_events(
        &self,
        req: Request<pb::ListEventsRequest>,
    ) -> Result<Response<pb::ListEventsResponse>, Status> {
        Ok(Response::new(
            super::events::list(&self.node, req.into_inner()).await?,
        ))
    }

    async fn transfer_leader(
        &self,
        req: Request<pb::TransferLeaderRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        let id = req.into_inner().id;
        let election_max = Duration::from_millis(self.timings.election_max_ms);
        self.node
            .transfer_leader(id, election_max)
            .await
            .map_err(membership_error)?;
        Ok(self.status_response().await)
    }
}
