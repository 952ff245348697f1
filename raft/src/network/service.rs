//! The server half of controller-to-controller traffic: hands Raft RPCs to the local
//! openraft node and executes writes forwarded by followers (when this node leads).

use drover_proto::raft::v1::raft_service_server::RaftService;
use drover_proto::raft::v1::RaftPayload;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status};

use crate::command::Command;
use crate::node::{RaftNode, WriteError};

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
        let rpc = decode(req)?;
        encode(&self.node.raft().append_entries(rpc).await)
    }

    async fn vote(&self, req: Request<RaftPayload>) -> Result<Response<RaftPayload>, Status> {
        let rpc = decode(req)?;
        encode(&self.node.raft().vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let rpc = decode(req)?;
        encode(&self.node.raft().install_snapshot(rpc).await)
    }

    async fn forward_write(
        &self,
        req: Request<RaftPayload>,
    ) -> Result<Response<RaftPayload>, Status> {
        let cmd: Command = decode(req)?;
        // Only one hop: a node that is not leader either answers NotLeader, never forwards again.
        let result: Result<_, WriteError> = self.node.write_local(cmd).await;
        encode(&result)
    }
}
