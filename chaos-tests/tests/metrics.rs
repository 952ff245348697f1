//! A controller serves Prometheus metrics: Raft progress gauges, per-peer replication lag
//! on the leader, and the apply latency histogram, with values that follow real writes.

use std::io::{Read, Write};
use std::time::Duration;

use drover_chaos_tests::{wait_until, Cluster, ClusterSpec};

fn scrape(addr: &str) -> Result<String, String> {
    let mut s = std::net::TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut body = String::new();
    s.read_to_string(&mut body).map_err(|e| e.to_string())?;
    Ok(body)
}

fn value(text: &str, metric: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(metric) && l[metric.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn controller_metrics() -> anyhow::Result<()> {
    let metrics_addr = format!("127.0.0.1:{}", drover_chaos_tests::free_port()?);
    let cluster = Cluster::start(ClusterSpec {
        controllers: 1,
        hosts: 0,
        controller_args: vec!["--metrics-listen".into(), metrics_addr.clone()],
        ..Default::default()
    })
    .await?;
    for name in ["a", "b", "c"] {
        cluster.create_stopped_vm(name).await?;
    }
    let text = wait_until(
        "metrics reflect the writes",
        Duration::from_secs(10),
        || async {
            let text = scrape(&metrics_addr)?;
            let applied = value(&text, "drover_raft_applied_index").unwrap_or(0.0);
            Ok((applied >= 4.0).then_some(text))
        },
    )
    .await?;
    assert_eq!(value(&text, "drover_raft_is_leader"), Some(1.0), "{text}");
    assert_eq!(value(&text, "drover_raft_leader_id"), Some(1.0));
    assert!(value(&text, "drover_raft_term") >= Some(1.0));
    assert!(
        value(&text, "drover_raft_commit_index") >= Some(4.0),
        "{text}"
    );
    for name in [
        "drover_raft_last_log_index",
        "drover_raft_snapshot_index",
        "drover_raft_purged_index",
        "drover_raft_log_entries",
        "drover_raft_apply_seconds_count",
    ] {
        assert!(value(&text, name).is_some(), "{name} missing:\n{text}");
    }
    assert!(
        text.contains("drover_raft_apply_seconds_bucket{le="),
        "{text}"
    );
    assert!(
        text.contains("drover_raft_replication_lag_entries{peer=\"1\"}"),
        "{text}"
    );
    Ok(())
}
