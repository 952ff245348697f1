//! Long-running operations an operator starts and watches: a live migration, a host drain,
//! a failover drill.
//! Each has an id (`drover op get ID`), a state, progress and a final message. The leader's
//! coordinators carry them out; what they learn is committed, so any controller (and the
//! next leader) sees the same operation. Finished operations are kept, newest
//! [`MAX_FINISHED_OPS`] (and drills apart, newest [`MAX_FINISHED_DRILLS`]), for
//! `drover op list` and `drover drill history`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::drill::{DrillMode, DrillReport};
use super::leader_drill::{LeaderDrillMode, LeaderDrillReport};
use super::migration_drill::MigrationDrillReport;

/// Finished operations kept (drills apart); running ones are never dropped.
pub const MAX_FINISHED_OPS: usize = 200;
/// Finished drills kept, counted apart, so that a long history of migrations does not
/// push a cluster's drill reports out.
pub const MAX_FINISHED_DRILLS: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpKind {
    /// Live-migrate `vm` from `src` to `dst`. The destination domain carries
    /// `generation`, the VM's generation once the migration completes.
    Migrate {
        vm: String,
        src: String,
        dst: String,
        generation: u64,
        policy: MigrationPolicy,
    },
    /// Migrate every VM off `host`, then put it in maintenance.
    Drain {
        host: String,
        /// Give up (rather than wait) when a VM can go nowhere.
        stop_when_blocked: bool,
    },
    /// Take `host` away from the cluster for real (see [`DrillMode`]), follow the failover,
    /// restore the host; the report is the operation's progress.
    Drill {
        host: String,
        mode: DrillMode,
        /// Longest the host stays isolated; hostd lifts the isolation itself after it.
        max_duration_ms: u64,
    },
    /// Make `leader` lose leadership (see [`LeaderDrillMode`]) while controller
    /// `observer` writes probes through the API and measures what clients see.
    LeaderDrill {
        mode: LeaderDrillMode,
        leader: u64,
        observer: u64,
        /// The observer gives up (and the drill fails) after this long.
        max_duration_ms: u64,
    },
    /// Live-migrate `vm` to another host and back (two migration operations, the legs).
    MigrationDrill { vm: String },
}

impl OpKind {
    /// Whether the operation acts on `host` (moves VMs off or onto it, or drills it).
    pub fn involves_host(&self, host: &str) -> bool {
        match self {
            OpKind::Migrate { src, dst, .. } => src == host || dst == host,
            OpKind::Drain { host: h, .. } | OpKind::Drill { host: h, .. } => h == host,
            // Its legs are migrations, which involve their hosts themselves.
            OpKind::LeaderDrill { .. } | OpKind::MigrationDrill { .. } => false,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            OpKind::Migrate { .. } => "migrate",
            OpKind::Drain { .. } => "drain",
            OpKind::Drill { .. } | OpKind::LeaderDrill { .. } | OpKind::MigrationDrill { .. } => {
                "drill"
            }
        }
    }

    /// Whether this is a drill of any kind (one runs at a time).
    pub fn is_drill(&self) -> bool {
        match self {
            OpKind::Drill { .. } | OpKind::LeaderDrill { .. } | OpKind::MigrationDrill { .. } => {
                true
            }
            OpKind::Migrate { .. } | OpKind::Drain { .. } => false,
        }
    }

    /// What a drill drills, in words (empty for other operations).
    pub fn drill_target(&self) -> String {
        match self {
            OpKind::Drill { host, .. } => format!("host {host}"),
            OpKind::LeaderDrill { leader, .. } => format!("leader {leader}"),
            OpKind::MigrationDrill { vm } => format!("VM {vm}"),
            OpKind::Migrate { .. } | OpKind::Drain { .. } => String::new(),
        }
    }
}

/// How a live migration may behave (libvirt's knobs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationPolicy {
    /// Longest pause the guest may see when it switches hosts.
    pub max_downtime_ms: u64,
    /// Bandwidth cap in MiB/s; 0 = libvirt's default (unlimited).
    pub bandwidth_mibps: u64,
    /// Let QEMU throttle the guest's vCPUs when memory is dirtied faster than it is sent.
    pub auto_converge: bool,
    /// Abort when the remaining data has not shrunk for this long.
    pub progress_timeout_ms: u64,
}

impl Default for MigrationPolicy {
    fn default() -> Self {
        Self {
            max_downtime_ms: 300,
            bandwidth_mibps: 0,
            auto_converge: true,
            progress_timeout_ms: 150_000,
        }
    }
}

impl MigrationPolicy {
    pub fn validate(&self) -> Result<(), String> {
        if self.max_downtime_ms == 0 {
            return Err("max downtime must be at least 1 ms".into());
        }
        if self.max_downtime_ms > 60_000 {
            return Err(format!(
                "max downtime {} ms is over a minute; that is not a live migration",
                self.max_downtime_ms
            ));
        }
        if self.progress_timeout_ms < 1_000 {
            return Err("progress timeout must be at least 1000 ms".into());
        }
        if self.progress_timeout_ms > MAX_PROGRESS_TIMEOUT_MS {
            return Err(format!(
                "progress timeout {} ms is over a day",
                self.progress_timeout_ms
            ));
        }
        if self.bandwidth_mibps > MAX_BANDWIDTH_MIBPS {
            return Err(format!(
                "bandwidth {} MiB/s is above {MAX_BANDWIDTH_MIBPS} MiB/s (about 8 Tbit/s; 0 means unlimited)",
                self.bandwidth_mibps
            ));
        }
        Ok(())
    }
}

/// Highest migration bandwidth cap accepted. QEMU counts bytes per second in an i64, so a
/// cap in MiB/s above 2^43 overflows there; this is far below that and far above any link.
pub const MAX_BANDWIDTH_MIBPS: u64 = 1_000_000;
/// Longest a migration may go without progress before it is aborted.
const MAX_PROGRESS_TIMEOUT_MS: u64 = 24 * 3600 * 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpState {
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl OpState {
    pub fn as_str(self) -> &'static str {
        match self {
            OpState::Running => "running",
            OpState::Succeeded => "succeeded",
            OpState::Failed => "failed",
            OpState::Cancelled => "cancelled",
        }
    }

    pub fn is_finished(self) -> bool {
        self != OpState::Running
    }
}

/// A migration's progress as libvirt's job statistics report it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MigrationProgress {
    pub data_total: u64,
    pub data_processed: u64,
    pub data_remaining: u64,
    /// Guest memory dirtied per second, bytes.
    pub dirty_rate: u64,
    pub iteration: u64,
    pub elapsed_ms: u64,
    /// Set when the migration completed: how long the guest was paused.
    pub downtime_ms: Option<u64>,
}

/// A drain's progress: VMs still on the host, and why some of them cannot move now.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainProgress {
    pub total: u32,
    pub remaining: Vec<String>,
    /// VM → why no host can take it.
    pub blocked: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Progress {
    None,
    Migration(MigrationProgress),
    Drain(DrainProgress),
    Drill(DrillReport),
    LeaderDrill(LeaderDrillReport),
    MigrationDrill(MigrationDrillReport),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operation {
    pub id: u64,
    pub kind: OpKind,
    pub state: OpState,
    pub started_at_ms: u64,
    pub finished_at_ms: Option<u64>,
    /// An operator asked to cancel; the coordinator aborts and finishes it `Cancelled`.
    pub cancel_requested: bool,
    pub progress: Progress,
    /// How it ended (or why it is stuck), in words.
    pub message: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Operations {
    pub next_id: u64,
    pub ops: BTreeMap<u64, Operation>,
}

impl Operations {
    /// Adds a running operation; returns its id.
    pub fn start(&mut self, kind: OpKind, at_ms: u64) -> u64 {
        self.next_id += 1;
        let id = self.next_id;
        let progress = match kind {
            OpKind::Migrate { .. } => Progress::Migration(MigrationProgress::default()),
            OpKind::Drain { .. } => Progress::Drain(DrainProgress::default()),
            OpKind::Drill { .. } => Progress::Drill(DrillReport::default()),
            OpKind::LeaderDrill { .. } => Progress::LeaderDrill(LeaderDrillReport::default()),
            OpKind::MigrationDrill { .. } => {
                Progress::MigrationDrill(MigrationDrillReport::default())
            }
        };
        self.ops.insert(
            id,
            Operation {
                id,
                kind,
                state: OpState::Running,
                started_at_ms: at_ms,
                finished_at_ms: None,
                cancel_requested: false,
                progress,
                message: String::new(),
            },
        );
        id
    }

    /// Marks `id` finished and drops the oldest finished operations beyond the bounds
    /// (one for drills, one for the rest).
    pub fn finish(&mut self, id: u64, state: OpState, message: &str, at_ms: u64) {
        if let Some(op) = self.ops.get_mut(&id) {
            op.state = state;
            op.finished_at_ms = Some(at_ms);
            op.message = message.to_string();
        }
        for (drills, bound) in [(false, MAX_FINISHED_OPS), (true, MAX_FINISHED_DRILLS)] {
            let finished: Vec<u64> = self
                .ops
                .values()
                .filter(|o| o.state.is_finished() && o.kind.is_drill() == drills)
                .map(|o| o.id)
                .collect();
            for old in finished.iter().take(finished.len().saturating_sub(bound)) {
                self.ops.remove(old);
            }
        }
    }

    pub fn running(&self) -> impl Iterator<Item = &Operation> {
        self.ops.values().filter(|o| o.state == OpState::Running)
    }

    /// The running drill, if any (one at a time in the cluster: a drill is one host
    /// failure, and a second on top of it is what a drill must never cause).
    pub fn running_drill(&self) -> Option<&Operation> {
        self.running().find(|o| o.kind.is_drill())
    }

    /// The running drain of `host`, if any.
    pub fn drain_of(&self, host: &str) -> Option<&Operation> {
        self.running()
            .find(|o| matches!(&o.kind, OpKind::Drain { host: h, .. } if h == host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(host: &str) -> OpKind {
        OpKind::Drain {
            host: host.into(),
            stop_when_blocked: false,
        }
    }

    #[test]
    fn ids_grow_and_finished_ones_are_bounded() {
        let mut ops = Operations::default();
        let keep = ops.start(drain("never-finishes"), 0);
        for i in 0..(MAX_FINISHED_OPS as u64 + 10) {
            let id = ops.start(drain("h"), i);
            ops.finish(id, OpState::Succeeded, "done", i);
        }
        assert_eq!(ops.ops.len(), MAX_FINISHED_OPS + 1);
        assert!(ops.ops.contains_key(&keep), "running ops are never dropped");
        assert_eq!(ops.next_id, MAX_FINISHED_OPS as u64 + 11);
        // The oldest finished went first.
        assert!(!ops.ops.contains_key(&2));
        assert!(ops.ops.contains_key(&(MAX_FINISHED_OPS as u64 + 11)));
    }

    #[test]
    fn drills_are_kept_apart_from_the_other_operations() {
        let mut ops = Operations::default();
        let drill = ops.start(
            OpKind::Drill {
                host: "h1".into(),
                mode: DrillMode::Isolate,
                max_duration_ms: 60_000,
            },
            0,
        );
        ops.finish(drill, OpState::Succeeded, "passed", 1);
        for i in 0..(MAX_FINISHED_OPS as u64 + 10) {
            let id = ops.start(drain("h"), i);
            ops.finish(id, OpState::Succeeded, "done", i);
        }
        assert!(
            ops.ops.contains_key(&drill),
            "a drill report outlives 200 later drains"
        );
        for i in 0..(MAX_FINISHED_DRILLS as u64) {
            let id = ops.start(
                OpKind::LeaderDrill {
                    mode: LeaderDrillMode::StepDown,
                    leader: 1,
                    observer: 2,
                    max_duration_ms: 60_000,
                },
                i,
            );
            ops.finish(id, OpState::Succeeded, "passed", i);
        }
        assert!(
            !ops.ops.contains_key(&drill),
            "drills have a bound of their own"
        );
        assert_eq!(
            ops.ops.values().filter(|o| o.kind.is_drill()).count(),
            MAX_FINISHED_DRILLS
        );
    }

    #[test]
    fn policy_validation_names_the_problem() {
        assert!(MigrationPolicy::default().validate().is_ok());
        let p = MigrationPolicy {
            max_downtime_ms: 0,
            ..Default::default()
        };
        assert!(p.validate().unwrap_err().contains("downtime"));
        let p = MigrationPolicy {
            progress_timeout_ms: 5,
            ..Default::default()
        };
        assert!(p.validate().unwrap_err().contains("progress timeout"));
        let p = MigrationPolicy {
            bandwidth_mibps: MAX_BANDWIDTH_MIBPS + 1,
            ..Default::default()
        };
        assert!(p.validate().unwrap_err().contains("bandwidth"));
        let p = MigrationPolicy {
            bandwidth_mibps: MAX_BANDWIDTH_MIBPS,
            ..Default::default()
        };
        assert!(p.validate().is_ok());
    }
}
