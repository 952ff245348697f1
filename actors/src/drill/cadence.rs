//! `DrillCadence`: runs scheduled drills. On the leader, every [`TICK`] it asks each
//! schedule whether it is due ([`DrillSchedule::due`]), checks the drill's plan as
//! `drover drill host-failure --dry-run` would — with the controllers asked whether they
//! answer, through a [`QuorumProbe`] — for each of the schedule's hosts in turn, starts the
//! first the plan allows with `StartScheduledDrill` (which `apply` refuses unless the
//! schedule is due with that host then), and when the plan refuses them all, records a
//! `drill-skipped` event saying why (once per reason). The drill itself is an ordinary
//! one, run by its `DrillActor`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;

use actix::prelude::*;
use drover_raft::model::{ClusterState, DrillSchedule, EventKind};
use drover_raft::{wall_clock_ms, Command, RaftNode, Request};

use super::plan::{plan, Quorum};
use crate::Shutdown;

pub const TICK: Duration = Duration::from_secs(5);
/// How long a scheduled drill may keep its host cut off.
const SCHEDULED_DRILL_MS: u64 = 120_000;

/// How many controllers vote and how many answer now: the API's round of calls, which
/// the controller binary provides (the actors do not speak its API).
pub trait QuorumProbe: std::fmt::Debug + Send + Sync + 'static {
    fn quorum(&self) -> BoxFuture<'static, Quorum>;
}

pub struct DrillCadence {
    node: RaftNode,
    probe: Arc<dyn QuorumProbe>,
    busy: bool,
    /// The last skip reason recorded per schedule, so that a refused run is reported once.
    skipped: BTreeMap<String, String>,
}

/// Pure: what the cadence does about one schedule now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    Nothing,
    Start(String),
    Skip { host: String, why: String },
}

pub fn decide(s: &DrillSchedule, state: &ClusterState, quorum: Quorum, now_ms: u64) -> Due {
    let hosts: Vec<String> = state.hosts.keys().cloned().collect();
    let Some(candidates) = s.due(now_ms, &hosts) else {
        return Due::Nothing;
    };
    if state.operations.running_drill().is_some() {
        return Due::Nothing;
    }
    let mut refused = Vec::new();
    for host in candidates {
        let p = plan(&host, state, quorum, &state.placement);
        if p.refusals.is_empty() {
            return Due::Start(host);
        }
        let why: Vec<String> = p.refusals.iter().map(ToString::to_string).collect();
        refused.push(format!("{host}: {}", why.join("; ")));
    }
    Due::Skip {
        host: String::new(),
        why: refused.join(" | "),
    }
}

impl DrillCadence {
    pub fn new(node: RaftNode, probe: Arc<dyn QuorumProbe>) -> Self {
        Self {
            node,
            probe,
            busy: false,
            skipped: BTreeMap::new(),
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        if self.busy || self.node.metrics().current_leader != Some(self.node.id()) {
            return;
        }
        let any_due = self.node.view().read(|d| {
            let hosts: Vec<String> = d.state.hosts.keys().cloned().collect();
            let now = wall_clock_ms();
            d.state
                .drill_schedules
                .values()
                .any(|s| s.due(now, &hosts).is_some())
        });
        if !any_due {
            return;
        }
        // Asking the controllers takes a round of calls: off the actor, then back.
        self.busy = true;
        ctx.spawn(
            self.probe
                .quorum()
                .into_actor(self)
                .map(|quorum, act, ctx| {
                    act.busy = false;
                    act.act_on(ctx, quorum);
                }),
        );
    }

    fn act_on(&mut self, ctx: &mut Context<Self>, quorum: Quorum) {
        let now = wall_clock_ms();
        let decisions: Vec<(String, Due)> = self.node.view().read(|d| {
            d.state
                .drill_schedules
                .values()
                .map(|s| (s.name.clone(), decide(s, &d.state, quorum, now)))
                .collect()
        });
        let mut cmds = Vec::new();
        for (name, due) in decisions {
            match due {
                Due::Nothing => {}
                Due::Start(host) => {
                    self.skipped.remove(&name);
                    tracing::info!(schedule = %name, host = %host, "scheduled drill due: starting");
                    cmds.push(Command::StartScheduledDrill {
                        schedule: name,
                        host,
                        max_duration_ms: SCHEDULED_DRILL_MS,
                        at_ms: now,
                    });
                    // One drill at a time: the others wait for the next tick.
                    break;
                }
                Due::Skip { host, why } => {
                    if self.skipped.get(&name) != Some(&why) {
                        tracing::warn!(schedule = %name, host = %host, %why, "scheduled drill skipped");
                        cmds.push(Command::event(
                            EventKind::DrillSkipped,
                            Some(&host),
                            None,
                            format!(
                                "schedule {name}: the drill of {host} is skipped for now: {why}"
                            ),
                        ));
                        self.skipped.insert(name, why);
                    }
                }
            }
        }
        if cmds.is_empty() {
            return;
        }
        self.busy = true;
        let node = self.node.clone();
        ctx.spawn(
            async move {
                for cmd in cmds {
                    let kind = cmd.kind();
                    match node.write_local(Request::anonymous(cmd)).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => tracing::info!(command = kind, error = %e, "scheduled drill step refused"),
                        Err(e) => tracing::warn!(command = kind, error = %e, "scheduled drill step not committed"),
                    }
                }
            }
            .into_actor(self)
            .map(|(), act, _| act.busy = false),
        );
    }
}

impl Actor for DrillCadence {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(TICK, |act, ctx| act.tick(ctx));
    }
}

impl Handler<Shutdown> for DrillCadence {
    type Result = ();
    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use drover_raft::model::{DrillMode, HostHealth};

    use super::*;
    use crate::fixtures;

    fn schedule() -> DrillSchedule {
        DrillSchedule {
            name: "weekly".into(),
            mode: DrillMode::Isolate,
            every_ms: 7 * 24 * 3_600_000,
            hosts: vec![],
            window: None,
            started: 0,
            last_started_ms: None,
            runs: vec![],
            created_at_ms: 0,
        }
    }

    #[test]
    fn a_due_schedule_starts_unless_the_plan_refuses() {
        let q = Quorum {
            voters: 3,
            healthy: 3,
        };
        let mut s = fixtures::state(
            vec![fixtures::host("h1", 4, 4096), fixtures::host("h2", 4, 4096)],
            vec![],
        );
        assert_eq!(decide(&schedule(), &s, q, 1_000), Due::Start("h1".into()));
        let weak = Quorum {
            voters: 3,
            healthy: 2,
        };
        assert!(matches!(
            decide(&schedule(), &s, weak, 1_000),
            Due::Skip { why, .. } if why.contains("quorum")
        ));
        s.hosts.get_mut("h2").unwrap().health = HostHealth::Dead;
        assert!(matches!(
            decide(&schedule(), &s, q, 1_000),
            Due::Skip { .. }
        ));
        let mut ran = schedule();
        ran.last_started_ms = Some(1_000);
        assert_eq!(decide(&ran, &s, q, 2_000), Due::Nothing);
    }
}
