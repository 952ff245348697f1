//! A leader-failover drill (`drover drill leader-failover`): the leader steps down (hands
//! leadership to another voter, as `cluster transfer-leader` does) or its controller
//! stops, while an observer — another controller, acting as a client through the public
//! API — writes a small probe entry every few tens of milliseconds. The report is what
//! clients saw: how long no write was acknowledged, how long until a new leader
//! acknowledged one, and whether any acknowledged probe is missing from the state.
//!
//! The state machine records every probe it applies ([`LeaderDrillReport::applied`]); the
//! observer reports the probes it saw acknowledged; [`LeaderDrillReport::conclude`]
//! compares the two in `apply`, so the lost-write check is as replicated as the writes.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use super::drill::Verdict;

/// How the leader goes away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaderDrillMode {
    /// A planned handover to another voter (what an upgrade does).
    StepDown,
    /// The leader's controller stops (exit code 75, for its service manager to start it
    /// again): the others elect a new leader after their election timeout, as on a crash.
    Stop,
}

impl LeaderDrillMode {
    pub const ALL: [LeaderDrillMode; 2] = [LeaderDrillMode::StepDown, LeaderDrillMode::Stop];

    pub fn as_str(self) -> &'static str {
        match self {
            LeaderDrillMode::StepDown => "step-down",
            LeaderDrillMode::Stop => "stop",
        }
    }

    pub fn parse(s: &str) -> Option<LeaderDrillMode> {
        Self::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

/// Longest a leader drill may run: a failover takes seconds; this bounds the probes.
pub const MAX_LEADER_DRILL_MS: u64 = 600_000;
/// Most probes one drill may write (the observer's 20 a second over the longest drill):
/// the applied set lives in the state while the drill runs.
pub const MAX_PROBES: usize = 12_000;

/// What the observer measured, as it reports it at the end.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderDrillMeasure {
    /// The first other controller that acknowledged a probe after the cut.
    pub new_leader: Option<u64>,
    /// Probes sent, and by outcome: acknowledged (their sequence numbers), refused
    /// (certainly not applied), unknown (no answer in time: may or may not be applied).
    pub sent: u64,
    pub acked: Vec<u64>,
    pub failed: u64,
    pub unknown: u64,
    /// The longest stretch around the cut with no probe acknowledged: from the last
    /// acknowledgement before the cut to the first one after it.
    pub unavailable_ms: Option<u64>,
    /// From the cut to the first probe a new leader acknowledged.
    pub time_to_leader_ms: Option<u64>,
    /// Why the observer could not finish the drill, if it could not.
    pub failure: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderDrillReport {
    /// Probe sequence numbers applied, while the drill runs (cleared at the end).
    pub applied: BTreeSet<u64>,
    /// How many were applied in all (kept after the end).
    pub applied_count: u64,
    pub measure: Option<LeaderDrillMeasure>,
    /// Acknowledged probes the state does not hold.
    pub lost: Vec<u64>,
    pub verdict: Option<Verdict>,
}

impl LeaderDrillReport {
    /// Pure: the final report from the observer's measure. Passed only when a new leader
    /// acknowledged writes, the observer saw no trouble, and every acknowledged probe was
    /// applied.
    pub fn conclude(
        &self,
        measure: LeaderDrillMeasure,
        cancelled: bool,
    ) -> (LeaderDrillReport, Verdict) {
        let lost: Vec<u64> = measure
            .acked
            .iter()
            .copied()
            .filter(|seq| !self.applied.contains(seq))
            .collect();
        let mut why = Vec::new();
        if cancelled {
            why.push("cancelled by an operator".to_string());
        }
        if let Some(f) = &measure.failure {
            why.push(f.clone());
        }
        if measure.new_leader.is_none() && measure.failure.is_none() {
            why.push("no other controller acknowledged a write".into());
        }
        if !lost.is_empty() {
            why.push(format!(
                "{} acknowledged writes are not in the state: {:?}",
                lost.len(),
                &lost[..lost.len().min(10)]
            ));
        }
        let verdict = if why.is_empty() {
            Verdict::Passed
        } else {
            Verdict::Failed(why)
        };
        let report = LeaderDrillReport {
            applied: BTreeSet::new(),
            applied_count: self.applied_count,
            measure: Some(measure),
            lost,
            verdict: Some(verdict.clone()),
        };
        (report, verdict)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measured(acked: Vec<u64>) -> LeaderDrillMeasure {
        LeaderDrillMeasure {
            new_leader: Some(2),
            sent: acked.len() as u64,
            acked,
            unavailable_ms: Some(900),
            time_to_leader_ms: Some(850),
            ..LeaderDrillMeasure::default()
        }
    }

    #[test]
    fn every_acknowledged_probe_applied_passes() {
        let r = LeaderDrillReport {
            applied: [1, 2, 3, 4].into(),
            applied_count: 4,
            ..LeaderDrillReport::default()
        };
        // 4 was applied but its answer never came: unknown to the client, no loss.
        let (done, verdict) = r.conclude(measured(vec![1, 2, 3]), false);
        assert_eq!(verdict, Verdict::Passed);
        assert_eq!(done.verdict, Some(Verdict::Passed));
        assert!(done.applied.is_empty(), "the set goes once the drill ends");
        assert_eq!(done.applied_count, 4);
    }

    #[test]
    fn an_acknowledged_probe_missing_from_the_state_fails_the_drill() {
        let r = LeaderDrillReport {
            applied: [1, 2].into(),
            applied_count: 2,
            ..LeaderDrillReport::default()
        };
        let (done, verdict) = r.conclude(measured(vec![1, 2, 3]), false);
        assert_eq!(done.lost, vec![3]);
        match verdict {
            Verdict::Failed(why) => assert!(why[0].contains("not in the state"), "{why:?}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn no_new_leader_or_an_observer_failure_fails_it() {
        let r = LeaderDrillReport::default();
        let none = LeaderDrillMeasure {
            new_leader: None,
            ..measured(vec![])
        };
        assert!(
            matches!(r.conclude(none, false).1, Verdict::Failed(w) if w[0].contains("no other controller"))
        );
        let failed = LeaderDrillMeasure {
            failure: Some("observer vanished".into()),
            ..measured(vec![])
        };
        assert!(matches!(r.conclude(failed, true).1, Verdict::Failed(w) if w.len() == 2));
    }
}
