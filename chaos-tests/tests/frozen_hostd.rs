//! (b') The classic double-run: hostd frozen with SIGSTOP while its QEMU guest keeps running.
//! One host runs real QEMU on `qemu:///system` with `hostd-watchdog` beside its hostd; two
//! more run on libvirt's test driver. Freezing that hostd stops its lease renewals and its
//! own fence timer; the watchdog must destroy the HA guest before the cluster restarts it
//! elsewhere. The sampler reads the frozen host straight from libvirt.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use drover_chaos_tests::ha::FAST;
use drover_chaos_tests::system_libvirt::{self, Leftovers, QEMU_SYSTEM as QEMU};
use drover_chaos_tests::{require, wait_until, Cluster, ClusterSpec, Sampler};
use nix::sys::signal::Signal;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_hostd_is_fenced_by_its_watchdog_before_the_restart() -> anyhow::Result<()> {
    if !require::prerequisite(system_libvirt::available()) {
        return Ok(());
    }
    let vm = format!("frozen-{}", std::process::id());
    let _leftovers = Leftovers {
        domains: vec![vm.clone()],
        pools: Vec::new(),
    };
    let mut cluster = Cluster::start(ClusterSpec {
        hosts: 0,
        controller_args: FAST.map(String::from).to_vec(),
        ..ClusterSpec::default()
    })
    .await?;

    eprintln!("phase: q1 (real QEMU) alone takes the HA VM");
    cluster.add_agent("q1", QEMU).await?;
    cluster.wait_hosts_up().await?;
    cluster
        .cli_json(&[
            "vm",
            "create",
            &vm,
            "--vcpus",
            "1",
            "--memory-mib",
            "64",
            "--ha",
        ])
        .await
        .map_err(anyhow::Error::msg)?;
    wait_until("the VM running on q1", Duration::from_secs(60), || async {
        let v = cluster.cli_json(&["vm", "get", &vm]).await?;
        Ok((v["observed_state"] == "running" && v["host"] == "q1").then_some(()))
    })
    .await?;

    eprintln!("phase: two test-driver hosts join; the watchdog starts beside q1's hostd");
    cluster.add_agent("h2", "test:///default").await?;
    cluster.add_agent("h3", "test:///default").await?;
    cluster.wait_hosts_up().await?;
    let watchdog = cluster.start_watchdog("q1").await?;
    let sampler = Sampler::start_with(&cluster, &["q1"]).await?;

    eprintln!("phase: SIGSTOP q1's hostd; QEMU keeps running");
    let hostd = cluster.agent("q1")?.process.as_ref().context("q1 runs")?;
    hostd.signal(Signal::SIGSTOP)?;
    let frozen = Instant::now();
    let moved = wait_until(
        "the VM running elsewhere",
        Duration::from_secs(30),
        || async {
            let v = cluster.cli_json(&["vm", "get", &vm]).await?;
            let elsewhere = v["observed_state"] == "running" && v["host"] != "q1";
            Ok(elsewhere.then_some(v))
        },
    )
    .await?;
    eprintln!(
        "running on {} {:?} after the freeze",
        moved["host"],
        frozen.elapsed()
    );

    // The state says it runs elsewhere; the sampler must have seen it too before q1 comes
    // back (its rounds are slow under load).
    sampler
        .wait_active_elsewhere(&vm, "q1", Duration::from_secs(30))
        .await?;

    eprintln!("phase: SIGCONT; q1 reports, is reconciled and trusted again");
    hostd.signal(Signal::SIGCONT)?;
    wait_until("q1 up again", Duration::from_secs(20), || async {
        let h = cluster.cli_json(&["host", "get", "q1"]).await?;
        Ok((h["health"] == "up").then_some(()))
    })
    .await?;
    let samples = sampler.finish().await?;
    if let Some((sample, name)) = samples.twice() {
        panic!("{name} active on {:?} at once", sample.active[name]);
    }
    let fenced = samples
        .last_active_on(&vm, "q1")
        .context("the guest was seen on q1")?;
    let replaced = samples
        .first_active_elsewhere(&vm, "q1")
        .context("the guest was seen elsewhere")?;
    assert!(
        fenced < replaced,
        "the QEMU guest on q1 was still active when its replacement started"
    );
    eprintln!(
        "QEMU guest last seen {:?} after the freeze; replacement first seen {:?} later",
        fenced - frozen,
        replaced - fenced
    );
    watchdog.terminate().await?;
    Ok(())
}
