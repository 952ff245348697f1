//! The cluster-wide HA switch behind `drover ha arm|disarm|status` (ClusterService's
//! `SetHaArmed` and `GetHaStatus`).

use drover_proto::v1 as pb;
use drover_raft::model::ClusterState;
use drover_raft::model::EventKind;
use drover_raft::{Command, RaftNode, Reply, Request};
use tonic::metadata::MetadataMap;
use tonic::Status;

use super::cluster::fresh_read;
use super::write::commit;

pub async fn set_armed(
    node: &RaftNode,
    meta: &MetadataMap,
    armed: bool,
) -> Result<pb::HaStatus, Status> {
    if armed {
        tracing::warn!("HA armed by an operator; hosts count as armed once they confirm");
    } else {
        tracing::warn!("HA DISARMED by an operator: no failover and no self-fencing");
    }
    // The reply is the switch as applied at that entry: this node's own view may lag.
    let reply = commit(node, meta, Command::SetHaArmed { armed }).await?;
    let (kind, what) = if armed {
        (EventKind::HaArmed, "HA armed by an operator")
    } else {
        (
            EventKind::HaDisarmed,
            "HA disarmed by an operator: no failover, no self-fencing",
        )
    };
    // The switch is what matters; an event that cannot be written is only logged.
    if let Err(e) = node
        .write(Request::anonymous(Command::event(kind, None, None, what)))
        .await
    {
        tracing::warn!(error = %e, "cannot record the HA switch event");
    }
    match reply {
        Reply::Ha {
            disarmed,
            hosts_not_armed,
        } => Ok(pb::HaStatus {
            disarmed,
            hosts_not_armed,
        }),
        other => Err(Status::internal(format!("unexpected reply {other:?}"))),
    }
}

pub async fn get(node: &RaftNode, stale: bool) -> Result<pb::HaStatus, Status> {
    fresh_read(node, stale).await?;
    Ok(node.view().read(|d| status(&d.state)))
}

fn status(state: &ClusterState) -> pb::HaStatus {
    pb::HaStatus {
        disarmed: state.ha.disarmed,
        hosts_not_armed: state.hosts_not_armed(),
    }
}
