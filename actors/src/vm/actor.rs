//! `VmActor`: one per VM on the leader. It runs the reconcile loop — ask [`decide`] for the
//! next action, carry it out (a Raft write or a hostd call), repeat — and is the only
//! writer of its VM's placement. Failures back off; nothing in here panics or blocks.

use std::time::Duration;

use actix::prelude::*;
use drover_proto::agent::v1::{
    DeleteVolumeRequest, Domain, DomainState, Fence, StartVmRequest, StopVmRequest, VmRef,
};
use drover_raft::model::{ObservedState, Vm};
use drover_raft::{Command, RaftNode, Reply, Request};

use super::reconcile::{decide, Action, Observation};
use super::wire::{doomed_disks, seed, vm_disks, vm_nics, wirings};
use crate::agents::{deadline, AgentPool, QUICK_CALL, START_CALL};
use crate::Shutdown;

/// How long hostd waits for a guest to shut down before it destroys it.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Re-check even without news, so a lost message cannot wedge a VM.
const TICK: Duration = Duration::from_secs(5);

/// What the VM's host reported in its latest heartbeat.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Observe(pub Observation);

/// The VM's record changed: reconcile again.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Poke;

pub struct VmActor {
    name: String,
    node: RaftNode,
    agents: AgentPool,
    /// The leader's term, sent to hostd as a fencing token.
    term: u64,
    obs: Option<Observation>,
    /// An action is in flight. Reconciles asked for meanwhile are dropped: the action's
    /// completion reconciles anyway, with fresh state.
    busy: bool,
    backoff: Duration,
}

impl VmActor {
    pub fn new(name: String, node: RaftNode, agents: AgentPool, term: u64) -> Self {
        Self {
            name,
            node,
            agents,
            term,
            obs: None,
            busy: false,
            backoff: Duration::ZERO,
        }
    }

    fn reconcile(&mut self, ctx: &mut Context<Self>) {
        if self.busy {
            return;
        }
        let next = self.node.view().read(|d| {
            d.state.vms.get(&self.name).map(|vm| {
                let action = decide(vm, &d.state, self.obs.as_ref());
                // The VM's host, but for volumes of an unplaced VM the host chosen for them.
                let host = match &action {
                    Action::DeleteVolumes { host } | Action::DropVolumes { host } => Some(host),
                    _ => vm.host.as_ref(),
                };
                let address = host
                    .and_then(|h| d.state.hosts.get(h))
                    .map(|h| h.address.clone());
                (vm.clone(), action, address, d.state.placements)
            })
        });
        let Some((vm, action, address, placements)) = next else {
            tracing::debug!(vm = %self.name, "VM is gone; actor stops");
            ctx.stop();
            return;
        };
        if action == Action::Wait {
            return;
        }
        tracing::info!(vm = %self.name, term = self.term, generation = vm.generation, ?action, "reconcile");
        self.busy = true;
        let exec = Exec {
            node: self.node.clone(),
            agents: self.agents.clone(),
            term: self.term,
            address,
            vm,
            placements,
        };
        ctx.spawn(exec.run(action).into_actor(self).map(|res, act, ctx| {
            act.busy = false;
            match res {
                Ok(obs) => {
                    if obs.is_some() {
                        act.obs = obs;
                    }
                    act.backoff = Duration::ZERO;
                    act.reconcile(ctx);
                }
                Err(e) => {
                    act.backoff = (act.backoff * 2).clamp(Duration::from_millis(200), MAX_BACKOFF);
                    tracing::warn!(vm = %act.name, error = %e, retry_in = ?act.backoff, "reconcile step failed");
                    ctx.run_later(act.backoff, |act, ctx| act.reconcile(ctx));
                }
            }
        }));
    }
}

impl Actor for VmActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(TICK, |act, ctx| act.reconcile(ctx));
        self.reconcile(ctx);
    }
}

impl Handler<Observe> for VmActor {
    type Result = ();
    fn handle(&mut self, msg: Observe, ctx: &mut Self::Context) {
        // Every heartbeat renews `listed_after`; only news is worth a reconcile.
        let changed = msg.0.news_over(self.obs.as_ref());
        self.obs = Some(msg.0);
        if changed {
            self.reconcile(ctx);
        }
    }
}

impl Handler<Poke> for VmActor {
    type Result = ();
    fn handle(&mut self, _: Poke, ctx: &mut Self::Context) {
        self.reconcile(ctx);
    }
}

impl Handler<Shutdown> for VmActor {
    type Result = ();
    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// One action's inputs, owned so the future does not borrow the actor.
struct Exec {
    node: RaftNode,
    agents: AgentPool,
    term: u64,
    address: Option<String>,
    vm: Vm,
    /// The state's placement count when the action was decided: hostd answers a command
    /// sent after it, so its answer knows of every placement up to it.
    placements: u64,
}

impl Exec {
    /// Carries out `action`; returns what the host now reports, when the action tells.
    async fn run(self, action: Action) -> Result<Option<Observation>, String> {
        let name = self.vm.name.clone();
        let generation = self.vm.generation;
        let fence = Some(Fence {
            term: self.term,
            generation,
        });
        match action {
            Action::Wait => Ok(None),
            Action::Place { host } => {
                self.commit(Command::PlaceVm {
                    name,
                    host,
                    expected_generation: generation,
                })
                .await?;
                Ok(None)
            }
            Action::Pending { reason } => {
                self.observed(self.vm.observed, reason).await?;
                Ok(None)
            }
            Action::Record {
                observed,
                generation,
                listed_after,
            } => {
                self.commit(Command::VmObserved {
                    name,
                    generation,
                    observed,
                    reason: String::new(),
                    listed_after,
                })
                .await?;
                Ok(None)
            }
            Action::Start { host } => {
                // A new generation first: hostd stamps the domain with it, so only a report
                // made after this start was handled can say the VM is off (never-twice:
                // a cold move must not race a start in flight).
                let started = match self
                    .commit(Command::BeginStart {
                        name: name.clone(),
                        expected_generation: generation,
                    })
                    .await?
                {
                    Reply::Vm(vm) => vm,
                    other => return Err(format!("BeginStart answered {other:?}")),
                };
                let (nics, networks) = self.node.view().read(|d| {
                    (
                        vm_nics(&started, &d.state),
                        wirings(&started, &d.state, &host),
                    )
                });
                let req = StartVmRequest {
                    name: name.clone(),
                    vcpus: self.vm.spec.vcpus,
                    ha: self.vm.ha,
                    memory_mib: self.vm.spec.memory_mib,
                    fence: Some(Fence {
                        term: self.term,
                        generation: started.generation,
                    }),
                    // The disks as they are at the start's generation: a disk change
                    // committed since this action was decided is in them.
                    disks: vm_disks(&started),
                    create_volumes: !started.volumes_created,
                    seed: seed(&started),
                    nics,
                    networks,
                };
                match self.agent()?.start_vm(deadline(req, START_CALL)).await {
                    Ok(d) => Ok(Some(observation(&host, &d.into_inner(), self.placements))),
                    Err(status) => {
                        let reason = format!("start on {host} failed: {}", status.message());
                        // Record why, so `vm get` shows it; the retry follows the backoff.
                        let _ = self
                            .commit(Command::VmObserved {
                                name,
                                generation: started.generation,
                                observed: started.observed,
                                reason: reason.clone(),
                                listed_after: 0,
                            })
                            .await;
                        Err(reason)
                    }
                }
            }
            Action::Stop { host } => {
                let req = StopVmRequest {
                    name,
                    timeout_ms: STOP_TIMEOUT.as_millis() as u64,
                    fence,
                };
                let d = self
                    .agent()?
                    .stop_vm(deadline(req, STOP_TIMEOUT + QUICK_CALL))
                    .await
                    .map_err(|s| format!("stop on {host} failed: {}", s.message()))?;
                Ok(Some(observation(&host, &d.into_inner(), self.placements)))
            }
            Action::Undefine { host } => {
                self.agent()?
                    .undefine_vm(deadline(
                        VmRef {
                            name,
                            fence,
                            stray: false,
                            delete_disks: doomed_disks(&self.vm),
                        },
                        QUICK_CALL,
                    ))
                    .await
                    .map_err(|s| format!("undefine on {host} failed: {}", s.message()))?;
                Ok(Some(Observation::missing(&host, self.placements)))
            }
            Action::DropVolumes { host } => {
                let mut deleted = Vec::new();
                for d in &self.vm.dropped_disks {
                    let req = DeleteVolumeRequest {
                        pool: d.pool.clone(),
                        volume: d.volume.clone(),
                        term: self.term,
                    };
                    self.agent()?
                        .delete_volume(deadline(req, QUICK_CALL))
                        .await
                        .map_err(|s| {
                            format!(
                                "deleting volume {} on {host} failed: {}",
                                d.volume,
                                s.message()
                            )
                        })?;
                    deleted.push(d.volume.clone());
                }
                self.commit(Command::DiskVolumesDeleted {
                    name,
                    volumes: deleted,
                })
                .await?;
                Ok(None)
            }
            Action::DeleteVolumes { host } => {
                // No domain of this VM is on `host` (it has none anywhere): UndefineVm
                // deletes the volumes and reports that nothing else was there.
                let req = VmRef {
                    name: name.clone(),
                    fence,
                    stray: false,
                    delete_disks: doomed_disks(&self.vm),
                };
                self.agent()?
                    .undefine_vm(deadline(req, QUICK_CALL))
                    .await
                    .map_err(|s| {
                        format!("deleting its volumes on {host} failed: {}", s.message())
                    })?;
                self.commit(Command::RemoveVm {
                    name,
                    expected_generation: generation,
                })
                .await?;
                Ok(None)
            }
            Action::CopyImage { host, image } => {
                crate::image_copy::copy(&self.node, &self.agents, self.term, &image, &host).await?;
                Ok(None)
            }
            Action::Remove => {
                if !doomed_disks(&self.vm).is_empty() && self.vm.host.is_some() {
                    // The domain is gone, but its volumes may not be (a start that failed
                    // after creating them): they go before the VM is forgotten, and the
                    // VM stays until its host can do that.
                    let req = VmRef {
                        name: name.clone(),
                        fence,
                        stray: false,
                        delete_disks: doomed_disks(&self.vm),
                    };
                    self.agent()?
                        .undefine_vm(deadline(req, QUICK_CALL))
                        .await
                        .map_err(|s| format!("deleting its volumes failed: {}", s.message()))?;
                }
                self.commit(Command::RemoveVm {
                    name,
                    expected_generation: generation,
                })
                .await?;
                Ok(None)
            }
        }
    }

    fn agent(
        &self,
    ) -> Result<
        drover_proto::agent::v1::host_agent_client::HostAgentClient<tonic::transport::Channel>,
        String,
    > {
        let address = self
            .address
            .as_deref()
            .ok_or_else(|| "the VM's host has no address".to_string())?;
        self.agents
            .client(address)
            .map_err(|e| format!("bad host address {address}: {e}"))
    }

    async fn observed(&self, observed: ObservedState, reason: String) -> Result<(), String> {
        self.commit(Command::VmObserved {
            name: self.vm.name.clone(),
            generation: self.vm.generation,
            observed,
            reason,
            // Re-records the observed state with a reason: never a change to "missing".
            listed_after: 0,
        })
        .await
        .map(drop)
    }

    async fn commit(&self, cmd: Command) -> Result<Reply, String> {
        match self.node.write_local(Request::anonymous(cmd)).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(refused)) => Err(format!("refused: {refused}")),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Maps hostd's domain state to the VM's observed state.
pub fn observed_state(state: DomainState) -> ObservedState {
    match state {
        DomainState::Running => ObservedState::Running,
        DomainState::Paused => ObservedState::Paused,
        DomainState::ShutOff => ObservedState::ShutOff,
        DomainState::Crashed => ObservedState::Crashed,
        DomainState::Other | DomainState::Unspecified => ObservedState::Unknown,
    }
}

/// What `host` reports about one of its domains, listed after it heard of
/// `listed_after` placements.
pub fn observation(host: &str, domain: &Domain, listed_after: u64) -> Observation {
    Observation {
        host: host.to_string(),
        state: observed_state(domain.state()),
        generation: Some(domain.generation),
        busy: domain.busy,
        listed_after,
    }
}
