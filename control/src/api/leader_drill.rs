//! The leader-failover drill's RPCs (`DrillService/StartLeaderFailover`, `Probe`,
//! `CutLeader`), called from [`super::DrillApi`]. Starting one picks the observer (the
//! lowest-numbered other voter that answers) and refuses when losing the leader now would
//! leave no quorum; a probe is committed only by the leader, which says who it is; the cut
//! hands leadership on or stops this controller.

use std::time::Duration;

use drover_proto::transport::TlsHandle;
use drover_proto::v1 as pb;
use drover_raft::model::{LeaderDrillMode, OpKind};
use drover_raft::{Command, RaftNode, Reply, Request};
use tokio::sync::watch;
use tonic::metadata::MetadataMap;
use tonic::Status;

use super::cluster::members;
use super::convert;
use super::errors::{committed, leader_only};
use super::write::{commit, request_id};

/// How long the observer may take when the request does not say.
const DEFAULT_DURATION_MS: u64 = 60_000;

/// Pure: the observer for a drill of `leader` among `voters` (id, answers now), or why
/// the cluster could not survive losing its leader now.
pub fn choose_observer(leader: u64, voters: &[(u64, bool)]) -> Result<u64, String> {
    let n = voters.len();
    if n < 3 {
        return Err(format!(
            "a leader drill needs at least three voters ({n} now): with fewer, losing the leader loses the quorum"
        ));
    }
    let healthy = voters.iter().filter(|(_, ok)| *ok).count();
    let quorum = n / 2 + 1;
    if healthy.saturating_sub(1) < quorum {
        let down: Vec<String> = voters
            .iter()
            .filter(|(_, ok)| !ok)
            .map(|(id, _)| id.to_string())
            .collect();
        return Err(format!(
            "controllers {} do not answer: without the leader, {} of {n} voters are fewer than the quorum of {quorum}",
            down.join(", "),
            healthy.saturating_sub(1)
        ));
    }
    voters
        .iter()
        .filter(|(id, ok)| *ok && *id != leader)
        .map(|(id, _)| *id)
        .min()
        .ok_or_else(|| "no other voter answers".to_string())
}

pub async fn start(
    node: &RaftNode,
    tls: &TlsHandle,
    meta: &MetadataMap,
    req: pb::StartLeaderFailoverRequest,
) -> Result<pb::Operation, Status> {
    let mode = match req.mode.as_str() {
        "" => LeaderDrillMode::StepDown,
        other => LeaderDrillMode::parse(other).ok_or_else(|| {
            let known: Vec<&str> = LeaderDrillMode::ALL.iter().map(|m| m.as_str()).collect();
            Status::invalid_argument(format!(
                "unknown leader drill mode {other:?}: one of {}",
                known.join(", ")
            ))
        })?,
    };
    leader_only(node)?;
    let me = pb::Member {
        id: node.id(),
        ..Default::default()
    };
    let voters: Vec<(u64, bool)> = members(node, me, tls)
        .await
        .iter()
        .filter(|m| m.voter)
        .map(|m| (m.id, m.error.is_empty()))
        .collect();
    let observer = choose_observer(node.id(), &voters)
        .map_err(|why| Status::failed_precondition(format!("leader drill refused: {why}")))?;
    let cmd = Command::StartLeaderDrill {
        mode,
        leader: node.id(),
        observer,
        max_duration_ms: match req.max_duration_ms {
            0 => DEFAULT_DURATION_MS,
            ms => ms,
        },
        at_ms: drover_raft::wall_clock_ms(),
    };
    match commit(node, meta, cmd).await? {
        Reply::Operation(op) => Ok(convert::operation(&op)),
        other => Err(Status::internal(format!("unexpected reply {other:?}"))),
    }
}

/// Commits one probe, only here on the leader (so that the answer can say who committed
/// it; elsewhere the client is sent to the leader).
pub async fn probe(
    node: &RaftNode,
    meta: &MetadataMap,
    req: pb::ProbeRequest,
) -> Result<pb::ProbeResponse, Status> {
    leader_only(node)?;
    let id = request_id(meta)?;
    let cmd = Command::DrillProbe {
        op: req.op,
        seq: req.seq,
    };
    committed(node.write_local(Request { id, command: cmd }).await)?;
    Ok(pb::ProbeResponse {
        served_by: node.id(),
        term: node.metrics().current_term,
    })
}

/// The cut: this leader hands leadership to another voter, or stops its controller
/// (`stop` is told the drill's id; the server then ends, exit code 75).
pub async fn cut(
    node: &RaftNode,
    election_max: Duration,
    (stop, data_dir): (&watch::Sender<Option<u64>>, &std::path::Path),
    req: pb::CutLeaderRequest,
) -> Result<pb::CutLeaderResponse, Status> {
    leader_only(node)?;
    let kind = node.view().read(|d| {
        d.state
            .operations
            .ops
            .get(&req.op)
            .filter(|o| !o.state.is_finished())
            .map(|o| (o.kind.clone(), o.started_at_ms))
    });
    let Some((
        OpKind::LeaderDrill {
            mode,
            leader,
            observer,
            max_duration_ms,
        },
        started_at_ms,
    )) = kind
    else {
        return Err(Status::failed_precondition(format!(
            "operation {} is not a running leader drill",
            req.op
        )));
    };
    if leader != node.id() {
        return Err(Status::failed_precondition(format!(
            "drill {} cuts controller {leader}, not this one ({})",
            req.op,
            node.id()
        )));
    }
    match mode {
        LeaderDrillMode::StepDown => {
            let voters = node
                .metrics()
                .membership_config
                .membership()
                .voter_ids()
                .collect::<Vec<_>>();
            // Not to the observer when another voter exists: its probes then go through
            // leader discovery, as a client's would.
            let target = voters
                .iter()
                .copied()
                .filter(|v| *v != leader && *v != observer)
                .min()
                .unwrap_or(observer);
            tracing::warn!(op = req.op, target, "leader drill: stepping down");
            node.transfer_leader(target, election_max)
                .await
                .map_err(|e| Status::failed_precondition(format!("cannot step down: {e}")))?;
            Ok(pb::CutLeaderResponse {
                leader_after: target,
            })
        }
        LeaderDrillMode::Stop => {
            let m = node.metrics();
            let peers = m
                .membership_config
                .membership()
                .nodes()
                .filter(|(id, _)| **id != node.id())
                .map(|(_, n)| n.addr.clone())
                .collect();
            let record = crate::drill_hold::DrillStop {
                drill: req.op,
                term: m.current_term,
                until_ms: started_at_ms + max_duration_ms,
                peers,
            };
            // Without the record, a quick restart would resume leadership at once.
            crate::drill_hold::record(data_dir, &record)
                .map_err(|e| Status::internal(format!("cannot record the drill's stop: {e}")))?;
            tracing::warn!(op = req.op, "leader drill: stopping this controller");
            stop.send_replace(Some(req.op));
            Ok(pb::CutLeaderResponse { leader_after: 0 })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_observer_is_the_lowest_other_voter_that_answers() {
        assert_eq!(
            choose_observer(1, &[(1, true), (2, true), (3, true)]),
            Ok(2)
        );
        assert_eq!(
            choose_observer(2, &[(1, true), (2, true), (3, true)]),
            Ok(1)
        );
        assert_eq!(
            choose_observer(1, &[(1, true), (2, true), (3, true), (4, false), (5, true)]),
            Ok(2),
            "five voters, one down: four answer, three remain without the leader"
        );
    }

    #[test]
    fn a_drill_that_would_leave_no_quorum_is_refused_with_the_reason() {
        let two = choose_observer(1, &[(1, true), (2, true)]).unwrap_err();
        assert!(two.contains("at least three voters"), "{two}");
        let down = choose_observer(1, &[(1, true), (2, true), (3, false)]).unwrap_err();
        assert!(down.contains("controllers 3 do not answer"), "{down}");
    }
}
