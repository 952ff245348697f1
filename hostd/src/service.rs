//! The `HostAgent` gRPC service: validates requests, enforces the fencing tokens they carry, and
//! runs the matching [`Hypervisor`] call on a blocking thread. Owns the translation between
//! hypervisor types and the wire types, and the timing of a graceful stop.

use std::sync::Arc;
use std::time::Duration;

use drover_proto::agent::v1 as pb;
use drover_proto::agent::v1::host_agent_server::HostAgent;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, warn};

use crate::config::Config;
use crate::drill_stop::{self, DrillStop};
use crate::error::error_chain;
use crate::error::HostdError;
use crate::fence_ready::FenceReady;
use crate::fencing::{check_generation, Fencing};
use crate::hypervisor::{
    HostCapacity, Hypervisor, JobStats, ManagedDomain, MigrationRequest, PowerState, VmSpec,
};
use crate::migration::{Migrations, Update};
use crate::self_fence::LeaseKeeper;
use crate::session;
use crate::watchdog_status;

mod console;
mod images;
mod networks;
mod nics;
mod pools;
use crate::isolation::Isolation;
use crate::vm_locks::{VmGuard, VmLocks};
pub(crate) use pools::{disks_from_pb, doomed_from_pb, pool_to_pb, seed_from_pb};

/// How long StopVm waits for a guest when the request leaves `timeout_ms` at zero.
const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest StopVm wait honoured; bounds the deadline arithmetic for absurd requests.
const MAX_STOP_TIMEOUT: Duration = Duration::from_secs(3600);
/// Longest isolation a drill may ask for (the controllers allow at most an hour too).
const MAX_ISOLATION_MS: u64 = 3_600_000;
/// How often StopVm looks at a guest it asked to shut down.
const STOP_POLL_INTERVAL: Duration = Duration::from_millis(200);

/// State shared by every request and session of one hostd.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) hypervisor: Arc<dyn Hypervisor>,
    /// Turns true when hostd is stopping, so that sessions end and the server can drain.
    pub(crate) stop: watch::Receiver<bool>,
    /// One lock per VM name, so that a StartVm cannot interleave with the shutdown-then-
    /// destroy of a StopVm (whose final destroy would kill the fresh guest) or an UndefineVm.
    /// DestroyVm does not take it: it must be able to cut a slow StopVm short. Heartbeats
    /// read it to mark domains a command is changing `busy`.
    pub(crate) vm_locks: VmLocks,
    pub(crate) network_locks: crate::network::NetworkLocks,
    /// The highest leader term seen (persisted); see [`crate::fencing`].
    pub(crate) fencing: Fencing,
    /// This host's lease from the controllers; see [`crate::self_fence`].
    pub(crate) lease: Arc<LeaseKeeper>,
    /// Whether libvirt answers, so that this host could fence; renewals wait for it.
    pub(crate) fence_ready: Arc<FenceReady>,
    /// Live migrations running from this host.
    migrations: Arc<Migrations>,
    /// A failover drill's isolation (no controller session while it lasts).
    pub(crate) isolation: Isolation,
    /// Set by a stop-agent drill: `serve` ends and hostd exits.
    exit: watch::Sender<Option<u64>>,
    /// The stop-agent drill this process started under, until it gives the host back.
    held: std::sync::Mutex<Option<DrillStop>>,
}

impl Shared {
    /// This process started while a stop-agent drill holds the host: cut off until the
    /// drill ends (see [`crate::drill_stop`]).
    pub(crate) fn hold_for_drill(&self, stop: DrillStop, left: Duration) {
        self.isolation.isolate(stop.drill, left);
        *self.held.lock().unwrap_or_else(|p| p.into_inner()) = Some(stop);
    }

    async fn lock_vm(&self, name: &str) -> VmGuard {
        self.vm_locks.lock(name).await
    }

    /// Runs a hypervisor call on a blocking thread: libvirt calls block.
    pub(crate) async fn blocking<T, F>(&self, call: F) -> Result<T, HostdError>
    where
        T: Send + 'static,
        F: FnOnce(&dyn Hypervisor) -> Result<T, HostdError> + Send + 'static,
    {
        let hypervisor = Arc::clone(&self.hypervisor);
        tokio::task::spawn_blocking(move || call(hypervisor.as_ref()))
            .await
            .map_err(HostdError::Blocking)?
    }

    /// What hostd says about its host: `capacity` from libvirt, `links` from
    /// [`crate::network::host_links`].
    pub(crate) fn host_info(
        &self,
        capacity: HostCapacity,
        links: std::collections::BTreeSet<String>,
        vlan_links: bool,
    ) -> pb::HostInfo {
        pb::HostInfo {
            vtep_address: self
                .config
                .vtep_address
                .map(|ip| ip.to_string())
                .unwrap_or_default(),
            links: links.into_iter().collect(),
            vlan_links: Some(vlan_links),
            name: self.config.name.clone(),
            vcpus: capacity.vcpus,
            memory_mib: capacity.memory_mib,
            libvirt_uri: self.config.libvirt_uri.clone(),
            hypervisor: capacity.hypervisor,
            migration_uri: self.config.effective_migration_uri(),
        }
    }
}

/// The host's interfaces; none (logged) when they cannot be read: the scheduler then
/// keeps bridge and VLAN networks off this host rather than guess.
pub(crate) fn host_links_or_none(hv: &dyn Hypervisor) -> std::collections::BTreeSet<String> {
    hv.host_links().unwrap_or_else(|e| {
        tracing::warn!(error = %crate::error::error_chain(&e), "cannot list the host's network interfaces");
        Default::default()
    })
}

/// The `HostAgent` implementation; cheap to clone.
#[derive(Clone)]
pub(crate) struct AgentService {
    shared: Arc<Shared>,
}

impl AgentService {
    pub(crate) fn new(
        config: Config,
        hypervisor: Arc<dyn Hypervisor>,
        stop: watch::Receiver<bool>,
        fencing: Fencing,
        lease: Arc<LeaseKeeper>,
        fence_ready: Arc<FenceReady>,
        exit: watch::Sender<Option<u64>>,
    ) -> AgentService {
        AgentService {
            shared: Arc::new(Shared {
                config,
                hypervisor,
                stop,
                vm_locks: VmLocks::default(),
                network_locks: Default::default(),
                fencing,
                lease,
                fence_ready,
                migrations: Arc::default(),
                isolation: Isolation::default(),
                exit,
                held: std::sync::Mutex::new(None),
            }),
        }
    }

    pub(crate) fn shared(&self) -> Arc<Shared> {
        Arc::clone(&self.shared)
    }

    /// Admits a command's fencing token: its term must not be older than the highest seen
    /// (a newer one is persisted first), and its generation not older than the one the
    /// VM's domain carries here. Callers that take the VM's lock check under it.
    async fn fenced(
        &self,
        op: &'static str,
        name: &str,
        fence: Option<pb::Fence>,
    ) -> Result<pb::Fence, Status> {
        let fence = self.fenced_term(op, name, fence).await?;
        let vm = name.to_string();
        let held = self
            .shared
            .blocking(move |hv| hv.domain(&vm))
            .await
            .map_err(self.failed(op, name))?
            .map(|d| d.generation);
        check_generation(name, held, fence.generation).map_err(self.failed(op, name))?;
        Ok(fence)
    }

    /// Admits a command's term only (see [`Self::fenced`]).
    async fn fenced_term(
        &self,
        op: &'static str,
        name: &str,
        fence: Option<pb::Fence>,
    ) -> Result<pb::Fence, Status> {
        let fence = fence.ok_or_else(|| {
            self.failed(op, name)(HostdError::InvalidArgument(
                "missing fencing token (term and generation)".into(),
            ))
        })?;
        self.shared
            .fencing
            .admit(fence.term)
            .await
            .map_err(self.failed(op, name))?;
        Ok(fence)
    }

    fn host(&self) -> &str {
        &self.shared.config.name
    }

    /// Admits a drill's command: a current leader's term, and a duration hostd will keep
    /// to by itself (its promise to restore itself must not rest on the caller's
    /// arithmetic).
    async fn admit_drill(
        &self,
        op: &'static str,
        term: u64,
        duration_ms: u64,
    ) -> Result<(), Status> {
        self.fenced_term(
            op,
            "",
            Some(pb::Fence {
                term,
                generation: 0,
            }),
        )
        .await?;
        if duration_ms == 0 || duration_ms > MAX_ISOLATION_MS {
            return Err(Status::invalid_argument(format!(
                "{op}: drill duration {duration_ms} ms is outside 1 ms ..= {MAX_ISOLATION_MS} ms"
            )));
        }
        Ok(())
    }

    /// Logs a failed request and turns it into its status. Refusals the caller caused are
    /// routine; failures of this host are what an operator must see.
    fn failed<'a>(
        &'a self,
        op: &'static str,
        vm: &'a str,
    ) -> impl FnOnce(HostdError) -> Status + 'a {
        move |err| {
            match &err {
                HostdError::NotFound { .. }
                | HostdError::NotRunning { .. }
                | HostdError::NotManaged { .. }
                | HostdError::InvalidArgument(_)
                | HostdError::PoolPath { .. }
                | HostdError::PoolMissing { .. }
                | HostdError::NetworkInUse { .. }
                | HostdError::NicNotReleased { .. }
                | HostdError::VolumeMissing { .. }
                | HostdError::UploadUnsupported(_)
                | HostdError::VolumeExists { .. }
                | HostdError::NoWatchdog(_)
                | HostdError::BadImage(_) => {
                    info!(host = %self.host(), vm, error = %err, "{op} refused");
                }
                // A fencing refusal means some controller acts on stale authority: loud.
                HostdError::StaleTerm { .. }
                | HostdError::StaleGeneration { .. }
                | HostdError::NoLease => {
                    warn!(host = %self.host(), vm, error = %err, "{op} fenced off");
                }
                HostdError::FencingState { .. }
                | HostdError::LeaseFile { .. }
                | HostdError::StateFile { .. }
                | HostdError::WatchdogDevice { .. }
                | HostdError::Libvirt { .. }
                | HostdError::Connect { .. }
                | HostdError::LibvirtLost { .. }
                | HostdError::LibvirtTimeout(_)
                | HostdError::DataDir { .. }
                | HostdError::Blocking(_)
                | HostdError::Tool { .. }
                | HostdError::HostLinks(_)
                | HostdError::Seed(_)
                | HostdError::Serve(_) => {
                    warn!(host = %self.host(), vm, error = %error_chain(&err), "{op} failed");
                }
            }
            err.into()
        }
    }

    async fn stop_vm_inner(
        &self,
        name: String,
        timeout: Duration,
    ) -> Result<ManagedDomain, HostdError> {
        let deadline = Instant::now() + timeout;
        let domain = {
            let name = name.clone();
            self.shared.blocking(move |hv| hv.shutdown(&name)).await?
        };
        if domain.state == PowerState::ShutOff {
            return Ok(domain);
        }
        // Poll with async sleeps between short blocking calls, so that a slow guest holds
        // no blocking thread while it takes its time.
        while Instant::now() < deadline {
            let remaining = deadline.saturating_duration_since(Instant::now());
            tokio::time::sleep(STOP_POLL_INTERVAL.min(remaining)).await;
            let current = {
                let name = name.clone();
                self.shared.blocking(move |hv| hv.domain(&name)).await?
            };
            match current {
                Some(domain) if domain.state == PowerState::ShutOff => return Ok(domain),
                Some(_) => {}
                None => return Err(HostdError::NotFound { name }),
            }
        }
        warn!(host = %self.host(), vm = %name, ?timeout, "Guest ignored shutdown; destroying");
        self.shared.blocking(move |hv| hv.destroy(&name)).await
    }
}

/// Progress timeout when the request leaves it at zero.
const DEFAULT_PROGRESS_TIMEOUT: Duration = Duration::from_secs(150);

/// Forwards a migration's updates to one client stream, ending after the final one.
fn migration_stream(
    mut updates: watch::Receiver<Update>,
) -> ReceiverStream<Result<pb::MigrationEvent, Status>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let update = updates.borrow_and_update().clone();
            // The channel starts with empty statistics: nothing to tell yet.
            if update == Update::Progress(JobStats::default()) {
                if updates.changed().await.is_err() {
                    return;
                }
                continue;
            }
            let item = match &update {
                Update::Progress(s) => Ok(pb::MigrationEvent {
                    stats: Some(stats_to_pb(s)),
                    done: false,
                }),
                Update::Done(s) => Ok(pb::MigrationEvent {
                    stats: Some(stats_to_pb(s)),
                    done: true,
                }),
                Update::Failed { code, message } => Err(Status::new(*code, message.clone())),
            };
            if tx.send(item).await.is_err() || update.is_final() {
                return;
            }
            if updates.changed().await.is_err() {
                return;
            }
        }
    });
    ReceiverStream::new(rx)
}

fn stats_to_pb(s: &JobStats) -> pb::MigrationStats {
    pb::MigrationStats {
        data_total: s.data_total,
        data_processed: s.data_processed,
        data_remaining: s.data_remaining,
        dirty_rate: s.dirty_rate,
        iteration: s.iteration,
        elapsed_ms: s.elapsed_ms,
        downtime_ms: s.downtime_ms,
    }
}

#[tonic::async_trait]
impl HostAgent for AgentService {
    type MigrateVmStream = ReceiverStream<Result<pb::MigrationEvent, Status>>;

    async fn migrate_vm(
        &self,
        request: Request<pb::MigrateVmRequest>,
    ) -> Result<Response<Self::MigrateVmStream>, Status> {
        let req = request.into_inner();
        let failed = || self.failed("MigrateVm", &req.name);
        validate_name(&req.name).map_err(failed())?;
        // A controller that lost its stream (a new leader) follows the running migration.
        if let Some(updates) = self.shared.migrations.attach(&req.name) {
            info!(host = %self.host(), vm = %req.name, "MigrateVm attaches to the running migration");
            return Ok(Response::new(migration_stream(updates)));
        }
        if req.dest_uri.is_empty() {
            return Err(failed()(HostdError::InvalidArgument(
                "dest_uri is empty: the destination reported no migration URI".into(),
            )));
        }
        if req.max_downtime_ms == 0 {
            return Err(failed()(HostdError::InvalidArgument(
                "max_downtime_ms must be at least 1".into(),
            )));
        }
        let guard = self.shared.lock_vm(&req.name).await;
        if let Some(updates) = self.shared.migrations.attach(&req.name) {
            return Ok(Response::new(migration_stream(updates)));
        }
        let fence = self.fenced("MigrateVm", &req.name, req.fence).await?;
        if req.new_generation <= fence.generation {
            return Err(failed()(HostdError::InvalidArgument(format!(
                "new_generation {} must be above the current {}",
                req.new_generation, fence.generation
            ))));
        }
        // A job this hostd did not start: it restarted while libvirt kept migrating.
        let name = req.name.clone();
        if self
            .shared
            .blocking(move |hv| hv.job_stats(&name))
            .await
            .map_err(failed())?
            .is_some()
        {
            // Unavailable: transient, the caller retries.
            return Err(Status::unavailable(format!(
                "domain {} already has a libvirt job running (started before this hostd \
                 restarted?); retry when it ends",
                req.name
            )));
        }
        info!(
            host = %self.host(), vm = %req.name, term = fence.term,
            generation = fence.generation, dest = %req.dest_uri, "MigrateVm"
        );
        let timeout = match req.progress_timeout_ms {
            0 => DEFAULT_PROGRESS_TIMEOUT,
            ms => Duration::from_millis(ms),
        };
        let disks = disks_from_pb(req.disks).map_err(failed())?;
        let copy_disks = req
            .copy_disks
            .iter()
            .map(|&i| {
                disks.get(i as usize).map(|_| i as usize).ok_or_else(|| {
                    HostdError::InvalidArgument(format!(
                        "copy_disks names disk {i} of {}",
                        disks.len()
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(failed())?;
        let nics = networks::nics_from_pb(req.nics).map_err(failed())?;
        let mut seed = req.seed.map(seed_from_pb).transpose().map_err(failed())?;
        with_network_config(&mut seed, &nics);
        let migration = MigrationRequest {
            name: req.name,
            dest_uri: req.dest_uri,
            new_generation: req.new_generation,
            term: fence.term,
            max_downtime_ms: req.max_downtime_ms,
            bandwidth_mibps: req.bandwidth_mibps,
            auto_converge: req.auto_converge,
            disks,
            copy_disks,
            seed,
        };
        let updates = self.shared.migrations.start(
            Arc::clone(&self.shared.hypervisor),
            migration,
            timeout,
            guard,
        );
        Ok(Response::new(migration_stream(updates)))
    }

    async fn abort_migration(
        &self,
        request: Request<pb::VmRef>,
    ) -> Result<Response<pb::AbortMigrationResponse>, Status> {
        let req = request.into_inner();
        validate_name(&req.name).map_err(self.failed("AbortMigration", &req.name))?;
        let fence = self.fenced("AbortMigration", &req.name, req.fence).await?;
        info!(host = %self.host(), vm = %req.name, term = fence.term, "AbortMigration");
        self.shared.migrations.mark_cancelled(&req.name);
        let name = req.name.clone();
        let aborted = self
            .shared
            .blocking(move |hv| hv.abort_job(&name))
            .await
            .map_err(self.failed("AbortMigration", &req.name))?;
        Ok(Response::new(pb::AbortMigrationResponse { aborted }))
    }

    async fn get_host_info(
        &self,
        _request: Request<pb::GetHostInfoRequest>,
    ) -> Result<Response<pb::HostInfo>, Status> {
        let (capacity, links, vlans) = self
            .shared
            .blocking(|hv| {
                Ok((
                    hv.host_info()?,
                    host_links_or_none(hv),
                    hv.makes_vlan_links(),
                ))
            })
            .await
            .map_err(self.failed("GetHostInfo", ""))?;
        Ok(Response::new(self.shared.host_info(capacity, links, vlans)))
    }

    async fn start_vm(
        &self,
        request: Request<pb::StartVmRequest>,
    ) -> Result<Response<pb::Domain>, Status> {
        let req = request.into_inner();
        validate_name(&req.name).map_err(self.failed("StartVm", &req.name))?;
        if req.vcpus == 0 || req.memory_mib == 0 {
            let err = HostdError::InvalidArgument("vcpus and memory_mib must be at least 1".into());
            return Err(self.failed("StartVm", &req.name)(err));
        }
        let disks = disks_from_pb(req.disks).map_err(self.failed("StartVm", &req.name))?;
        let nics = networks::nics_from_pb(req.nics).map_err(self.failed("StartVm", &req.name))?;
        let mut seed = req
            .seed
            .map(seed_from_pb)
            .transpose()
            .map_err(self.failed("StartVm", &req.name))?;
        with_network_config(&mut seed, &nics);
        let vtep = self.shared.config.vtep_address;
        let wiring = req
            .networks
            .into_iter()
            .map(|w| networks::wiring_from_pb(w, vtep))
            .collect::<Result<Vec<_>, _>>()
            .map_err(self.failed("StartVm", &req.name))?;
        let _guard = self.shared.lock_vm(&req.name).await;
        let fence = self.fenced("StartVm", &req.name, req.fence).await?;
        // Without a lease the cluster may already be restarting this VM elsewhere.
        self.shared
            .lease
            .require()
            .map_err(self.failed("StartVm", &req.name))?;
        info!(
            host = %self.host(), vm = %req.name, term = fence.term,
            generation = fence.generation, vcpus = req.vcpus, memory_mib = req.memory_mib,
            "StartVm"
        );
        let spec = VmSpec {
            name: req.name,
            vcpus: req.vcpus,
            memory_mib: req.memory_mib,
            generation: fence.generation,
            term: fence.term,
            ha: req.ha,
            disks,
            create_volumes: req.create_volumes,
            seed,
            nics,
        };
        let name = spec.name.clone();
        // Exclusive while wiring, then shared until the domain runs: no RemoveNetwork
        // tears a network down meanwhile.
        let names: Vec<String> = wiring.iter().map(|w| w.name.clone()).collect();
        let exclusive = self.shared.network_locks.wiring(&names).await;
        // Before the domain: its NICs name these networks.
        self.wire(wiring)
            .await
            .map_err(self.failed("StartVm", &name))?;
        let _networks: Vec<_> = exclusive.into_iter().map(|g| g.downgrade()).collect();
        let domain = self
            .shared
            .blocking(move |hv| hv.define_and_start(&spec))
            .await
            .map_err(self.failed("StartVm", &name))?;
        Ok(Response::new(domain_to_pb(domain)))
    }

    async fn stop_vm(
        &self,
        request: Request<pb::StopVmRequest>,
    ) -> Result<Response<pb::Domain>, Status> {
        let req = request.into_inner();
        validate_name(&req.name).map_err(self.failed("StopVm", &req.name))?;
        let _guard = self.shared.lock_vm(&req.name).await;
        let fence = self.fenced("StopVm", &req.name, req.fence).await?;
        let timeout = match req.timeout_ms {
            0 => DEFAULT_STOP_TIMEOUT,
            ms => Duration::from_millis(ms).min(MAX_STOP_TIMEOUT),
        };
        info!(
            host = %self.host(), vm = %req.name, term = fence.term,
            generation = fence.generation, ?timeout, "StopVm"
        );
        let domain = self
            .stop_vm_inner(req.name.clone(), timeout)
            .await
            .map_err(self.failed("StopVm", &req.name))?;
        Ok(Response::new(domain_to_pb(domain)))
    }

    async fn destroy_vm(
        &self,
        request: Request<pb::VmRef>,
    ) -> Result<Response<pb::Domain>, Status> {
        let req = request.into_inner();
        validate_name(&req.name).map_err(self.failed("DestroyVm", &req.name))?;
        let fence = if req.stray {
            // The leader says the cluster does not place this VM here: a copy of any
            // generation must go, or a stray newer than the state runs beside the real one.
            // Its term still has to be current.
            self.fenced_term("DestroyVm", &req.name, req.fence).await?
        } else {
            self.fenced("DestroyVm", &req.name, req.fence).await?
        };
        info!(
            host = %self.host(), vm = %req.name, term = fence.term,
            generation = fence.generation, stray = req.stray, "DestroyVm"
        );
        let name = req.name.clone();
        let domain = self
            .shared
            .blocking(move |hv| hv.destroy(&name))
            .await
            .map_err(self.failed("DestroyVm", &req.name))?;
        Ok(Response::new(domain_to_pb(domain)))
    }

    async fn undefine_vm(
        &self,
        request: Request<pb::VmRef>,
    ) -> Result<Response<pb::UndefineVmResponse>, Status> {
        let req = request.into_inner();
        validate_name(&req.name).map_err(self.failed("UndefineVm", &req.name))?;
        let volumes =
            doomed_from_pb(req.delete_disks).map_err(self.failed("UndefineVm", &req.name))?;
        let _guard = self.shared.lock_vm(&req.name).await;
        let fence = self.fenced("UndefineVm", &req.name, req.fence).await?;
        info!(
            host = %self.host(), vm = %req.name, term = fence.term,
            generation = fence.generation, "UndefineVm"
        );
        let name = req.name.clone();
        let existed = self
            .shared
            .blocking(move |hv| hv.undefine(&name, &volumes))
            .await
            .map_err(self.failed("UndefineVm", &req.name))?;
        Ok(Response::new(pb::UndefineVmResponse { existed }))
    }

    async fn list_domains(
        &self,
        _request: Request<pb::ListDomainsRequest>,
    ) -> Result<Response<pb::ListDomainsResponse>, Status> {
        let domains = self
            .shared
            .blocking(|hv| hv.list_managed())
            .await
            .map_err(self.failed("ListDomains", ""))?;
        Ok(Response::new(pb::ListDomainsResponse {
            domains: domains.into_iter().map(domain_to_pb).collect(),
        }))
    }

    type SessionStream = ReceiverStream<Result<pb::SessionEvent, Status>>;

    async fn ensure_network(
        &self,
        request: Request<pb::EnsureNetworkRequest>,
    ) -> Result<Response<pb::EnsureNetworkResponse>, Status> {
        self.ensure_network_inner(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn remove_network(
        &self,
        request: Request<pb::RemoveNetworkRequest>,
    ) -> Result<Response<pb::RemoveNetworkResponse>, Status> {
        self.remove_network_inner(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn ensure_pool(
        &self,
        request: Request<pb::EnsurePoolRequest>,
    ) -> Result<Response<pb::PoolStatus>, Status> {
        self.ensure_pool_inner(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn remove_pool(
        &self,
        request: Request<pb::RemovePoolRequest>,
    ) -> Result<Response<pb::RemovePoolResponse>, Status> {
        self.remove_pool_inner(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn grow_disk(
        &self,
        request: Request<pb::GrowDiskRequest>,
    ) -> Result<Response<pb::GrowDiskResponse>, Status> {
        self.grow_disk_inner(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn plug_nic(
        &self,
        request: Request<pb::PlugNicRequest>,
    ) -> Result<Response<pb::PlugNicResponse>, Status> {
        self.plug_nic_inner(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn unplug_nic(
        &self,
        request: Request<pb::UnplugNicRequest>,
    ) -> Result<Response<pb::UnplugNicResponse>, Status> {
        self.unplug_nic_inner(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn update_nic_filters(
        &self,
        request: Request<pb::UpdateNicFiltersRequest>,
    ) -> Result<Response<pb::UpdateNicFiltersResponse>, Status> {
        self.update_nic_filters_inner(request.into_inner())
            .await
            .map(Response::new)
    }

    type ConsoleStream = ReceiverStream<Result<pb::ConsoleOutput, Status>>;

    async fn console(
        &self,
        request: Request<Streaming<pb::ConsoleInput>>,
    ) -> Result<Response<Self::ConsoleStream>, Status> {
        self.console_inner(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn upload_image(
        &self,
        request: Request<Streaming<pb::UploadImageChunk>>,
    ) -> Result<Response<pb::UploadedImage>, Status> {
        self.upload_image_inner(request.into_inner())
            .await
            .map(Response::new)
    }

    type ReadVolumeStream = ReceiverStream<Result<pb::VolumeChunk, Status>>;

    async fn read_volume(
        &self,
        request: Request<pb::ReadVolumeRequest>,
    ) -> Result<Response<Self::ReadVolumeStream>, Status> {
        self.read_volume_inner(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn delete_volume(
        &self,
        request: Request<pb::DeleteVolumeRequest>,
    ) -> Result<Response<pb::DeleteVolumeResponse>, Status> {
        self.delete_volume_inner(request.into_inner())
            .await
            .map(Response::new)
    }

    async fn isolate(
        &self,
        request: Request<pb::IsolateRequest>,
    ) -> Result<Response<pb::IsolationStatus>, Status> {
        let req = request.into_inner();
        self.admit_drill("isolate", req.term, req.duration_ms)
            .await?;
        let isolated = self
            .shared
            .isolation
            .isolate(req.drill, Duration::from_millis(req.duration_ms));
        warn!(
            host = %self.host(), drill = req.drill, term = req.term, duration_ms = req.duration_ms,
            "Isolated by a failover drill: controller sessions refused"
        );
        Ok(Response::new(pb::IsolationStatus {
            isolated: true,
            remaining_ms: isolated.remaining().as_millis() as u64,
            fence_note: String::new(),
        }))
    }

    async fn end_isolation(
        &self,
        request: Request<pb::EndIsolationRequest>,
    ) -> Result<Response<pb::IsolationStatus>, Status> {
        let req = request.into_inner();
        let fence = Some(pb::Fence {
            term: req.term,
            generation: 0,
        });
        self.fenced_term("end_isolation", "", fence).await?;
        if self.shared.isolation.end() {
            info!(host = %self.host(), term = req.term, "Isolation lifted");
        }
        // After a stop-agent drill: the record goes, and the report learns what the
        // watchdog did meanwhile.
        let held = self
            .shared
            .held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        let fence_note = match held {
            Some(stop) => {
                let dir = self.shared.config.data_dir.clone();
                let status = watchdog_status::fresh(&dir).ok();
                drill_stop::clear(&dir);
                let note = stop.fence_note(status.as_ref());
                info!(host = %self.host(), drill = stop.drill, %note, "Stop-agent drill over");
                note
            }
            None => String::new(),
        };
        Ok(Response::new(pb::IsolationStatus {
            isolated: false,
            remaining_ms: 0,
            fence_note,
        }))
    }

    async fn stop_agent(
        &self,
        request: Request<pb::StopAgentRequest>,
    ) -> Result<Response<pb::IsolationStatus>, Status> {
        let req = request.into_inner();
        self.admit_drill("stop_agent", req.term, req.duration_ms)
            .await?;
        let dir = self.shared.config.data_dir.clone();
        // Without a watchdog nobody would fence this host's HA guests once hostd is gone,
        // and they would run twice when the cluster restarts them elsewhere.
        watchdog_status::fresh(&dir).map_err(self.failed("stop_agent", ""))?;
        if req.check_only {
            return Ok(Response::new(pb::IsolationStatus {
                isolated: false,
                remaining_ms: 0,
                fence_note: String::new(),
            }));
        }
        let stop = DrillStop::new(req.drill, req.term, Duration::from_millis(req.duration_ms));
        stop.write(&dir).map_err(self.failed("stop_agent", ""))?;
        warn!(
            host = %self.host(), drill = req.drill, term = req.term, duration_ms = req.duration_ms,
            "Stopped by a failover drill: hostd exits; hostd-watchdog fences"
        );
        self.shared.exit.send_replace(Some(req.drill));
        Ok(Response::new(pb::IsolationStatus {
            isolated: true,
            remaining_ms: req.duration_ms,
            fence_note: String::new(),
        }))
    }

    async fn session(
        &self,
        request: Request<Streaming<pb::SessionRequest>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let stream = session::open(Arc::clone(&self.shared), request.into_inner());
        Ok(Response::new(stream))
    }
}

/// Rejects names libvirt would refuse anyway, so the caller gets InvalidArgument rather than
/// an Internal error carrying an XML parser message.
fn validate_name(name: &str) -> Result<(), HostdError> {
    if name.is_empty() {
        return Err(HostdError::InvalidArgument("name must not be empty".into()));
    }
    if name.contains('/') || name.chars().any(char::is_control) {
        return Err(HostdError::InvalidArgument(format!(
            "name {name:?} must not contain '/' or control characters"
        )));
    }
    Ok(())
}

pub(crate) fn domain_to_pb(domain: ManagedDomain) -> pb::Domain {
    let state = match domain.state {
        PowerState::Running => pb::DomainState::Running,
        PowerState::Paused => pb::DomainState::Paused,
        PowerState::ShutOff => pb::DomainState::ShutOff,
        PowerState::Crashed => pb::DomainState::Crashed,
        PowerState::Other => pb::DomainState::Other,
    };
    pb::Domain {
        name: domain.name,
        state: state.into(),
        generation: domain.generation,
        vcpus: domain.vcpus,
        memory_mib: domain.memory_mib,
        ha: domain.ha,
        busy: false,
    }
}

/// The seed's network config, from the VM's NICs (none without NICs).
fn with_network_config(seed: &mut Option<crate::seed::Seed>, nics: &[crate::network::VmNic]) {
    if let (Some(seed), false) = (seed, nics.is_empty()) {
        seed.network_config = Some(crate::network::network_config(nics));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        assert!(validate_name("web-1").is_ok());
        assert!(validate_name("a&b").is_ok());
        assert!(validate_name("").is_err());
        assert!(validate_name("a/b").is_err());
        assert!(validate_name("a\nb").is_err());
    }
}
