//! When to take a snapshot. A snapshot serializes and stores the whole state, so its cost
//! grows with the state; taken every fixed number of entries (openraft's
//! `LogsSinceLast`), a big state spends ever more of the machine on snapshots — in a
//! 10-minute write run the state reached 500,000 VMs, each snapshot stored a whole
//! serialized copy every few seconds, and followers' log flushes queued behind it until
//! they missed heartbeats (197 leader changes; 6 with snapshots off). Waiting for at least
//! half as many new writes as the state holds keeps the cost per write constant, as a
//! growing hash table amortizes its rehashing; the log kept meanwhile is at most about the
//! size of the state. Half, not all: a workload that only creates grows the state by the
//! very writes counted, and "as many as the state holds" then never came (issue 10: no
//! snapshot in a 10-minute run, millions of entries to replay on restart).

use std::time::Duration;

use crate::node::WeakRaftNode;

/// How often the schedule looks.
const CHECK_EVERY: Duration = Duration::from_millis(500);

/// When snapshots are taken. Counted in writes (requests applied), not log entries: one
/// entry may carry a batch of hundreds (`write_batch`). A snapshot is also what bounds a
/// restart: the state between snapshots is rebuilt by re-applying the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotSchedule {
    /// Applied writes between snapshots, at least.
    pub min_logs: u64,
    /// Wait for half as many writes as the state holds records, when that is more (the
    /// server's setting; tests of snapshot mechanics turn it off to snapshot often).
    pub scale_with_state: bool,
}

impl SnapshotSchedule {
    /// Pure: whether a snapshot is due on controller `node` with `since` writes applied
    /// after its last one and a state of `state_entries` records.
    ///
    /// Controllers wait 1/8 longer per step of `(node - 1) % 4` (ids count from 1): all of them apply the same
    /// log, so with one threshold they serialized and stored a gigabyte each at the same
    /// moment and the cluster had no member left with time for heartbeats (issue 10,
    /// session 8: elections began a second after all three stored a 3.2 M-VM snapshot).
    /// Staggered, at most one of any three consecutive ids is busy with a big snapshot.
    pub fn due(&self, node: crate::NodeId, since: u64, state_entries: u64) -> bool {
        let every = if self.scale_with_state {
            let base = self.min_logs.max(state_entries / 2);
            base + base / 8 * (node.wrapping_sub(1) % 4)
        } else {
            self.min_logs
        };
        since >= every
    }
}

/// Longest wait for a triggered snapshot before looking again.
const BUILD_WAIT: Duration = Duration::from_secs(120);

/// Triggers snapshots on `node` by [`SnapshotSchedule::due`] until the node shuts down or is
/// dropped (it holds no strong reference).
pub(crate) async fn run(weak: WeakRaftNode, schedule: SnapshotSchedule) {
    let mut ticker = crate::node::ticker(CHECK_EVERY);
    while let Some((node, m)) = weak.tick(&mut ticker).await {
        let applied = m.last_applied.map_or(0, |l| l.index);
        // Counters, not the state's lock: see `StateView::records`.
        let view = node.view();
        if schedule.due(node.id(), view.writes_since_snapshot(), view.records()) {
            if let Err(e) = node.raft().trigger().snapshot().await {
                tracing::debug!(error = %e, "snapshot trigger refused; stopping the schedule");
                return;
            }
            // Wait for it to be built before looking again.
            let _ = node
                .raft()
                .wait(Some(BUILD_WAIT))
                .metrics(
                    |m| m.snapshot.map_or(0, |s| s.index) >= applied,
                    "scheduled snapshot",
                )
                .await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: SnapshotSchedule = SnapshotSchedule {
        min_logs: 10_000,
        scale_with_state: true,
    };

    #[test]
    fn a_small_state_snapshots_every_min_logs() {
        assert!(!SERVER.due(1, 9_999, 50));
        assert!(SERVER.due(1, 10_000, 50));
    }

    /// A workload that only creates (every write one more record) must still snapshot:
    /// comparing the writes since the last snapshot with the whole state never fires
    /// there, since the state grows by exactly those writes (10-minute runs of issue 10
    /// took no snapshot at all and replayed millions of entries on restart).
    #[test]
    fn a_state_that_only_grows_is_still_snapshotted() {
        let at_last_snapshot = 1_000_000;
        let fired = (0..=4_000_000u64)
            .step_by(1_000)
            .find(|since| SERVER.due(1, *since, at_last_snapshot + since));
        assert!(fired.is_some(), "never due while the state only grew");
    }

    #[test]
    fn a_big_state_waits_for_half_as_many_writes_as_it_holds() {
        assert!(!SERVER.due(1, 10_000, 500_000));
        assert!(!SERVER.due(1, 249_999, 500_000));
        assert!(SERVER.due(1, 250_000, 500_000));
        let fixed = SnapshotSchedule {
            scale_with_state: false,
            ..SERVER
        };
        assert!(fixed.due(1, 10_000, 500_000));
    }

    /// Three controllers see the same writes; their snapshots must not coincide.
    #[test]
    fn controllers_snapshot_at_different_points() {
        let state = 3_000_000;
        let first_due = |node| {
            (0..=4_000_000u64)
                .step_by(1_000)
                .find(|since| SERVER.due(node, *since, state))
        };
        let (a, b, c) = (first_due(1), first_due(2), first_due(3));
        assert!(a < b && b < c, "{a:?} {b:?} {c:?}");
        // Far enough apart for one to store before the next begins: 1/8 of the interval
        // is 187,500 writes, more than half a minute at the write rates measured.
        assert!(b.zip(a).is_some_and(|(b, a)| b - a >= 150_000));
    }
}
