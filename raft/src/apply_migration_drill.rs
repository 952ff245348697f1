//! `apply` for migration drills: start (a running VM, no other drill, no migration of it
//! under way), each leg (a migration started and recorded in the drill's report in one
//! entry), and the end with the report and its verdict.

use crate::command::{ApplyError, ApplyResult, Reply};
use crate::model::{
    ClusterState, DesiredState, DrillLeg, MigrationDrillReport, MigrationPolicy, ObservedState,
    OpKind, OpState, Progress,
};

impl ClusterState {
    pub(crate) fn start_migration_drill(&mut self, vm: &str, at_ms: u64) -> ApplyResult {
        let v = self
            .vms
            .get(vm)
            .ok_or_else(|| ApplyError::UnknownVm(vm.to_string()))?;
        let home = match (&v.host, v.desired, v.observed) {
            (Some(h), DesiredState::Running, ObservedState::Running) => h.clone(),
            _ => {
                return Err(ApplyError::VmNotRunning {
                    vm: vm.to_string(),
                    state: v.observed.as_str().into(),
                })
            }
        };
        if let Some(op) = v.migration {
            return Err(ApplyError::VmMigrating {
                vm: vm.to_string(),
                op,
            });
        }
        self.no_drill_running()?;
        let id = self
            .operations
            .start(OpKind::MigrationDrill { vm: vm.to_string() }, at_ms);
        if let Some(op) = self.operations.ops.get_mut(&id) {
            op.progress = Progress::MigrationDrill(MigrationDrillReport {
                home,
                ..MigrationDrillReport::default()
            });
        }
        Ok(Reply::Operation(self.operations.ops[&id].clone()))
    }

    /// Starts the drill's next leg: a migration of its VM to `dst`, with the default
    /// policy, recorded in the report in the same entry.
    pub(crate) fn start_drill_leg(&mut self, op: u64, dst: &str, at_ms: u64) -> ApplyResult {
        let (vm, report) = self.migration_drill(op)?;
        let report = report.observe(&self.operations);
        if let Some(leg) = report.running_leg() {
            return Err(ApplyError::InvalidDrill(format!(
                "leg {} (migration {}) of drill {op} is still running",
                report.legs.len(),
                leg.op
            )));
        }
        if report.legs.len() >= 2 {
            return Err(ApplyError::InvalidDrill(format!(
                "drill {op} has made its round trip already"
            )));
        }
        let generation = self.vms.get(&vm).map_or(0, |v| v.generation);
        let from = self
            .vms
            .get(&vm)
            .and_then(|v| v.host.clone())
            .unwrap_or_default();
        let started =
            self.start_migration(&vm, generation, dst, &MigrationPolicy::default(), at_ms)?;
        let Reply::Operation(migration) = &started else {
            return Err(ApplyError::InvalidDrill(
                "a migration started no operation".into(),
            ));
        };
        let mut report = report;
        report.legs.push(DrillLeg {
            op: migration.id,
            from,
            to: dst.to_string(),
            ..DrillLeg::default()
        });
        if let Some(o) = self.operations.ops.get_mut(&op) {
            o.progress = Progress::MigrationDrill(report);
        }
        Ok(started)
    }

    pub(crate) fn finish_migration_drill(
        &mut self,
        op: u64,
        state: OpState,
        message: &str,
        report: &MigrationDrillReport,
        at_ms: u64,
    ) -> ApplyResult {
        if state == OpState::Running || report.verdict.is_none() {
            return Err(ApplyError::InvalidDrill(
                "a finished drill ends the operation and carries its verdict".into(),
            ));
        }
        self.migration_drill(op)?;
        if let Some(o) = self.operations.ops.get_mut(&op) {
            o.progress = Progress::MigrationDrill(report.clone());
        }
        self.operations.finish(op, state, message, at_ms);
        Ok(Reply::Nothing)
    }

    /// The running migration drill `op`: its VM and report.
    fn migration_drill(&mut self, op: u64) -> Result<(String, MigrationDrillReport), ApplyError> {
        let o = self.running_op(op, "drill")?;
        match (&o.kind, &o.progress) {
            (OpKind::MigrationDrill { vm }, Progress::MigrationDrill(r)) => {
                Ok((vm.clone(), r.clone()))
            }
            (other, _) => Err(ApplyError::InvalidDrill(format!(
                "operation {op} is not a migration drill ({})",
                other.drill_target()
            ))),
        }
    }
}
