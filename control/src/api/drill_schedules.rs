//! `DrillService/CreateSchedule`, `ListSchedules`, `DeleteSchedule`: scheduled
//! host-failure drills in the replicated state (the leader's `DrillCadence` runs them).

use drover_proto::v1 as pb;
use drover_raft::model::{DrillMode, DrillSchedule, Progress, Verdict, Window};
use drover_raft::{Command, RaftNode};
use tonic::metadata::MetadataMap;
use tonic::Status;

use super::cluster::{applied, fresh_read};
use super::write::commit;

pub async fn create(
    node: &RaftNode,
    meta: &MetadataMap,
    req: pb::CreateDrillScheduleRequest,
) -> Result<pb::DrillSchedule, Status> {
    if !(req.kind.is_empty() || req.kind == "host-failure") {
        return Err(Status::invalid_argument(format!(
            "only host-failure drills can be scheduled, not {:?}",
            req.kind
        )));
    }
    let mode = match req.mode.as_str() {
        "" => DrillMode::Isolate,
        m => DrillMode::parse(m)
            .ok_or_else(|| Status::invalid_argument(format!("unknown drill mode {m:?}")))?,
    };
    let window = match req.window.as_str() {
        "" => None,
        w => Some(Window::parse(w).map_err(Status::invalid_argument)?),
    };
    let name = req.name.clone();
    commit(
        node,
        meta,
        Command::CreateDrillSchedule {
            name: req.name,
            mode,
            every_ms: req.every_ms,
            hosts: req.hosts,
            window,
            at_ms: drover_raft::wall_clock_ms(),
        },
    )
    .await?;
    // The commit may have been forwarded to the leader: catch up before reading.
    fresh_read(node, false).await?;
    node.view()
        .read(|d| {
            d.state
                .drill_schedules
                .get(&name)
                .map(|s| to_pb(s, &d.state))
        })
        .ok_or_else(|| Status::not_found(format!("drill schedule {name:?} not found")))
}

pub async fn list(node: &RaftNode, stale: bool) -> Result<(u64, Vec<pb::DrillSchedule>), Status> {
    fresh_read(node, stale).await?;
    Ok(node.view().read(|d| {
        let all = d
            .state
            .drill_schedules
            .values()
            .map(|s| to_pb(s, &d.state))
            .collect();
        (applied(d), all)
    }))
}

pub async fn delete(node: &RaftNode, meta: &MetadataMap, name: String) -> Result<(), Status> {
    commit(node, meta, Command::DeleteDrillSchedule { name }).await?;
    Ok(())
}

fn to_pb(s: &DrillSchedule, state: &drover_raft::model::ClusterState) -> pb::DrillSchedule {
    pb::DrillSchedule {
        name: s.name.clone(),
        kind: "host-failure".into(),
        mode: s.mode.as_str().into(),
        every_ms: s.every_ms,
        hosts: s.hosts.clone(),
        window: s.window.map(Window::to_text).unwrap_or_default(),
        last_started_ms: s.last_started_ms.unwrap_or(0),
        runs: s
            .runs
            .iter()
            .map(|r| {
                let op = state.operations.ops.get(&r.op);
                let verdict = op.and_then(|o| match &o.progress {
                    Progress::Drill(d) => d.verdict.as_ref(),
                    _ => None,
                });
                pb::ScheduledDrillRun {
                    op: r.op,
                    host: r.host.clone(),
                    at_ms: r.at_ms,
                    state: op.map(|o| o.state.as_str().to_string()).unwrap_or_default(),
                    verdict: match verdict {
                        Some(Verdict::Passed) => "passed".into(),
                        Some(Verdict::Failed(_)) => "failed".into(),
                        None => String::new(),
                    },
                }
            })
            .collect(),
    }
}
