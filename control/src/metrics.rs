//! Prometheus metrics of a controller, served at `http://<--metrics-listen>/metrics`.
//!
//! Raft progress is sampled from openraft's metrics on every change: term, leader, last
//! log / applied / snapshot / purged indexes, log size, and on the leader the replication
//! lag of each peer. The store records the commit index and an apply latency histogram.

use std::net::SocketAddr;

use drover_raft::RaftNode;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
use openraft::ServerState;

#[derive(Debug, thiserror::Error)]
#[error("Cannot serve metrics on {addr}: {reason}")]
pub struct MetricsError {
    addr: SocketAddr,
    reason: String,
}

/// Installs the process-wide recorder and its HTTP listener.
pub fn serve(addr: SocketAddr) -> Result<(), MetricsError> {
    let err = |e: metrics_exporter_prometheus::BuildError| MetricsError {
        addr,
        reason: e.to_string(),
    };
    PrometheusBuilder::new()
        .with_http_listener(addr)
        // Real histogram buckets (aggregatable across controllers), not client quantiles.
        .set_buckets_for_metric(
            Matcher::Full("drover_raft_apply_seconds".into()),
            &[
                0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
            ],
        )
        .map_err(err)?
        .install()
        .map_err(err)
}

/// Keeps the Raft gauges current until the node shuts down.
pub async fn follow_raft(node: RaftNode) {
    let mut rx = node.raft().metrics();
    loop {
        let m = rx.borrow_and_update().clone();
        let index = |l: Option<drover_raft::LogId>| l.map_or(0, |l| l.index) as f64;
        metrics::gauge!("drover_raft_term").set(m.current_term as f64);
        metrics::gauge!("drover_raft_leader_id").set(m.current_leader.unwrap_or(0) as f64);
        metrics::gauge!("drover_raft_is_leader")
            .set(f64::from(u8::from(m.state == ServerState::Leader)));
        let last_log = m.last_log_index.unwrap_or(0);
        metrics::gauge!("drover_raft_last_log_index").set(last_log as f64);
        metrics::gauge!("drover_raft_applied_index").set(index(m.last_applied));
        metrics::gauge!("drover_raft_snapshot_index").set(index(m.snapshot));
        metrics::gauge!("drover_raft_purged_index").set(index(m.purged));
        metrics::gauge!("drover_raft_log_entries")
            .set(last_log.saturating_sub(m.purged.map_or(0, |l| l.index)) as f64);
        if let Some(replication) = &m.replication {
            for (peer, matched) in replication {
                let lag = last_log.saturating_sub(matched.map_or(0, |l| l.index));
                metrics::gauge!("drover_raft_replication_lag_entries", "peer" => peer.to_string())
                    .set(lag as f64);
            }
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}
