//! `apply` for failover drills: start (refused unless the cluster, as the state shows it,
//! could survive losing the host now), progress, finish. Kept apart from `apply.rs`, which
//! calls in here from one arm per command. The checks that need more than the state (the
//! controllers' health, the scheduler's capacity answer) are the API's, before it commits.

use crate::command::{ApplyError, ApplyResult, Reply};
use crate::model::{
    ClusterState, DesiredState, DrillMode, DrillPhase, DrillReport, DrillVm, HostHealth, OpKind,
    OpState, Progress, MAX_DRILL_DURATION_MS, MIN_DRILL_DURATION_MS,
};

impl ClusterState {
    pub(crate) fn start_drill(
        &mut self,
        host: &str,
        mode: DrillMode,
        max_duration_ms: u64,
        at_ms: u64,
    ) -> ApplyResult {
        if !(MIN_DRILL_DURATION_MS..=MAX_DRILL_DURATION_MS).contains(&max_duration_ms) {
            return Err(ApplyError::InvalidDrill(format!(
                "the longest isolation must be between {} s and {} s, not {} ms",
                MIN_DRILL_DURATION_MS / 1000,
                MAX_DRILL_DURATION_MS / 1000,
                max_duration_ms
            )));
        }
        let h = self
            .hosts
            .get(host)
            .ok_or_else(|| ApplyError::UnknownHost(host.to_string()))?;
        self.no_drill_running()?;
        if self.ha.disarmed {
            return Err(ApplyError::DrillHaDisarmed);
        }
        if h.health != HostHealth::Up {
            return Err(ApplyError::HostNotUp {
                host: host.to_string(),
                health: h.health.as_str().into(),
            });
        }
        // Without self-fencing armed the lease can never declare it dead: the drill would
        // only wait out its time.
        if !h.fencing_armed {
            return Err(ApplyError::FencingNotArmed(host.to_string()));
        }
        if let Some(other) = self
            .hosts
            .values()
            .find(|o| o.name != host && matches!(o.health, HostHealth::Suspect | HostHealth::Dead))
        {
            return Err(ApplyError::OtherHostDown {
                host: other.name.clone(),
                health: other.health.as_str().into(),
            });
        }
        if let Some(op) = self
            .operations
            .running()
            .find(|o| o.kind.involves_host(host))
        {
            return Err(ApplyError::HostBusy {
                host: host.to_string(),
                op: op.id,
                kind: op.kind.as_str().into(),
            });
        }
        let vms = self
            .vms
            .values()
            .filter(|v| v.host.as_deref() == Some(host))
            // Stopped or being deleted: the failover does not restart them either.
            .filter(|v| v.desired == DesiredState::Running)
            .map(|v| {
                let entry = DrillVm {
                    ha: v.ha,
                    ..DrillVm::default()
                };
                (v.name.clone(), entry)
            })
            .collect();
        let id = self.operations.start(
            OpKind::Drill {
                host: host.to_string(),
                mode,
                max_duration_ms,
            },
            at_ms,
        );
        if let Some(op) = self.operations.ops.get_mut(&id) {
            op.progress = Progress::Drill(DrillReport {
                vms,
                ..DrillReport::default()
            });
        }
        Ok(Reply::Operation(self.operations.ops[&id].clone()))
    }

    /// One drill at a time, of any kind.
    pub(crate) fn no_drill_running(&self) -> Result<(), ApplyError> {
        match self.operations.running_drill() {
            Some(drill) => Err(ApplyError::DrillRunning {
                op: drill.id,
                target: drill.kind.drill_target(),
            }),
            None => Ok(()),
        }
    }

    pub(crate) fn drill_progress(&mut self, op: u64, report: &DrillReport) -> ApplyResult {
        let o = self.running_op(op, "drill")?;
        host_drill(op, &o.kind)?;
        o.progress = Progress::Drill(report.clone());
        Ok(Reply::Nothing)
    }

    pub(crate) fn finish_drill(
        &mut self,
        op: u64,
        state: OpState,
        message: &str,
        report: &DrillReport,
        at_ms: u64,
    ) -> ApplyResult {
        if state == OpState::Running {
            return Err(ApplyError::OperationFinished {
                id: op,
                state: "running (a finish must end it)".into(),
            });
        }
        if report.verdict.is_none() {
            return Err(ApplyError::InvalidDrill(
                "a finished drill's report must carry its verdict".into(),
            ));
        }
        let o = self.running_op(op, "drill")?;
        host_drill(op, &o.kind)?;
        o.progress = Progress::Drill(DrillReport {
            phase: DrillPhase::Done,
            ..report.clone()
        });
        self.operations.finish(op, state, message, at_ms);
        Ok(Reply::Nothing)
    }
}

/// A host drill's report belongs to a host drill only.
fn host_drill(op: u64, kind: &OpKind) -> Result<(), ApplyError> {
    match kind {
        OpKind::Drill { .. } => Ok(()),
        other => Err(ApplyError::InvalidDrill(format!(
            "operation {op} is not a host drill ({})",
            other.drill_target()
        ))),
    }
}
