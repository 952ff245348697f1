//! When this node may start an election. openraft 0.9's core awaits each log flush before
//! it handles the next message, and after a stalled flush it handles the pending election
//! tick before the leader's queued heartbeats: a node that could not listen concluded that
//! the leader was silent. On this machine kind the virtual disk stalls every fsync of the
//! machine at once for 0.6–1 s now and then (`/proc/diskstats`: 16 writes taking 2.7 s),
//! so all three controllers came out of the same stall and campaigned (issue 10, session 9:
//! every election of a 10-minute run followed a log flush of 600–950 ms on all three).
//!
//! The guard turns elections off while this node's own log flush has been running longer
//! than [`STALLED_AFTER`], and keeps them off for [`GRACE`] after it ends, long enough for
//! the queued heartbeats of a live leader to be handled. Safety never depends on elections
//! (a node that does not campaign cannot break Raft's guarantees); the price is liveness:
//! a leader that dies during a follower's disk stall is replaced up to the stall plus
//! `GRACE` later. Leadership transfers hold elections through the same guard, so the two
//! never re-enable each other's hold.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::Raft;

/// A flush running longer than this counts as a stall. Shorter than the shortest election
/// timeout (80 ms by default) with room for the driver's period.
pub(crate) const STALLED_AFTER: Duration = Duration::from_millis(40);
/// Elections stay off this long after a stall ends.
pub(crate) const GRACE: Duration = Duration::from_millis(400);
/// How often the driver looks.
const EVERY: Duration = Duration::from_millis(10);

/// What the flush thread reports, read by the driver: milliseconds since `epoch`, 0 for
/// "none" (so `+ 1` on every stored value).
#[derive(Debug)]
pub struct FlushWatch {
    epoch: Instant,
    running_since: AtomicU64,
    last_stall_end: AtomicU64,
}

impl Default for FlushWatch {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            running_since: AtomicU64::new(0),
            last_stall_end: AtomicU64::new(0),
        }
    }
}

impl FlushWatch {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64 + 1
    }

    /// A flush begins.
    pub(crate) fn started(&self) {
        self.running_since.store(self.now_ms(), Ordering::Relaxed);
    }

    /// The flush ended after `took`.
    pub(crate) fn ended(&self, took: Duration) {
        if took >= STALLED_AFTER {
            self.last_stall_end.store(self.now_ms(), Ordering::Relaxed);
        }
        self.running_since.store(0, Ordering::Relaxed);
    }

    fn read(at: &AtomicU64) -> Option<u64> {
        match at.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(ms),
        }
    }
}

/// Pure: whether elections may run at `now` (all in ms on one clock).
pub(crate) fn elections_allowed(
    now: u64,
    flush_running_since: Option<u64>,
    last_stall_end: Option<u64>,
    hold_until: Option<u64>,
) -> bool {
    let stalled = flush_running_since
        .is_some_and(|since| now.saturating_sub(since) >= STALLED_AFTER.as_millis() as u64);
    let recovering =
        last_stall_end.is_some_and(|end| now.saturating_sub(end) < GRACE.as_millis() as u64);
    let held = hold_until.is_some_and(|until| now < until);
    !(stalled || recovering || held)
}

/// The node's guard: its log's flush watch, and leadership-transfer holds.
#[derive(Debug, Clone)]
pub struct ElectionGuard {
    watch: Arc<FlushWatch>,
    hold_until: Arc<AtomicU64>,
}

impl ElectionGuard {
    pub(crate) fn new(watch: Arc<FlushWatch>) -> Self {
        Self {
            watch,
            hold_until: Arc::new(AtomicU64::new(0)),
        }
    }

    /// No elections for `hold` from now (a leadership transfer).
    pub(crate) fn hold(&self, hold: Duration) {
        let until = self.watch.now_ms() + hold.as_millis() as u64;
        self.hold_until.fetch_max(until, Ordering::Relaxed);
    }

    fn allowed(&self) -> bool {
        let w = &self.watch;
        elections_allowed(
            w.now_ms(),
            FlushWatch::read(&w.running_since),
            FlushWatch::read(&w.last_stall_end),
            FlushWatch::read(&self.hold_until),
        )
    }

    /// Applies the guard to `raft` until it shuts down.
    pub(crate) async fn run(self, raft: Raft, node: crate::NodeId) {
        let mut allowed = true;
        loop {
            tokio::time::sleep(EVERY).await;
            if raft.metrics().borrow().running_state.is_err() {
                return;
            }
            let now = self.allowed();
            if now != allowed {
                allowed = now;
                raft.runtime_config().elect(allowed);
                if allowed {
                    tracing::info!(node, "elections allowed again");
                } else {
                    tracing::info!(
                        node,
                        "elections held: a log flush stalled or a transfer holds them"
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quick_flush_leaves_elections_on() {
        assert!(elections_allowed(1_000, Some(990), None, None));
        assert!(elections_allowed(1_000, None, None, None));
    }

    #[test]
    fn a_stalled_flush_holds_elections_until_grace_after_it_ends() {
        assert!(!elections_allowed(1_000, Some(900), None, None));
        // Ended at 1,700: still held 399 ms later, allowed at 400.
        assert!(!elections_allowed(2_099, None, Some(1_700), None));
        assert!(elections_allowed(2_100, None, Some(1_700), None));
    }

    #[test]
    fn a_transfer_hold_lasts_its_time() {
        assert!(!elections_allowed(1_000, None, None, Some(1_001)));
        assert!(elections_allowed(1_001, None, None, Some(1_001)));
    }

    /// A flush shorter than the threshold never records a stall.
    #[test]
    fn only_slow_flushes_count() {
        let w = FlushWatch::default();
        w.started();
        w.ended(Duration::from_millis(5));
        assert_eq!(FlushWatch::read(&w.last_stall_end), None);
        w.started();
        w.ended(STALLED_AFTER);
        assert!(FlushWatch::read(&w.last_stall_end).is_some());
    }
}
