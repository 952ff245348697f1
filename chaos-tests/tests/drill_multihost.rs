//! A host-failure drill on real libvirt hosts with a real QEMU guest (issue 12, point 1):
//! the multi-host rig, a shared pool, an HA VM booting the test guest from a linked clone
//! with a data disk its guest writes a boot marker to. `drover drill host-failure` isolates
//! the VM's host: its lease lapses, its hostd destroys the guest (self-fence), the leader
//! restarts the VM on the other host with the same disks, the drill lifts the isolation
//! and the host is trusted again. The drill's report must pass and say so; independently
//! of the drill's own sampling, this test reads both hosts' libvirt throughout (never
//! twice), and the guest on the new host must find the first boot's marker (same disk).

use std::time::Duration;

use anyhow::Context as _;
use drover_chaos_tests::guest;
use drover_chaos_tests::libvirt_hosts::LibvirtHosts;
use drover_chaos_tests::multihost::Rig;
use drover_chaos_tests::{require, system_libvirt, Sampler};
use serde_json::Value;

/// The guest boots in about 4 s under TCG; a loaded CI machine may take several times that.
const BOOT: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multihost_drill_fails_a_real_guest_over_with_its_disk() -> anyhow::Result<()> {
    if !require::prerequisite(LibvirtHosts::available()) {
        return Ok(());
    }
    let Some(image) = guest::image_or_skip() else {
        return Ok(());
    };
    let rig = Rig::start_with(2, &["--domain-type", "qemu"]).await?;
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

    eprintln!("phase: the drill isolates {src}, follows the failover, restores it");
    let out = rig
        .cluster
        .cli(&["drill", "host-failure", &src, "--max-duration", "180"])
        .await?;
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
    assert!(
        report["fence_path"].to_string().contains("self-fenced"),
        "{report}"
    );

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
    Ok(())
}
