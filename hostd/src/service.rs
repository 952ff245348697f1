//! The `HostAgent` gRPC service: validates requests, enforces the fencing tokens they carry, and
//! runs the matching [`Hypervisor`] call on a blocking thread. Owns the translation between
//! hypervisor types and the wire types, and the timing of a graceful stop.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use drover_proto::agent::v1 as pb;
use drover_proto::agent::v1::host_agent_server::HostAgent;
use tokio::sync::{watch, OwnedMutexGuard};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{info, warn};

use crate::config::Config;
use crate::error::error_chain;
use crate::error::HostdError;
use crate::fencing::{check_generation, Fencing};
use crate::hypervisor::{HostCapacity, Hypervisor, ManagedDomain, PowerState, VmSpec};
use crate::self_fence::LeaseKeeper;
use crate::session;

/// How long StopVm waits for a guest when the request leaves `timeout_ms` at zero.
const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest StopVm wait honoured; bounds the deadline arithmetic for absurd requests.
const MAX_STOP_TIMEOUT: Duration = Duration::from_secs(3600);
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
    /// DestroyVm does not take it: it must be able to cut a slow StopVm short.
    vm_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// The highest leader term seen (persisted); see [`crate::fencing`].
    pub(crate) fencing: Fencing,
    /// This host's lease from the controllers; see [`crate::self_fence`].
    pub(crate) lease: Arc<LeaseKeeper>,
}

impl Shared {
    async fn lock_vm(&self, name: &str) -> OwnedMutexGuard<()> {
        let lock = {
            // The map holds no invariant a panic could break, so a poisoned lock is usable.
            let mut locks = self.vm_locks.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(locks.entry(name.to_string()).or_default())
        };
        lock.lock_owned().await
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

    pub(crate) fn host_info(&self, capacity: HostCapacity) -> pb::HostInfo {
        pb::HostInfo {
            name: self.config.name.clone(),
            vcpus: capacity.vcpus,
            memory_mib: capacity.memory_mib,
            libvirt_uri: self.config.libvirt_uri.clone(),
            hypervisor: capacity.hypervisor,
        }
    }
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
    ) -> AgentService {
        AgentService {
            shared: Arc::new(Shared {
                config,
                hypervisor,
                stop,
                vm_locks: Mutex::new(HashMap::new()),
                fencing,
                lease,
            }),
        }
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

    fn host(&self) -> &str {
        &self.shared.config.name
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
                | HostdError::NotManaged { .. }
                | HostdError::InvalidArgument(_) => {
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
                | HostdError::WatchdogDevice { .. }
                | HostdError::Libvirt { .. }
                | HostdError::Connect { .. }
                | HostdError::DataDir { .. }
                | HostdError::Blocking(_)
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

#[tonic::async_trait]
impl HostAgent for AgentService {
    async fn get_host_info(
        &self,
        _request: Request<pb::GetHostInfoRequest>,
    ) -> Result<Response<pb::HostInfo>, Status> {
        let capacity = self
            .shared
            .blocking(|hv| hv.host_info())
            .await
            .map_err(self.failed("GetHostInfo", ""))?;
        Ok(Response::new(self.shared.host_info(capacity)))
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
        };
        let name = spec.name.clone();
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
        let fence = self.fenced("DestroyVm", &req.name, req.fence).await?;
        info!(
            host = %self.host(), vm = %req.name, term = fence.term,
            generation = fence.generation, "DestroyVm"
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
        let _guard = self.shared.lock_vm(&req.name).await;
        let fence = self.fenced("UndefineVm", &req.name, req.fence).await?;
        info!(
            host = %self.host(), vm = %req.name, term = fence.term,
            generation = fence.generation, "UndefineVm"
        );
        let name = req.name.clone();
        let existed = self
            .shared
            .blocking(move |hv| hv.undefine(&name))
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
