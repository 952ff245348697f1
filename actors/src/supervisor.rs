//! `Supervisor`: runs on every controller, acts only on the leader. It watches openraft's
//! metrics; once this node leads and has applied an entry of its own term (so its state
//! machine holds everything earlier leaders committed), it starts one `HostActor` per host
//! and one `VmActor` per VM, and keeps that set in step with committed changes. The moment
//! the node stops leading, every child is stopped.

use std::collections::HashMap;
use std::time::Duration;

use actix::prelude::*;
use drover_proto::transport::TlsHandle;
use drover_raft::model::ObservedState;
use drover_raft::store::Change;
use drover_raft::{RaftMetrics, RaftNode};
use openraft::ServerState;
use tokio_stream::wrappers::errors::BroadcastStreamRecvError;
use tokio_stream::wrappers::{BroadcastStream, WatchStream};

use crate::agents::AgentPool;
use crate::host::{HostActor, HostReport};
use crate::vm::{observed_state, Observation, Observe, Poke, VmActor};
use crate::Shutdown;

#[derive(Debug, Clone)]
pub struct SupervisorConfig {
    /// How often hostd sends heartbeats on the session.
    pub heartbeat_interval: Duration,
    /// The controller's identity towards hostd (mutual TLS), or plaintext.
    pub tls: TlsHandle,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(1),
            tls: None,
        }
    }
}

/// The children while this node leads.
struct Leading {
    term: u64,
    changes: SpawnHandle,
    hosts: HashMap<String, Addr<HostActor>>,
    vms: HashMap<String, Addr<VmActor>>,
}

pub struct Supervisor {
    node: RaftNode,
    config: SupervisorConfig,
    agents: AgentPool,
    leading: Option<Leading>,
    /// A quorum round in flight that must confirm leadership of this term before the
    /// children start.
    confirming: Option<u64>,
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
            confirming: None,
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
        self.leading = Some(Leading {
            term,
            changes,
            hosts: HashMap::new(),
            vms: HashMap::new(),
        });
        self.sync_all(ctx);
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
        for addr in leading.hosts.values() {
            addr.do_send(Shutdown);
        }
        for addr in leading.vms.values() {
            addr.do_send(Shutdown);
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
    }

    fn sync_host(&mut self, name: &str, ctx: &mut Context<Self>) {
        let exists = self.node.view().read(|d| d.state.hosts.contains_key(name));
        let Some(l) = &mut self.leading else { return };
        match (exists, l.hosts.contains_key(name)) {
            (true, false) => {
                let actor = HostActor::new(
                    name.to_string(),
                    self.node.clone(),
                    self.agents.clone(),
                    ctx.address().recipient(),
                    l.term,
                    self.config.heartbeat_interval,
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
                    l.term,
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
            Ok(Change::Host(name)) => self.sync_host(&name, ctx),
            Ok(Change::Vm(name)) => self.sync_vm(&name),
            // Missed changes or a replaced state: compare everything.
            Ok(Change::Reset) | Err(BroadcastStreamRecvError::Lagged(_)) => self.sync_all(ctx),
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
            let state = report
                .domains
                .iter()
                .find(|d| d.name == name)
                .map(|d| observed_state(d.state()))
                .unwrap_or(ObservedState::Missing);
            if let Some(addr) = l.vms.get(&name) {
                addr.do_send(Observe(Observation {
                    host: report.host.clone(),
                    state,
                }));
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
