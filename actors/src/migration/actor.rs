//! `MigrationActor`: carries out one running migrate operation on the leader. It calls the
//! source hostd's `MigrateVm` (which attaches to the migration if one already runs, so a new
//! leader picks up where the old one was), commits progress about once a second, and ends
//! the operation with `FinishMigration`. When the stream is lost it asks both hosts where
//! the domain is ([`locate`]) instead of guessing. Cancellation is an `AbortMigration` on
//! the source, repeated until the migration ends.

use std::time::{Duration, Instant};

use actix::prelude::*;
use drover_proto::agent::v1::{
    host_agent_client::HostAgentClient, CloudInitSeed, Domain, EnsureNetworkRequest, Fence,
    ListDomainsRequest, MigrateVmRequest, MigrationStats, NetworkWiring, VmDisk, VmNic, VmRef,
};
use drover_raft::model::{
    DeadReason, EventKind, HostHealth, MigrationPolicy, MigrationProgress, OpKind, OpState,
};
use drover_raft::{wall_clock_ms, Command, RaftNode, Request};
use tonic::transport::Channel;
use tonic::Code;

use super::locate::{after_failure, locate, Location};
use crate::agents::{deadline, AgentPool, QUICK_CALL};
use crate::vm::wire::{seed, vm_disks, vm_nics, wirings};
use crate::vm::Poke;
use crate::Shutdown;

/// Progress is committed at most this often (it goes through the Raft log).
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// Re-checks cancellation without news.
const TICK: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// How often a backoff looks whether the source host was declared dead meanwhile.
const DEATH_POLL: Duration = Duration::from_millis(100);
/// Longest wait for an image copy to the destination that another actor is making.
const COPY_WAIT: Duration = Duration::from_secs(600);

pub struct MigrationActor {
    op: u64,
    node: RaftNode,
    agents: AgentPool,
    term: u64,
    /// An abort is in flight.
    aborting: bool,
}

impl MigrationActor {
    pub fn new(op: u64, node: RaftNode, agents: AgentPool, term: u64) -> Self {
        Self {
            op,
            node,
            agents,
            term,
            aborting: false,
        }
    }

    fn check_cancel(&mut self, ctx: &mut Context<Self>) {
        if self.aborting {
            return;
        }
        let Some(info) = Info::read(&self.node, self.op) else {
            return;
        };
        if !info.cancel_requested {
            return;
        }
        self.aborting = true;
        let agents = self.agents.clone();
        let term = self.term;
        ctx.spawn(
            async move {
                let mut client = agents.client(&info.src_addr).map_err(|e| e.to_string())?;
                client
                    .abort_migration(deadline(
                        VmRef {
                            name: info.vm.clone(),
                            fence: Some(Fence {
                                term,
                                generation: info.generation - 1,
                            }),
                            stray: false,
                            ..Default::default()
                        },
                        QUICK_CALL,
                    ))
                    .await
                    .map(|r| r.into_inner().aborted)
                    .map_err(|s| s.message().to_string())
            }
            .into_actor(self)
            .map(|res, act, _| {
                act.aborting = false;
                tracing::info!(op = act.op, ?res, "abort requested on the source");
            }),
        );
    }
}

impl Actor for MigrationActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.run_interval(TICK, |act, ctx| act.check_cancel(ctx));
        let driver = Driver {
            op: self.op,
            node: self.node.clone(),
            agents: self.agents.clone(),
            term: self.term,
        };
        ctx.spawn(driver.run().into_actor(self).map(|_, _, ctx| ctx.stop()));
    }
}

impl Handler<Poke> for MigrationActor {
    type Result = ();
    fn handle(&mut self, _: Poke, ctx: &mut Self::Context) {
        self.check_cancel(ctx);
    }
}

impl Handler<Shutdown> for MigrationActor {
    type Result = ();
    fn handle(&mut self, _: Shutdown, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// A running migrate operation, as the state has it now.
#[derive(Debug, Clone)]
struct Info {
    vm: String,
    src: String,
    dst: String,
    /// The generation the VM gets at the destination.
    generation: u64,
    policy: MigrationPolicy,
    src_addr: String,
    dst_addr: String,
    dst_uri: String,
    src_dead: bool,
    /// An operator (or fence agent) confirmed the destination is off: nothing runs there,
    /// so a migration it cannot answer for may be recorded failed.
    dst_off: bool,
    cancel_requested: bool,
    /// The VM's disks, and which of them (by index) are local and so copied.
    disks: Vec<VmDisk>,
    copy_disks: Vec<u32>,
    seed: Option<CloudInitSeed>,
    /// The image the VM's boot disk is a clone of, when the destination has no copy yet
    /// (an unshared pool): copied there before the migration.
    image_to_copy: Option<String>,
    /// The networks the VM's NICs use, as the destination wires them before the VM
    /// arrives (its domain's interfaces name them).
    networks: Vec<NetworkWiring>,
    /// Its NICs, for the network config of a seed built on the destination.
    nics: Vec<VmNic>,
}

impl Info {
    /// `None` once the operation is no longer running (or is not a migration).
    fn read(node: &RaftNode, op: u64) -> Option<Info> {
        node.view().read(|d| {
            let o = d.state.operations.ops.get(&op)?;
            if o.state != OpState::Running {
                return None;
            }
            let OpKind::Migrate {
                vm,
                src,
                dst,
                generation,
                policy,
            } = &o.kind
            else {
                return None;
            };
            let src_host = d.state.hosts.get(src);
            let dst_host = d.state.hosts.get(dst);
            let moving = d.state.vms.get(vm);
            Some(Info {
                disks: moving.map(vm_disks).unwrap_or_default(),
                copy_disks: moving
                    .map(|v| {
                        (0..v.disks.len() as u32)
                            .filter(|&i| d.state.is_local_pool(&v.disks[i as usize].pool))
                            .collect()
                    })
                    .unwrap_or_default(),
                seed: moving.and_then(seed),
                networks: moving
                    .map(|v| wirings(v, &d.state, dst))
                    .unwrap_or_default(),
                nics: moving.map(|v| vm_nics(v, &d.state)).unwrap_or_default(),
                image_to_copy: moving
                    .and_then(|v| d.state.image_to_copy(v, dst))
                    .map(|i| i.name.clone()),
                vm: vm.clone(),
                src: src.clone(),
                dst: dst.clone(),
                generation: *generation,
                policy: *policy,
                src_addr: src_host.map(|h| h.address.clone()).unwrap_or_default(),
                dst_addr: dst_host.map(|h| h.address.clone()).unwrap_or_default(),
                dst_uri: dst_host
                    .map(|h| h.migration_uri.clone())
                    .unwrap_or_default(),
                src_dead: src_host.is_none_or(|h| h.health == HostHealth::Dead),
                dst_off: dst_host.is_none_or(|h| {
                    h.health == HostHealth::Dead
                        && matches!(
                            h.dead_reason,
                            Some(DeadReason::Operator | DeadReason::FenceAgent)
                        )
                }),
                cancel_requested: o.cancel_requested,
            })
        })
    }
}

/// How following the source's stream ended.
enum Followed {
    Done(MigrationStats),
    /// hostd's definitive answer: libvirt failed or aborted the migration.
    Failed {
        code: Code,
        message: String,
    },
    /// No answer (hostd unreachable, stream broken): where the VM is must be found out.
    Lost(String),
}

struct Driver {
    op: u64,
    node: RaftNode,
    agents: AgentPool,
    term: u64,
}

impl Driver {
    async fn run(self) {
        let mut backoff = Duration::from_millis(250);
        while let Some(info) = Info::read(&self.node, self.op) {
            // A dead source runs nothing and answers nothing: asking it to migrate again
            // would only wait out a connect timeout per round. Where the VM is depends on
            // the destination alone.
            let outcome = if info.src_dead {
                Followed::Lost(format!("source {} is dead", info.src))
            } else {
                self.follow(&info).await
            };
            let decided = match outcome {
                Followed::Done(stats) => Some((OpState::Succeeded, String::new(), Some(stats))),
                Followed::Failed { code, message } => {
                    self.after_failure(&info, code, message).await
                }
                Followed::Lost(why) => {
                    tracing::warn!(op = self.op, vm = %info.vm, %why, "lost the migration stream; locating the VM");
                    // Read again: the source may have been declared dead while the stream
                    // hung, and then it need not (and may not) be asked.
                    let Some(now) = Info::read(&self.node, self.op) else {
                        return;
                    };
                    match self.locate(&now).await {
                        Location::Destination => Some((OpState::Succeeded, String::new(), None)),
                        Location::Neither => Some((
                            OpState::Failed,
                            format!("the VM runs on neither host any more ({why})"),
                            None,
                        )),
                        // Still migrating or not reachable: follow it again.
                        Location::Source | Location::Unknown => None,
                    }
                }
            };
            match decided {
                Some((state, message, stats)) => {
                    if self.finish(&info, state, message, stats).await {
                        return;
                    }
                }
                None => {
                    self.pause(backoff, info.src_dead).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Waits `backoff` before the next round, but no longer than it takes the source to be
    /// declared dead: from then on the destination alone decides, and an HA VM's failover
    /// waits for this operation to end.
    async fn pause(&self, backoff: Duration, src_dead: bool) {
        let until = Instant::now() + backoff;
        while Instant::now() < until {
            tokio::time::sleep(DEATH_POLL.min(until - Instant::now())).await;
            let died = Info::read(&self.node, self.op).is_none_or(|i| i.src_dead);
            if died && !src_dead {
                return;
            }
        }
    }

    /// hostd reported a failure. Unless the VM is in fact running at the destination
    /// (the stream broke after the handover), the operation failed or was cancelled — but
    /// only once both hosts have been asked (`locate::after_failure`): until then, locate
    /// again with backoff rather than start the migration anew.
    async fn after_failure(
        &self,
        info: &Info,
        code: Code,
        message: String,
    ) -> Option<(OpState, String, Option<MigrationStats>)> {
        let mut backoff = Duration::from_millis(250);
        loop {
            // Read now: the cancel was most likely asked for after the stream began. Gone:
            // someone else ended the operation, nothing is left to record.
            let now = Info::read(&self.node, self.op)?;
            let location = self.locate(&now).await;
            let cancelled = now.cancel_requested;
            match after_failure(&location, code, cancelled) {
                Some(OpState::Succeeded) => return Some((OpState::Succeeded, String::new(), None)),
                Some(state) => return Some((state, message, None)),
                // NotFound: the source no longer has it; follow again once the
                // destination answers.
                None if code == Code::NotFound => return None,
                None => {
                    tracing::warn!(
                        op = self.op, vm = %info.vm, dst = %info.dst, %message,
                        "migration failed at the source but the destination cannot be asked; locating again"
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Makes sure `host` has a copy of `image`: copies it, or waits for a copy another
    /// actor is making (a VM started there from the same image).
    async fn copy_image(&self, image: &str, host: &str) -> Result<(), String> {
        let deadline = Instant::now() + COPY_WAIT;
        loop {
            let copy = crate::image_copy::copy(&self.node, &self.agents, self.term, image, host);
            let err = match copy.await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            let under_way = self.node.view().read(|d| {
                d.state
                    .images
                    .get(image)
                    .is_some_and(|i| i.copies.contains_key(host) && !i.ready_on(host))
            });
            if !under_way || Instant::now() >= deadline {
                return Err(err);
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }

    async fn follow(&self, info: &Info) -> Followed {
        let mut client = match self.client(&info.src_addr) {
            Ok(c) => c,
            Err(e) => return Followed::Lost(e),
        };
        if info.dst_uri.is_empty() {
            return Followed::Failed {
                code: Code::FailedPrecondition,
                message: format!("destination {} reports no migration URI", info.dst),
            };
        }
        if let Some(image) = &info.image_to_copy {
            if let Err(message) = self.copy_image(image, &info.dst).await {
                return Followed::Failed {
                    code: Code::FailedPrecondition,
                    message,
                };
            }
        }
        if let Err(status) = self.wire_destination(info).await {
            // Transport trouble is retried like any lost call; hostd's refusal ends it.
            return classify(status);
        }
        let req = MigrateVmRequest {
            name: info.vm.clone(),
            fence: Some(Fence {
                term: self.term,
                generation: info.generation - 1,
            }),
            dest_uri: info.dst_uri.clone(),
            new_generation: info.generation,
            max_downtime_ms: info.policy.max_downtime_ms,
            bandwidth_mibps: info.policy.bandwidth_mibps,
            auto_converge: info.policy.auto_converge,
            progress_timeout_ms: info.policy.progress_timeout_ms,
            disks: info.disks.clone(),
            copy_disks: info.copy_disks.clone(),
            seed: info.seed.clone(),
            nics: info.nics.clone(),
        };
        tracing::info!(op = self.op, vm = %info.vm, src = %info.src, dst = %info.dst, term = self.term, "migrating");
        let mut stream = match client.migrate_vm(req).await {
            Ok(r) => r.into_inner(),
            Err(s) => return classify(s),
        };
        let mut last_commit: Option<Instant> = None;
        loop {
            match stream.message().await {
                Ok(Some(ev)) if ev.done => return Followed::Done(ev.stats.unwrap_or_default()),
                Ok(Some(ev)) => {
                    let due = last_commit.is_none_or(|t| t.elapsed() >= PROGRESS_EVERY);
                    if let (Some(stats), true) = (ev.stats, due) {
                        last_commit = Some(Instant::now());
                        let _ = self
                            .commit(Command::MigrationProgress {
                                op: self.op,
                                progress: progress(&stats),
                            })
                            .await;
                    }
                }
                Ok(None) => return Followed::Lost("the stream ended without an outcome".into()),
                Err(s) => return classify(s),
            }
        }
    }

    async fn locate(&self, info: &Info) -> Location {
        // A dead source's answer would not be used (`locate` counts it empty), and a dead
        // host may not answer at all: not asking spares a connect timeout.
        let src = if info.src_dead {
            None
        } else {
            self.domains(&info.src_addr).await
        };
        let dst = if info.dst_off {
            Some(Vec::new())
        } else {
            self.domains(&info.dst_addr).await
        };
        locate(
            &info.vm,
            info.generation,
            src.as_deref(),
            dst.as_deref(),
            info.src_dead,
        )
    }

    async fn domains(&self, address: &str) -> Option<Vec<Domain>> {
        let mut client = self.client(address).ok()?;
        match client
            .list_domains(deadline(ListDomainsRequest {}, QUICK_CALL))
            .await
        {
            Ok(r) => Some(r.into_inner().domains),
            Err(_) => None,
        }
    }

    /// Commits the end; `false` when the commit failed and must be retried.
    async fn finish(
        &self,
        info: &Info,
        state: OpState,
        message: String,
        stats: Option<MigrationStats>,
    ) -> bool {
        let message = match state {
            OpState::Succeeded => format!(
                "moved from {} to {}{}",
                info.src,
                info.dst,
                stats
                    .and_then(|s| s.downtime_ms)
                    .map(|d| format!(", downtime {d} ms"))
                    .unwrap_or_default()
            ),
            _ => message,
        };
        let cmd = Command::FinishMigration {
            op: self.op,
            state,
            message: message.clone(),
            progress: stats.as_ref().map(progress),
            at_ms: wall_clock_ms(),
        };
        match self.commit(cmd).await {
            Ok(()) => {
                tracing::info!(op = self.op, vm = %info.vm, state = state.as_str(), %message, "migration finished");
                let kind = if state == OpState::Succeeded {
                    EventKind::Migrated
                } else {
                    EventKind::MigrationFailed
                };
                let _ = self
                    .commit(Command::event(
                        kind,
                        Some(&info.src),
                        Some(&info.vm),
                        message,
                    ))
                    .await;
                metrics::counter!("drover_migrations_total", "outcome" => state.as_str())
                    .increment(1);
                true
            }
            // Someone else finished it (a newer leader): nothing left to do.
            Err(_) if Info::read(&self.node, self.op).is_none() => true,
            Err(e) => {
                tracing::warn!(op = self.op, error = %e, "could not record the migration's end; retrying");
                false
            }
        }
    }

    /// Has the destination wire the VM's networks, so that its interfaces find them.
    async fn wire_destination(&self, info: &Info) -> Result<(), tonic::Status> {
        if info.networks.is_empty() {
            return Ok(());
        }
        let mut client = self
            .client(&info.dst_addr)
            .map_err(tonic::Status::unavailable)?;
        for network in &info.networks {
            let req = EnsureNetworkRequest {
                network: Some(network.clone()),
                term: self.term,
            };
            client
                .ensure_network(deadline(req, QUICK_CALL))
                .await
                .map_err(|s| {
                    let message = format!(
                        "{} cannot wire network {}: {}",
                        info.dst,
                        network.name,
                        s.message()
                    );
                    tonic::Status::new(s.code(), message)
                })?;
        }
        Ok(())
    }

    fn client(&self, address: &str) -> Result<HostAgentClient<Channel>, String> {
        if address.is_empty() {
            return Err("the host is no longer registered".into());
        }
        self.agents
            .client(address)
            .map_err(|e| format!("bad host address {address}: {e}"))
    }

    async fn commit(&self, cmd: Command) -> Result<(), String> {
        match self.node.write_local(Request::anonymous(cmd)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(refused)) => Err(format!("refused: {refused}")),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Transport trouble is "lost"; anything hostd decided is its answer.
fn classify(s: tonic::Status) -> Followed {
    match s.code() {
        Code::Unavailable | Code::Unknown | Code::Cancelled | Code::DeadlineExceeded => {
            Followed::Lost(s.message().to_string())
        }
        code => Followed::Failed {
            code,
            message: s.message().to_string(),
        },
    }
}

fn progress(s: &MigrationStats) -> MigrationProgress {
    MigrationProgress {
        data_total: s.data_total,
        data_processed: s.data_processed,
        data_remaining: s.data_remaining,
        dirty_rate: s.dirty_rate,
        iteration: s.iteration,
        elapsed_ms: s.elapsed_ms,
        downtime_ms: s.downtime_ms,
    }
}
