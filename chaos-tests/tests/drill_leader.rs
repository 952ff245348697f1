//! `drover drill leader-failover` for real (issue 12, point 2) on three controllers with
//! mutual TLS. step-down: the leader hands leadership to another voter while the observer
//! controller writes probes through the API; the report must name a new leader, the
//! writes' unavailability and the time to a working leader, and no acknowledged probe
//! may be missing from the state. stop: the leader's controller exits with the drill's
//! code (this test plays its service manager and starts it again) and the others elect a
//! leader as after a crash. With a controller down, losing the leader would leave no
//! quorum: the drill is refused and says why.

use std::time::Duration;

use anyhow::Context as _;
use drover_chaos_tests::{wait_until, Cluster, ClusterSpec};
use serde_json::Value;

fn check_passed(report: &Value, leader: u64) -> anyhow::Result<u64> {
    assert_eq!(report["state"], "succeeded", "{report}");
    assert_eq!(report["verdict"], "passed", "{report}");
    assert_eq!(report["leader"], leader, "{report}");
    let new = report["new_leader"].as_u64().context("new_leader")?;
    assert_ne!(new, leader, "{report}");
    let unavailable = report["unavailable_ms"]
        .as_u64()
        .context("unavailable_ms")?;
    let to_leader = report["time_to_leader_ms"]
        .as_u64()
        .context("time_to_leader_ms")?;
    // A new leader within an election or two: far below the 60 s the drill allows.
    assert!(unavailable < 10_000, "{report}");
    assert!(to_leader < 10_000, "{report}");
    assert_eq!(report["lost"], serde_json::json!([]), "{report}");
    let probes = &report["probes"];
    let acked = probes["acked"].as_u64().context("acked")?;
    let applied = probes["applied"].as_u64().context("applied")?;
    let unknown = probes["unknown"].as_u64().context("unknown")?;
    assert!(acked >= 20, "a baseline and a settled new leader: {report}");
    // Every acknowledged probe applied; the unknown ones may or may not have been.
    assert!(acked <= applied && applied <= acked + unknown, "{report}");
    Ok(new)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_failover_drills_measure_what_clients_see() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(ClusterSpec {
        hosts: 0,
        tls: true,
        ..ClusterSpec::default()
    })
    .await?;
    let leader = cluster.wait_for_leader(None).await?;

    eprintln!("phase: step-down from {leader}");
    let out = cluster.cli(&["drill", "leader-failover"]).await?;
    anyhow::ensure!(out.success, "drill: {}\n{}", out.stderr, out.stdout);
    let report: Value = serde_json::from_str(&out.stdout).context("report JSON")?;
    eprintln!("{report:#}");
    assert_eq!(report["mode"], "step-down", "{report}");
    let new = check_passed(&report, leader)?;
    let now = cluster.wait_for_leader(None).await?;
    assert_eq!(now, new, "the report names the leader the cluster has");

    eprintln!("phase: stop the leader {now}; this test is its service manager");
    let process = cluster.take_controller_process(now)?;
    let out = cluster
        .cli(&["drill", "leader-failover", "--mode", "stop", "--detach"])
        .await?;
    anyhow::ensure!(out.success, "drill: {}", out.stderr);
    let id = serde_json::from_str::<Value>(&out.stdout)?["id"]
        .as_u64()
        .context("id")?
        .to_string();
    let status = process.exited(Duration::from_secs(60)).await?;
    assert_eq!(
        status.code(),
        Some(i32::from(drover_control::server::DRILL_EXIT_CODE)),
        "the leader's controller exits with the drill's code"
    );
    // At once, as systemd's Restart= would: it must not take its leadership back.
    cluster.start_controller(now).await?;
    let report = wait_until("the stop drill to end", Duration::from_secs(90), || async {
        let r = cluster.cli_json(&["drill", "report", &id]).await?;
        Ok((r["state"] != "running").then_some(r))
    })
    .await?;
    eprintln!("{report:#}");
    assert_eq!(report["mode"], "stop", "{report}");
    check_passed(&report, now)?;

    eprintln!("phase: history lists both; a text report reads");
    let history = cluster
        .cli_json(&["drill", "history"])
        .await
        .map_err(anyhow::Error::msg)?;
    assert_eq!(history.as_array().map(Vec::len), Some(2), "{history}");
    let id = report["id"].as_u64().context("id")?.to_string();
    let text = cluster
        .cli(&["drill", "report", &id, "-o", "table"])
        .await?;
    assert!(
        text.stdout.contains("writes unavailable"),
        "{}",
        text.stdout
    );
    assert!(text.stdout.contains("verdict: passed"), "{}", text.stdout);

    eprintln!("phase: with a controller down, a leader drill is refused");
    let leader = cluster.wait_for_leader(None).await?;
    let follower = (1..=3).find(|id| *id != leader).context("a follower")?;
    cluster.kill_controller(follower).await?;
    let out = cluster.cli(&["drill", "leader-failover"]).await?;
    assert!(
        !out.success,
        "a drill ran without a spare quorum: {}",
        out.stdout
    );
    assert!(out.stderr.contains("do not answer"), "{}", out.stderr);
    Ok(())
}
