//! The cluster's event log: what happened to hosts and VMs that an operator must be able to
//! read back later (a host declared dead and why, a self-fence, each failover, the brake,
//! the HA switch), replicated like everything else and bounded to the newest
//! [`MAX_EVENTS`]. Times come inside the command (the leader's wall clock), never from
//! `apply`.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

/// Events kept; older ones are dropped as new ones arrive.
pub const MAX_EVENTS: usize = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    /// Declared dead: by its lease, an operator or the fence agent (in the message).
    HostDead,
    /// A dead host reported back, ran nothing stale, and is trusted again.
    HostBack,
    /// The host destroyed its HA guests because its lease lapsed.
    SelfFenced,
    /// An HA VM was taken off a dead host to be restarted elsewhere.
    FailedOver,
    /// Failover refused: too many hosts look dead at once.
    FailoverFrozen,
    /// The fence agent failed; the lease wait applies.
    FenceAgentFailed,
    HaDisarmed,
    HaArmed,
    /// A live migration completed (message: source, destination, downtime).
    Migrated,
    /// A live migration failed or was cancelled; the VM stayed on its source.
    MigrationFailed,
    /// A drain emptied its host, which is now in maintenance.
    HostMaintenance,
    /// A drain stopped (blocked, cancelled, or the host was activated).
    DrainStopped,
    /// A failover drill ended (message: its verdict).
    DrillFinished,
    /// A drill ended with a failed verdict (every reason in the message).
    DrillFailed,
    /// A scheduled drill was due but refused by its plan; it is tried again later.
    DrillSkipped,
}

impl EventKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::HostDead => "host-dead",
            EventKind::HostBack => "host-back",
            EventKind::SelfFenced => "self-fenced",
            EventKind::FailedOver => "failed-over",
            EventKind::FailoverFrozen => "failover-frozen",
            EventKind::FenceAgentFailed => "fence-agent-failed",
            EventKind::HaDisarmed => "ha-disarmed",
            EventKind::HaArmed => "ha-armed",
            EventKind::Migrated => "migrated",
            EventKind::MigrationFailed => "migration-failed",
            EventKind::HostMaintenance => "host-maintenance",
            EventKind::DrainStopped => "drain-stopped",
            EventKind::DrillFinished => "drill-finished",
            EventKind::DrillFailed => "drill-failed",
            EventKind::DrillSkipped => "drill-skipped",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    /// Unix time in milliseconds, from the leader that recorded it.
    pub at_ms: u64,
    pub kind: EventKind,
    pub host: Option<String>,
    pub vm: Option<String>,
    pub message: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventLog {
    pub next_seq: u64,
    pub entries: VecDeque<Event>,
}

impl EventLog {
    /// The storage key of event `seq`: zero-padded, so keys sort like numbers.
    pub fn key(seq: u64) -> String {
        format!("{seq:020}")
    }

    /// Appends `event` (its `seq` is assigned here) and returns its seq and the seq of the
    /// event evicted to make room, if any.
    pub fn push(&mut self, mut event: Event) -> (u64, Option<u64>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        event.seq = seq;
        self.entries.push_back(event);
        let evicted = (self.entries.len() > MAX_EVENTS)
            .then(|| self.entries.pop_front().map(|e| e.seq))
            .flatten();
        (seq, evicted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Event {
        Event {
            seq: 0,
            at_ms: 1,
            kind: EventKind::HostDead,
            host: Some("h1".into()),
            vm: None,
            message: String::new(),
        }
    }

    #[test]
    fn bounded_oldest_first() {
        let mut log = EventLog::default();
        for i in 0..MAX_EVENTS as u64 {
            assert_eq!(log.push(event()), (i, None));
        }
        assert_eq!(log.push(event()), (MAX_EVENTS as u64, Some(0)));
        assert_eq!(log.entries.len(), MAX_EVENTS);
        assert_eq!(log.entries.front().map(|e| e.seq), Some(1));
        assert!(EventLog::key(9) < EventLog::key(10));
    }
}
