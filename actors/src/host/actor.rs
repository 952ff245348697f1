//! `HostActor`: one per registered host on the leader. It opens the session stream to the
//! host's hostd (Hello, then heartbeats), keeps the last beat in memory (heartbeats never
//! go through Raft), commits health only when it changes, and hands each heartbeat's
//! domain list to the supervisor, which routes it to the VM actors.
//!
//! Seam for the HA issue: leases ride on this session and `Unreachable` becomes the
//! lease-driven `Suspect`/`Dead` machine.

use std::time::{Duration, Instant};

use actix::prelude::*;
use drover_proto::agent::v1::{
    session_event, session_request, Domain, Hello, SessionEvent, SessionRequest,
};
use drover_raft::model::{Capacity, HostHealth};
use drover_raft::{Command, RaftNode, Request};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::agents::AgentPool;
use crate::Shutdown;

/// Heartbeats missed before the session is considered broken.
const MISSED_BEATS: u32 = 3;
const RECONNECT_MAX: Duration = Duration::from_secs(5);

/// A heartbeat's domain list, for the supervisor to route to VM actors.
#[derive(Message)]
#[rtype(result = "()")]
pub struct HostReport {
    pub host: String,
    pub domains: Vec<Domain>,
}

pub struct HostActor {
    name: String,
    node: RaftNode,
    agents: AgentPool,
    report_to: Recipient<HostReport>,
    term: u64,
    interval: Duration,
    /// Dropping it closes our half of the session, which ends it on hostd's side too.
    session_tx: Option<mpsc::Sender<SessionRequest>>,
    session: Option<SpawnHandle>,
    connecting: bool,
    last_beat: Option<Instant>,
    reconnect_backoff: Duration,
}

impl HostActor {
    pub fn new(
        name: String,
        node: RaftNode,
        agents: AgentPool,
        report_to: Recipient<HostReport>,
        term: u64,
        interval: Duration,
    ) -> Self {
        Self {
            name,
            node,
            agents,
            report_to,
            term,
            interval,
            session_tx: None,
            session: None,
            connecting: false,
            last_beat: None,
            reconnect_backoff: Duration::ZERO,
        }
    }

    fn connect(&mut self, ctx: &mut Context<Self>) {
        if self.connecting || self.session.is_some() {
            return;
        }
        let Some(address) = self
            .node
            .view()
            .read(|d| d.state.hosts.get(&self.name).map(|h| h.address.clone()))
        else {
            ctx.stop();
            return;
        };
        self.connecting = true;
        let client = self.agents.client(&address);
        let hello = SessionRequest {
            kind: Some(session_request::Kind::Hello(Hello {
                term: self.term,
                leader_id: self.node.id(),
                heartbeat_interval_ms: self.interval.as_millis() as u64,
            })),
        };
        let fut = async move {
            let mut client = client.map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
            let (tx, rx) = mpsc::channel(4);
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
                    tracing::info!(host = %act.name, term = act.term, %address, "session open");
                    act.session_tx = Some(tx);
                    act.last_beat = Some(Instant::now());
                    act.session = Some(ctx.add_stream(stream));
                }
                Err(status) => {
                    tracing::debug!(host = %act.name, %address, error = %status.message(), "cannot open session");
                    act.lost(ctx);
                }
            }
        }));
    }

    /// The session is gone: say so (once) and try again later.
    fn lost(&mut self, ctx: &mut Context<Self>) {
        if let Some(handle) = self.session.take() {
            ctx.cancel_future(handle);
        }
        self.session_tx = None;
        self.commit_health(ctx, HostHealth::Unreachable, None);
        self.reconnect_backoff =
            (self.reconnect_backoff * 2).clamp(Duration::from_millis(250), RECONNECT_MAX);
        ctx.run_later(self.reconnect_backoff, |act, ctx| act.connect(ctx));
    }

    /// Commits the host's health (and capacity) if the replicated record differs.
    fn commit_health(
        &self,
        ctx: &mut Context<Self>,
        health: HostHealth,
        capacity: Option<Capacity>,
    ) {
        let differs = self.node.view().read(|d| {
            d.state
                .hosts
                .get(&self.name)
                .is_some_and(|h| h.health != health || capacity.is_some_and(|c| c != h.capacity))
        });
        if !differs {
            return;
        }
        tracing::info!(host = %self.name, term = self.term, health = health.as_str(), "host health changes");
        let node = self.node.clone();
        let cmd = Command::HostObserved {
            name: self.name.clone(),
            health,
            capacity,
        };
        ctx.spawn(
            async move {
                if let Err(e) = node.write_local(Request::anonymous(cmd)).await {
                    tracing::warn!(error = %e, "cannot commit host health");
                }
            }
            .into_actor(self),
        );
    }

    fn check_beats(&mut self, ctx: &mut Context<Self>) {
        let overdue = self
            .last_beat
            .is_some_and(|t| t.elapsed() > self.interval * MISSED_BEATS);
        if self.session.is_some() && overdue {
            tracing::warn!(host = %self.name, "heartbeats missed; dropping the session");
            self.lost(ctx);
        }
    }
}

impl Actor for HostActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(self.interval, |act, ctx| act.check_beats(ctx));
        self.connect(ctx);
    }
}

impl StreamHandler<Result<SessionEvent, tonic::Status>> for HostActor {
    fn handle(&mut self, item: Result<SessionEvent, tonic::Status>, ctx: &mut Self::Context) {
        match item {
            Ok(SessionEvent {
                kind: Some(session_event::Kind::Heartbeat(beat)),
            }) => {
                self.last_beat = Some(Instant::now());
                self.reconnect_backoff = Duration::ZERO;
                let capacity = beat.host.as_ref().map(|h| Capacity {
                    vcpus: h.vcpus,
                    memory_mib: h.memory_mib,
                });
                self.commit_health(ctx, HostHealth::Up, capacity);
                self.report_to.do_send(HostReport {
                    host: self.name.clone(),
                    domains: beat.domains,
                });
            }
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
