//! The cluster-wide HA switch behind `drover ha arm|disarm|status` (ClusterService's
//! `SetHaArmed` and `GetHaStatus`).

use drover_proto::v1 as pb;
use drover_raft::model::{ClusterState, EventKind, LeaseConfig};
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
            ..node.view().read(|d| status(&d.state))
        }),
        other => Err(Status::internal(format!("unexpected reply {other:?}"))),
    }
}

/// `drover ha lease`: zeros keep the current value.
pub async fn set_lease(
    node: &RaftNode,
    meta: &MetadataMap,
    req: pb::SetLeaseRequest,
) -> Result<pb::HaStatus, Status> {
    fresh_read(node, false).await?;
    let current = node.view().read(|d| d.state.ha.lease).unwrap_or_default();
    let keep = |v: u64, old: u64| if v == 0 { old } else { v };
    let config = LeaseConfig {
        heartbeat_ms: keep(req.heartbeat_ms, current.heartbeat_ms),
        ttl_ms: keep(req.ttl_ms, current.ttl_ms),
        margin_ms: keep(req.margin_ms, current.margin_ms),
    };
    tracing::warn!(?config, previous = ?current, "lease changed by an operator");
    commit(node, meta, Command::SetLeaseConfig { config }).await?;
    get(node, false).await
}

pub async fn get(node: &RaftNode, stale: bool) -> Result<pb::HaStatus, Status> {
    fresh_read(node, stale).await?;
    Ok(node.view().read(|d| status(&d.state)))
}

fn status(state: &ClusterState) -> pb::HaStatus {
    let settings = |c: &LeaseConfig| pb::LeaseSettings {
        heartbeat_ms: c.heartbeat_ms,
        ttl_ms: c.ttl_ms,
        margin_ms: c.margin_ms,
    };
    pb::HaStatus {
        disarmed: state.ha.disarmed,
        hosts_not_armed: state.hosts_not_armed(),
        lease: state.ha.lease.as_ref().map(settings),
        previous_lease: state.ha.previous_lease.as_ref().map(settings),
    }
}
