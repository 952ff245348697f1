//! `MigrationDrillActor`: carries out a migration drill on the leader — the VM's round
//! trip, one leg at a time — over the pure [`next`]. Each leg is a migration operation the
//! ordinary `MigrationActor` runs; this actor only starts legs (`StartDrillLeg`) and, once
//! the VM is home again or a leg failed, finishes the drill with its report.

use std::time::Duration;

use actix::prelude::*;
use drover_raft::model::{ClusterState, MigrationDrillReport, OpKind, OpState, Progress, Verdict};
use drover_raft::{wall_clock_ms, Command, RaftNode, Request};

use crate::scheduler::place_vm;
use crate::vm::Poke;
use crate::Shutdown;

const TICK: Duration = Duration::from_millis(500);

/// What the drill does now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Migrate the VM to this host.
    Leg(String),
    Wait,
    Finish {
        state: OpState,
        message: String,
        verdict: Verdict,
    },
}

/// Pure: the next step from the report (brought up to date with its legs), whether an
/// operator asked to cancel, and where the scheduler would send the VM now.
pub fn next(
    r: &MigrationDrillReport,
    cancel: bool,
    refused: Option<&str>,
    away: impl FnOnce() -> Result<String, String>,
) -> Step {
    let failed = |why: String| Step::Finish {
        state: if cancel {
            OpState::Cancelled
        } else {
            OpState::Failed
        },
        message: format!("failed: {why}"),
        verdict: Verdict::Failed(vec![why]),
    };
    // A leg `apply` refused to start (the VM stopped, no room, its host gone): the drill
    // cannot go on, and must not keep asking.
    if let Some(why) = refused {
        return failed(format!("leg {} could not start: {why}", r.legs.len() + 1));
    }
    if r.running_leg().is_some() {
        return Step::Wait;
    }
    if let Some((i, leg)) = r
        .legs
        .iter()
        .enumerate()
        .find(|(_, l)| l.state != Some(OpState::Succeeded))
    {
        return failed(format!(
            "leg {} ({} -> {}) ended {}: {}",
            i + 1,
            leg.from,
            leg.to,
            leg.state.map_or("?", OpState::as_str),
            leg.message
        ));
    }
    match r.legs.len() {
        0 if cancel => failed("cancelled before the first leg".into()),
        0 => match away() {
            Ok(dst) => Step::Leg(dst),
            Err(why) => failed(format!("the VM cannot move now: {why}")),
        },
        1 if cancel => failed(format!(
            "cancelled after the first leg: the VM stays on {}",
            r.legs[0].to
        )),
        1 => Step::Leg(r.home.clone()),
        _ => {
            let downtimes: Vec<String> = r
                .legs
                .iter()
                .map(|l| l.downtime_ms.map_or("?".into(), |d| format!("{d} ms")))
                .collect();
            Step::Finish {
                state: OpState::Succeeded,
                message: format!(
                    "passed: round trip {} -> {} -> {}, downtime per leg {}",
                    r.home,
                    r.legs[0].to,
                    r.home,
                    downtimes.join(", ")
                ),
                verdict: Verdict::Passed,
            }
        }
    }
}

pub struct MigrationDrillActor {
    op: u64,
    node: RaftNode,
    busy: bool,
    /// Why `apply` refused the last leg, if it did.
    refused: Option<String>,
}

impl MigrationDrillActor {
    pub fn new(op: u64, node: RaftNode) -> Self {
        Self {
            op,
            node,
            busy: false,
            refused: None,
        }
    }

    fn step(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            return;
        }
        let op = self.op;
        let refused = self.refused.clone();
        let decided = self
            .node
            .view()
            .read(|d| decide(op, &d.state, refused.as_deref()));
        let Some((report, step)) = decided else {
            ctx.stop();
            return;
        };
        let cmd = match step {
            Step::Wait => return,
            Step::Leg(dst) => {
                tracing::info!(op, %dst, leg = report.legs.len() + 1, "migration drill: next leg");
                vec![Command::StartDrillLeg {
                    op,
                    dst,
                    at_ms: wall_clock_ms(),
                }]
            }
            Step::Finish {
                state,
                message,
                verdict,
            } => {
                tracing::info!(op, state = state.as_str(), %message, "migration drill finished");
                let counted = verdict.clone();
                let event = Command::event(
                    super::actor::finished_event(&verdict),
                    None,
                    None,
                    format!("drill {op}: {message}"),
                );
                self.commit(
                    ctx,
                    vec![
                        Command::FinishMigrationDrill {
                            op,
                            state,
                            message,
                            report: MigrationDrillReport {
                                verdict: Some(verdict),
                                ..report
                            },
                            at_ms: wall_clock_ms(),
                        },
                        event,
                    ],
                    Some(counted),
                );
                return;
            }
        };
        self.commit(ctx, cmd, None);
    }

    /// Commits `cmds` in order, one step; the next tick looks again. A refusal is kept
    /// for the next step; `finished`: the drill's verdict, counted once it is committed.
    fn commit(&mut self, ctx: &mut Context<Self>, cmds: Vec<Command>, finished: Option<Verdict>) {
        self.busy = true;
        let (node, op) = (self.node.clone(), self.op);
        ctx.spawn(
            async move {
                for cmd in cmds {
                    match node.write_local(Request::anonymous(cmd)).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => return Err(Some(e.to_string())),
                        Err(e) => {
                            tracing::warn!(op, error = %e, "migration drill step not committed");
                            return Err(None);
                        }
                    }
                }
                Ok(())
            }
            .into_actor(self)
            .map(move |result, act, _| {
                act.busy = false;
                match result {
                    Ok(()) => {
                        if let Some(v) = finished {
                            super::actor::count_finished("migration", &v);
                        }
                    }
                    Err(Some(why)) => {
                        tracing::info!(op, %why, "migration drill step refused");
                        act.refused = Some(why);
                    }
                    Err(None) => {}
                }
            }),
        );
    }
}

/// The running drill's report brought up to date and its next step; `None` once it ended.
fn decide(
    op: u64,
    state: &ClusterState,
    refused: Option<&str>,
) -> Option<(MigrationDrillReport, Step)> {
    let o = state.operations.ops.get(&op)?;
    if o.state.is_finished() {
        return None;
    }
    let (OpKind::MigrationDrill { vm }, Progress::MigrationDrill(r)) = (&o.kind, &o.progress)
    else {
        return None;
    };
    let report = r.observe(&state.operations);
    let away = || {
        let v = state
            .vms
            .get(vm)
            .ok_or_else(|| format!("VM {vm} is gone"))?;
        place_vm(v, v.host.as_deref(), state, &state.placement).map_err(|r| r.to_string())
    };
    let step = next(&report, o.cancel_requested, refused, away);
    Some((report, step))
}

impl Actor for MigrationDrillActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(TICK, |act, ctx| act.step(ctx));
        self.step(ctx);
    }
}

impl Handler<Poke> for MigrationDrillActor {
    type Result = ();
    fn handle(&mut self, _: Poke, ctx: &mut Self::Context) {
        self.step(ctx);
    }
}

impl Handler<Shutdown> for MigrationDrillActor {
    type Result = ();
    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use drover_raft::model::DrillLeg;

    use super::*;

    fn leg(from: &str, to: &str, state: Option<OpState>) -> DrillLeg {
        DrillLeg {
            op: 1,
            from: from.into(),
            to: to.into(),
            state,
            downtime_ms: state.map(|_| 40),
            ..DrillLeg::default()
        }
    }

    fn report(legs: Vec<DrillLeg>) -> MigrationDrillReport {
        MigrationDrillReport {
            home: "h1".into(),
            legs,
            verdict: None,
        }
    }

    #[test]
    fn a_round_trip_goes_away_then_home_then_passes() {
        let away = || Ok::<_, String>("h2".to_string());
        assert_eq!(
            next(&report(vec![]), false, None, away),
            Step::Leg("h2".into())
        );
        let one = report(vec![leg("h1", "h2", None)]);
        assert_eq!(next(&one, false, None, away), Step::Wait);
        let one = report(vec![leg("h1", "h2", Some(OpState::Succeeded))]);
        assert_eq!(next(&one, false, None, away), Step::Leg("h1".into()));
        let two = report(vec![
            leg("h1", "h2", Some(OpState::Succeeded)),
            leg("h2", "h1", Some(OpState::Succeeded)),
        ]);
        match next(&two, false, None, away) {
            Step::Finish {
                state,
                verdict,
                message,
            } => {
                assert_eq!(state, OpState::Succeeded);
                assert_eq!(verdict, Verdict::Passed);
                assert!(message.contains("40 ms, 40 ms"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_leg_apply_refused_ends_the_drill_instead_of_retrying() {
        let one = report(vec![leg("h1", "h2", Some(OpState::Succeeded))]);
        let away = || Ok::<_, String>("h2".to_string());
        assert!(matches!(
            next(&one, false, Some("VM web is stopped"), away),
            Step::Finish { state: OpState::Failed, verdict: Verdict::Failed(w), .. }
                if w[0].contains("leg 2 could not start: VM web is stopped")
        ));
    }

    #[test]
    fn a_failed_leg_nowhere_to_go_or_a_cancel_fails_it() {
        let nowhere = || Err::<String, _>("no host has room".to_string());
        assert!(matches!(
            next(&report(vec![]), false, None, nowhere),
            Step::Finish { verdict: Verdict::Failed(w), .. } if w[0].contains("no host has room")
        ));
        let failed = report(vec![leg("h1", "h2", Some(OpState::Failed))]);
        assert!(matches!(
            next(&failed, false, None, nowhere),
            Step::Finish { state: OpState::Failed, verdict: Verdict::Failed(w), .. } if w[0].contains("leg 1")
        ));
        let one = report(vec![leg("h1", "h2", Some(OpState::Succeeded))]);
        assert!(matches!(
            next(&one, true, None, nowhere),
            Step::Finish { state: OpState::Cancelled, verdict: Verdict::Failed(w), .. } if w[0].contains("stays on h2")
        ));
    }
}
