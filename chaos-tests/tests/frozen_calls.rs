//! Deadlines on controller → hostd calls (issue 9, point 7): a start sent to a hostd that
//! then stays silent (SIGSTOP: the kernel keeps the TCP connection, nothing answers) must
//! not wedge the VM's actor. The host dies by its lease, the HA VM fails over, and its
//! actor — whose call ends by keepalive or deadline — restarts it elsewhere.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use drover_chaos_tests::ha::{all_running, create, spec};
use drover_chaos_tests::{wait_until, Cluster};
use nix::sys::signal::Signal;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_sent_to_a_frozen_hostd_does_not_wedge_failover() -> anyhow::Result<()> {
    // Default lease timings (1 s beats, suspect after 2 missed): the start certainly
    // leaves while the frozen host still counts as up.
    let cluster = Cluster::start(spec(&[])).await?;
    create(&cluster, "ha", Some(0)).await?;
    let vms = all_running(&cluster, &["ha".to_string()], Duration::from_secs(20)).await?;
    let victim = vms["ha"]["host"].as_str().context("placed")?.to_string();
    cluster.cli(&["vm", "stop", "ha"]).await?;
    wait_until("ha shut off", Duration::from_secs(30), || async {
        let vm = cluster.cli_json(&["vm", "get", "ha"]).await?;
        Ok((vm["observed_state"] == "shut off").then_some(()))
    })
    .await?;

    eprintln!("phase: freeze {victim}'s hostd, then start the VM: the start goes to it");
    let hostd = cluster
        .agent(&victim)?
        .process
        .as_ref()
        .context("victim runs")?;
    hostd.signal(Signal::SIGSTOP)?;
    let frozen = Instant::now();
    cluster.cli(&["vm", "start", "ha"]).await?;
    let starting = wait_until("the start in flight", Duration::from_secs(5), || async {
        let vm = cluster.cli_json(&["vm", "get", "ha"]).await?;
        Ok((vm["observed_state"] == "starting").then_some(vm))
    })
    .await?;
    assert_eq!(starting["host"], victim.as_str(), "{starting}");

    eprintln!("phase: {victim} dies by its lease; ha runs elsewhere");
    let moved = wait_until("ha running elsewhere", Duration::from_secs(30), || async {
        let vm = cluster.cli_json(&["vm", "get", "ha"]).await?;
        let elsewhere = vm["observed_state"] == "running" && vm["host"] != victim.as_str();
        Ok(elsewhere.then_some(vm))
    })
    .await?;
    eprintln!(
        "ha runs on {} {:?} after the freeze",
        moved["host"],
        frozen.elapsed()
    );
    hostd.signal(Signal::SIGCONT)?;
    Ok(())
}
