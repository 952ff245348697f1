//! HA failover with real processes: 3 controllers, 3 hostd on libvirt's test driver.
//!
//! (a) A hostd is SIGKILLed (its test-driver domains die with it, as on power loss): its HA
//!     VMs come back on the other hosts, its non-HA VM becomes `unknown` and stays put.
//! (b) A hostd is cut off from the controllers with iptables but keeps running: it fences
//!     itself (destroys its HA guests) before any replacement starts, its non-HA guest keeps
//!     running, and when the partition heals it is trusted again.
//! (c) The leader is SIGKILLed in the middle of a failover: the next leader finishes it.
//!
//! All the while a sampler asks every hostd what it runs; no VM may ever be active on two
//! hosts in one round.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use drover_chaos_tests::ha::{
    agent_port, assert_never_twice, heal_and_check_fenced_first, host_events, host_json,
    moved_elsewhere, populate, spec, wait_event, FAST,
};
use drover_chaos_tests::partition::{self, Partition};
use drover_chaos_tests::{wait_until, Cluster, ClusterSpec, Sampler};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_hostd_its_ha_vms_restart_elsewhere() -> anyhow::Result<()> {
    // Default lease timings (1 s heartbeats, 5 s ttl, 1 s margin): what operators get.
    let mut cluster = Cluster::start(spec(&[])).await?;
    let (victim, on_victim) = populate(&cluster).await?;
    let generations: BTreeMap<String, u64> = {
        let mut g = BTreeMap::new();
        for name in &on_victim {
            let vm = cluster
                .cli_json(&["vm", "get", name])
                .await
                .map_err(anyhow::Error::msg)?;
            g.insert(name.clone(), vm["generation"].as_u64().unwrap_or(0));
        }
        g
    };
    let sampler = Sampler::start(&cluster).await?;

    eprintln!("phase: SIGKILL hostd {victim}");
    let killed = Instant::now();
    cluster.kill_agent(&victim).await?;
    let moved = moved_elsewhere(&cluster, &victim, &on_victim, Duration::from_secs(30)).await?;
    eprintln!(
        "all HA VMs of {victim} running elsewhere {:?} after the kill",
        killed.elapsed()
    );
    let samples = sampler.finish().await?;
    assert_never_twice(&samples);

    for (name, vm) in &moved {
        let was = generations[name];
        let now = vm["generation"].as_u64().unwrap_or(0);
        assert!(
            now > was,
            "{name}: generation {now} after failover, was {was}"
        );
    }
    let host = host_json(&cluster, &victim)
        .await
        .map_err(anyhow::Error::msg)?;
    assert_eq!(host["health"], "dead", "{host}");
    assert_eq!(host["dead_reason"], "lease", "{host}");
    let plain = wait_until("plain marked unknown", Duration::from_secs(10), || async {
        let vm = cluster.cli_json(&["vm", "get", "plain"]).await?;
        Ok((vm["observed_state"] == "unknown").then_some(vm))
    })
    .await?;
    assert_eq!(
        plain["host"],
        victim.as_str(),
        "non-HA VMs stay put: {plain}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_hostd_fences_itself_before_replacements_start() -> anyhow::Result<()> {
    if !drover_chaos_tests::require::prerequisite(partition::available()) {
        return Ok(());
    }
    let cluster = Cluster::start(spec(&FAST)).await?;
    let (victim, on_victim) = populate(&cluster).await?;
    let port = agent_port(&cluster, &victim)?;
    let sampler = Sampler::start(&cluster).await?;

    eprintln!("phase: cut {victim} (port {port}) off from the controllers");
    let cut = Partition::cut(port)?;
    let cut_at = Instant::now();
    moved_elsewhere(&cluster, &victim, &on_victim, Duration::from_secs(30)).await?;
    eprintln!(
        "HA VMs of {victim} running elsewhere {:?} after the cut",
        cut_at.elapsed()
    );
    let host = host_json(&cluster, &victim)
        .await
        .map_err(anyhow::Error::msg)?;
    assert_eq!(host["health"], "dead", "{host}");

    eprintln!("phase: heal; {victim} must be reconciled and trusted again");
    let samples =
        heal_and_check_fenced_first(&cluster, cut, sampler, &victim, &on_victim, cut_at).await?;
    // Back in touch, the host reports that it fenced itself, and is trusted again.
    wait_event(&cluster, &victim, "self-fenced", None, "lease lapsed").await?;
    wait_event(&cluster, &victim, "host-back", None, "trusted again").await?;
    // The non-HA guest ran through the partition, on its host, and nowhere else.
    let last = samples.0.last().context("samples")?;
    assert_eq!(
        last.active.get("plain"),
        Some(&vec![victim.clone()]),
        "non-HA guests keep running through isolation"
    );
    assert!(samples.first_active_elsewhere("plain", &victim).is_none());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_mid_failover_the_next_one_finishes() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(spec(&FAST)).await?;
    let (victim, on_victim) = populate(&cluster).await?;
    let sampler = Sampler::start(&cluster).await?;

    eprintln!("phase: SIGKILL hostd {victim}; once it is declared dead, SIGKILL the leader");
    cluster.kill_agent(&victim).await?;
    wait_until("victim dead", Duration::from_secs(20), || async {
        let h = host_json(&cluster, &victim).await?;
        Ok((h["health"] == "dead").then_some(()))
    })
    .await?;
    let leader = cluster.wait_for_leader(None).await?;
    let done_before = moved_elsewhere(&cluster, &victim, &on_victim, Duration::ZERO)
        .await
        .is_ok();
    cluster.kill_controller(leader).await?;
    let next = cluster.wait_for_leader(Some(leader)).await?;
    eprintln!(
        "leader {leader} killed ({}); {next} leads",
        if done_before {
            "after the failover had already finished"
        } else {
            "with the failover unfinished"
        }
    );
    moved_elsewhere(&cluster, &victim, &on_victim, Duration::from_secs(30)).await?;
    let samples = sampler.finish().await?;
    assert_never_twice(&samples);
    Ok(())
}

/// `drover ha disarm` (planned network maintenance): a host cut off from the controllers
/// keeps its HA guests and nothing is restarted elsewhere; re-arming does not make the
/// still-cut host fair game, because it never confirmed an armed grant; once it reconnects
/// and confirms, it counts as armed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disarmed_cluster_neither_fails_over_nor_fences() -> anyhow::Result<()> {
    if !drover_chaos_tests::require::prerequisite(partition::available()) {
        return Ok(());
    }
    let cluster = Cluster::start(spec(&FAST)).await?;
    let (victim, on_victim) = populate(&cluster).await?;
    let port = agent_port(&cluster, &victim)?;

    eprintln!("phase: disarm; every host counts as not armed");
    let status = cluster
        .cli_json(&["ha", "disarm"])
        .await
        .map_err(anyhow::Error::msg)?;
    assert_eq!(status["armed"], false, "{status}");
    assert_eq!(
        status["hosts_not_armed"].as_array().map(Vec::len),
        Some(3),
        "{status}"
    );
    let table = cluster.cli(&["ha", "status", "-o", "table"]).await?;
    assert!(table.stdout.contains("HA DISARMED"), "{table:?}");
    // The hosts must have applied a disarmed grant before the cut.
    wait_until(
        "hosts hold disarmed grants",
        Duration::from_secs(10),
        || async {
            let s = cluster.cli_json(&["ha", "status"]).await?;
            Ok((s["hosts_not_armed"].as_array().map(Vec::len) == Some(3)).then_some(()))
        },
    )
    .await?;
    // One lease request round-trip after the disarm is committed, so the victim's newest
    // grant says disarmed: wait for its grant to be fresher than the disarm.
    let disarmed_at = Instant::now();
    wait_until(
        "a grant after the disarm",
        Duration::from_secs(10),
        || async {
            let h = host_json(&cluster, &victim).await?;
            let ago = h["lease_granted_ms_ago"].as_u64().unwrap_or(u64::MAX);
            Ok((Duration::from_millis(ago) < disarmed_at.elapsed()).then_some(()))
        },
    )
    .await?;
    let sampler = Sampler::start(&cluster).await?;

    eprintln!("phase: cut {victim} off for 2x (ttl + margin); nothing moves, nothing is fenced");
    let cut = Partition::cut(port)?;
    let window = Duration::from_secs(4);
    let started = Instant::now();
    while started.elapsed() < window {
        let h = host_json(&cluster, &victim)
            .await
            .map_err(anyhow::Error::msg)?;
        assert_ne!(h["health"], "dead", "disarmed: {h}");
        for vm in &on_victim {
            let v = cluster
                .cli_json(&["vm", "get", vm])
                .await
                .map_err(anyhow::Error::msg)?;
            assert_eq!(v["host"], victim.as_str(), "disarmed: {vm} must stay: {v}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    eprintln!("phase: arm while {victim} is still cut: it never confirmed, so it stays put");
    let status = cluster
        .cli_json(&["ha", "arm"])
        .await
        .map_err(anyhow::Error::msg)?;
    assert_eq!(status["armed"], true, "{status}");
    let started = Instant::now();
    while started.elapsed() < window {
        let h = host_json(&cluster, &victim)
            .await
            .map_err(anyhow::Error::msg)?;
        assert_ne!(h["health"], "dead", "unconfirmed host declared dead: {h}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    eprintln!("phase: heal; {victim} confirms it is armed again");
    cut.heal()?;
    wait_until("every host armed", Duration::from_secs(20), || async {
        let s = cluster.cli_json(&["ha", "status"]).await?;
        Ok((s["hosts_not_armed"].as_array().map(Vec::len) == Some(0)).then_some(()))
    })
    .await?;
    let samples = sampler.finish().await?;
    assert_never_twice(&samples);
    // Its HA guests ran through the whole partition.
    let last = samples.0.last().context("samples")?;
    for vm in &on_victim {
        assert_eq!(last.active.get(vm), Some(&vec![victim.clone()]), "{vm}");
        assert!(samples.first_active_elsewhere(vm, &victim).is_none());
    }
    Ok(())
}

/// A failed-over VM that fits nowhere waits, pending with the scheduler's reason, and
/// starts as soon as a host with room joins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_waits_for_capacity_then_starts() -> anyhow::Result<()> {
    // Two test-driver hosts of 3 GiB each.
    let mut cluster = Cluster::start(ClusterSpec {
        hosts: 2,
        controller_args: FAST.map(String::from).to_vec(),
        ..ClusterSpec::default()
    })
    .await?;
    let big = ["--vcpus", "1", "--memory-mib", "2000"];
    let mut args = vec!["vm", "create", "big", "--ha"];
    args.extend(big);
    cluster.cli_json(&args).await.map_err(anyhow::Error::msg)?;
    let on = wait_until("big running", Duration::from_secs(20), || async {
        let v = cluster.cli_json(&["vm", "get", "big"]).await?;
        Ok((v["observed_state"] == "running").then(|| v["host"].as_str().map(String::from)))
    })
    .await?
    .context("big is placed")?;
    // The filler lands on the other host (most free memory) and leaves it 1 GiB.
    let mut args = vec!["vm", "create", "filler"];
    args.extend(big);
    cluster.cli_json(&args).await.map_err(anyhow::Error::msg)?;
    let filler_on = wait_until("filler running", Duration::from_secs(20), || async {
        let v = cluster.cli_json(&["vm", "get", "filler"]).await?;
        Ok((v["observed_state"] == "running").then(|| v["host"].as_str().map(String::from)))
    })
    .await?
    .context("filler is placed")?;
    assert_ne!(on, filler_on, "spread by free memory");

    eprintln!("phase: SIGKILL {on}; big fits nowhere and waits");
    cluster.kill_agent(&on).await?;
    let pending = wait_until("big pending", Duration::from_secs(20), || async {
        let v = cluster.cli_json(&["vm", "get", "big"]).await?;
        let waiting =
            v["host"].is_null() && v["reason"].as_str().is_some_and(|r| r.contains("pending"));
        Ok(waiting.then_some(v))
    })
    .await?;
    eprintln!("pending: {}", pending["reason"]);

    eprintln!("phase: a host with room joins; big starts there");
    cluster.add_agent("h3", "test:///default").await?;
    wait_until("big running on h3", Duration::from_secs(20), || async {
        let v = cluster.cli_json(&["vm", "get", "big"]).await?;
        Ok((v["observed_state"] == "running" && v["host"] == "h3").then_some(()))
    })
    .await?;
    Ok(())
}

/// The mass-failure brake: with two of three hosts dead at once the leader assumes it is
/// the one cut off, fails nothing over, and says so in the event log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mass_failure_freezes_failover() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(spec(&FAST)).await?;
    let (victim, on_victim) = populate(&cluster).await?;
    let other = ["h1", "h2", "h3"]
        .into_iter()
        .find(|h| *h != victim)
        .context("another host")?;

    eprintln!("phase: SIGKILL {victim} and {other} together");
    cluster.kill_agent(&victim).await?;
    cluster.kill_agent(other).await?;
    let frozen = wait_until(
        "a failover-frozen event",
        Duration::from_secs(20),
        || async {
            let events = cluster.cli_json(&["event", "list", "--limit", "0"]).await?;
            Ok(events
                .as_array()
                .and_then(|es| es.iter().find(|e| e["kind"] == "failover-frozen").cloned()))
        },
    )
    .await?;
    eprintln!("{}", frozen["message"]);
    for vm in &on_victim {
        let v = cluster
            .cli_json(&["vm", "get", vm])
            .await
            .map_err(anyhow::Error::msg)?;
        assert_eq!(
            v["host"],
            victim.as_str(),
            "frozen: {vm} must not move: {v}"
        );
    }
    let events = host_events(&cluster, &victim).await?;
    assert!(
        events.iter().all(|e| e["kind"] != "failed-over"),
        "nothing failed over: {events:?}"
    );
    Ok(())
}
