//! What a host-failure drill would do, a pure reading of the state: if `host` failed now,
//! which of its VMs would restart where (the failover's order and the scheduler's choice,
//! the host itself excluded), which would stay down and why, and whether the cluster could
//! survive it at all. `drover drill host-failure HOST --dry-run` shows this plan; a drill
//! refuses to start while it has refusals.

use std::collections::BTreeMap;
use std::fmt;

use drover_raft::model::{ClusterState, DesiredState, HostHealth};

use crate::failover::{self, Candidate, FailoverPolicy};
use crate::scheduler::batch::place_batch;
use crate::scheduler::{host_views, request_for, Policy};

/// The controllers as the leader sees them: how many vote, how many answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quorum {
    pub voters: usize,
    pub healthy: usize,
}

impl Quorum {
    /// Whether the cluster keeps a majority with one more controller lost.
    fn survives_one_more(self) -> bool {
        self.healthy.saturating_sub(1) > self.voters / 2
    }
}

/// Why the cluster could not survive the drill now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    UnknownHost(String),
    /// HA is disarmed: nothing would restart (and the host would not fence itself).
    HaDisarmed,
    /// The drilled host is not up: there is nothing to drill.
    HostNotUp {
        host: String,
        health: String,
    },
    /// Another host is already suspect or dead: a second failure on top of a real one.
    OtherHostDown {
        host: String,
        health: String,
    },
    /// HA VMs that no other host could take.
    NoCapacity {
        vms: Vec<String>,
    },
    /// The failover brake would freeze: too many hosts would look dead at once.
    MassFailure {
        dead: usize,
        hosts: usize,
    },
    /// One more lost controller would lose the quorum.
    Quorum {
        voters: usize,
        healthy: usize,
    },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::UnknownHost(h) => write!(f, "host {h:?} not found"),
            Refusal::HaDisarmed => write!(f, "HA is disarmed: nothing would restart"),
            Refusal::HostNotUp { host, health } => {
                write!(
                    f,
                    "host {host} is {health}, not up: there is nothing to drill"
                )
            }
            Refusal::OtherHostDown { host, health } => write!(
                f,
                "host {host} is already {health}: a drill would add a second failure"
            ),
            Refusal::NoCapacity { vms } => write!(
                f,
                "no other host could take HA VMs {}: add capacity first",
                vms.join(", ")
            ),
            Refusal::MassFailure { dead, hosts } => write!(
                f,
                "{dead} of {hosts} hosts would look dead: the failover brake would freeze"
            ),
            Refusal::Quorum { voters, healthy } => write!(
                f,
                "{healthy} of {voters} controllers answer: one more failure would lose the quorum"
            ),
        }
    }
}

/// The plan: moves in the order the failover would make them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DrillPlan {
    /// (HA VM, the host it would restart on).
    pub moves: Vec<(String, String)>,
    /// VMs that would stay down, and why.
    pub stay_down: BTreeMap<String, String>,
    pub refusals: Vec<Refusal>,
}

/// What failing `host` now would do to its VMs.
pub fn plan(host: &str, state: &ClusterState, quorum: Quorum, policy: &Policy) -> DrillPlan {
    let mut out = DrillPlan::default();
    let Some(h) = state.hosts.get(host) else {
        out.refusals.push(Refusal::UnknownHost(host.to_string()));
        return out;
    };
    if state.ha.disarmed {
        out.refusals.push(Refusal::HaDisarmed);
    }
    if h.health != HostHealth::Up {
        out.refusals.push(Refusal::HostNotUp {
            host: host.to_string(),
            health: h.health.as_str().into(),
        });
    }
    for other in state.hosts.values().filter(|o| o.name != host) {
        if matches!(other.health, HostHealth::Suspect | HostHealth::Dead) {
            out.refusals.push(Refusal::OtherHostDown {
                host: other.name.clone(),
                health: other.health.as_str().into(),
            });
        }
    }
    if !quorum.survives_one_more() {
        out.refusals.push(Refusal::Quorum {
            voters: quorum.voters,
            healthy: quorum.healthy,
        });
    }
    // The hosts as the failover would count them, with this one dead.
    let failed: Vec<_> = state
        .hosts
        .values()
        .map(|o| {
            let mut o = o.clone();
            if o.name == host {
                o.health = HostHealth::Dead;
            }
            o
        })
        .collect();
    let (dead, hosts) = failover::brake_counts(&failed);
    let brake = FailoverPolicy::default();
    if hosts > 0 && dead as f64 > hosts as f64 * brake.mass_failure_fraction {
        out.refusals.push(Refusal::MassFailure { dead, hosts });
    }
    let on_host: Vec<_> = state
        .vms
        .values()
        .filter(|vm| vm.host.as_deref() == Some(host))
        // Being deleted: the failover leaves them alone too.
        .filter(|vm| vm.desired != DesiredState::Deleted)
        .collect();
    let candidates: Vec<Candidate> = on_host
        .iter()
        .map(|vm| Candidate {
            name: vm.name.clone(),
            ha: vm.ha,
            priority: vm.ha_priority,
        })
        .collect();
    // Every HA VM in one round: the order is what matters here, not the rate limit.
    let everything = FailoverPolicy {
        restarts_per_round: usize::MAX,
        mass_failure_fraction: 1.0,
    };
    let failover::Plan::Restart { now, unknown, .. } =
        failover::plan(&candidates, 0, 0, &everything)
    else {
        return out;
    };
    for vm in unknown {
        out.stay_down.insert(
            vm,
            "not HA: it waits for its host to come back (or an operator's fence)".into(),
        );
    }
    let mut views = host_views(state);
    for v in views.iter_mut().filter(|v| v.name == host) {
        v.up = false;
    }
    let reqs: Vec<_> = now
        .iter()
        .filter_map(|name| state.vms.get(name))
        .map(|vm| request_for(vm, Some(host), state))
        .collect();
    let mut stuck = Vec::new();
    for (req, placed) in reqs.iter().zip(place_batch(&reqs, &views, policy)) {
        match placed {
            Ok(dst) => out.moves.push((req.name.clone(), dst)),
            Err(refusal) => {
                out.stay_down
                    .insert(req.name.clone(), format!("no host can take it: {refusal}"));
                stuck.push(req.name.clone());
            }
        }
    }
    if !stuck.is_empty() {
        out.refusals.push(Refusal::NoCapacity { vms: stuck });
    }
    out
}

#[cfg(test)]
mod tests {
    use drover_raft::model::Vm;

    use super::*;
    use crate::fixtures;

    const QUORUM: Quorum = Quorum {
        voters: 3,
        healthy: 3,
    };

    fn ha(name: &str, on: &str, memory_mib: u64, priority: i32) -> Vm {
        Vm {
            ha: true,
            ha_priority: priority,
            ..fixtures::vm(name, Some(on), 1, memory_mib)
        }
    }

    fn state() -> ClusterState {
        fixtures::state(
            vec![
                fixtures::host("h1", 8, 4096),
                fixtures::host("h2", 8, 4096),
                fixtures::host("h3", 8, 4096),
            ],
            vec![
                ha("db", "h1", 1024, 10),
                ha("web", "h1", 1024, 0),
                fixtures::vm("batch", Some("h1"), 1, 512),
                ha("other", "h2", 1024, 0),
            ],
        )
    }

    #[test]
    fn ha_vms_move_in_priority_order_and_the_rest_stay_down_with_the_reason() {
        let p = plan("h1", &state(), QUORUM, &Policy::default());
        assert_eq!(p.refusals, []);
        let moved: Vec<&str> = p.moves.iter().map(|(vm, _)| vm.as_str()).collect();
        assert_eq!(moved, ["db", "web"]);
        assert!(p.moves.iter().all(|(_, dst)| dst != "h1"));
        assert!(p.stay_down["batch"].contains("not HA"));
    }

    #[test]
    fn a_cluster_that_could_not_survive_it_refuses_and_says_why() {
        let mut s = state();
        s.ha.disarmed = true;
        s.hosts.get_mut("h3").unwrap().health = HostHealth::Suspect;
        let lost_one = Quorum {
            voters: 3,
            healthy: 2,
        };
        let p = plan("h1", &s, lost_one, &Policy::default());
        assert!(
            p.refusals.contains(&Refusal::HaDisarmed),
            "{:?}",
            p.refusals
        );
        assert!(p
            .refusals
            .iter()
            .any(|r| matches!(r, Refusal::OtherHostDown { host, .. } if host == "h3")));
        assert!(p.refusals.contains(&Refusal::Quorum {
            voters: 3,
            healthy: 2
        }));
        // h3 suspect and h1 failed: 2 of 3 hosts look dead, beyond the brake's half.
        assert!(p
            .refusals
            .iter()
            .any(|r| matches!(r, Refusal::MassFailure { dead: 2, hosts: 3 })));
        assert!(matches!(
            plan("h9", &s, QUORUM, &Policy::default()).refusals[..],
            [Refusal::UnknownHost(_)]
        ));
    }

    /// A VM being deleted is left alone by the failover, and so by the plan.
    #[test]
    fn vms_being_deleted_are_not_in_the_plan() {
        let mut s = state();
        s.vms.get_mut("web").unwrap().desired = drover_raft::model::DesiredState::Deleted;
        let p = plan("h1", &s, QUORUM, &Policy::default());
        assert!(p.moves.iter().all(|(vm, _)| vm != "web"), "{p:?}");
        assert!(!p.stay_down.contains_key("web"), "{p:?}");
    }

    #[test]
    fn ha_vms_no_host_can_take_are_named() {
        let mut s = state();
        // h2 and h3 have room for one 1 GiB VM between them, after h2's own.
        for h in ["h2", "h3"] {
            s.hosts.get_mut(h).unwrap().capacity.memory_mib = 1536;
        }
        let p = plan("h1", &s, QUORUM, &Policy::default());
        let stuck: Vec<&String> = p.stay_down.keys().filter(|k| *k != "batch").collect();
        assert_eq!(stuck.len(), 1, "{p:?}");
        assert!(matches!(&p.refusals[..], [Refusal::NoCapacity { vms }] if vms.len() == 1));
        assert_eq!(p.moves.len(), 1, "the higher priority one moves: {p:?}");
        assert_eq!(p.moves[0].0, "db");
    }
}
