//! Pure: what a leader drill's probe history says (see [`measure`]).

use std::time::Duration;

use drover_raft::model::LeaderDrillMeasure;

/// One probe write as the observer saw it, timed from the drill's start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub seq: u64,
    pub sent: Duration,
    pub answered: Duration,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Committed by this controller.
    Acked { served_by: u64 },
    /// Refused outright: certainly not applied.
    Refused,
    /// No answer in time: it may or may not have been applied.
    Unknown,
}

/// The drill's figures from its probes, the old leader and when the cut was sent.
///
/// - the new leader: the first other controller to acknowledge a probe after the cut;
/// - unavailability: the longest gap between consecutive acknowledgements, from the last
///   one before the cut to the first by the new leader (what a client writing all along
///   saw; it includes one probe interval);
/// - time to leader: from the cut to that first acknowledgement by the new leader.
pub fn measure(probes: &[Probe], old_leader: u64, cut: Duration) -> LeaderDrillMeasure {
    let mut acks: Vec<(Duration, u64)> = probes
        .iter()
        .filter_map(|p| match p.outcome {
            Outcome::Acked { served_by } => Some((p.answered, served_by)),
            Outcome::Refused | Outcome::Unknown => None,
        })
        .collect();
    acks.sort();
    let first_new = acks
        .iter()
        .find(|(at, by)| *at >= cut && *by != old_leader)
        .copied();
    let last_before = acks
        .iter()
        .rev()
        .find(|(at, _)| *at < cut)
        .map(|(at, _)| *at);
    let unavailable = first_new.and_then(|(end, _)| {
        let start = last_before?;
        let window: Vec<Duration> = acks
            .iter()
            .map(|(at, _)| *at)
            .filter(|at| *at >= start && *at <= end)
            .collect();
        window.windows(2).map(|w| w[1] - w[0]).max()
    });
    LeaderDrillMeasure {
        new_leader: first_new.map(|(_, by)| by),
        sent: probes.len() as u64,
        acked: probes
            .iter()
            .filter(|p| matches!(p.outcome, Outcome::Acked { .. }))
            .map(|p| p.seq)
            .collect(),
        failed: count(probes, Outcome::Refused),
        unknown: count(probes, Outcome::Unknown),
        unavailable_ms: unavailable.map(|d| d.as_millis() as u64),
        time_to_leader_ms: first_new.map(|(at, _)| at.saturating_sub(cut).as_millis() as u64),
        failure: None,
    }
}

fn count(probes: &[Probe], outcome: Outcome) -> u64 {
    probes.iter().filter(|p| p.outcome == outcome).count() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(seq: u64, sent_ms: u64, answered_ms: u64, outcome: Outcome) -> Probe {
        Probe {
            seq,
            sent: Duration::from_millis(sent_ms),
            answered: Duration::from_millis(answered_ms),
            outcome,
        }
    }

    #[test]
    fn a_failover_shows_as_the_gap_around_the_cut() {
        let old = Outcome::Acked { served_by: 1 };
        let new = Outcome::Acked { served_by: 3 };
        let probes = vec![
            p(1, 0, 10, old),
            p(2, 60, 70, old),
            // The cut at 100 ms; the old leader still commits one.
            p(3, 120, 130, old),
            p(4, 180, 1180, Outcome::Unknown),
            p(5, 1230, 1300, Outcome::Refused),
            p(6, 1350, 1900, new),
            p(7, 1950, 1960, new),
        ];
        let m = measure(&probes, 1, Duration::from_millis(100));
        assert_eq!(m.new_leader, Some(3));
        assert_eq!(m.sent, 7);
        assert_eq!(m.acked, vec![1, 2, 3, 6, 7]);
        assert_eq!((m.failed, m.unknown), (1, 1));
        // From the last acknowledgement before the cut (70) to the first by 3 (1900),
        // the longest gap is 130 → 1900.
        assert_eq!(m.unavailable_ms, Some(1770));
        assert_eq!(m.time_to_leader_ms, Some(1800));
    }

    #[test]
    fn no_other_leader_means_no_figures() {
        let old = Outcome::Acked { served_by: 1 };
        let probes = vec![p(1, 0, 10, old), p(2, 200, 210, old)];
        let m = measure(&probes, 1, Duration::from_millis(100));
        assert_eq!(m.new_leader, None);
        assert_eq!(m.unavailable_ms, None);
        assert_eq!(m.time_to_leader_ms, None);
    }
}
