//! The write path of every mutating RPC: take the client's request id (if any) from the
//! metadata, commit the command through Raft, map the outcome to a gRPC answer.

use drover_proto::REQUEST_ID_METADATA_KEY;
use drover_raft::dedup::MAX_REQUEST_ID_LEN;
use drover_raft::{Command, RaftNode, Reply, Request};
use tonic::metadata::MetadataMap;
use tonic::Status;

use super::errors::committed;

/// The request id a client attached, validated.
pub fn request_id(meta: &MetadataMap) -> Result<Option<String>, Status> {
    let Some(value) = meta.get(REQUEST_ID_METADATA_KEY) else {
        return Ok(None);
    };
    let id = value
        .to_str()
        .map_err(|_| Status::invalid_argument("Request id must be printable ASCII"))?;
    if id.is_empty() || id.len() > MAX_REQUEST_ID_LEN {
        return Err(Status::invalid_argument(format!(
            "Request id must be 1 to {MAX_REQUEST_ID_LEN} characters"
        )));
    }
    Ok(Some(id.to_string()))
}

/// Commits `command` (with the client's request id) and returns the applied reply.
pub async fn commit(
    node: &RaftNode,
    meta: &MetadataMap,
    command: Command,
) -> Result<Reply, Status> {
    let id = request_id(meta)?;
    committed(node.write(Request { id, command }).await)
}
