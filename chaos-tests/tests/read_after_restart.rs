//! A linearizable read right after the whole cluster restarted must see every write
//! acknowledged before. Found by the 30-minute chaos run (RELIABILITY.md): a leader that
//! restarts and resumes its leadership without an election (openraft restores a committed
//! vote) confirmed reads against the first entry of its term, long applied, while the
//! state machine it came back with lacked the last acknowledged write; the read returned
//! the value before it. Cycle after cycle: write a value through the API, SIGKILL every
//! controller at once, start them all again, read the value back (a fresh read).

use std::time::Duration;

use drover_chaos_tests::{wait_until, Cluster, ClusterSpec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_read_after_a_full_restart_sees_every_acknowledged_write() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(ClusterSpec {
        hosts: 0,
        ..ClusterSpec::default()
    })
    .await?;
    for cycle in 1..=6u32 {
        let cpu = format!("{}", 4 + cycle);
        let out = cluster
            .cli(&["cluster", "placement", "--cpu-overcommit", &cpu])
            .await?;
        anyhow::ensure!(out.success, "cycle {cycle}: write: {}", out.stderr);
        for id in 1..=3 {
            cluster.kill_controller(id).await?;
        }
        for id in 1..=3 {
            cluster.start_controller(id).await?;
        }
        let read = wait_until("a fresh read", Duration::from_secs(30), || async {
            let p = cluster.cli_json(&["cluster", "placement"]).await?;
            Ok(p["cpu_overcommit"].as_f64())
        })
        .await?;
        assert_eq!(
            read,
            f64::from(4 + cycle),
            "cycle {cycle}: the acknowledged write is not what a fresh read returns"
        );
    }
    Ok(())
}
