//! `drover host fence`: refused without the confirmation; with it, the host is dead at once
//! and its HA VMs fail over without the lease wait. Here the operator is wrong — the host
//! still runs and still talks — which shows the other half of "host comes back": the copy
//! it still runs is stale (the VM moved, generation + 1) and the leader destroys it at once,
//! well within the host's lease; the host is trusted again only once it runs no stale copy
//! and no HA guest. (For the moment between the fence and the destroy the VM did run twice:
//! that is what a wrong confirmation costs, and why the CLI asks for it.)

use std::time::{Duration, Instant};

use drover_chaos_tests::ha::{host_json, moved_elsewhere, populate, spec, wait_event};
use drover_chaos_tests::{wait_until, Cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_fence_fails_over_and_the_stale_copy_is_destroyed() -> anyhow::Result<()> {
    // An 8 s lease: anything that happens within a few seconds is not the lease's doing.
    let cluster = Cluster::start(spec(&[
        "--heartbeat-interval-ms",
        "200",
        "--lease-ttl-ms",
        "8000",
        "--lease-margin-ms",
        "1000",
    ]))
    .await?;
    let (victim, on_victim) = populate(&cluster).await?;

    eprintln!("phase: without the confirmation, nothing happens");
    let refused = cluster.cli(&["host", "fence", &victim]).await?;
    assert!(!refused.success, "{refused:?}");
    assert!(refused.stderr.contains("--yes-it-is-off"), "{refused:?}");
    let host = host_json(&cluster, &victim)
        .await
        .map_err(anyhow::Error::msg)?;
    assert_eq!(host["health"], "up", "{host}");

    eprintln!("phase: fence {victim} (still running); its HA VMs move at once");
    let fenced = cluster
        .cli_json(&["host", "fence", &victim, "--yes-it-is-off"])
        .await
        .map_err(anyhow::Error::msg)?;
    assert_eq!(fenced["health"], "dead", "{fenced}");
    assert_eq!(fenced["dead_reason"], "operator", "{fenced}");
    wait_event(&cluster, &victim, "host-dead", None, "operator confirmed").await?;
    let at = Instant::now();
    moved_elsewhere(&cluster, &victim, &on_victim, Duration::from_secs(10)).await?;
    eprintln!("moved {:?} after the fence", at.elapsed());

    eprintln!("phase: the copies {victim} still runs are stale and destroyed");
    wait_until("stale copies gone", Duration::from_secs(5), || async {
        let domains = cluster.domains(&victim).await.map_err(|e| e.to_string())?;
        let still = domains.iter().any(|d| {
            on_victim.contains(&d.name)
                && d.state() == drover_proto::agent::v1::DomainState::Running
        });
        Ok((!still).then_some(()))
    })
    .await?;
    let destroyed = at.elapsed();
    eprintln!("stale copies destroyed {destroyed:?} after the fence");
    assert!(
        destroyed < Duration::from_secs(8),
        "within the 8 s lease: the leader's reconciliation, not the host's lease, did it"
    );

    eprintln!("phase: {victim}, now running nothing stale and no HA guest, is trusted again");
    wait_until("victim up again", Duration::from_secs(30), || async {
        let h = host_json(&cluster, &victim).await?;
        Ok((h["health"] == "up").then_some(()))
    })
    .await?;
    // The moved VMs stayed where they went.
    moved_elsewhere(&cluster, &victim, &on_victim, Duration::ZERO).await?;
    Ok(())
}
