//! A migration drill (`drover drill migration VM`): the VM live-migrates to another host
//! and back, and the report gives each leg's downtime. Each leg is an ordinary migration
//! operation, started by `StartDrillLeg` in the same `apply` that records it in the
//! drill's report, so a leader change can never lose the link between the two.

use serde::{Deserialize, Serialize};

use super::drill::Verdict;
use super::operation::{OpState, Operations, Progress};

/// One migration of the round trip.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillLeg {
    /// The migration operation.
    pub op: u64,
    pub from: String,
    pub to: String,
    /// How the migration ended; `None` while it runs.
    pub state: Option<OpState>,
    /// How long the guest was paused at the switch-over, and the whole migration.
    pub downtime_ms: Option<u64>,
    pub elapsed_ms: Option<u64>,
    pub message: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationDrillReport {
    /// Where the VM ran when the drill began (and must end up again).
    pub home: String,
    pub legs: Vec<DrillLeg>,
    pub verdict: Option<Verdict>,
}

impl MigrationDrillReport {
    /// Pure: the legs brought up to date with their migration operations in `ops`.
    pub fn observe(&self, ops: &Operations) -> MigrationDrillReport {
        let mut r = self.clone();
        for leg in &mut r.legs {
            let Some(op) = ops.ops.get(&leg.op) else {
                continue;
            };
            if op.state.is_finished() {
                leg.state = Some(op.state);
                leg.message.clone_from(&op.message);
            }
            if let Progress::Migration(p) = &op.progress {
                leg.downtime_ms = p.downtime_ms;
                leg.elapsed_ms = Some(p.elapsed_ms);
            }
        }
        r
    }

    /// The leg still running, if any.
    pub fn running_leg(&self) -> Option<&DrillLeg> {
        self.legs.iter().find(|l| l.state.is_none())
    }
}
