//! The optional external fence agent: with long leases (20 s), a host cut off from the
//! controllers is powered off by the agent — here a script that SIGKILLs that host's hostd
//! by PID, its test-driver guests dying with it — and its HA VMs fail over long before the
//! lease would allow. An agent that fails changes nothing: the lease wait applies.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use drover_chaos_tests::ha::{
    agent_port, assert_never_twice, host_json, moved_elsewhere, populate, spec, wait_event, FAST,
};
use drover_chaos_tests::partition::{self, Partition};
use drover_chaos_tests::{require, Cluster, Sampler};

/// Writes an executable agent script into `dir`.
fn script(dir: &Path, name: &str, body: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{body}\n"))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
    Ok(path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_successful_agent_fails_over_without_the_lease_wait() -> anyhow::Result<()> {
    if !require::prerequisite(partition::available()) {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let pids = dir.path().join("pids");
    std::fs::create_dir(&pids)?;
    // "Power off": SIGKILL the host's hostd, whose PID the test wrote for it.
    let agent = script(
        dir.path(),
        "power-off",
        &format!("kill -9 \"$(cat {}/\"$1\".pid)\"", pids.display()),
    )?;
    let agent_arg = agent.display().to_string();
    let cluster = Cluster::start(spec(&[
        "--heartbeat-interval-ms",
        "200",
        "--lease-ttl-ms",
        "20000",
        "--lease-margin-ms",
        "2000",
        "--fence-agent",
        &agent_arg,
    ]))
    .await?;
    for a in &cluster.agents {
        let pid = a.process.as_ref().map(|p| p.pid().as_raw()).unwrap_or(0);
        std::fs::write(pids.join(format!("{}.pid", a.name)), pid.to_string())?;
    }
    let (victim, on_victim) = populate(&cluster).await?;
    let sampler = Sampler::start(&cluster).await?;

    eprintln!("phase: cut {victim} off; the agent powers it off; failover without the 22 s wait");
    let cut = Partition::cut(agent_port(&cluster, &victim)?)?;
    let started = Instant::now();
    moved_elsewhere(&cluster, &victim, &on_victim, Duration::from_secs(15)).await?;
    let took = started.elapsed();
    eprintln!("HA VMs of {victim} running elsewhere {took:?} after the cut");
    assert!(
        took < Duration::from_secs(20),
        "the lease (20 s) cannot have lapsed yet: only the agent explains this ({took:?})"
    );
    let host = host_json(&cluster, &victim)
        .await
        .map_err(anyhow::Error::msg)?;
    assert_eq!(host["health"], "dead", "{host}");
    assert_eq!(host["dead_reason"], "fence-agent", "{host}");
    wait_event(
        &cluster,
        &victim,
        "host-dead",
        None,
        "fence agent confirmed",
    )
    .await?;
    drop(cut);
    assert_never_twice(&sampler.finish().await?);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_agent_falls_back_to_the_lease() -> anyhow::Result<()> {
    if !require::prerequisite(partition::available()) {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let agent = script(
        dir.path(),
        "broken-bmc",
        "echo 'BMC unreachable' >&2; exit 1",
    )?;
    let agent_arg = agent.display().to_string();
    let mut args = FAST.to_vec();
    args.extend(["--fence-agent", agent_arg.as_str()]);
    let cluster = Cluster::start(spec(&args)).await?;
    let (victim, on_victim) = populate(&cluster).await?;
    let sampler = Sampler::start(&cluster).await?;

    eprintln!("phase: cut {victim} off; the agent fails; the lease decides");
    let cut = Partition::cut(agent_port(&cluster, &victim)?)?;
    moved_elsewhere(&cluster, &victim, &on_victim, Duration::from_secs(30)).await?;
    let host = host_json(&cluster, &victim)
        .await
        .map_err(anyhow::Error::msg)?;
    assert_eq!(host["dead_reason"], "lease", "{host}");
    // The events say which path was taken.
    wait_event(
        &cluster,
        &victim,
        "fence-agent-failed",
        None,
        "BMC unreachable",
    )
    .await?;
    wait_event(
        &cluster,
        &victim,
        "host-dead",
        None,
        "lease has certainly lapsed",
    )
    .await?;
    drop(cut);
    assert_never_twice(&sampler.finish().await?);
    Ok(())
}
