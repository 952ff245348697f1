//! `HostActor`: one per registered host on the leader. It opens the session stream to the
//! host's hostd (Hello, then heartbeats and lease requests), answers lease requests with
//! grants only after a quorum round that started after they arrived, runs the pure health
//! machine (`health::step`) and commits its transitions (heartbeats never go through Raft),
//! destroys domains the cluster has moved elsewhere, and hands each heartbeat's domain list
//! to the supervisor, which routes it to the VM actors.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use actix::prelude::*;
use drover_proto::agent::v1::{
    session_event, session_request, Domain, DomainState, Fence, Heartbeat, Hello, LeaseGrant,
    SessionEvent, SessionRequest, VmRef,
};
use drover_raft::model::{Capacity, DeadReason, EventKind, HostHealth};
use drover_raft::{Command, RaftNode, Request};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::fence_agent::{FenceAgent, Outcome};
use super::grant_marks::GrantMarks;
use super::grants::GrantBook;
use super::health::{self, Event, Health, LeaseTimings, Tracker};
use super::report;
use super::rounds::LeadershipRounds;
use super::stale::{stale_domains, Stale};
use crate::agents::{deadline, AgentPool, QUICK_CALL};
use crate::Shutdown;

mod host_call;
mod image_sync;
mod network_sync;
mod pool_sync;

/// Heartbeats missed before the session is dropped and reopened.
const MISSED_BEATS: u32 = 3;
const RECONNECT_MAX: Duration = Duration::from_secs(5);
/// Grants and Hellos queued towards hostd; a grant that finds the queue full is dropped
/// (the next request gets the next one) rather than blocking the actor.
const SESSION_BUFFER: usize = 16;

/// A heartbeat's domain list, for the supervisor to route to VM actors.
#[derive(Message)]
#[rtype(result = "()")]
pub struct HostReport {
    pub host: String,
    pub domains: Vec<Domain>,
    /// The listing was made after the host heard of this many placements
    /// (`ClusterState::placements`; see `GrantMarks`).
    pub listed_after: u64,
}

/// What a host actor needs besides its name.
#[derive(Clone)]
pub struct HostContext {
    pub node: RaftNode,
    pub agents: AgentPool,
    pub report_to: Recipient<HostReport>,
    pub term: u64,
    pub timings: LeaseTimings,
    pub grants: GrantBook,
    /// When this leader took over (after a quorum confirmed its term): grants of an earlier
    /// leader may be live until `leader_since + ttl + margin`.
    pub leader_since: Instant,
    /// Run when the host turns suspect; success declares it dead without the lease wait.
    pub fence_agent: Option<FenceAgent>,
    /// The leader's quorum rounds, shared by every host's lease requests.
    pub rounds: LeadershipRounds,
}

pub struct HostActor {
    name: String,
    cx: HostContext,
    /// Dropping it closes our half of the session, which ends it on hostd's side too.
    session_tx: Option<mpsc::Sender<SessionRequest>>,
    session: Option<SpawnHandle>,
    connecting: bool,
    reconnect_backoff: Duration,
    tracker: Tracker,
    /// Lease requests received since the last quorum round started.
    waiting: Vec<u64>,
    /// A quorum round is in flight; requests arriving meanwhile wait for the next one.
    confirming: bool,
    /// Stale domains with a destroy in flight, so each beat does not resend it.
    destroying: Vec<String>,
    self_fences: u64,
    /// The fence agent is running for this host.
    fencing: bool,
    /// What each grant of the current session told the host.
    marks: GrantMarks,
    /// Counts sessions opened, so a quorum round begun for one does not grant on the next
    /// (its request seqs belong to the old session).
    session_no: u64,
    /// Storage pools that could not be set up here, by pool (see `host::pools`).
    pool_failures: BTreeMap<String, super::pools::Failure>,
    /// Pools with an EnsurePool or RemovePool in flight.
    pool_calls: BTreeSet<String>,
    /// Image volumes with a DeleteVolume in flight.
    volume_calls: BTreeSet<String>,
    /// How this actor last wired each network on the host (see `host::networks`).
    networks_wired: BTreeMap<String, drover_proto::agent::v1::NetworkWiring>,
    /// When a network last failed to be wired here.
    network_failures: BTreeMap<String, std::time::Instant>,
    /// Networks with an EnsureNetwork or RemoveNetwork in flight.
    network_calls: BTreeSet<String>,
    /// When the networks were last compared, and what the host reported then.
    networks_synced_at: Option<std::time::Instant>,
    networks_reported: Vec<String>,
}

impl HostActor {
    pub fn new(name: String, cx: HostContext) -> Self {
        let (committed, fencing_armed) = cx.node.view().read(|d| {
            let host = d.state.hosts.get(&name);
            (
                host.map(|h| h.health),
                host.is_some_and(|h| h.fencing_armed) && !d.state.ha.disarmed,
            )
        });
        let tracker = Tracker {
            // A host already dead stays dead until it reconnects and is reconciled.
            health: if committed == Some(HostHealth::Dead) {
                Health::Dead
            } else {
                Health::Up
            },
            last_beat: None,
            last_grant_sent: cx.grants.last(&name),
            leader_since: cx.leader_since,
            fencing_armed,
        };
        Self {
            name,
            cx,
            session_tx: None,
            session: None,
            connecting: false,
            reconnect_backoff: Duration::ZERO,
            tracker,
            waiting: Vec::new(),
            confirming: false,
            destroying: Vec::new(),
            self_fences: 0,
            fencing: false,
            marks: GrantMarks::default(),
            session_no: 0,
            pool_failures: BTreeMap::new(),
            pool_calls: BTreeSet::new(),
            volume_calls: BTreeSet::new(),
            networks_wired: BTreeMap::new(),
            network_failures: BTreeMap::new(),
            network_calls: BTreeSet::new(),
            networks_synced_at: None,
            networks_reported: Vec::new(),
        }
    }

    /// hostd's address as registered; `None` once the host is removed.
    fn address(&self) -> Option<String> {
        self.cx
            .node
            .view()
            .read(|d| d.state.hosts.get(&self.name).map(|h| h.address.clone()))
    }

    fn connect(&mut self, ctx: &mut Context<Self>) {
        if self.connecting || self.session.is_some() {
            return;
        }
        let Some(address) = self.address() else {
            ctx.stop();
            return;
        };
        self.connecting = true;
        let client = self.cx.agents.client(&address);
        let hello = SessionRequest {
            kind: Some(session_request::Kind::Hello(Hello {
                term: self.cx.term,
                leader_id: self.cx.node.id(),
                heartbeat_interval_ms: self.cx.timings.heartbeat.as_millis() as u64,
            })),
        };
        let fut = async move {
            let mut client = client.map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
            let (tx, rx) = mpsc::channel(SESSION_BUFFER);
            tx.send(hello)
                .await
                .map_err(|_| tonic::Status::internal("session channel closed"))?;
            let stream = client.session(ReceiverStream::new(rx)).await?.into_inner();
            Ok::<_, tonic::Status>((tx, stream))
        };
        ctx.spawn(fut.into_actor(self).map(move |res, act, ctx| {
            act.connecting = false;
            match res {
                Ok((tx, stream)) => {
                    tracing::info!(host = %act.name, term = act.cx.term, %address, "session open");
                    act.session_tx = Some(tx);
                    act.marks.clear();
                    act.session_no += 1;
                    act.session = Some(ctx.add_stream(stream));
                }
                Err(status) => {
                    tracing::debug!(host = %act.name, %address, error = %status.message(), "cannot open session");
                    act.lost(ctx);
                }
            }
        }));
    }

    /// The session is gone: try again later. Health follows from the missing beats.
    fn lost(&mut self, ctx: &mut Context<Self>) {
        if let Some(handle) = self.session.take() {
            ctx.cancel_future(handle);
        }
        self.session_tx = None;
        self.waiting.clear();
        self.reconnect_backoff =
            (self.reconnect_backoff * 2).clamp(Duration::from_millis(250), RECONNECT_MAX);
        ctx.run_later(self.reconnect_backoff, |act, ctx| act.connect(ctx));
    }

    /// Feeds the health machine and commits a transition.
    fn observe(&mut self, ctx: &mut Context<Self>, event: Event) {
        let (next, changed) = health::step(self.tracker, &self.cx.timings, event);
        self.tracker = next;
        if !changed {
            return;
        }
        match next.health {
            Health::Suspect => {
                self.commit(ctx, suspect(&self.name));
                self.run_fence_agent(ctx);
            }
            Health::Dead => {
                tracing::warn!(
                    host = %self.name, term = self.cx.term,
                    "host declared dead: its lease has certainly lapsed"
                );
                metrics::counter!("drover_hosts_declared_dead_total").increment(1);
                self.commit(
                    ctx,
                    Command::DeclareHostDead {
                        name: self.name.clone(),
                        reason: DeadReason::LeaseLapsed,
                    },
                );
                self.record(
                    ctx,
                    EventKind::HostDead,
                    "its lease has certainly lapsed (last grant + ttl + margin): it has fenced itself",
                );
            }
            // Up after Suspect; a dead host comes back only through `heartbeat`.
            Health::Up => self.commit(ctx, up(&self.name, None, None, None)),
        }
    }

    /// Runs the fence agent once per suspect episode (never while HA is disarmed: planned
    /// maintenance must not power hosts off; nor on a host a drill isolates: the drill must
    /// be able to restore it, and its non-HA guests keep running). Only its success
    /// changes anything.
    fn run_fence_agent(&mut self, ctx: &mut Context<Self>) {
        let Some(agent) = self.cx.fence_agent.clone() else {
            return;
        };
        let (disarmed, drilled) = self.cx.node.view().read(|d| {
            let drilled = d
                .state
                .operations
                .running_drill()
                .is_some_and(|o| o.kind.involves_host(&self.name));
            (d.state.ha.disarmed, drilled)
        });
        if self.fencing || disarmed || drilled {
            return;
        }
        self.fencing = true;
        let host = self.name.clone();
        tracing::warn!(host = %host, term = self.cx.term, "host suspect: running the fence agent");
        ctx.spawn(async move { agent.fence(&host).await }.into_actor(self).map(
            |outcome, act, ctx| {
                act.fencing = false;
                match outcome {
                    Outcome::PoweredOff if act.tracker.health == Health::Suspect => {
                        tracing::warn!(
                            host = %act.name, term = act.cx.term,
                            "fence agent confirmed the host is off: declared dead without the lease wait"
                        );
                        metrics::counter!("drover_fence_agent_total", "outcome" => "powered_off")
                            .increment(1);
                        act.tracker.health = Health::Dead;
                        act.commit(
                            ctx,
                            Command::DeclareHostDead {
                                name: act.name.clone(),
                                reason: DeadReason::FenceAgent,
                            },
                        );
                        act.record(
                            ctx,
                            EventKind::HostDead,
                            "the fence agent confirmed it is powered off; no lease wait",
                        );
                    }
                    Outcome::PoweredOff => {}
                    Outcome::Failed(why) => {
                        tracing::warn!(
                            host = %act.name, error = %why,
                            "fence agent failed: falling back to the lease wait"
                        );
                        metrics::counter!("drover_fence_agent_total", "outcome" => "failed")
                            .increment(1);
                        act.record(
                            ctx,
                            EventKind::FenceAgentFailed,
                            &format!("{why}; waiting for the lease instead"),
                        );
                    }
                }
            },
        ));
    }

    /// Appends to the replicated event log (best effort: the state change it describes
    /// was committed separately).
    fn record(&self, ctx: &mut Context<Self>, kind: EventKind, message: &str) {
        let cmd = Command::event(kind, Some(&self.name), None, message);
        self.write(ctx, cmd, "cannot record an event");
    }

    /// Commits `cmd` in the background; a failure is logged with `failure`.
    fn write(&self, ctx: &mut Context<Self>, cmd: Command, failure: &'static str) {
        let node = self.cx.node.clone();
        let host = self.name.clone();
        ctx.spawn(
            async move {
                if let Err(e) = node.write_local(Request::anonymous(cmd)).await {
                    tracing::warn!(%host, error = %e, "{failure}");
                }
            }
            .into_actor(self),
        );
    }

    fn commit(&self, ctx: &mut Context<Self>, cmd: Command) {
        let differs = self.cx.node.view().read(|d| {
            d.state.hosts.get(&self.name).is_some_and(|h| match &cmd {
                Command::HostObserved {
                    health,
                    capacity,
                    fencing_armed,
                    migration_uri,
                    ..
                } => {
                    h.health != *health
                        || capacity.is_some_and(|c| c != h.capacity)
                        || fencing_armed.is_some_and(|a| a != h.fencing_armed)
                        || migration_uri
                            .as_ref()
                            .is_some_and(|u| *u != h.migration_uri)
                }
                Command::DeclareHostDead { .. } => h.health != HostHealth::Dead,
                _ => true,
            })
        });
        if differs {
            self.write(ctx, cmd, "cannot commit host health");
        }
    }

    fn tick(&mut self, ctx: &mut Context<Self>) {
        let now = Instant::now();
        let (armed, committed_dead) = self.cx.node.view().read(|d| {
            let host = d.state.hosts.get(&self.name);
            (
                host.is_some_and(|h| h.fencing_armed) && !d.state.ha.disarmed,
                host.is_some_and(|h| h.health == HostHealth::Dead),
            )
        });
        self.tracker.fencing_armed = armed;
        if committed_dead && self.tracker.health != Health::Dead {
            // Declared dead elsewhere (an operator or the fence agent): no more grants, and
            // it must be reconciled like any dead host before it is trusted again.
            tracing::warn!(host = %self.name, term = self.cx.term, "host declared dead: no more leases until it is reconciled");
            self.tracker.health = Health::Dead;
        }
        self.observe(ctx, Event::Tick { now });
        let overdue = self.tracker.last_beat.is_some_and(|t| {
            now.saturating_duration_since(t) > self.cx.timings.heartbeat * MISSED_BEATS
        });
        if self.session.is_some() && overdue {
            tracing::warn!(host = %self.name, "heartbeats missed; dropping the session");
            self.lost(ctx);
        }
    }

    fn heartbeat(&mut self, mut beat: Heartbeat, ctx: &mut Context<Self>) {
        for problem in report::screen(&mut beat) {
            tracing::warn!(host = %self.name, "{problem}");
        }
        self.reconnect_backoff = Duration::ZERO;
        self.observe(ctx, Event::Beat { at: Instant::now() });
        let mut fencing_armed = None;
        if let Some(lease) = &beat.lease {
            fencing_armed = Some((lease.armed, lease.ha_epoch));
            if lease.self_fences > self.self_fences {
                tracing::warn!(
                    host = %self.name, self_fences = lease.self_fences,
                    "host reports it fenced itself (its lease lapsed)"
                );
                metrics::counter!("drover_host_self_fences_total", "host" => self.name.clone())
                    .increment(lease.self_fences - self.self_fences);
                // Counts start at 0 in every hostd process: only report news seen live.
                if self.self_fences > 0 || self.tracker.last_beat.is_some() {
                    self.record(
                        ctx,
                        EventKind::SelfFenced,
                        "its lease lapsed: it destroyed its HA guests and refuses starts",
                    );
                }
            }
            self.self_fences = lease.self_fences;
        }
        let stale = self
            .cx
            .node
            .view()
            .read(|d| stale_domains(&self.name, &beat.domains, &d.state));
        self.destroying
            .retain(|n| stale.iter().any(|s| &s.name == n));
        // A dead host is trusted again once it runs nothing the cluster placed elsewhere
        // and no HA guest at all: those are being restarted elsewhere, and it gets no lease,
        // so it fences them itself within one ttl if it has not already.
        let ha_active = beat
            .domains
            .iter()
            .any(|d| d.ha && matches!(d.state(), DomainState::Running | DomainState::Paused));
        if stale.is_empty() && !ha_active && self.tracker.health == Health::Dead {
            tracing::info!(host = %self.name, term = self.cx.term, "dead host is back and reconciled");
            self.tracker.health = Health::Up;
            self.record(
                ctx,
                EventKind::HostBack,
                "reported back running nothing stale and no HA guest: trusted again",
            );
        }
        for s in stale {
            if self.destroying.contains(&s.name) {
                continue;
            }
            tracing::warn!(
                host = %self.name, vm = %s.name, generation = s.generation,
                "destroying a stale copy: the cluster placed this VM elsewhere"
            );
            self.destroying.push(s.name.clone());
            self.destroy(s, ctx);
        }
        let capacity = beat.host.as_ref().map(|h| Capacity {
            vcpus: h.vcpus,
            memory_mib: h.memory_mib,
        });
        if self.tracker.health == Health::Up {
            let migration_uri = beat.host.as_ref().map(|h| h.migration_uri.clone());
            self.commit(ctx, up(&self.name, capacity, fencing_armed, migration_uri));
            self.sync_pools(&beat.pools, ctx);
            self.sync_images(ctx);
            self.sync_networks(&beat.networks, ctx);
            if let Some(host) = &beat.host {
                self.sync_networking(host, ctx);
            }
        }
        self.cx.report_to.do_send(HostReport {
            host: self.name.clone(),
            listed_after: self.marks.listed_after(beat.after_grant),
            domains: beat.domains,
        });
    }

    fn destroy(&self, stale: Stale, ctx: &mut Context<Self>) {
        let Stale {
            name: vm,
            generation,
            stray,
        } = stale;
        let Some(address) = self.address() else {
            return;
        };
        let client = self.cx.agents.client(&address);
        let fence = Some(Fence {
            term: self.cx.term,
            generation,
        });
        let host = self.name.clone();
        ctx.spawn(
            async move {
                let result = match client {
                    Ok(mut c) => c
                        .destroy_vm(deadline(
                            VmRef {
                                name: vm.clone(),
                                fence,
                                stray,
                                ..Default::default()
                            },
                            QUICK_CALL,
                        ))
                        .await
                        .map(|_| ()),
                    Err(e) => Err(tonic::Status::unavailable(e.to_string())),
                };
                if let Err(status) = result {
                    tracing::warn!(%host, %vm, error = %status.message(), "cannot destroy stale copy");
                }
                vm
            }
            .into_actor(self)
            .map(|vm, act, _| act.destroying.retain(|n| n != &vm)),
        );
    }

    fn lease_requested(&mut self, seq: u64, ctx: &mut Context<Self>) {
        if self.tracker.health == Health::Dead {
            // Not until it has reported its domains and run nothing stale (`heartbeat`).
            tracing::debug!(host = %self.name, seq, "no lease for a host still dead");
            return;
        }
        self.waiting.push(seq);
        if !self.confirming {
            self.confirm_and_grant(ctx);
        }
    }

    /// One quorum round answers every request received before it started (DESIGN.md,
    /// lease protocol step 2), this host's and every other host's (`LeadershipRounds`).
    /// A leader cut off from its quorum never gets here, so it grants nothing and its
    /// hosts fence themselves.
    fn confirm_and_grant(&mut self, ctx: &mut Context<Self>) {
        let batch = std::mem::take(&mut self.waiting);
        if batch.is_empty() {
            return;
        }
        self.confirming = true;
        let session_no = self.session_no;
        let rounds = self.cx.rounds.clone();
        ctx.spawn(
            async move { rounds.confirm().await }
                .into_actor(self)
                .map(move |res, act, ctx| {
                    act.confirming = false;
                    match res {
                        Ok(()) if act.session_no == session_no => act.grant(&batch),
                        Ok(()) => {
                            tracing::debug!(host = %act.name, "session changed during the round; its requests lapse");
                        }
                        Err(e) => {
                            tracing::info!(host = %act.name, term = act.cx.term, error = %e, "leadership not confirmed; no lease granted");
                        }
                    }
                    act.confirm_and_grant(ctx);
                }),
        );
    }

    fn grant(&mut self, seqs: &[u64]) {
        // Only the newest request matters: its grant ends latest on the host.
        let (Some(&seq), Some(tx)) = (seqs.iter().max(), &self.session_tx) else {
            return;
        };
        if self.tracker.health == Health::Dead {
            return;
        }
        // Recorded before sending: the host's lease ends by (this moment) + ttl.
        let now = Instant::now();
        self.tracker.last_grant_sent = Some(now);
        self.cx.grants.record(&self.name, now);
        // Read at send time: a disarm is applied (every host marked not armed) before any
        // grant can say so.
        let (disarmed, ha_epoch, placements) = self
            .cx
            .node
            .view()
            .read(|d| (d.state.ha.disarmed, d.state.ha.epoch, d.state.placements));
        let grant = SessionRequest {
            kind: Some(session_request::Kind::Grant(LeaseGrant {
                seq,
                term: self.cx.term,
                ttl_ms: self.cx.timings.ttl.as_millis() as u64,
                disarmed,
                ha_epoch,
            })),
        };
        if tx.try_send(grant).is_err() {
            tracing::debug!(host = %self.name, seq, "session queue full; grant dropped");
        } else {
            self.marks.sent(seq, placements);
        }
    }
}

/// `fencing`: whether the host fences itself, and the HA epoch of the grant that told it.
fn up(
    name: &str,
    capacity: Option<Capacity>,
    fencing: Option<(bool, u64)>,
    migration_uri: Option<String>,
) -> Command {
    Command::HostObserved {
        name: name.to_string(),
        health: HostHealth::Up,
        capacity,
        fencing_armed: fencing.map(|(armed, _)| armed),
        armed_epoch: fencing.map_or(0, |(_, epoch)| epoch),
        migration_uri,
    }
}

fn suspect(name: &str) -> Command {
    Command::HostObserved {
        name: name.to_string(),
        health: HostHealth::Suspect,
        capacity: None,
        fencing_armed: None,
        armed_epoch: 0,
        migration_uri: None,
    }
}

impl Actor for HostActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        // Twice per heartbeat, so missed beats and lapsed leases are noticed promptly.
        ctx.run_interval(self.cx.timings.heartbeat / 2, |act, ctx| act.tick(ctx));
        self.connect(ctx);
    }
}

impl StreamHandler<Result<SessionEvent, tonic::Status>> for HostActor {
    fn handle(&mut self, item: Result<SessionEvent, tonic::Status>, ctx: &mut Self::Context) {
        match item {
            Ok(SessionEvent {
                kind: Some(session_event::Kind::Heartbeat(beat)),
            }) => self.heartbeat(beat, ctx),
            Ok(SessionEvent {
                kind: Some(session_event::Kind::LeaseRequest(req)),
            }) => self.lease_requested(req.seq, ctx),
            Ok(SessionEvent { kind: None }) => {}
            Err(status) => {
                tracing::warn!(host = %self.name, error = %status.message(), "session failed");
                self.lost(ctx);
            }
        }
    }

    fn finished(&mut self, ctx: &mut Self::Context) {
        // The default would stop the actor; a closed session is a reason to reconnect.
        if self.session.take().is_some() {
            tracing::warn!(host = %self.name, "session closed by hostd");
            self.lost(ctx);
        }
    }
}

impl Handler<Shutdown> for HostActor {
    type Result = ();
    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        ctx.stop();
    }
}
