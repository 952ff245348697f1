//! The partition that breaks naive designs (issue 4, point 4): the old leader and one host
//! on one side, the other controllers and hosts on the other. Every process has its own
//! loopback address and iptables drops all traffic between the two sides; the test's probe
//! (127.0.0.2) and CLI (127.0.0.1) belong to neither.
//!
//! The old leader cannot confirm its term with a quorum, so it grants nothing; the host's
//! lease lapses and it destroys its HA guests; the new leader waits a full ttl + margin,
//! declares the host dead and restarts the guests on the majority side — after the fence.
//! The sampler checks that no VM is ever active on two hosts, and that each restarted
//! guest's old copy was gone before its replacement appeared.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use drover_chaos_tests::cluster::{controller_ip, host_ip};
use drover_chaos_tests::ha::{
    heal_and_check_fenced_first, host_json, moved_elsewhere, populate, FAST,
};
use drover_chaos_tests::partition::{self, Partition};
use drover_chaos_tests::{require, Cluster, ClusterSpec, Sampler};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn old_leader_and_one_host_cut_off_from_the_majority() -> anyhow::Result<()> {
    if !require::prerequisite(partition::available()) {
        return Ok(());
    }
    let mut cluster = Cluster::start(ClusterSpec {
        hosts: 3,
        controller_args: FAST.map(String::from).to_vec(),
        distinct_addresses: true,
        ..ClusterSpec::default()
    })
    .await?;
    let (victim, on_victim) = populate(&cluster).await?;
    let leader = cluster.wait_for_leader(None).await?;
    let victim_n: usize = victim
        .trim_start_matches('h')
        .parse()
        .context("host names are hN")?;

    let minority = vec![controller_ip(leader), host_ip(victim_n)];
    let majority: Vec<String> = (1..=3u64)
        .filter(|id| *id != leader)
        .map(controller_ip)
        .chain((1..=3).filter(|n| *n != victim_n).map(host_ip))
        .collect();
    let sampler = Sampler::start(&cluster).await?;
    // Ask the majority: the old leader keeps calling itself leader until it hears otherwise.
    cluster.use_controllers(Some((1..=3u64).filter(|id| *id != leader).collect()));

    eprintln!("phase: cut {minority:?} (old leader {leader}, host {victim}) from {majority:?}");
    let cut = Partition::between(&minority, &majority)?;
    let cut_at = Instant::now();
    let next = cluster.wait_for_leader(Some(leader)).await?;
    eprintln!(
        "controller {next} leads the majority {:?} after the cut",
        cut_at.elapsed()
    );
    moved_elsewhere(&cluster, &victim, &on_victim, Duration::from_secs(30)).await?;
    eprintln!(
        "{victim}'s HA VMs run on the majority side {:?} after the cut",
        cut_at.elapsed()
    );
    let host = host_json(&cluster, &victim)
        .await
        .map_err(anyhow::Error::msg)?;
    assert_eq!(host["health"], "dead", "{host}");
    assert_eq!(host["dead_reason"], "lease", "{host}");

    eprintln!("phase: heal; the old leader follows, {victim} is reconciled and trusted");
    heal_and_check_fenced_first(&cluster, cut, sampler, &victim, &on_victim, cut_at).await?;
    Ok(())
}
