//! `DrillActor`: one per running drill, on the leader. It samples every host's running
//! domains throughout (the never-twice check), and on every change and tick brings the
//! report up to date ([`follow::observe`]) and does what [`follow::next`] says: isolate the
//! host through its hostd, wait for the failover, lift the isolation, finish with the
//! verdict. One step at a time; what it learns is committed, so `drover drill report` on
//! any controller shows the drill as it goes.

use std::time::{Duration, Instant};

use actix::prelude::*;
use drover_proto::agent::v1::host_agent_client::HostAgentClient;
use drover_proto::agent::v1::{
    DomainState, EndIsolationRequest, IsolateRequest, ListDomainsRequest, StopAgentRequest,
};
use drover_raft::model::{
    DrillMode, DrillPhase, DrillReport, EventKind, OpState, Progress, Verdict,
};
use drover_raft::{wall_clock_ms, Command, RaftNode, Request};
use futures::FutureExt as _;
use tonic::transport::Channel;

use super::follow::{self, DrillOp, Next};
use super::never_twice::{self, Listing};
use super::plan::{plan, Quorum};
use crate::agents::{deadline, AgentPool, QUICK_CALL};
use crate::vm::Poke;
use crate::Shutdown;

const TICK: Duration = Duration::from_millis(250);
/// Pause between never-twice rounds (a round itself asks every host twice).
const SAMPLE_PAUSE: Duration = Duration::from_millis(100);
/// Report progress at most this often while nothing but the samples changed.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// A never-twice round's outcome, from the sampling task.
#[derive(Message)]
#[rtype(result = "()")]
struct Sampled {
    doubles: Vec<never_twice::Double>,
    /// Every host answered both passes: only such rounds count as samples.
    complete: bool,
}

pub struct DrillActor {
    op: u64,
    node: RaftNode,
    agents: AgentPool,
    fence: u64,
    busy: bool,
    /// When this actor isolated the host (a drill inherited from an earlier leader was
    /// not sampled from its start and is ended). Until the commit saying so lands, the
    /// report read from the state is brought up to it.
    isolated_at: Option<u64>,
    /// Rounds and violations seen by this actor, on top of what the report had when the
    /// actor began (`base`).
    base: Option<u64>,
    samples: u64,
    violations: Vec<String>,
    committed: Option<DrillReport>,
    committed_at: Instant,
    /// The verdict being committed by `finish`, counted once the commit lands.
    finishing: Option<Verdict>,
}

impl DrillActor {
    pub fn new(op: u64, node: RaftNode, agents: AgentPool, fence: u64) -> Self {
        Self {
            op,
            node,
            agents,
            fence,
            busy: false,
            isolated_at: None,
            base: None,
            samples: 0,
            violations: Vec::new(),
            committed: None,
            committed_at: Instant::now(),
            finishing: None,
        }
    }

    /// The drill, its host's address and the report brought up to date; `None` once the
    /// operation has ended.
    fn read(&mut self) -> Option<(DrillOp, String, DrillReport)> {
        let (base, isolated_at) = (self.base, self.isolated_at);
        let (samples, violations) = (self.samples, self.violations.clone());
        let read = self.node.view().read(|d| {
            let op = d.state.operations.ops.get(&self.op)?;
            if op.state.is_finished() {
                return None;
            }
            let mut drill = DrillOp::of(op)?;
            drill.trouble = follow::trouble(&drill.host, &d.state);
            let Progress::Drill(report) = &op.progress else {
                return None;
            };
            let mut report = report.clone();
            if report.phase == DrillPhase::Starting && isolated_at.is_some() {
                report.phase = DrillPhase::Failover;
                report.isolated_at_ms = isolated_at;
            }
            if report.phase == DrillPhase::Starting {
                // What the dry run would have said, recorded before the failure.
                let p = plan(
                    &drill.host,
                    &d.state,
                    Quorum {
                        voters: 1,
                        healthy: 1,
                    },
                    &d.state.placement,
                );
                for (vm, dst) in p.moves {
                    if let Some(v) = report.vms.get_mut(&vm) {
                        v.planned = Some(dst);
                    }
                }
            }
            let address = d
                .state
                .hosts
                .get(&drill.host)
                .map(|h| h.address.clone())
                .unwrap_or_default();
            let committed = report.samples;
            report.samples = base.unwrap_or(committed) + samples;
            for v in violations {
                if !report.violations.contains(&v) {
                    report.violations.push(v);
                }
            }
            let report = follow::observe(&report, &drill, &d.state, wall_clock_ms());
            Some((drill, address, report, committed))
        });
        let (drill, address, report, committed) = read?;
        self.base.get_or_insert(committed);
        Some((drill, address, report))
    }

    fn run_step(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            return;
        }
        let Some((drill, address, report)) = self.read() else {
            ctx.stop();
            return;
        };
        let now = wall_clock_ms();
        let inherited = self.isolated_at.is_none() && report.phase == DrillPhase::Failover;
        match follow::next(&report, &drill, inherited, now) {
            Next::Wait => {
                let changed =
                    self.committed.as_ref().map(without_samples) != Some(without_samples(&report));
                if changed || self.committed_at.elapsed() >= PROGRESS_EVERY {
                    self.commit(ctx, vec![self.progress(&report)], report);
                }
            }
            Next::CutOff => self.cut_off(ctx, &drill, address, report),
            Next::Restore(why) => {
                let report = DrillReport {
                    interrupted: report.interrupted || inherited,
                    restore_reason: Some(why),
                    ..report
                };
                self.restore(ctx, &drill, address, report)
            }
            Next::Finish {
                state,
                message,
                verdict,
            } => self.finish(ctx, (&drill.host, address), report, state, message, verdict),
        }
    }

    fn progress(&self, report: &DrillReport) -> Command {
        Command::DrillProgress {
            op: self.op,
            report: report.clone(),
        }
    }

    /// Commits `cmds` (one step), then steps again.
    fn commit(&mut self, ctx: &mut Context<Self>, cmds: Vec<Command>, report: DrillReport) {
        self.busy = true;
        let node = self.node.clone();
        let op = self.op;
        ctx.spawn(
            async move {
                for cmd in cmds {
                    let kind = cmd.kind();
                    match node.write_local(Request::anonymous(cmd)).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => {
                            tracing::info!(op, command = kind, error = %e, "drill step refused");
                            return false;
                        }
                        Err(e) => {
                            tracing::warn!(op, command = kind, error = %e, "drill step failed");
                            return false;
                        }
                    }
                }
                true
            }
            .into_actor(self)
            .map(move |ok, act, _| {
                act.busy = false;
                if ok {
                    act.committed = Some(report);
                    act.committed_at = Instant::now();
                    if let Some(v) = act.finishing.take() {
                        count_finished("host-failure", &v);
                    }
                }
            }),
        );
    }

    /// Isolates the host, or stops its agent, as the drill's mode says.
    fn cut_off(
        &mut self,
        ctx: &mut Context<Self>,
        drill: &DrillOp,
        address: String,
        report: DrillReport,
    ) {
        self.busy = true;
        let agents = self.agents.clone();
        let (term, op, duration_ms) = (self.fence, self.op, drill.max_duration_ms);
        let mode = drill.mode;
        let host = drill.host.clone();
        let target = address.clone();
        ctx.spawn(
            on_host(agents, target, move |mut c| async move {
                match mode {
                    DrillMode::Isolate => {
                        let req = IsolateRequest {
                            term,
                            drill: op,
                            duration_ms,
                        };
                        c.isolate(deadline(req, QUICK_CALL)).await
                    }
                    DrillMode::StopAgent => {
                        let req = StopAgentRequest {
                            term,
                            drill: op,
                            duration_ms,
                            check_only: false,
                        };
                        c.stop_agent(deadline(req, QUICK_CALL)).await
                    }
                }
            })
            .into_actor(self)
            .map(move |result, act, ctx| {
                act.busy = false;
                let mut report = report;
                match result {
                    Ok(_) => {
                        tracing::warn!(op = act.op, host = %host, mode = mode.as_str(), "drill: host cut off");
                        act.isolated_at = Some(wall_clock_ms());
                        report.phase = DrillPhase::Failover;
                        report.isolated_at_ms = act.isolated_at;
                        let cmd = act.progress(&report);
                        act.commit(ctx, vec![cmd], report);
                    }
                    Err(e) => {
                        let why = format!("could not cut host {host} off ({}): {e}", mode.as_str());
                        act.finish(
                            ctx,
                            (&host, address),
                            report,
                            OpState::Failed,
                            format!("failed: {why}"),
                            Verdict::Failed(vec![why]),
                        );
                    }
                }
            }),
        );
    }

    fn restore(
        &mut self,
        ctx: &mut Context<Self>,
        drill: &DrillOp,
        address: String,
        report: DrillReport,
    ) {
        self.busy = true;
        let agents = self.agents.clone();
        let req = EndIsolationRequest { term: self.fence };
        let host = drill.host.clone();
        ctx.spawn(
            on_host(agents, address, move |mut c| async move {
                c.end_isolation(deadline(req, QUICK_CALL)).await
            })
            .into_actor(self)
            .map(move |result, act, ctx| {
                act.busy = false;
                match result {
                    Ok(status) => {
                        let why = report.restore_reason.clone().unwrap_or_default();
                        tracing::info!(op = act.op, host = %host, %why, "drill: isolation lifted");
                        let mut report = report;
                        report.phase = DrillPhase::Restoring;
                        report.restored_at_ms = Some(wall_clock_ms());
                        let mut cmds = vec![act.progress(&report)];
                        // A stopped agent's watchdog fenced in its place: only hostd, back,
                        // can say what it did, and the report's fence path shows it.
                        if !status.fence_note.is_empty() {
                            cmds.push(Command::event(
                                EventKind::SelfFenced,
                                Some(&host),
                                None,
                                status.fence_note,
                            ));
                        }
                        act.commit(ctx, cmds, report);
                    }
                    // Tried again next tick; hostd also lifts it at its deadline by itself.
                    Err(e) => {
                        tracing::warn!(op = act.op, host = %host, error = %e, "drill: cannot lift the isolation yet")
                    }
                }
            }),
        );
    }

    fn finish(
        &mut self,
        ctx: &mut Context<Self>,
        (host, address): (&str, String),
        report: DrillReport,
        state: OpState,
        message: String,
        verdict: Verdict,
    ) {
        // Best effort, in case the host is isolated without the report saying so (an
        // Isolate that reached hostd but whose answer was lost, or an earlier leader's);
        // hostd lifts it at its deadline anyway.
        let agents = self.agents.clone();
        let req = EndIsolationRequest { term: self.fence };
        ctx.spawn(
            on_host(agents, address, move |mut c| async move {
                c.end_isolation(deadline(req, QUICK_CALL)).await
            })
            .map(drop)
            .into_actor(self),
        );
        tracing::info!(op = self.op, host = %host, state = state.as_str(), %message, "drill finished");
        self.finishing = Some(verdict.clone());
        let report = DrillReport {
            phase: DrillPhase::Done,
            verdict: Some(verdict.clone()),
            ..report
        };
        let cmds = vec![
            Command::FinishDrill {
                op: self.op,
                state,
                message: message.clone(),
                report: report.clone(),
                at_ms: wall_clock_ms(),
            },
            Command::event(
                finished_event(&verdict),
                Some(host),
                None,
                format!("drill {}: {message}", self.op),
            ),
        ];
        self.commit(ctx, cmds, report);
    }

    /// Starts the never-twice sampling task: rounds until the actor stops.
    fn start_sampling(&self, ctx: &mut Context<Self>) {
        let node = self.node.clone();
        let agents = self.agents.clone();
        let me = ctx.address();
        let task = async move {
            loop {
                let hosts: Vec<(String, String)> = node.view().read(|d| {
                    d.state
                        .hosts
                        .values()
                        .map(|h| (h.name.clone(), h.address.clone()))
                        .collect()
                });
                let mut round: Vec<Listing> = Vec::new();
                for (name, address) in hosts.iter().chain(hosts.iter()) {
                    if let Some(running) = running_on(&agents, address).await {
                        round.push((name.clone(), running));
                    }
                }
                // The task is the actor's: it ends with it, so a full mailbox is the only
                // way this can fail, and a round lost then is only a round fewer.
                let complete = round.len() == 2 * hosts.len();
                let _ = me.try_send(Sampled {
                    doubles: never_twice::doubles(&round),
                    complete,
                });
                tokio::time::sleep(SAMPLE_PAUSE).await;
            }
        };
        ctx.spawn(task.into_actor(self));
    }
}

/// The event a finished drill records: a failed verdict is an event of its own, for
/// alerting on.
pub fn finished_event(verdict: &Verdict) -> EventKind {
    match verdict {
        Verdict::Passed => EventKind::DrillFinished,
        Verdict::Failed(_) => EventKind::DrillFailed,
    }
}

/// `drover_drills_total{kind, verdict}`, counted by the controller that ends a drill.
pub fn count_finished(kind: &'static str, verdict: &Verdict) {
    let verdict = match verdict {
        Verdict::Passed => "passed",
        Verdict::Failed(_) => "failed",
    };
    metrics::counter!("drover_drills_total", "kind" => kind, "verdict" => verdict).increment(1);
}

/// One call to the hostd at `address`; its failure in words.
async fn on_host<T, F, Fut>(agents: AgentPool, address: String, call: F) -> Result<T, String>
where
    F: FnOnce(HostAgentClient<Channel>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let client = agents.client(&address).map_err(|e| e.to_string())?;
    call(client)
        .await
        .map(tonic::Response::into_inner)
        .map_err(|s| s.message().to_string())
}

/// The report without its sample count, to tell real news from more samples.
fn without_samples(r: &DrillReport) -> DrillReport {
    DrillReport {
        samples: 0,
        ..r.clone()
    }
}

/// The VMs hostd at `address` lists running; `None` when it does not answer.
async fn running_on(agents: &AgentPool, address: &str) -> Option<Vec<String>> {
    let mut client = agents.client(address).ok()?;
    let listed = client
        .list_domains(deadline(ListDomainsRequest {}, QUICK_CALL))
        .await
        .ok()?
        .into_inner();
    Some(
        listed
            .domains
            .into_iter()
            .filter(|d| d.state() == DomainState::Running)
            .map(|d| d.name)
            .collect(),
    )
}

impl Actor for DrillActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        self.start_sampling(ctx);
        ctx.run_interval(TICK, |act, ctx| act.run_step(ctx));
        self.run_step(ctx);
    }
}

impl Handler<Sampled> for DrillActor {
    type Result = ();
    fn handle(&mut self, msg: Sampled, _: &mut Self::Context) {
        if msg.complete {
            self.samples += 1;
        }
        for double in msg.doubles {
            let v = double.to_string();
            tracing::error!(op = self.op, vm = %double.vm, host = %double.host, other = %double.other, "drill: a VM ran on two hosts");
            if !self.violations.contains(&v) {
                self.violations.push(v);
            }
        }
    }
}

impl Handler<Poke> for DrillActor {
    type Result = ();
    fn handle(&mut self, _: Poke, ctx: &mut Self::Context) {
        self.run_step(ctx);
    }
}

impl Handler<Shutdown> for DrillActor {
    type Result = ();
    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
