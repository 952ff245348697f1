//! Host-failure drills on real libvirt hosts with a real QEMU guest (issue 12, point 1):
//! the multi-host rig, a shared pool, an HA VM booting the test guest from a linked clone
//! with a data disk its guest writes a boot marker to. `drover drill host-failure` cuts
//! the VM's host off, its lease lapses, its guest is fenced, the leader restarts the VM on
//! the other host with the same disks, the drill gives the host back and it is trusted
//! again. The drill's report must pass and say so; independently of the drill's own
//! sampling, this test reads both hosts' libvirt throughout (never twice), and the guest
//! on the new host must find the first boot's marker (same disk).
//!
//! Two modes: `isolate` (hostd drops its session; hostd's own fence loop destroys the
//! guest) and `stop-agent` (hostd exits with the drill's code; this test plays its
//! service manager and starts it again; hostd-watchdog, beside each hostd, destroys the
//! guest, and the report's fence path says so).

use std::time::Duration;

use anyhow::Context as _;
use drover_chaos_tests::cluster::Agent;
use drover_chaos_tests::guest;
use drover_chaos_tests::libvirt_hosts::LibvirtHosts;
use drover_chaos_tests::multihost::Rig;
use drover_chaos_tests::{require, system_libvirt, Sampler};
use serde_json::Value;

/// The guest boots in about 4 s under TCG; a loaded CI machine may take several times that.
const BOOT: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multihost_drill_fails_a_real_guest_over_with_its_disk() -> anyhow::Result<()> {
    let Some(report) = drill_a_real_guest("isolate").await? else {
        return Ok(());
    };
    let fence = report["fence_path"].to_string();
    assert!(fence.contains("self-fenced"), "{report}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multihost_stop_agent_drill_lets_the_watchdog_fence() -> anyhow::Result<()> {
    let Some(report) = drill_a_real_guest("stop-agent").await? else {
        return Ok(());
    };
    assert_eq!(report["mode"], "stop-agent", "{report}");
    let fence = report["fence_path"].to_string();
    assert!(
        fence.contains("hostd-watchdog destroyed HA guests"),
        "the watchdog did not fence, or the report does not say so: {report}"
    );
    Ok(())
}

/// Runs the drill in `mode` against the host of a real HA guest and checks what both
/// modes share; returns the report (`None`: skipped, with the reason printed).
async fn drill_a_real_guest(mode: &str) -> anyhow::Result<Option<Value>> {
    if !require::prerequisite(LibvirtHosts::available()) {
        return Ok(None);
    }
    let Some(image) = guest::image_or_skip() else {
        return Ok(None);
    };
    let mut rig = Rig::start_with(2, &["--domain-type", "qemu"]).await?;
    let stop_agent = mode == "stop-agent";
    let mut watchdogs = Vec::new();
    if stop_agent {
        for (host, _) in rig.uris() {
            watchdogs.push(rig.cluster.start_watchdog(&host).await?);
        }
    }
    let shared = system_libvirt::pool_dir("drover-drill")?;
    eprintln!("phase: a shared pool, the guest image, an HA VM on a clone of it");
    let vm = rig.shared_ha_guest("keeper", shared.path(), &image).await?;
    let data = shared
        .path()
        .join(vm["disks"][1]["volume"].as_str().unwrap_or("?"));
    let src = rig.running(&["keeper"]).await?["keeper"].clone();
    let first = guest::wait_marker("the guest's first boot", &data, BOOT, |m| {
        m.first_boot.is_some()
    })
    .await?;
    eprintln!("the guest on {src} wrote {first:?}");
    let sampler = Sampler::start_running(&rig.uris()).await?;

    eprintln!("phase: the drill ({mode}) cuts {src} off, follows the failover, restores it");
    // In stop-agent mode hostd exits; this test is its service manager.
    let restart = if stop_agent {
        let log = rig
            .cluster
            .dir
            .path()
            .join(format!("hostd-{src}-restarted.log"));
        let agent = rig.cluster.agent_mut(&src)?;
        let process = agent.process.take().context("hostd not running")?;
        Some(Agent::restart_after_drill_stop(
            agent.program.clone(),
            agent.args.clone(),
            process,
            log,
            Duration::from_secs(120),
        ))
    } else {
        None
    };
    let args = [
        "drill",
        "host-failure",
        &src,
        "--mode",
        mode,
        "--max-duration",
        "180",
    ];
    let drill = rig.cluster.cli(&args);
    let (out, restarted) = match restart {
        Some(restart) => {
            let (out, restarted) = tokio::join!(drill, restart);
            (out?, Some(restarted.context("hostd after the stop")?))
        }
        None => (drill.await?, None),
    };
    anyhow::ensure!(out.success, "drill: {}", out.stderr);
    let report: Value = serde_json::from_str(&out.stdout).context("report JSON")?;
    eprintln!("{report:#}");
    assert_eq!(report["verdict"], "passed", "{report}");
    assert_eq!(report["state"], "succeeded", "{report}");
    assert_eq!(report["dead_reason"], "lease", "{report}");
    assert!(report["never_twice"]["samples"].as_u64().unwrap_or(0) > 0);
    assert_eq!(report["never_twice"]["violations"], serde_json::json!([]));
    let keeper = &report["vms"][0];
    assert_eq!(keeper["name"], "keeper", "{report}");
    let dst = keeper["restarted_on"].as_str().context("not restarted")?;
    assert_ne!(dst, src, "{report}");

    eprintln!("phase: the guest on {dst} finds the first boot's marker on the same disk");
    let second = guest::wait_marker("the restarted guest", &data, BOOT, |m| {
        m.boots.is_some_and(|b| b >= 2)
    })
    .await?;
    assert_eq!(second.first_boot, first.first_boot, "{second:?}");

    let samples = sampler.finish().await?;
    if let Some((s, vm)) = samples.twice() {
        panic!("{vm} ran on two hosts at once: {:?}", s.active);
    }
    let h = rig.json(&["host", "get", &src]).await?;
    assert_eq!(h["health"], "up", "the drilled host is back: {h}");
    if let Some(p) = restarted {
        rig.cluster.agent_mut(&src)?.process = Some(p);
    }
    drop(watchdogs);
    Ok(Some(report))
}
