//! `LeaderWatch`: the leader's part in a leader-failover drill. The drill itself is run by
//! its observer (another controller, see `drover_control::drill_observer`), which also
//! ends it; if the observer vanishes, the operation would stay running for ever and block
//! every later drill. This actor ends it, failed, once it has run [`GRACE_MS`] past its
//! longest duration. It lives on whichever controller leads, so a leader change (the
//! drill's very point) hands it on.

use std::time::Duration;

use actix::prelude::*;
use drover_raft::model::{EventKind, LeaderDrillMeasure, OpKind, Operation, Verdict};
use drover_raft::{wall_clock_ms, Command, RaftNode, Request};

use crate::vm::Poke;
use crate::Shutdown;

/// How long past its duration a leader drill may run before the leader ends it.
pub const GRACE_MS: u64 = 60_000;
const TICK: Duration = Duration::from_secs(1);

/// Pure: why a running leader drill must be ended now, if it must.
pub fn overdue(op: &Operation, now_ms: u64) -> Option<String> {
    let OpKind::LeaderDrill {
        observer,
        max_duration_ms,
        ..
    } = &op.kind
    else {
        return None;
    };
    let limit = op.started_at_ms + max_duration_ms + GRACE_MS;
    (!op.state.is_finished() && now_ms >= limit).then(|| {
        format!(
            "observer controller {observer} did not report within {} s",
            (max_duration_ms + GRACE_MS) / 1000
        )
    })
}

pub struct LeaderWatch {
    op: u64,
    node: RaftNode,
    busy: bool,
}

impl LeaderWatch {
    pub fn new(op: u64, node: RaftNode) -> Self {
        Self {
            op,
            node,
            busy: false,
        }
    }

    fn check(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            return;
        }
        let now = wall_clock_ms();
        let read = self.node.view().read(|d| {
            let op = d.state.operations.ops.get(&self.op)?;
            Some((op.state.is_finished(), overdue(op, now)))
        });
        let why = match read {
            None | Some((true, _)) => {
                ctx.stop();
                return;
            }
            Some((false, None)) => return,
            Some((false, Some(why))) => why,
        };
        tracing::warn!(op = self.op, %why, "leader drill overdue: ending it");
        self.busy = true;
        let node = self.node.clone();
        let cmd = Command::FinishLeaderDrill {
            op: self.op,
            measure: LeaderDrillMeasure {
                failure: Some(why.clone()),
                ..LeaderDrillMeasure::default()
            },
            at_ms: now,
        };
        let event = Command::event(
            EventKind::DrillFailed,
            None,
            None,
            format!("drill {}: failed: {why}", self.op),
        );
        let op = self.op;
        ctx.spawn(
            async move {
                match node.write_local(Request::anonymous(cmd)).await {
                    Ok(Ok(_)) => {
                        super::actor::count_finished(
                            "leader-failover",
                            &Verdict::Failed(vec![]),
                        );
                        if let Err(e) = node.write_local(Request::anonymous(event)).await {
                            tracing::warn!(op, error = %e, "cannot record the drill's failure");
                        }
                        true
                    }
                    // Refused: retrying cannot help.
                    Ok(Err(e)) => {
                        tracing::warn!(op, error = %e, "the overdue leader drill's end was refused");
                        false
                    }
                    // Not committed (a leader change): the next leader's watch tries again.
                    Err(e) => {
                        tracing::warn!(op, error = %e, "cannot end the overdue leader drill");
                        true
                    }
                }
            }
            .into_actor(self)
            .map(|go_on, act, ctx| {
                act.busy = false;
                if !go_on {
                    ctx.stop();
                }
            }),
        );
    }
}

impl Actor for LeaderWatch {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(TICK, |act, ctx| act.check(ctx));
    }
}

impl Handler<Poke> for LeaderWatch {
    type Result = ();
    fn handle(&mut self, _: Poke, ctx: &mut Self::Context) {
        self.check(ctx);
    }
}

impl Handler<Shutdown> for LeaderWatch {
    type Result = ();
    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

#[cfg(test)]
mod tests {
    use drover_raft::model::{LeaderDrillMode, Operations};

    use super::*;

    #[test]
    fn a_leader_drill_is_overdue_only_past_its_duration_and_grace() {
        let mut ops = Operations::default();
        let id = ops.start(
            OpKind::LeaderDrill {
                mode: LeaderDrillMode::StepDown,
                leader: 1,
                observer: 2,
                max_duration_ms: 30_000,
            },
            1_000,
        );
        let op = ops.ops[&id].clone();
        assert_eq!(overdue(&op, 1_000 + 30_000 + GRACE_MS - 1), None);
        let why = overdue(&op, 1_000 + 30_000 + GRACE_MS).unwrap();
        assert!(why.contains("observer controller 2"), "{why}");
        ops.finish(id, drover_raft::model::OpState::Failed, "x", 2_000);
        assert_eq!(overdue(&ops.ops[&id], u64::MAX / 2), None);
    }
}
