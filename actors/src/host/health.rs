//! The host health state machine of the HA design (DESIGN.md, "Failure detection and
//! fencing"), as a pure function of observations and the monotonic clock. The actor feeds
//! it events and commits the transitions it returns; nothing here does I/O.
//!
//! Safety rule: a host becomes `Dead` only once its lease has certainly lapsed on the host
//! itself — `last_grant_sent + ttl + margin` has passed — and, after a leader change, not
//! before the new leader has waited one full `ttl + margin` since its first entry of the
//! term was committed (it cannot know what the old leader granted).

use std::time::{Duration, Instant};

use drover_raft::model::LeaseConfig;

/// Lease timings, validated together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTimings {
    pub heartbeat: Duration,
    pub ttl: Duration,
    /// Covers clock-rate drift and scheduling slack between leader and host.
    pub margin: Duration,
    /// While a lease change settles: how long after the host actors (re)started grants
    /// made under the previous configuration may still be live (its ttl + margin).
    pub floor: Duration,
}

/// A heartbeat interval must fit this many times into the lease ttl, so that a few lost
/// beats do not lapse a lease that the host keeps renewing.
pub const MIN_BEATS_PER_TTL: u32 = drover_raft::model::MIN_BEATS_PER_TTL as u32;

impl Default for LeaseTimings {
    fn default() -> Self {
        Self::from_config(&LeaseConfig::default(), None)
    }
}

impl LeaseTimings {
    /// The timings of the replicated `current` configuration, waiting out `previous`
    /// (the one it replaced, while that settles).
    pub fn from_config(current: &LeaseConfig, previous: Option<&LeaseConfig>) -> Self {
        Self {
            heartbeat: Duration::from_millis(current.heartbeat_ms),
            ttl: Duration::from_millis(current.ttl_ms),
            margin: Duration::from_millis(current.margin_ms),
            floor: Duration::from_millis(previous.map_or(0, LeaseConfig::lapse_ms)),
        }
    }

    /// The configuration these timings grant by (what a new cluster's first leader commits).
    pub fn config(&self) -> LeaseConfig {
        LeaseConfig {
            heartbeat_ms: self.heartbeat.as_millis() as u64,
            ttl_ms: self.ttl.as_millis() as u64,
            margin_ms: self.margin.as_millis() as u64,
        }
    }

    /// The replicated rules (`LeaseConfig::validate`).
    pub fn validate(&self) -> Result<(), String> {
        self.config().validate()
    }

    /// Heartbeats missed before a host is suspect.
    pub fn suspect_after(&self) -> Duration {
        self.heartbeat * 2
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    Up,
    /// Heartbeats missed; its VMs are left alone.
    Suspect,
    /// Its lease has certainly lapsed: it has fenced itself; its HA VMs may run elsewhere.
    Dead,
}

/// What the health machine learns or is asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// A heartbeat arrived.
    Beat { at: Instant },
    /// Time passed (the actor's periodic check).
    Tick { now: Instant },
}

/// The leader's memory about one host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tracker {
    pub health: Health,
    pub last_beat: Option<Instant>,
    /// When the leader last sent this host a lease grant.
    pub last_grant_sent: Option<Instant>,
    /// When this leader's first entry of its term was committed: before then + ttl +
    /// margin, grants of an earlier leader may still be live.
    pub leader_since: Instant,
    /// The committed state says the host fences itself on a lapse (it reported an armed
    /// grant, and HA is not disarmed). A host that does not is never `Dead` by its lease.
    pub fencing_armed: bool,
}

/// Whether the host's lease has certainly lapsed at `now`.
pub fn lease_certainly_lapsed(t: &Tracker, timings: &LeaseTimings, now: Instant) -> bool {
    let wait = timings.ttl + timings.margin;
    // Grants of an earlier leader, or made under an earlier lease configuration, were all
    // sent before `leader_since`.
    let since_leading = now.saturating_duration_since(t.leader_since) >= wait.max(timings.floor);
    let since_grant = match t.last_grant_sent {
        Some(sent) => now.saturating_duration_since(sent) >= wait,
        None => true,
    };
    since_leading && since_grant
}

/// The next health given an event; returns the new tracker and whether the health changed
/// (changes are committed through Raft, beats are not).
pub fn step(t: Tracker, timings: &LeaseTimings, event: Event) -> (Tracker, bool) {
    let mut next = t;
    match event {
        Event::Beat { at } => {
            next.last_beat = Some(at);
            next.health = match t.health {
                Health::Up | Health::Suspect => Health::Up,
                // A dead host that talks again is not trusted on a beat: it must report
                // its domains and be reconciled before it gets a lease (host comes back).
                Health::Dead => Health::Dead,
            };
        }
        Event::Tick { now } => {
            let silent = match t.last_beat {
                Some(b) => now.saturating_duration_since(b) >= timings.suspect_after(),
                None => now.saturating_duration_since(t.leader_since) >= timings.suspect_after(),
            };
            next.health = match t.health {
                Health::Up if silent => Health::Suspect,
                Health::Up => Health::Up,
                Health::Suspect if !silent => Health::Up,
                Health::Suspect if t.fencing_armed && lease_certainly_lapsed(&t, timings, now) => {
                    Health::Dead
                }
                Health::Suspect => Health::Suspect,
                Health::Dead => Health::Dead,
            };
        }
    }
    (next, next.health != t.health)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn timings() -> LeaseTimings {
        LeaseTimings::default()
    }

    fn tracker(now: Instant) -> Tracker {
        Tracker {
            health: Health::Up,
            last_beat: Some(now),
            last_grant_sent: Some(now),
            leader_since: now - Duration::from_secs(60),
            fencing_armed: true,
        }
    }

    const S: Duration = Duration::from_secs(1);

    #[test]
    fn timings_are_validated() {
        assert!(timings().validate().is_ok());
        let bad = LeaseTimings {
            ttl: Duration::from_secs(2),
            ..timings()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .contains("at least 3 heartbeats"));
        assert!(LeaseTimings {
            margin: Duration::ZERO,
            ..timings()
        }
        .validate()
        .is_err());
    }

    /// Issue 9, point 4: after a switch from a 20 s lease to a 5 s one, a host that holds
    /// a 20 s grant from before the switch is not dead 6 s later, only once the old lease
    /// has certainly lapsed too.
    #[test]
    fn a_lease_change_waits_out_the_longer_previous_lease() {
        let old = LeaseConfig {
            heartbeat_ms: 1000,
            ttl_ms: 20_000,
            margin_ms: 1000,
        };
        let timings = LeaseTimings::from_config(&LeaseConfig::default(), Some(&old));
        let t0 = Instant::now();
        // The host actors restarted with the new lease at t0; the host went silent then.
        let t = Tracker {
            health: Health::Suspect,
            last_beat: Some(t0),
            last_grant_sent: None,
            leader_since: t0,
            fencing_armed: true,
        };
        assert!(!lease_certainly_lapsed(&t, &timings, t0 + 6 * S));
        assert!(!lease_certainly_lapsed(&t, &timings, t0 + 20 * S));
        assert!(lease_certainly_lapsed(&t, &timings, t0 + 21 * S));
        // Settled: the new lease alone.
        let settled = LeaseTimings::from_config(&LeaseConfig::default(), None);
        assert!(lease_certainly_lapsed(&t, &settled, t0 + 6 * S));
    }

    #[test]
    fn up_suspect_up() {
        let t0 = Instant::now();
        let t = tracker(t0);
        let (t, changed) = step(t, &timings(), Event::Tick { now: t0 + S });
        assert!(!changed);
        let (t, changed) = step(t, &timings(), Event::Tick { now: t0 + 2 * S });
        assert!(changed && t.health == Health::Suspect);
        let (t, changed) = step(t, &timings(), Event::Beat { at: t0 + 3 * S });
        assert!(changed && t.health == Health::Up);
    }

    #[test]
    fn dead_only_after_grant_ttl_and_margin() {
        let t0 = Instant::now();
        let mut t = tracker(t0);
        t.last_grant_sent = Some(t0 + S); // a grant sent just after the last beat
        let (t, _) = step(t, &timings(), Event::Tick { now: t0 + 3 * S });
        assert_eq!(t.health, Health::Suspect);
        // ttl + margin = 6 s after the grant: not before 7 s.
        let (t, _) = step(t, &timings(), Event::Tick { now: t0 + 6 * S });
        assert_eq!(t.health, Health::Suspect);
        let (t, changed) = step(t, &timings(), Event::Tick { now: t0 + 7 * S });
        assert!(changed && t.health == Health::Dead);
        // A beat from a dead host does not revive it.
        let (t, changed) = step(t, &timings(), Event::Beat { at: t0 + 8 * S });
        assert!(!changed && t.health == Health::Dead);
    }

    #[test]
    fn a_new_leader_waits_a_full_lease_first() {
        let t0 = Instant::now();
        let t = Tracker {
            health: Health::Suspect,
            last_beat: None,
            last_grant_sent: None,
            leader_since: t0,
            fencing_armed: true,
        };
        let (t, _) = step(t, &timings(), Event::Tick { now: t0 + 5 * S });
        assert_eq!(
            t.health,
            Health::Suspect,
            "the old leader's grants may still be live"
        );
        let (t, _) = step(t, &timings(), Event::Tick { now: t0 + 6 * S });
        assert_eq!(t.health, Health::Dead);
    }

    #[test]
    fn a_host_not_armed_is_never_dead_by_its_lease() {
        let t0 = Instant::now();
        let mut t = tracker(t0);
        t.fencing_armed = false;
        let (t, _) = step(t, &timings(), Event::Tick { now: t0 + 3 * S });
        assert_eq!(t.health, Health::Suspect);
        let (t, _) = step(t, &timings(), Event::Tick { now: t0 + 3600 * S });
        assert_eq!(t.health, Health::Suspect, "it keeps its guests: never dead");
    }

    proptest! {
        /// Whatever the event sequence, a host is never Dead while a grant sent less than
        /// ttl + margin ago may still be live on it.
        #[test]
        fn never_dead_inside_a_lease(
            events in prop::collection::vec((any::<bool>(), 0u64..3000), 1..60),
            grant_at in 0u64..20_000,
        ) {
            let t0 = Instant::now();
            let timings = timings();
            let mut t = tracker(t0);
            t.last_grant_sent = Some(t0 + Duration::from_millis(grant_at));
            let mut now = t0;
            for (beat, dt) in events {
                now += Duration::from_millis(dt);
                let event = if beat { Event::Beat { at: now } } else { Event::Tick { now } };
                let (next, _) = step(t, &timings, event);
                if next.health == Health::Dead {
                    let sent = t.last_grant_sent.unwrap();
                    prop_assert!(now >= sent + timings.ttl + timings.margin);
                    prop_assert!(now >= t.leader_since + timings.ttl + timings.margin);
                }
                t = next;
            }
        }
    }
}
