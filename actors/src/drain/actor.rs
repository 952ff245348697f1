//! `DrainActor`: one per running drain operation. On every change (and a tick) it asks
//! [`plan::step`](super::plan::step) what to do and commits it; the migrations it starts
//! are carried out by their own `MigrationActor`s. One step at a time: a step's commits
//! finish before the next step reads the state.

use std::time::Duration;

use actix::prelude::*;
use drover_raft::model::{EventKind, MigrationPolicy, OpKind, Progress};
use drover_raft::{wall_clock_ms, Command, RaftNode, Request};

use super::plan::{step, DrainLimits, Step};
use crate::vm::Poke;
use crate::Shutdown;

const TICK: Duration = Duration::from_secs(1);

pub struct DrainActor {
    op: u64,
    node: RaftNode,
    limits: DrainLimits,
    busy: bool,
    /// Something changed while a step's commits were in flight: step again after them.
    again: bool,
}

impl DrainActor {
    pub fn new(op: u64, node: RaftNode, limits: DrainLimits) -> Self {
        Self {
            op,
            node,
            limits,
            busy: false,
            again: false,
        }
    }

    fn run_step(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            self.again = true;
            return;
        }
        let decided = self.node.view().read(|d| {
            let op = d.state.operations.ops.get(&self.op)?;
            if op.state.is_finished() {
                return None;
            }
            let host = match &op.kind {
                OpKind::Drain { host, .. } => host.clone(),
                OpKind::Migrate { .. }
                | OpKind::Drill { .. }
                | OpKind::LeaderDrill { .. }
                | OpKind::MigrationDrill { .. } => return None,
            };
            let current = match &op.progress {
                Progress::Drain(p) => Some(p.clone()),
                _ => None,
            };
            Some((
                host,
                step(op, &d.state, &d.state.placement, self.limits),
                current,
            ))
        });
        let Some((host, decided, current)) = decided else {
            ctx.stop();
            return;
        };
        let mut cmds = Vec::new();
        match decided {
            Step::Finish { state, message } => {
                tracing::info!(op = self.op, host = %host, state = state.as_str(), %message, "drain finished");
                let kind = if state == drover_raft::model::OpState::Succeeded {
                    EventKind::HostMaintenance
                } else {
                    EventKind::DrainStopped
                };
                cmds.push(Command::FinishDrain {
                    op: self.op,
                    state,
                    message: message.clone(),
                    at_ms: wall_clock_ms(),
                });
                cmds.push(Command::event(kind, Some(&host), None, message));
            }
            Step::Act {
                migrate,
                cold,
                progress,
            } => {
                for (vm, generation, dst) in migrate {
                    tracing::info!(op = self.op, host = %host, vm = %vm, dst = %dst, "drain: migrating");
                    cmds.push(Command::StartMigration {
                        vm,
                        expected_generation: generation,
                        dst,
                        policy: MigrationPolicy::default(),
                        at_ms: wall_clock_ms(),
                        limits: Some((self.limits.per_host as u32, self.limits.cluster as u32)),
                    });
                }
                for (vm, generation, dst) in cold {
                    tracing::info!(op = self.op, host = %host, vm = %vm, dst = %dst, "drain: re-placing a VM that is not running");
                    cmds.push(Command::PlaceVm {
                        name: vm,
                        host: dst,
                        expected_generation: generation,
                    });
                }
                if current.as_ref() != Some(&progress) {
                    cmds.push(Command::DrainProgress {
                        op: self.op,
                        progress,
                    });
                }
            }
        }
        if cmds.is_empty() {
            return;
        }
        self.busy = true;
        let node = self.node.clone();
        let op = self.op;
        ctx.spawn(
            async move {
                for cmd in cmds {
                    let kind = cmd.kind();
                    match node.write_local(Request::anonymous(cmd)).await {
                        Ok(Ok(_)) => {}
                        // Refusals are races (the VM moved, the op ended); the next step
                        // sees the new state.
                        Ok(Err(e)) => {
                            tracing::info!(op, command = kind, error = %e, "drain step refused")
                        }
                        Err(e) => {
                            tracing::warn!(op, command = kind, error = %e, "drain step failed");
                            return;
                        }
                    }
                }
            }
            .into_actor(self)
            .map(|_, act, ctx| {
                act.busy = false;
                if std::mem::take(&mut act.again) {
                    act.run_step(ctx);
                }
            }),
        );
    }
}

impl Actor for DrainActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(TICK, |act, ctx| act.run_step(ctx));
        self.run_step(ctx);
    }
}

impl Handler<Poke> for DrainActor {
    type Result = ();
    fn handle(&mut self, _: Poke, ctx: &mut Self::Context) {
        self.run_step(ctx);
    }
}

impl Handler<Shutdown> for DrainActor {
    type Result = ();
    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
