//! The placement policy behind `drover cluster placement` (ClusterService's
//! `GetPlacementPolicy` and `SetPlacementPolicy`).

use drover_proto::v1 as pb;
use drover_raft::model::{PlacementPolicy, Weigher};
use drover_raft::{Command, RaftNode, Reply};
use tonic::metadata::MetadataMap;
use tonic::Status;

use super::cluster::fresh_read;
use super::write::commit;

pub async fn get(node: &RaftNode, stale: bool) -> Result<pb::PlacementPolicy, Status> {
    fresh_read(node, stale).await?;
    Ok(node.view().read(|d| to_pb(&d.state.placement)))
}

/// Applies the fields `req` sets over the current policy. The merge reads this node's
/// state; two operators changing different fields at once is the one race, and the last
/// write wins whole, as with any configuration.
pub async fn set(
    node: &RaftNode,
    meta: &MetadataMap,
    req: pb::PlacementPolicy,
) -> Result<pb::PlacementPolicy, Status> {
    fresh_read(node, false).await?;
    let mut policy = node.view().read(|d| d.state.placement);
    if req.cpu_overcommit != 0.0 {
        policy.cpu_overcommit_pct = percent("cpu_overcommit", req.cpu_overcommit)?;
    }
    if req.memory_overcommit != 0.0 {
        policy.memory_overcommit_pct = percent("memory_overcommit", req.memory_overcommit)?;
    }
    if !req.weigher.is_empty() {
        policy.weigher = Weigher::parse(&req.weigher).map_err(Status::invalid_argument)?;
    }
    match commit(node, meta, Command::SetPlacementPolicy { policy }).await? {
        Reply::Placement(p) => Ok(to_pb(&p)),
        other => Err(Status::internal(format!("unexpected reply {other:?}"))),
    }
}

/// A ratio as whole percent; `apply` checks the range.
fn percent(what: &str, ratio: f64) -> Result<u32, Status> {
    if !ratio.is_finite() || !(0.0..=1000.0).contains(&ratio) {
        return Err(Status::invalid_argument(format!(
            "{what} {ratio} is not a ratio"
        )));
    }
    Ok((ratio * 100.0).round() as u32)
}

fn to_pb(p: &PlacementPolicy) -> pb::PlacementPolicy {
    pb::PlacementPolicy {
        cpu_overcommit: f64::from(p.cpu_overcommit_pct) / 100.0,
        memory_overcommit: f64::from(p.memory_overcommit_pct) / 100.0,
        weigher: p.weigher.as_str().into(),
    }
}
