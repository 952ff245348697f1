//! Failover planning (HA design): given the VMs of hosts just declared dead, which to
//! restart now, in what order, which to hold back, and when to refuse altogether. Pure;
//! the supervisor carries the plan out (unplace with generation + 1, schedule, start).

use std::cmp::Reverse;

use drover_raft::model::{AdminState, Host, HostHealth};

/// A VM that was placed on a dead host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub name: String,
    /// Only HA VMs are restarted elsewhere; the rest keep their placement, `unknown`.
    pub ha: bool,
    /// Higher restarts first.
    pub priority: i32,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FailoverPolicy {
    /// Restarts started per planning round, cluster-wide (the rate limit).
    pub restarts_per_round: usize,
    /// Freeze failover when more than this fraction of all hosts look dead at once: the
    /// leader is more likely the one cut off.
    pub mass_failure_fraction: f64,
}

impl Default for FailoverPolicy {
    fn default() -> Self {
        Self {
            restarts_per_round: 16,
            mass_failure_fraction: 0.5,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Too many hosts look dead: restart nothing, raise an event.
    Frozen { dead: usize, hosts: usize },
    Restart {
        /// In order: priority descending, then name.
        now: Vec<String>,
        /// HA VMs beyond this round's budget, for the next round.
        later: Vec<String>,
        /// Non-HA VMs: observed state becomes `unknown`, placement kept.
        unknown: Vec<String>,
    },
}

/// What the mass-failure brake counts: (hosts that look dead, hosts that count). A host in
/// maintenance is out of service by the operator's choice (often powered off): it counts
/// as neither, or one host in maintenance plus one real failure would freeze failover on
/// a three-host cluster. Removed hosts are not in the state at all.
pub fn brake_counts<'a>(hosts: impl IntoIterator<Item = &'a Host>) -> (usize, usize) {
    hosts
        .into_iter()
        .filter(|h| h.admin != AdminState::Maintenance)
        .fold((0, 0), |(dead, all), h| {
            let looks_dead = matches!(h.health, HostHealth::Dead | HostHealth::Suspect);
            (dead + usize::from(looks_dead), all + 1)
        })
}

pub fn plan(candidates: &[Candidate], dead: usize, hosts: usize, policy: &FailoverPolicy) -> Plan {
    if hosts > 0 && dead as f64 > hosts as f64 * policy.mass_failure_fraction {
        return Plan::Frozen { dead, hosts };
    }
    let mut ha: Vec<&Candidate> = candidates.iter().filter(|c| c.ha).collect();
    ha.sort_by_key(|c| (Reverse(c.priority), c.name.clone()));
    let split = ha.len().min(policy.restarts_per_round);
    let names = |cs: &[&Candidate]| cs.iter().map(|c| c.name.clone()).collect::<Vec<_>>();
    let mut unknown: Vec<String> = candidates
        .iter()
        .filter(|c| !c.ha)
        .map(|c| c.name.clone())
        .collect();
    unknown.sort();
    Plan::Restart {
        now: names(&ha[..split]),
        later: names(&ha[split..]),
        unknown,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn c(name: &str, ha: bool, priority: i32) -> Candidate {
        Candidate {
            name: name.into(),
            ha,
            priority,
        }
    }

    #[test]
    fn orders_by_priority_then_name_and_rate_limits() {
        let cands = [
            c("b", true, 1),
            c("a", true, 1),
            c("z", true, 9),
            c("n", false, 99),
        ];
        let policy = FailoverPolicy {
            restarts_per_round: 2,
            ..Default::default()
        };
        assert_eq!(
            plan(&cands, 1, 3, &policy),
            Plan::Restart {
                now: vec!["z".into(), "a".into()],
                later: vec!["b".into()],
                unknown: vec!["n".into()],
            }
        );
    }

    #[test]
    fn mass_failure_brake() {
        let cands = [c("a", true, 0)];
        let p = FailoverPolicy::default();
        assert_eq!(plan(&cands, 2, 3, &p), Plan::Frozen { dead: 2, hosts: 3 });
        assert!(
            matches!(plan(&cands, 1, 2, &p), Plan::Restart { .. }),
            "exactly half is not more than half"
        );
        assert!(matches!(plan(&cands, 1, 3, &p), Plan::Restart { .. }));
    }

    proptest! {
        /// Every candidate lands in exactly one bucket, `now` respects the budget, and no
        /// non-HA VM is ever restarted.
        #[test]
        fn partitions_candidates(
            raw in prop::collection::vec((any::<bool>(), -5i32..5), 0..40),
            budget in 0usize..10,
        ) {
            let cands: Vec<Candidate> = raw.iter().enumerate()
                .map(|(i, (ha, p))| c(&format!("vm{i:02}"), *ha, *p)).collect();
            let policy = FailoverPolicy { restarts_per_round: budget, ..Default::default() };
            let Plan::Restart { now, later, unknown } = plan(&cands, 1, 4, &policy) else {
                panic!("one dead host of four is no mass failure");
            };
            prop_assert!(now.len() <= budget);
            prop_assert_eq!(now.len() + later.len() + unknown.len(), cands.len());
            for name in now.iter().chain(&later) {
                prop_assert!(cands.iter().any(|c| &c.name == name && c.ha));
            }
            let prio = |n: &String| cands.iter().find(|c| &c.name == n).map(|c| c.priority);
            if let (Some(last_now), Some(first_later)) = (now.last(), later.first()) {
                prop_assert!(prio(last_now) >= prio(first_later));
            }
        }
    }

    /// Issue 9, point 9: one host in maintenance (powered off) and one real failure on a
    /// three-host cluster is one failure out of two hosts in service: not a mass failure.
    #[test]
    fn maintenance_hosts_do_not_count_toward_the_brake() {
        let host = |name: &str, health, admin| Host {
            health,
            admin,
            ..crate::fixtures::host(name, 4, 4096)
        };
        let hosts = [
            host("h1", HostHealth::Dead, AdminState::Maintenance),
            host("h2", HostHealth::Dead, AdminState::Active),
            host("h3", HostHealth::Up, AdminState::Active),
        ];
        let (dead, all) = brake_counts(&hosts);
        assert_eq!((dead, all), (1, 2));
        let candidates = [c("a", true, 0)];
        assert!(matches!(
            plan(&candidates, dead, all, &FailoverPolicy::default()),
            Plan::Restart { .. }
        ));
    }
}
