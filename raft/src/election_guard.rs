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
//! the queued heartbeats of a live leader to be handled. The leader's own disk stalls its
//! heartbeats the same way, so the guard also keeps elections off while the leader's
//! process says it is alive (`leader_alive`, within [`ALIVE_WINDOW`]) — but only as long
//! as the leader's Raft core was heard from within [`LEADER_STALL_MAX`], so a leader whose
//! process lives on with a wedged core is still replaced. Safety never depends on elections
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
/// The leader's process counts as alive this long after its last `LeaderAlive`.
pub(crate) const ALIVE_WINDOW: Duration = Duration::from_millis(100);
/// ...but no longer than this after its last AppendEntries this node handled.
pub(crate) const LEADER_STALL_MAX: Duration = Duration::from_millis(2_000);
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

/// What the guard decides on, in ms on one clock (`None`: never).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Signals {
    pub now: u64,
    /// This node's log flush in progress, since.
    pub flush_running_since: Option<u64>,
    /// The end of this node's last flush that took [`STALLED_AFTER`] or more.
    pub last_stall_end: Option<u64>,
    /// A leadership transfer's hold.
    pub hold_until: Option<u64>,
    /// The last `LeaderAlive` from the leader this node follows, in its term.
    pub leader_alive_at: Option<u64>,
    /// The last AppendEntries from the leader this node accepted.
    pub leader_heard_at: Option<u64>,
}

/// Pure: whether elections may run.
pub(crate) fn elections_allowed(s: Signals) -> bool {
    let within = |at: Option<u64>, d: Duration| {
        at.is_some_and(|at| s.now.saturating_sub(at) < d.as_millis() as u64)
    };
    let stalled = s
        .flush_running_since
        .is_some_and(|since| s.now.saturating_sub(since) >= STALLED_AFTER.as_millis() as u64);
    let recovering = within(s.last_stall_end, GRACE);
    let held = s.hold_until.is_some_and(|until| s.now < until);
    let leader_busy =
        within(s.leader_alive_at, ALIVE_WINDOW) && within(s.leader_heard_at, LEADER_STALL_MAX);
    !(stalled || recovering || held || leader_busy)
}

/// The node's guard: its log's flush watch, and leadership-transfer holds.
#[derive(Debug, Clone)]
pub struct ElectionGuard {
    watch: Arc<FlushWatch>,
    hold_until: Arc<AtomicU64>,
    leader_alive_at: Arc<AtomicU64>,
    leader_heard_at: Arc<AtomicU64>,
}

impl ElectionGuard {
    pub(crate) fn new(watch: Arc<FlushWatch>) -> Self {
        Self {
            watch,
            hold_until: Arc::new(AtomicU64::new(0)),
            leader_alive_at: Arc::new(AtomicU64::new(0)),
            leader_heard_at: Arc::new(AtomicU64::new(0)),
        }
    }

    /// The leader this node follows said, in its current term, that its process is alive.
    pub(crate) fn leader_alive(&self) {
        self.leader_alive_at
            .store(self.watch.now_ms(), Ordering::Relaxed);
    }

    /// This node accepted an AppendEntries (its core handled one from the leader).
    pub(crate) fn leader_heard(&self) {
        self.leader_heard_at
            .store(self.watch.now_ms(), Ordering::Relaxed);
    }

    /// No elections for `hold` from now (a leadership transfer).
    pub(crate) fn hold(&self, hold: Duration) {
        let until = self.watch.now_ms() + hold.as_millis() as u64;
        self.hold_until.fetch_max(until, Ordering::Relaxed);
    }

    fn allowed(&self) -> bool {
        let w = &self.watch;
        elections_allowed(Signals {
            now: w.now_ms(),
            flush_running_since: FlushWatch::read(&w.running_since),
            last_stall_end: FlushWatch::read(&w.last_stall_end),
            hold_until: FlushWatch::read(&self.hold_until),
            leader_alive_at: FlushWatch::read(&self.leader_alive_at),
            leader_heard_at: FlushWatch::read(&self.leader_heard_at),
        })
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
                // Debug: a follower of a live leader holds elections most of the time.
                tracing::debug!(node, allowed, "elections allowed");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(now: u64) -> Signals {
        Signals {
            now,
            ..Signals::default()
        }
    }

    #[test]
    fn a_quick_flush_leaves_elections_on() {
        assert!(elections_allowed(Signals {
            flush_running_since: Some(990),
            ..at(1_000)
        }));
        assert!(elections_allowed(at(1_000)));
    }

    #[test]
    fn a_stalled_flush_holds_elections_until_grace_after_it_ends() {
        assert!(!elections_allowed(Signals {
            flush_running_since: Some(900),
            ..at(1_000)
        }));
        // Ended at 1,700: still held 399 ms later, allowed at 400.
        let ended = |now| Signals {
            last_stall_end: Some(1_700),
            ..at(now)
        };
        assert!(!elections_allowed(ended(2_099)));
        assert!(elections_allowed(ended(2_100)));
    }

    #[test]
    fn a_transfer_hold_lasts_its_time() {
        let held = |now| Signals {
            hold_until: Some(1_001),
            ..at(now)
        };
        assert!(!elections_allowed(held(1_000)));
        assert!(elections_allowed(held(1_001)));
    }

    /// A leader whose process says it lives holds elections: while its core was heard
    /// from lately, and only while it keeps saying so.
    #[test]
    fn a_live_leader_holds_elections_until_it_is_silent_or_wedged() {
        let leader = |now, alive, heard| Signals {
            leader_alive_at: Some(alive),
            leader_heard_at: Some(heard),
            ..at(now)
        };
        // Busy with its disk: alive 30 ms ago, last append 600 ms ago.
        assert!(!elections_allowed(leader(10_000, 9_970, 9_400)));
        // Killed: nothing for the alive window.
        assert!(elections_allowed(leader(10_000, 9_900, 9_990)));
        // Process alive, core silent past the bound.
        assert!(elections_allowed(leader(10_000, 9_990, 8_000)));
        // Never heard from at all (a new node): no hold.
        assert!(elections_allowed(Signals {
            leader_alive_at: Some(9_990),
            ..at(10_000)
        }));
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
