//! `Supervisor`: runs on every controller, acts only on the leader. It watches openraft's
//! metrics; once this node leads and has applied an entry of its own term (so its state
//! machine holds everything earlier leaders committed), it starts one `HostActor` per host
//! and one `VmActor` per VM, and keeps that set in step with committed changes. The moment
//! the node stops leading, every child is stopped.
//!
//! It also runs failover rounds: for VMs placed on hosts committed `Dead`, the pure
//! `failover::plan` decides which HA VMs to take off their host now (`FailoverVm`: placement
//! none, generation + 1) and which non-HA VMs to mark `unknown`; the VM actors then place
//! and start the HA ones like any unplaced VM.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use actix::prelude::*;
use drover_proto::transport::TlsHandle;
use drover_raft::model::{DesiredState, EventKind, HostHealth, LeaseConfig, ObservedState, OpKind};
use drover_raft::store::Change;
use drover_raft::{Command, RaftMetrics, RaftNode, Request};
use openraft::ServerState;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::{BroadcastStream, WatchStream};

use crate::agents::AgentPool;
use crate::drain::{DrainActor, DrainLimits};
use crate::drill::{DrillActor, DrillCadence, LeaderWatch, MigrationDrillActor};
use crate::failover::{self, Candidate, FailoverPolicy, Plan};
use crate::host::health::LeaseTimings;
use crate::host::{FenceAgent, GrantBook, HostActor, HostContext, HostReport, LeadershipRounds};
use crate::migration::MigrationActor;
use crate::vm::{observation, Observation, Observe, Poke, VmActor};
use crate::Shutdown;

#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// Heartbeat interval, lease ttl and margin (validated by the caller).
    pub lease: LeaseTimings,
    pub failover: FailoverPolicy,
    /// The controller's identity towards hostd (mutual TLS), or plaintext.
    pub tls: TlsHandle,
    /// Grants this leader sent, shared with the API for `drover host list`.
    pub grants: GrantBook,
    /// Optional power fencing for suspect hosts.
    pub fence_agent: Option<FenceAgent>,
    /// Live migrations a drain runs at once.
    pub drain: DrainLimits,
    /// Whether the controllers answer, for scheduled drills' quorum check.
    pub quorum: std::sync::Arc<dyn crate::drill::cadence::QuorumProbe>,
}

/// The actor carrying out one running operation.
enum OpActor {
    Migrate(Addr<MigrationActor>),
    Drain(Addr<DrainActor>),
    Drill(Addr<DrillActor>),
    LeaderDrill(Addr<LeaderWatch>),
    MigrationDrill(Addr<MigrationDrillActor>),
}

impl OpActor {
    fn poke(&self) {
        match self {
            OpActor::Migrate(a) => a.do_send(Poke),
            OpActor::Drain(a) => a.do_send(Poke),
            OpActor::Drill(a) => a.do_send(Poke),
            OpActor::LeaderDrill(a) => a.do_send(Poke),
            OpActor::MigrationDrill(a) => a.do_send(Poke),
        }
    }

    fn stop(&self) {
        match self {
            OpActor::Migrate(a) => a.do_send(Shutdown),
            OpActor::Drain(a) => a.do_send(Shutdown),
            OpActor::Drill(a) => a.do_send(Shutdown),
            OpActor::LeaderDrill(a) => a.do_send(Shutdown),
            OpActor::MigrationDrill(a) => a.do_send(Shutdown),
        }
    }
}

/// How often a leader looks for VMs to fail over (the rate limit is per round).
const FAILOVER_ROUND: Duration = Duration::from_millis(500);

/// The children while this node leads.
struct Leading {
    term: u64,
    /// The fencing term every hostd command and grant carries: `term`, above every term
    /// of the clusters this one was restored from (`HaSettings::fencing_term`).
    fence: u64,
    /// The replicated lease (current, previous) the host actors run with, and since when:
    /// a change restarts them, so that every grant made under an older configuration was
    /// sent before `hosts_since`.
    lease: (LeaseConfig, Option<LeaseConfig>),
    hosts_since: Instant,
    /// Leadership confirmations shared by every host actor of this term.
    rounds: LeadershipRounds,
    changes: SpawnHandle,
    hosts: HashMap<String, Addr<HostActor>>,
    vms: HashMap<String, Addr<VmActor>>,
    ops: HashMap<u64, OpActor>,
}

pub struct Supervisor {
    node: RaftNode,
    config: SupervisorConfig,
    agents: AgentPool,
    leading: Option<Leading>,
    /// Starts scheduled drills (on the leader only).
    cadence: Option<Addr<DrillCadence>>,
    /// A quorum round in flight that must confirm leadership of this term before the
    /// children start.
    confirming: Option<u64>,
    /// A failover round's commits are in flight; the next round waits for them.
    failing_over: bool,
    /// The mass-failure brake is on (logged once per episode).
    frozen: bool,
    /// The brake's event, recorded on the next round.
    frozen_event: Option<Command>,
}

/// Whether the supervisor currently runs children, and for which term (for tests and
/// status).
#[derive(Message)]
#[rtype(result = "Option<u64>")]
pub struct LeadingTerm;

impl Supervisor {
    pub fn new(node: RaftNode, config: SupervisorConfig) -> Self {
        Self {
            node,
            agents: AgentPool::new(config.tls.clone()),
            config,
            leading: None,
            cadence: None,
            confirming: None,
            failing_over: false,
            frozen: false,
            frozen_event: None,
        }
    }

    fn on_metrics(&mut self, m: &RaftMetrics, ctx: &mut Context<Self>) {
        let own_term_applied = m
            .last_applied
            .is_some_and(|l| l.leader_id.term == m.current_term);
        let leads = m.state == ServerState::Leader
            && m.current_leader == Some(self.node.id())
            && own_term_applied;
        match (&self.leading, leads) {
            (Some(l), true) if l.term == m.current_term => {}
            (Some(_), true) => {
                self.step_down(ctx);
                self.confirm(m.current_term, ctx);
            }
            (None, true) => self.confirm(m.current_term, ctx),
            (Some(_), false) => self.step_down(ctx),
            (None, false) => {}
        }
    }

    /// Starts the children only once a quorum has acknowledged this node as leader of
    /// `term` now: openraft 0.9 restores a restarted ex-leader as leader of its old term
    /// until it hears otherwise, and it must not act on hosts in that window.
    fn confirm(&mut self, term: u64, ctx: &mut Context<Self>) {
        if self.confirming == Some(term) {
            return;
        }
        self.confirming = Some(term);
        let raft = self.node.raft().clone();
        ctx.spawn(
            async move { raft.ensure_linearizable().await }
                .into_actor(self)
                .map(move |res, act, ctx| {
                    act.confirming = None;
                    let m = act.node.metrics();
                    let still = m.current_term == term
                        && m.state == ServerState::Leader
                        && act.leading.is_none();
                    match res {
                        Ok(_) if still => act.take_over(term, ctx),
                        Ok(_) => {}
                        Err(e) => {
                            tracing::info!(term, error = %e, "leadership not confirmed; not acting");
                            // Look again shortly: we may still be (or become) leader.
                            ctx.run_later(Duration::from_millis(200), |act, ctx| {
                                let m = act.node.metrics();
                                act.on_metrics(&m, ctx);
                            });
                        }
                    }
                }),
        );
    }

    fn take_over(&mut self, term: u64, ctx: &mut Context<Self>) {
        tracing::info!(
            term,
            node = self.node.id(),
            "leading: starting host and VM actors"
        );
        let changes = ctx.add_stream(BroadcastStream::new(self.node.view().subscribe()));
        let (fence, lease, previous) = self.node.view().read(|d| {
            let ha = &d.state.ha;
            (ha.fencing_term(term), ha.lease, ha.previous_lease)
        });
        // A new cluster has no replicated lease yet: its first leader commits its flags
        // and grants by them meanwhile (what the state is about to say).
        let lease = lease.unwrap_or_else(|| {
            let config = self.config.lease.config();
            self.write(ctx, Command::SetLeaseConfig { config });
            config
        });
        let now = Instant::now();
        self.leading = Some(Leading {
            term,
            fence,
            lease: (lease, previous),
            hosts_since: now,
            rounds: LeadershipRounds::on(&self.node),
            changes,
            hosts: HashMap::new(),
            vms: HashMap::new(),
            ops: HashMap::new(),
        });
        self.sync_all(ctx);
        self.settle_later(ctx);
    }

    /// Restarts the host actors when the replicated lease changed, so that they grant and
    /// judge by it, and wait out the previous one (`LeaseTimings::floor`).
    fn sync_lease(&mut self, ctx: &mut Context<Self>) {
        let (lease, previous) = self
            .node
            .view()
            .read(|d| (d.state.ha.lease, d.state.ha.previous_lease));
        let Some(l) = &mut self.leading else { return };
        let Some(lease) = lease else { return };
        if l.lease == (lease, previous) {
            return;
        }
        tracing::warn!(
            term = l.term,
            ?lease,
            ?previous,
            "lease changed: restarting host actors"
        );
        l.lease = (lease, previous);
        l.hosts_since = Instant::now();
        self.config.grants.clear();
        for (_, addr) in l.hosts.drain() {
            addr.do_send(Shutdown);
        }
        self.sync_all(ctx);
        self.settle_later(ctx);
    }

    /// Once every grant made under the previous lease has certainly lapsed, forgets it.
    fn settle_later(&mut self, ctx: &mut Context<Self>) {
        let Some(l) = &self.leading else { return };
        let Some(previous) = l.lease.1 else { return };
        let wait = Duration::from_millis(previous.lapse_ms());
        let term = l.term;
        ctx.run_later(wait, move |act, ctx| {
            if act
                .leading
                .as_ref()
                .is_some_and(|l| l.term == term && l.lease.1 == Some(previous))
            {
                act.write(ctx, Command::LeaseSettled { previous });
            }
        });
    }

    /// Commits `cmd` in the background; a failure is logged (the next leader or change
    /// tries again).
    fn write(&self, ctx: &mut Context<Self>, cmd: Command) {
        let node = self.node.clone();
        ctx.spawn(
            async move {
                let kind = cmd.kind();
                match node.write_local(Request::anonymous(cmd)).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(refused)) => tracing::warn!(error = %refused, kind, "refused"),
                    Err(e) => tracing::warn!(error = %e, kind, "cannot commit"),
                }
            }
            .into_actor(self),
        );
    }

    fn step_down(&mut self, ctx: &mut Context<Self>) {
        let Some(leading) = self.leading.take() else {
            return;
        };
        tracing::info!(
            term = leading.term,
            "no longer leading: stopping host and VM actors"
        );
        ctx.cancel_future(leading.changes);
        self.config.grants.clear();
        for addr in leading.hosts.values() {
            addr.do_send(Shutdown);
        }
        for addr in leading.vms.values() {
            addr.do_send(Shutdown);
        }
        for actor in leading.ops.values() {
            actor.stop();
        }
    }

    /// One actor per running operation: started for new ones, forgotten for ended ones, and
    /// poked, since whatever changed may be what an operation waits for.
    fn sync_ops(&mut self) {
        let running: Vec<(u64, OpKind)> = self.node.view().read(|d| {
            d.state
                .operations
                .running()
                .map(|o| (o.id, o.kind.clone()))
                .collect()
        });
        let Some(l) = &mut self.leading else { return };
        // An ended operation's actor stops by itself once it has recorded the end (and its
        // event); stopping it from here could cut that short.
        l.ops.retain(|id, _| running.iter().any(|(r, _)| r == id));
        for (id, kind) in running {
            if let Some(actor) = l.ops.get(&id) {
                actor.poke();
                continue;
            }
            let (node, agents) = (self.node.clone(), self.agents.clone());
            let actor = match kind {
                OpKind::Migrate { .. } => {
                    OpActor::Migrate(MigrationActor::new(id, node, agents, l.fence).start())
                }
                OpKind::Drain { .. } => {
                    OpActor::Drain(DrainActor::new(id, node, self.config.drain).start())
                }
                OpKind::Drill { .. } => {
                    OpActor::Drill(DrillActor::new(id, node, agents, l.fence).start())
                }
                OpKind::LeaderDrill { .. } => {
                    OpActor::LeaderDrill(LeaderWatch::new(id, node).start())
                }
                OpKind::MigrationDrill { .. } => {
                    OpActor::MigrationDrill(MigrationDrillActor::new(id, node).start())
                }
            };
            l.ops.insert(id, actor);
        }
    }

    fn sync_all(&mut self, ctx: &mut Context<Self>) {
        let (hosts, vms) = self.node.view().read(|d| {
            (
                d.state.hosts.keys().cloned().collect::<Vec<_>>(),
                d.state.vms.keys().cloned().collect::<Vec<_>>(),
            )
        });
        if let Some(l) = &mut self.leading {
            l.hosts.retain(|name, addr| {
                let keep = hosts.contains(name);
                if !keep {
                    addr.do_send(Shutdown);
                }
                keep
            });
            l.vms.retain(|name, addr| {
                let keep = vms.contains(name);
                if !keep {
                    addr.do_send(Shutdown);
                }
                keep
            });
        }
        for h in hosts {
            self.sync_host(&h, ctx);
        }
        for v in vms {
            self.sync_vm(&v);
        }
        self.sync_ops();
    }

    fn sync_host(&mut self, name: &str, ctx: &mut Context<Self>) {
        let exists = self.node.view().read(|d| d.state.hosts.contains_key(name));
        let Some(l) = &mut self.leading else { return };
        match (exists, l.hosts.contains_key(name)) {
            (true, false) => {
                let actor = HostActor::new(
                    name.to_string(),
                    HostContext {
                        node: self.node.clone(),
                        agents: self.agents.clone(),
                        report_to: ctx.address().recipient(),
                        term: l.fence,
                        timings: LeaseTimings::from_config(&l.lease.0, l.lease.1.as_ref()),
                        grants: self.config.grants.clone(),
                        leader_since: l.hosts_since,
                        fence_agent: self.config.fence_agent.clone(),
                        rounds: l.rounds.clone(),
                    },
                );
                l.hosts.insert(name.to_string(), actor.start());
            }
            (false, true) => {
                if let Some(addr) = l.hosts.remove(name) {
                    addr.do_send(Shutdown);
                }
            }
            (true, true) | (false, false) => {}
        }
        // A host's health or capacity changed: unplaced VMs may fit now.
        let unplaced: Vec<String> = self.node.view().read(|d| {
            d.state
                .vms
                .values()
                .filter(|vm| vm.host.is_none() && vm.desired == DesiredState::Running)
                .map(|vm| vm.name.clone())
                .collect()
        });
        for vm in unplaced {
            if let Some(addr) = l.vms.get(&vm) {
                addr.do_send(Poke);
            }
        }
    }

    /// One failover round: plans over the committed state and commits the plan's first
    /// steps. Every command is a compare-and-set on the VM's generation and `FailoverVm` is
    /// refused unless the host is still `Dead`, so a round racing a returning host or a
    /// newer leader changes nothing it should not.
    fn failover_round(&mut self, ctx: &mut Context<Self>) {
        let Some(term) = self.leading.as_ref().map(|l| l.term) else {
            return;
        };
        if self.failing_over {
            return;
        }
        let disarmed = self.node.view().read(|d| d.state.ha.disarmed);
        metrics::gauge!("drover_ha_disarmed").set(if disarmed { 1.0 } else { 0.0 });
        if disarmed {
            // Disarmed freezes every automatic move, even off a host an operator fenced.
            return;
        }
        let (candidates, looks_dead, hosts, generations) = self.node.view().read(|d| {
            let dead = |h: &str| {
                d.state
                    .hosts
                    .get(h)
                    .is_none_or(|h| h.health == HostHealth::Dead)
            };
            let mut candidates = Vec::new();
            let mut generations = HashMap::new();
            for vm in d.state.vms.values() {
                let Some(host) = vm.host.as_deref() else {
                    continue;
                };
                if !dead(host) || vm.desired == DesiredState::Deleted {
                    continue;
                }
                // A non-HA VM already marked unknown needs nothing more.
                if !vm.ha && vm.observed == ObservedState::Unknown {
                    continue;
                }
                candidates.push(Candidate {
                    name: vm.name.clone(),
                    ha: vm.ha,
                    priority: vm.ha_priority,
                });
                generations.insert(vm.name.clone(), (vm.generation, host.to_string()));
            }
            let (looks_dead, hosts) = failover::brake_counts(d.state.hosts.values());
            (candidates, looks_dead, hosts, generations)
        });
        if candidates.is_empty() {
            self.set_frozen(false, 0, hosts);
            return;
        }
        let (now, unknown) =
            match failover::plan(&candidates, looks_dead, hosts, &self.config.failover) {
                Plan::Frozen { dead, hosts } => {
                    self.set_frozen(true, dead, hosts);
                    if let Some(event) = self.frozen_event.take() {
                        self.write(ctx, event);
                    }
                    return;
                }
                Plan::Restart { now, unknown, .. } => (now, unknown),
            };
        self.set_frozen(false, looks_dead, hosts);
        // Each step with the event to record once it has been applied.
        let mut steps: Vec<(Command, Option<Command>)> = Vec::new();
        for name in &now {
            let (generation, host) = &generations[name];
            tracing::warn!(vm = %name, host = %host, term, generation, "failing over: host is dead");
            let event = Command::event(
                EventKind::FailedOver,
                Some(host),
                Some(name),
                format!(
                    "host {host} is dead: restarting elsewhere (generation {generation} -> {})",
                    generation + 1
                ),
            );
            let step = Command::FailoverVm {
                name: name.clone(),
                expected_generation: *generation,
            };
            steps.push((step, Some(event)));
        }
        for name in &unknown {
            let (generation, host) = &generations[name];
            let step = Command::VmObserved {
                name: name.clone(),
                generation: *generation,
                observed: ObservedState::Unknown,
                reason: format!("host {host} is dead; not HA, so it stays there"),
                listed_after: 0,
            };
            steps.push((step, None));
        }
        self.failing_over = true;
        let node = self.node.clone();
        ctx.spawn(
            async move {
                for (step, event) in steps {
                    match node.write_local(Request::anonymous(step)).await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => {
                            tracing::info!(error = %e, "failover step refused");
                            continue;
                        }
                        Err(e) => {
                            tracing::warn!(error = %e, "failover step not committed");
                            break;
                        }
                    }
                    if let Some(event) = event {
                        metrics::counter!("drover_failover_vms_total").increment(1);
                        if let Err(e) = node.write_local(Request::anonymous(event)).await {
                            tracing::warn!(error = %e, "cannot record an event");
                        }
                    }
                }
            }
            .into_actor(self)
            .map(|(), act, _| act.failing_over = false),
        );
    }

    fn set_frozen(&mut self, frozen: bool, dead: usize, hosts: usize) {
        if frozen != self.frozen {
            if frozen {
                tracing::error!(
                    dead, hosts,
                    "failover frozen: more than half of the hosts look dead; this controller is more likely the one cut off"
                );
                self.frozen_event = Some(Command::event(
                    EventKind::FailoverFrozen,
                    None,
                    None,
                    format!("{dead} of {hosts} hosts look dead at once: failover frozen (mass-failure brake)"),
                ));
            } else {
                tracing::info!("failover brake released");
            }
            metrics::gauge!("drover_failover_frozen").set(if frozen { 1.0 } else { 0.0 });
        }
        self.frozen = frozen;
    }

    fn sync_vm(&mut self, name: &str) {
        let exists = self.node.view().read(|d| d.state.vms.contains_key(name));
        let Some(l) = &mut self.leading else { return };
        match (exists, l.vms.get(name)) {
            (true, Some(addr)) => addr.do_send(Poke),
            (true, None) => {
                let actor = VmActor::new(
                    name.to_string(),
                    self.node.clone(),
                    self.agents.clone(),
                    l.fence,
                );
                l.vms.insert(name.to_string(), actor.start());
            }
            (false, Some(_)) => {
                if let Some(addr) = l.vms.remove(name) {
                    addr.do_send(Shutdown);
                }
            }
            (false, None) => {}
        }
    }
}

impl Actor for Supervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.add_stream(WatchStream::new(self.node.raft().metrics()));
        ctx.run_interval(FAILOVER_ROUND, |act, ctx| act.failover_round(ctx));
        // Acts only while this node leads; lives as long as the supervisor.
        self.cadence = Some(
            DrillCadence::new(
                self.node.clone(),
                std::sync::Arc::clone(&self.config.quorum),
            )
            .start(),
        );
    }

    fn stopped(&mut self, _: &mut Self::Context) {
        if let Some(c) = self.cadence.take() {
            c.do_send(Shutdown);
        }
    }
}

impl StreamHandler<RaftMetrics> for Supervisor {
    fn handle(&mut self, m: RaftMetrics, ctx: &mut Self::Context) {
        self.on_metrics(&m, ctx);
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        // Raft shut down: nothing to lead any more.
        self.step_down(ctx);
    }
}

impl StreamHandler<Result<Change, BroadcastStreamRecvError>> for Supervisor {
    fn handle(&mut self, item: Result<Change, BroadcastStreamRecvError>, ctx: &mut Self::Context) {
        match item {
            Ok(Change::Host(name)) => {
                self.sync_host(&name, ctx);
                self.failover_round(ctx);
                self.sync_ops();
            }
            Ok(Change::Vm(name)) => self.sync_vm(&name),
            Ok(Change::Ops) => self.sync_ops(),
            // Missed changes or a replaced state: compare everything.
            Ok(Change::Reset) | Err(BroadcastStreamRecvError::Lagged(_)) => {
                self.sync_lease(ctx);
                self.sync_all(ctx);
            }
        }
    }

    fn finished(&mut self, _: &mut Self::Context) {
        // The change feed ends only when we cancel it on step-down; keep the supervisor.
    }
}

impl Handler<HostReport> for Supervisor {
    type Result = ();
    fn handle(&mut self, report: HostReport, _: &mut Self::Context) {
        let Some(l) = &self.leading else { return };
        let placed: Vec<String> = self.node.view().read(|d| {
            d.state
                .vms
                .values()
                .filter(|vm| vm.host.as_deref() == Some(report.host.as_str()))
                .map(|vm| vm.name.clone())
                .collect()
        });
        for name in placed {
            let obs = report.domains.iter().find(|d| d.name == name).map_or_else(
                || Observation::missing(&report.host, report.listed_after),
                |d| observation(&report.host, d, report.listed_after),
            );
            if let Some(addr) = l.vms.get(&name) {
                addr.do_send(Observe(obs));
            }
        }
    }
}

impl Handler<LeadingTerm> for Supervisor {
    type Result = Option<u64>;
    fn handle(&mut self, _: LeadingTerm, _: &mut Self::Context) -> Option<u64> {
        self.leading.as_ref().map(|l| l.term)
    }
}

impl Handler<Shutdown> for Supervisor {
    type Result = ();
    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        self.step_down(ctx);
        ctx.stop();
    }
}
