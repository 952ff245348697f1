//! `apply` for leader-failover drills: start (one drill at a time, a leader and an
//! observer that are different controllers, a duration in bounds), each probe write
//! recorded, and the end, where the observer's acknowledged probes are checked against
//! those applied here (see [`crate::model::LeaderDrillReport::conclude`]).

use crate::command::{ApplyError, ApplyResult, Reply};
use crate::model::{
    ClusterState, LeaderDrillMeasure, LeaderDrillMode, LeaderDrillReport, OpKind, OpState,
    Progress, Verdict, MAX_LEADER_DRILL_MS, MAX_PROBES, MIN_DRILL_DURATION_MS,
};

impl ClusterState {
    pub(crate) fn start_leader_drill(
        &mut self,
        mode: LeaderDrillMode,
        leader: u64,
        observer: u64,
        max_duration_ms: u64,
        at_ms: u64,
    ) -> ApplyResult {
        if !(MIN_DRILL_DURATION_MS..=MAX_LEADER_DRILL_MS).contains(&max_duration_ms) {
            return Err(ApplyError::InvalidDrill(format!(
                "the longest leader drill must be between {} s and {} s, not {} ms",
                MIN_DRILL_DURATION_MS / 1000,
                MAX_LEADER_DRILL_MS / 1000,
                max_duration_ms
            )));
        }
        if leader == 0 || observer == 0 || leader == observer {
            return Err(ApplyError::InvalidDrill(format!(
                "the observer ({observer}) must be a controller other than the leader ({leader})"
            )));
        }
        self.no_drill_running()?;
        let id = self.operations.start(
            OpKind::LeaderDrill {
                mode,
                leader,
                observer,
                max_duration_ms,
            },
            at_ms,
        );
        Ok(Reply::Operation(self.operations.ops[&id].clone()))
    }

    pub(crate) fn drill_probe(&mut self, op: u64, seq: u64) -> ApplyResult {
        let o = self.running_op(op, "drill")?;
        let Progress::LeaderDrill(report) = &mut o.progress else {
            return Err(ApplyError::InvalidDrill(format!(
                "operation {op} is not a leader drill"
            )));
        };
        if report.applied.len() >= MAX_PROBES {
            return Err(ApplyError::InvalidDrill(format!(
                "drill {op} has written its {MAX_PROBES} probes"
            )));
        }
        if report.applied.insert(seq) {
            report.applied_count += 1;
        }
        Ok(Reply::Nothing)
    }

    pub(crate) fn finish_leader_drill(
        &mut self,
        op: u64,
        measure: &LeaderDrillMeasure,
        at_ms: u64,
    ) -> ApplyResult {
        let o = self.running_op(op, "drill")?;
        let Progress::LeaderDrill(report) = &o.progress else {
            return Err(ApplyError::InvalidDrill(format!(
                "operation {op} is not a leader drill"
            )));
        };
        let cancelled = o.cancel_requested;
        let (done, verdict): (LeaderDrillReport, Verdict) =
            report.conclude(measure.clone(), cancelled);
        let (state, message) = match &verdict {
            Verdict::Passed => (
                OpState::Succeeded,
                format!(
                    "passed: writes unavailable for {} ms, a new leader ({}) acknowledged one {} ms after the cut, no acknowledged write lost",
                    measure.unavailable_ms.unwrap_or(0),
                    measure.new_leader.unwrap_or(0),
                    measure.time_to_leader_ms.unwrap_or(0)
                ),
            ),
            Verdict::Failed(why) => (
                if cancelled {
                    OpState::Cancelled
                } else {
                    OpState::Failed
                },
                format!("failed: {}", why.join("; ")),
            ),
        };
        o.progress = Progress::LeaderDrill(done);
        self.operations.finish(op, state, &message, at_ms);
        Ok(Reply::Nothing)
    }
}
