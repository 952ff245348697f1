//! `drover server`: one controller — the Raft member on sled, the gRPC services (Raft,
//! public API, health, reflection) on one listener, and the leader-side supervisor.
//!
//! [`run`] must be called inside an actix `System` (the supervisor is an actor); the
//! binary sets one up over a multi-threaded tokio runtime.

use std::future::Future;

use actix::Actor;
use drover_actors::host::GrantBook;
use drover_actors::{Shutdown, Supervisor, SupervisorConfig};
use drover_proto::raft::v1::raft_service_server::RaftServiceServer;
use drover_proto::v1::cluster_service_server::ClusterServiceServer;
use drover_proto::v1::drill_service_server::DrillServiceServer;
use drover_proto::v1::host_service_server::HostServiceServer;
use drover_proto::v1::image_service_server::ImageServiceServer;
use drover_proto::v1::network_service_server::NetworkServiceServer;
use drover_proto::v1::operation_service_server::OperationServiceServer;
use drover_proto::v1::pool_service_server::PoolServiceServer;
use drover_proto::v1::security_group_service_server::SecurityGroupServiceServer;
use drover_proto::v1::token_service_server::TokenServiceServer;
use drover_proto::v1::vm_service_server::VmServiceServer;
use drover_raft::network::{RaftGrpcService, MAX_MESSAGE_BYTES};
use drover_raft::{NodeConfig, NodeError, RaftNode};
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::StreamExt as _;

use crate::api::{
    ClusterApi, DrillApi, HostApi, ImageApi, NetworkApi, OperationApi, PoolApi, SecurityGroupApi,
    TokenApi, VmApi,
};
use crate::config::{ConfigError, ServerConfig};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error("gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("gRPC reflection setup failed: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

/// Why a controller stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    Shutdown,
    /// A leader-failover drill stopped it (`drover server` exits with
    /// [`DRILL_EXIT_CODE`], for its service manager to start it again).
    StoppedByDrill {
        drill: u64,
    },
}

/// The exit code of a controller a leader drill stopped.
pub const DRILL_EXIT_CODE: u8 = 75;

/// Runs a controller on `listener` until `shutdown` completes (or a leader drill stops it).
pub async fn run(
    config: ServerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<Ended, ServerError> {
    if !config.initial_cluster.is_empty() && !config.initial_cluster.contains_key(&config.id) {
        return Err(ConfigError::MissingSelf(config.id).into());
    }
    let node = RaftNode::start(&NodeConfig {
        id: config.id,
        address: config.advertise.clone(),
        data_dir: config.data_dir.clone(),
        timings: config.raft.clone(),
        snapshots: drover_raft::snapshot_schedule::SnapshotSchedule {
            min_logs: config.snapshot_logs,
            scale_with_state: !config.snapshot_fixed,
        },
        tls: config.tls.clone(),
    })
    .await?;
    tracing::info!(node = config.id, addr = %config.advertise, "controller starting");

    let (health_reporter, health_service) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<VmServiceServer<VmApi>>()
        .await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(drover_proto::FILE_DESCRIPTOR_SET)
        .build_v1()?;
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (drill_stop_tx, mut drill_stop) = tokio::sync::watch::channel(None::<u64>);
    // The leader's lease grants: written by the host actors, read by `host list`.
    let grants = GrantBook::default();
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &config.tls {
        // A client certificate is optional here (token clients have none): the policy
        // layer requires a credential from every call that needs one.
        builder = builder.tls_config(tls.server_config().client_auth_optional(true))?;
    }
    // One gate before every service below, Raft included (see `auth`).
    let policy = crate::auth::ControllerPolicy {
        tls: config.tls.is_some(),
        state: node.view().clone(),
    };
    let router = builder
        .layer(drover_proto::guard::GuardLayer::new(policy))
        .add_service(
            RaftServiceServer::new(RaftGrpcService::new(node.clone()))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES),
        )
        .add_service(ClusterServiceServer::new(ClusterApi::new(
            node.clone(),
            config.raft.clone(),
            config.tls.clone(),
        )))
        .add_service(HostServiceServer::new(HostApi::new(
            node.clone(),
            grants.clone(),
        )))
        .add_service(DrillServiceServer::new(DrillApi::new(
            node.clone(),
            config.tls.clone(),
            std::time::Duration::from_millis(config.raft.election_max_ms),
            drill_stop_tx,
            config.data_dir.clone(),
        )))
        .add_service(VmServiceServer::new(VmApi::new(
            node.clone(),
            drover_actors::AgentPool::new(config.tls.clone()),
        )))
        .add_service(TokenServiceServer::new(TokenApi::new(node.clone())))
        .add_service(OperationServiceServer::new(OperationApi::new(node.clone())))
        .add_service(PoolServiceServer::new(PoolApi::new(node.clone())))
        .add_service(NetworkServiceServer::new(NetworkApi::new(node.clone())))
        .add_service(SecurityGroupServiceServer::new(SecurityGroupApi::new(
            node.clone(),
            drover_actors::AgentPool::new(config.tls.clone()),
        )))
        .add_service(ImageServiceServer::new(ImageApi::new(
            node.clone(),
            drover_actors::AgentPool::new(config.tls.clone()),
        )))
        .add_service(health_service)
        .add_service(reflection);
    let server = tokio::spawn(router.serve_with_incoming_shutdown(
        // tonic's own nodelay setting does not apply to a listener we hand it, and Nagle
        // on small Raft appends and API replies costs a 40 ms delayed-ACK round trip.
        TcpListenerStream::new(listener).map(|conn| {
            let stream = conn?;
            stream.set_nodelay(true)?;
            Ok::<_, std::io::Error>(stream)
        }),
        async {
            let _ = stop_rx.await;
        },
    ));

    // A pristine node bootstraps with the founding members; one with state just rejoins;
    // a joining node waits for `add-node`.
    let initialized = node
        .raft()
        .is_initialized()
        .await
        .map_err(|e| NodeError::Raft(e.to_string()))?;
    if initialized {
        tracing::info!(node = config.id, "rejoining with stored state");
    } else if config.initial_cluster.is_empty() {
        tracing::info!(node = config.id, "waiting to be added to a cluster");
    } else if node.bootstrap(&config.initial_cluster).await? {
        tracing::info!(node = config.id, "bootstrapped a new cluster");
    }

    tokio::spawn(crate::metrics::follow_raft(node.clone()));
    let supervisor = Supervisor::new(
        node.clone(),
        SupervisorConfig {
            lease: config.lease,
            failover: Default::default(),
            tls: config.tls.clone(),
            grants: grants.clone(),
            fence_agent: config.fence_agent.clone(),
            drain: Default::default(),
            quorum: std::sync::Arc::new(crate::api::PeerQuorum {
                node: node.clone(),
                tls: config.tls.clone(),
            }),
        },
    )
    .start();

    let (observer_stop, observer_stopped) = tokio::sync::watch::channel(false);
    let observer = tokio::spawn(crate::drill_observer::run(
        node.clone(),
        config.tls.clone(),
        observer_stopped,
    ));

    let stopped_by_drill = async move {
        drill_stop
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|d| *d)
    };
    let ended = tokio::select! {
        () = shutdown => Ended::Shutdown,
        Some(drill) = stopped_by_drill => Ended::StoppedByDrill { drill },
    };
    tracing::info!(node = config.id, ?ended, "controller stopping");
    observer_stop.send_replace(true);
    let _ = observer.await;
    let _ = supervisor.send(Shutdown).await;
    let _ = stop_tx.send(());
    node.shutdown().await;
    match server.await {
        Ok(result) => result?,
        Err(e) => tracing::warn!(error = %e, "gRPC server task failed"),
    }
    Ok(ended)
}
