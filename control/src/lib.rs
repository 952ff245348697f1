//! The `drover` binary's library: the controller ([`server`]), its public API ([`api`])
//! and who may call it ([`auth`]),
//! a leader-following client ([`client`]), the CLI ([`cli`]), the local dev cluster
//! ([`dev`]) and the observer of leader-failover drills ([`drill_observer`]).

pub mod api;
pub mod auth;
pub mod certs;
pub mod cli;
pub mod client;
pub mod config;
pub mod dev;
pub mod drill_hold;
pub mod drill_observer;
pub mod metrics;
pub mod server;

use std::time::Duration;

/// `drover server …` on an already bound listener: runs until SIGTERM or Ctrl-C, or until
/// a leader drill stops it.
pub async fn serve(
    args: cli::ServerArgs,
    tls: drover_proto::transport::TlsHandle,
    listener: tokio::net::TcpListener,
) -> anyhow::Result<server::Ended> {
    if args.id == 0 {
        anyhow::bail!("--id must be at least 1");
    }
    // Only a proposal: a new cluster's first leader commits it, later ones follow the
    // replicated lease (`drover ha lease` changes it).
    let lease = drover_actors::host::health::LeaseTimings {
        heartbeat: Duration::from_millis(args.heartbeat_interval_ms),
        ttl: Duration::from_millis(args.lease_ttl_ms),
        margin: Duration::from_millis(args.lease_margin_ms),
        floor: Duration::ZERO,
    };
    lease.validate().map_err(|e| {
        anyhow::anyhow!(
            "Lease timings (--heartbeat-interval-ms, --lease-ttl-ms, --lease-margin-ms): {e}"
        )
    })?;
    if args.snapshot_logs == 0 {
        anyhow::bail!("--snapshot-logs must be at least 1");
    }
    let (initial_cluster, advertise) = match &args.initial_cluster {
        Some(members) => {
            let members = config::parse_initial_cluster(members)?;
            let own = members
                .get(&args.id)
                .cloned()
                .ok_or(config::ConfigError::MissingSelf(args.id))?;
            if args.advertise.as_ref().is_some_and(|a| *a != own) {
                anyhow::bail!(
                    "--advertise differs from this node's address in --initial-cluster ({own})"
                );
            }
            (members, own)
        }
        None => {
            let advertise = args
                .advertise
                .clone()
                .unwrap_or_else(|| args.listen.clone());
            if advertise.ends_with(":0") || advertise.starts_with("0.0.0.0") {
                anyhow::bail!("--join needs --advertise with the address peers can reach");
            }
            (Default::default(), advertise)
        }
    };
    if let Some(addr) = &args.metrics_listen {
        let addr = addr
            .parse()
            .map_err(|e| anyhow::anyhow!("--metrics-listen {addr:?}: {e}"))?;
        metrics::serve(addr)?;
    }
    let fence_agent = fence_agent(&args)?;
    if let Some(ip) = args.source_address {
        if drover_proto::transport::set_source_address(ip).is_err() {
            anyhow::bail!("--source-address set twice in one process");
        }
    }
    let config = config::ServerConfig {
        id: args.id,
        data_dir: args.data_dir,
        advertise,
        initial_cluster,
        raft: raft_timings(args.raft_heartbeat_ms, &args.raft_election_timeout_ms)?,
        snapshot_logs: args.snapshot_logs,
        snapshot_fixed: args.snapshot_fixed,
        tls,
        lease,
        fence_agent,
    };
    let listener = hold_for_drill(&config.data_dir, config.id, &config.tls, listener).await?;
    Ok(server::run(config, listener, shutdown_signal()).await?)
}

/// A controller a leader drill stopped stays off the network until a peer leads in a newer
/// term (see [`drill_hold`]); its listener is closed meanwhile, so clients go elsewhere at
/// once, and opened again at the same address.
async fn hold_for_drill(
    data_dir: &std::path::Path,
    id: u64,
    tls: &drover_proto::transport::TlsHandle,
    listener: tokio::net::TcpListener,
) -> anyhow::Result<tokio::net::TcpListener> {
    let Some(stop) = drill_hold::take(data_dir) else {
        return Ok(listener);
    };
    if drover_raft::wall_clock_ms() >= stop.until_ms {
        return Ok(listener);
    }
    let addr = listener.local_addr()?;
    drop(listener);
    tracing::warn!(
        node = id,
        drill = stop.drill,
        term = stop.term,
        "stopped by a leader drill: waiting for a successor before rejoining"
    );
    let why = drill_hold::wait_for_successor(&stop, id, tls.clone()).await;
    tracing::info!(node = id, drill = stop.drill, %why, "rejoining as a follower");
    Ok(tokio::net::TcpListener::bind(addr).await?)
}

/// Checks `--fence-agent` (it must be an executable file now, not at the first failure).
fn fence_agent(args: &cli::ServerArgs) -> anyhow::Result<Option<drover_actors::host::FenceAgent>> {
    use std::os::unix::fs::PermissionsExt as _;
    let Some(program) = &args.fence_agent else {
        return Ok(None);
    };
    let meta = std::fs::metadata(program)
        .map_err(|e| anyhow::anyhow!("--fence-agent {}: {e}", program.display()))?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        anyhow::bail!(
            "--fence-agent {} is not an executable file",
            program.display()
        );
    }
    if args.fence_agent_timeout_ms == 0 {
        anyhow::bail!("--fence-agent-timeout-ms must be at least 1");
    }
    Ok(Some(drover_actors::host::FenceAgent {
        program: program.clone(),
        timeout: Duration::from_millis(args.fence_agent_timeout_ms),
    }))
}

/// Parses and checks `--raft-heartbeat-ms` and `--raft-election-timeout-ms MIN-MAX`.
fn raft_timings(heartbeat_ms: u64, election: &str) -> anyhow::Result<drover_raft::RaftTimings> {
    let (min, max) = election
        .split_once('-')
        .and_then(|(a, b)| Some((a.trim().parse::<u64>().ok()?, b.trim().parse::<u64>().ok()?)))
        .ok_or_else(|| anyhow::anyhow!("--raft-election-timeout-ms {election:?} is not MIN-MAX"))?;
    if heartbeat_ms == 0 || min <= heartbeat_ms || max <= min {
        anyhow::bail!(
            "Raft timings need 0 < heartbeat ({heartbeat_ms} ms) < election min ({min} ms) < max ({max} ms)"
        );
    }
    Ok(drover_raft::RaftTimings {
        heartbeat_ms,
        election_min_ms: min,
        election_max_ms: max,
    })
}

/// Completes on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops this process");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}
