//! hostd, drover's host agent: serves `drover.agent.v1.HostAgent` over gRPC and drives the
//! host's guests through libvirt.
//!
//! - [`run`]: the whole agent on a listener, with its libvirt connection (reopened after
//!   libvirtd restarts).
//! - [`serve`]: the same over an already opened [`Hypervisor`].
//! - [`Config`], [`HostdError`], and the hypervisor seam in [`hypervisor`].
//! - Self-fencing: [`self_fence`] (in hostd) and [`watchdog`] (the separate
//!   `hostd-watchdog` process), sharing the lease through [`lease_file`], all counting on
//!   the suspend-aware [`clock`].

pub mod clock;
mod config;
pub mod drill_stop;
mod error;
pub mod fence_ready;
pub mod fencing;
mod guard;
pub mod hypervisor;
pub mod image_check;
mod isolation;
pub mod lease;
pub mod lease_file;
pub mod logging;
mod migration;
pub mod network;
pub mod seed;
pub mod self_fence;
mod service;
mod session;
mod signal;
mod state_file;
mod vm_locks;
pub mod watchdog;
pub mod watchdog_status;

use std::future::Future;
use std::sync::Arc;

use drover_proto::agent::v1::host_agent_server::HostAgentServer;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt;
use tracing::info;

pub use config::{Config, DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_MAX_LEASE_TTL};
pub use error::HostdError;
pub use hypervisor::Hypervisor;
pub use signal::shutdown_signal;

use hypervisor::libvirt::LibvirtHypervisor;
use service::AgentService;

/// Why hostd stopped serving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// `shutdown` completed.
    Shutdown,
    /// A stop-agent failover drill stopped it (the binary exits with
    /// [`drill_stop::EXIT_CODE`], for the service manager to start it again).
    StoppedByDrill { drill: u64 },
}

/// Runs hostd until `shutdown` completes: creates the data directory, opens the libvirt
/// connection named in `config`, and serves `HostAgent` on `listener`.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Ended, HostdError> {
    tokio::fs::create_dir_all(&config.data_dir)
        .await
        .map_err(|source| HostdError::DataDir {
            path: config.data_dir.clone(),
            source,
        })?;
    let uri = config.libvirt_uri.clone();
    let choice = config.domain_type;
    let (hypervisor, decision) = tokio::task::spawn_blocking(move || {
        let decision = hypervisor::domain_type::probe(&uri, choice);
        LibvirtHypervisor::open(&uri, decision.domain_type).map(|h| (h, decision))
    })
    .await
    .map_err(HostdError::Blocking)??;
    info!(
        host = %config.name, uri = %config.libvirt_uri,
        domain_type = decision.domain_type.as_str(), why = %decision.reason,
        "Connected to libvirt"
    );
    serve(config, Arc::new(hypervisor), listener, shutdown).await
}

/// Completes once `watchdog.json` in `data_dir` is no longer fresh (no watchdog runs).
async fn watchdog_gone(data_dir: &std::path::Path) {
    while watchdog_status::fresh(data_dir).is_ok() {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// Serves `HostAgent` over `hypervisor` on `listener` until `shutdown` completes (or a
/// stop-agent drill stops it). Open sessions are told to end first, so that the server
/// can drain.
pub async fn serve(
    config: Config,
    hypervisor: Arc<dyn Hypervisor>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<Ended, HostdError> {
    let (stop_tx, stop_rx) = watch::channel(false);
    let (exit_tx, mut exit_rx) = watch::channel(None::<u64>);
    let host = config.name.clone();
    let tls = config.tls.clone();
    let fencing = fencing::Fencing::open(&config.data_dir)?;
    let keeper = Arc::new(self_fence::LeaseKeeper::open(&config.data_dir)?);
    let held = drill_stop::in_force(&config.data_dir);
    let data_dir = config.data_dir.clone();
    let ready = Arc::new(fence_ready::FenceReady::default());
    let service = AgentService::new(
        config,
        Arc::clone(&hypervisor),
        stop_rx.clone(),
        fencing,
        Arc::clone(&keeper),
        Arc::clone(&ready),
        exit_tx,
    );
    let fence_loop = {
        let shared = service.shared();
        let (host, hypervisor, stop_rx) = (host.clone(), Arc::clone(&hypervisor), stop_rx.clone());
        if let Some((stop, left)) = &held {
            tracing::warn!(
                %host, drill = stop.drill, remaining_ms = left.as_millis() as u64,
                "Started during a stop-agent drill: cut off from the controllers, and \
                 hostd-watchdog alone fences, until the drill gives the host back"
            );
            shared.hold_for_drill(stop.clone(), *left);
        }
        tokio::spawn(async move {
            // A hostd a drill stopped is not back before the drill says so: its own fence
            // loop would take the watchdog's part. Unless the watchdog itself goes: then
            // nobody would fence, and hostd does so again at once.
            tokio::select! {
                () = shared.isolation.ended() => {}
                () = watchdog_gone(&data_dir) => tracing::error!(
                    %host,
                    "hostd-watchdog stopped during a stop-agent drill: hostd fences for itself again"
                ),
            }
            self_fence::run_fence_loop(host, keeper, hypervisor, stop_rx).await
        })
    };
    let probe_loop = tokio::spawn(fence_ready::run_probe_loop(
        host.clone(),
        Arc::clone(&hypervisor),
        Arc::clone(&ready),
        stop_rx.clone(),
    ));
    let guard = guard::ControllersOnly {
        tls: tls.is_some(),
        host: host.clone(),
    };
    let ended = Arc::new(std::sync::Mutex::new(Ended::Shutdown));
    let signal = {
        let ended = Arc::clone(&ended);
        async move {
            let drill_stop = async move {
                exit_rx
                    .wait_for(Option::is_some)
                    .await
                    .ok()
                    .and_then(|d| *d)
            };
            tokio::select! {
                () = shutdown => info!(%host, "Shutting down"),
                Some(drill) = drill_stop => {
                    info!(%host, drill, "Stopped by a failover drill");
                    *ended.lock().unwrap_or_else(|p| p.into_inner()) = Ended::StoppedByDrill { drill };
                }
            }
            // Sessions are endless streams: without this, graceful shutdown would wait forever.
            stop_tx.send_replace(true);
        }
    };
    // Heartbeats are small writes on a long-lived stream; Nagle would delay them.
    let incoming = TcpListenerStream::new(listener).map(|conn| {
        let stream = conn?;
        stream.set_nodelay(true)?;
        Ok::<_, std::io::Error>(stream)
    });
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &tls {
        builder = builder
            .tls_config(tls.server_config())
            .map_err(HostdError::Serve)?;
    }
    let served = builder
        .layer(drover_proto::guard::GuardLayer::new(guard))
        .add_service(HostAgentServer::new(service))
        .serve_with_incoming_shutdown(incoming, signal)
        .await
        .map_err(HostdError::Serve);
    // The stop signal has been sent by now (or serving failed): the loop ends on its own.
    fence_loop.abort();
    probe_loop.abort();
    served?;
    let ended = *ended.lock().unwrap_or_else(|p| p.into_inner());
    Ok(ended)
}
