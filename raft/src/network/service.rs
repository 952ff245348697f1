//! The server half of controller-to-controller traffic: hands Raft RPCs to the local
//! openraft node and executes writes forwarded by followers (when this node leads).

use drover_proto::raft::v1::raft_service_server::RaftService;
use drover_proto::raft::v1::RaftPayload;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status};

use openraft::raft::AppendEntriesResponse;

use crate::command::Request as WriteRequest;
use crate::leader_alive::LeaderAlive;
use crate::node::{RaftNode, WriteError};

/// Largest snapshot a peer may send: well above a 100k-VM state (~25 MB), far below what
/// would exhaust a controller's memory (snapshots are assembled in memory).
pub const MAX_SNAPSHOT_BYTES: u64 = 1024 * 1024 * 1024;

/// Longest election hold a peer may ask for.
const MAX_HOLD_MS: u64 = 10_000;

pub struct RaftGrpcService {
    node: RaftNode,
}

impl RaftGrpcService {
    pub fn new(node: RaftNode) -> Self {
        Self { node }
    }
}

fn decode<T: DeserializeOwned>(req: Request<RaftPayload>) -> Result<T, Status> {
    serde_json::from_slice(&req.into_inner().data)
        .map_err(|e| Status::invalid_argument(format!("Malformed Raft payload: {e}")))
}

/// [`decode`], on the blocking pool for a big payload (see `BLOCKING_CODEC_BYTES`).
async fn decode_big<T: DeserializeOwned + Send + 'static>(
    req: Request<RaftPayload>,
) -> Result<T, Status> {
    if req.get_ref().data.len() < super::BLOCKING_CODEC_BYTES {
        return decode(req);
    }
    tokio::task::spawn_blocking(move || decode(req))
        .await
        .map_err(|e| Status::internal(format!("Raft payload decoder failed: {e}")))?
}

fn encode<T: Serialize>(value: &T) -> Result<Response<RaftPayload>, Status> {
    serde_json::to_vec(value)
        .map(|data| Response::new(RaftPayload { data }))
        .map_err(|e| Status::internal(format!("Cannot encode Raft reply: {e}")))
}

#[tonic::async_trait]
impl RaftService for RaftGrpcService {
    async fn append_entries(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc = decode_big(req).await?;
        let answer = self.node.raft().append_entries(rpc).await;
        // Accepted (success or a log conflict, not a higher vote): the sender is the
        // leader this node follows, and this node's core handled its message.
        if let Ok(
            AppendEntriesResponse::Success
            | AppendEntriesResponse::PartialSuccess(_)
            | AppendEntriesResponse::Conflict,
        ) = &answer
        {
            self.node.election_guard().leader_heard();
        }
        encode(&answer)
    }

    async fn vote(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc = decode(req)?;
        encode(&self.node.raft().vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc: openraft::raft::InstallSnapshotRequest<crate::TypeConfig> = decode(req)?;
        let end = rpc.offset.saturating_add(rpc.data.len() as u64);
        if end > MAX_SNAPSHOT_BYTES {
            return Err(Status::resource_exhausted(format!(
                "Snapshot larger than the {MAX_SNAPSHOT_BYTES}-byte cap"
            )));
        }
        encode(&self.node.raft().install_snapshot(rpc).await)
    }

    async fn forward_write(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let request: WriteRequest = decode(req)?;
        // Only one hop: a node that is not leader either answers NotLeader, never forwards again.
        let result: Result<_, WriteError> = self.node.write_local(request).await;
        encode(&result)
    }

    async fn hold_elections(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let millis: u64 = decode(req)?;
        // Bounded: a transfer never holds a node's elections for long.
        let hold = Duration::from_millis(millis.min(MAX_HOLD_MS));
        tracing::info!(?hold, "holding elections for a leadership transfer");
        self.node.hold_elections(hold);
        encode(&())
    }

    async fn leader_alive(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let said: LeaderAlive = decode(req)?;
        let m = self.node.metrics();
        // Only the leader this node follows, in the term it knows, counts.
        if m.current_leader == Some(said.leader) && m.current_term == said.term {
            self.node.election_guard().leader_alive();
        }
        encode(&())
    }

    async fn campaign(&self, _: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        tracing::info!("campaigning for leadership (transfer)");
        self.node
            .raft()
            .trigger()
            .elect()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        encode(&())
    }
}
