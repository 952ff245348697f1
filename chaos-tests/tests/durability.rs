//! kill -9 under load: three controllers take a steady stream of VM creates while, cycle
//! after cycle, one of them (the leader, then a follower, alternately) is SIGKILLed in the
//! middle of it and restarted on its data dir. After every cycle: every write a client saw
//! acknowledged is in the state read from the leader, nothing is there that no client
//! asked for, and the restarted controller has applied exactly what the others have.
//!
//! `DROVER_DURABILITY_CYCLES` sets the number of cycles (default 4 for CI; the long run in
//! BENCHMARKS.md uses 50); `DROVER_DURABILITY_SNAPSHOT_LOGS` the controllers'
//! `--snapshot-logs` (default 64, so snapshots, purges and snapshot installs happen under
//! the kills too).

use std::time::{Duration, Instant};

use drover_chaos_tests::checkers::{
    check_durability, current_leader, wait_caught_up, wait_for_leader,
};
use drover_chaos_tests::client::{ClientConfig, LeaderClient};
use drover_chaos_tests::{wait_until, Cluster, ClusterSpec, History, Workload, WorkloadConfig};

/// Acknowledged writes to wait for in each phase of a cycle, so each kill lands in the
/// middle of real traffic and the cluster is seen making progress after it.
const WRITES_PER_PHASE: u64 = 20;
const CLIENTS: usize = 8;
const PROGRESS_TIMEOUT: Duration = Duration::from_secs(30);

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

async fn wait_acked(load: &Workload, at_least: u64, what: &str) -> anyhow::Result<()> {
    wait_until(what, PROGRESS_TIMEOUT, || async {
        let n = load.acked();
        if n >= at_least {
            Ok(Some(()))
        } else {
            Err(format!("{n} of {at_least} writes acknowledged"))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_kill9_cycles() -> anyhow::Result<()> {
    let cycles: u32 = env_or("DROVER_DURABILITY_CYCLES", 4);
    // Small, so every cycle crosses snapshots and log purges, and a restarted controller
    // that missed more than the kept tail must be sent a snapshot.
    let snapshot_logs: u64 = env_or("DROVER_DURABILITY_SNAPSHOT_LOGS", 64);
    let began = Instant::now();
    let mut cluster = Cluster::start(ClusterSpec {
        hosts: 0,
        controller_args: vec![
            "--snapshot-logs".into(),
            snapshot_logs.to_string(),
            "--snapshot-fixed".into(),
        ],
        ..Default::default()
    })
    .await?;
    let addrs = cluster.addrs();
    let members = cluster.members();
    let mut client = LeaderClient::new(&addrs, ClientConfig::default())?;
    let mut history = History::default();
    let (mut applied, mut snapshot) = (0, 0);

    for cycle in 0..cycles {
        // phase: pick the victim: the leader on even cycles, each follower in turn on odd.
        let leader = wait_for_leader(&mut client, None, PROGRESS_TIMEOUT).await?;
        let victim = if cycle % 2 == 0 {
            leader
        } else {
            let followers: Vec<u64> = members
                .iter()
                .map(|(id, _)| *id)
                .filter(|id| *id != leader)
                .collect();
            followers[(cycle as usize / 2) % followers.len()]
        };
        let role = if victim == leader {
            "leader"
        } else {
            "follower"
        };

        // phase: load, then SIGKILL in the middle of it.
        let load = Workload::start(
            &addrs,
            WorkloadConfig {
                clients: CLIENTS,
                prefix: format!("c{cycle}"),
                client: ClientConfig::default(),
            },
        )?;
        wait_acked(&load, WRITES_PER_PHASE, "writes before the kill").await?;
        cluster.kill_controller(victim).await?;

        // phase: the two survivors keep committing (after an election if the leader died).
        let at_kill = load.acked();
        wait_acked(
            &load,
            at_kill + WRITES_PER_PHASE,
            "writes with one controller down",
        )
        .await?;
        if victim == leader {
            let new = current_leader(&mut client)
                .await
                .map_err(anyhow::Error::msg)?;
            assert_ne!(new, Some(victim), "a SIGKILLed controller cannot lead");
        }

        // phase: restart on the same data dir while the load goes on.
        cluster.start_controller(victim).await?;
        let at_restart = load.acked();
        wait_acked(
            &load,
            at_restart + WRITES_PER_PHASE,
            "writes after the restart",
        )
        .await?;
        let cycle_history = load.stop().await?;
        let cycle_acked = cycle_history.acked().count();
        history.extend(cycle_history);

        // phase: the restarted member catches up to the same applied index as the others.
        let level = wait_caught_up(&client, &members, PROGRESS_TIMEOUT).await?;
        applied = level[0].last_applied;
        snapshot = level.iter().map(|m| m.snapshot_index).max().unwrap_or(0);

        // phase: nothing acknowledged is lost, nothing unasked-for appears.
        let vms = client
            .list_vms()
            .await
            .map_err(|s| anyhow::anyhow!("ListVms: {s}"))?;
        let report = check_durability(&history, &vms)
            .map_err(|e| anyhow::anyhow!("cycle {cycle} (killed {role} {victim}): {e}"))?;
        assert!(report.acked > 0);
        eprintln!(
            "cycle {cycle}: killed {role} {victim}; {cycle_acked} acked this cycle; \
             total {} acked ({} by ALREADY_EXISTS on retry), {} listed, {} unknown \
             ({} committed); applied index {applied}, latest snapshot at {snapshot}",
            report.acked,
            history.acked_by_retry(),
            report.listed,
            report.unknown,
            report.unknown_committed
        );
    }
    // The test claims to cross snapshots; make sure it did.
    if applied > 4 * snapshot_logs {
        assert!(snapshot > 0, "no snapshot after {applied} entries");
    }
    eprintln!(
        "durability: {cycles} cycles (snapshot every {snapshot_logs} entries), {} writes \
         acknowledged, {} unknown, {:.1?}",
        history.acked().count(),
        history.unknown(),
        began.elapsed()
    );
    Ok(())
}
