//! A failover drill's record: what the drill did to its host and what the cluster did about
//! it, kept in the drill operation's progress (`Progress::Drill`) so that any controller,
//! and `drover drill report`, reads the same report. The leader's `DrillActor` fills it in
//! phase by phase; the verdict is set once, when the drill ends.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// How a drill takes its host away from the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DrillMode {
    /// hostd drops its session and refuses new ones for the drill's duration: the lease
    /// lapses and the host fences itself, exactly as on a real partition.
    Isolate,
    /// hostd exits (its service manager starts it again, cut off until the drill ends):
    /// hostd-watchdog alone fences, as for a crashed agent. hostd refuses it unless a
    /// watchdog runs beside it.
    StopAgent,
}

impl DrillMode {
    pub const ALL: [DrillMode; 2] = [DrillMode::Isolate, DrillMode::StopAgent];

    pub fn as_str(self) -> &'static str {
        match self {
            DrillMode::Isolate => "isolate",
            DrillMode::StopAgent => "stop-agent",
        }
    }

    pub fn parse(s: &str) -> Option<DrillMode> {
        Self::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

/// Longest a drill may keep its host isolated (hostd restores itself after it too).
pub const MAX_DRILL_DURATION_MS: u64 = 3_600_000;
/// Shortest: less could not even outlast a default lease.
pub const MIN_DRILL_DURATION_MS: u64 = 10_000;

/// Where a drill is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DrillPhase {
    /// Committed; the host is not isolated yet.
    #[default]
    Starting,
    /// The host is cut off; the drill follows the failover.
    Failover,
    /// Isolation ended (failover done, the time was up, or cancelled); waiting for the
    /// host to be trusted again.
    Restoring,
    Done,
}

impl DrillPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            DrillPhase::Starting => "starting",
            DrillPhase::Failover => "failover",
            DrillPhase::Restoring => "restoring",
            DrillPhase::Done => "done",
        }
    }
}

/// What happened to one VM that was on the drilled host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillVm {
    pub ha: bool,
    /// Where the dry-run plan said it would restart (`None`: it would stay down).
    pub planned: Option<String>,
    /// Where it was seen running after the failure, and when (Unix ms).
    pub restarted_on: Option<String>,
    pub running_at_ms: Option<u64>,
    /// Why it did not restart (stays down by design, or could not be placed).
    pub down_reason: Option<String>,
}

/// The drill's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    Passed,
    /// Every reason the drill failed.
    Failed(Vec<String>),
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillReport {
    pub phase: DrillPhase,
    /// When hostd confirmed the isolation (Unix ms, the leader's clock).
    pub isolated_at_ms: Option<u64>,
    /// When the leader committed the host dead, and on what grounds.
    pub dead_at_ms: Option<u64>,
    pub dead_reason: Option<String>,
    /// How the host's guests were stopped: the fence events recorded for it during the
    /// drill (self-fence by lease lapse, fence agent, operator).
    pub fence_path: Vec<String>,
    /// Every VM placed on the host when the drill began.
    pub vms: BTreeMap<String, DrillVm>,
    /// Why the isolation was lifted (every HA VM restarted, time up, cancelled, a leader
    /// change).
    #[serde(default)]
    pub restore_reason: Option<String>,
    /// A leader change cut the drill short: the new leader had not sampled it.
    #[serde(default)]
    pub interrupted: bool,
    /// When isolation was lifted, and when the host was trusted again.
    pub restored_at_ms: Option<u64>,
    pub back_at_ms: Option<u64>,
    /// Never-twice sampling: rounds taken over every host's running domains, and every VM
    /// a round saw running on two hosts.
    pub samples: u64,
    pub violations: Vec<String>,
    /// Set when the drill ends.
    pub verdict: Option<Verdict>,
}

impl DrillReport {
    /// From isolation to the host declared dead.
    pub fn detection_ms(&self) -> Option<u64> {
        Some(self.dead_at_ms?.saturating_sub(self.isolated_at_ms?))
    }

    /// From isolation to `vm` running elsewhere.
    pub fn restart_ms(&self, vm: &str) -> Option<u64> {
        let running = self.vms.get(vm)?.running_at_ms?;
        Some(running.saturating_sub(self.isolated_at_ms?))
    }
}
