//! The replicated event log behind `drover event list` (ClusterService's `ListEvents`).

use drover_proto::v1 as pb;
use drover_raft::RaftNode;
use tonic::Status;

use super::cluster::fresh_read;

pub async fn list(
    node: &RaftNode,
    req: pb::ListEventsRequest,
) -> Result<pb::ListEventsResponse, Status> {
    fresh_read(node, req.stale).await?;
    let events = node.view().read(|d| {
        let matching: Vec<pb::Event> = d
            .state
            .events
            .entries
            .iter()
            .filter(|e| req.host.is_empty() || e.host.as_deref() == Some(req.host.as_str()))
            .filter(|e| req.vm.is_empty() || e.vm.as_deref() == Some(req.vm.as_str()))
            .map(|e| pb::Event {
                seq: e.seq,
                at_ms: e.at_ms,
                kind: e.kind.as_str().into(),
                host: e.host.clone().unwrap_or_default(),
                vm: e.vm.clone().unwrap_or_default(),
                message: e.message.clone(),
            })
            .collect();
        let skip = match req.limit {
            0 => 0,
            n => matching.len().saturating_sub(n as usize),
        };
        matching.into_iter().skip(skip).collect()
    });
    Ok(pb::ListEventsResponse { events })
}
