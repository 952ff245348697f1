//! Never twice for cold moves (issue 9, point 1), end to end: a non-HA VM runs on a host
//! whose hostd freezes (SIGSTOP) and is declared dead by its lease. A non-HA VM is not
//! fenced by a lapse, so it may still run there: a drain of that host must list it as
//! blocked, with the command that unblocks it, and leave it where it is. Once an operator
//! confirms the host is off, the drain moves it; when the frozen hostd wakes, the leader
//! destroys the copy it still holds before trusting the host again; the empty host can
//! then be removed.

use std::time::Duration;

use anyhow::Context as _;
use drover_chaos_tests::ha::{all_running, create, spec, FAST};
use drover_chaos_tests::{wait_until, Cluster};
use nix::sys::signal::Signal;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drain_never_moves_a_vm_its_frozen_host_may_still_run() -> anyhow::Result<()> {
    let cluster = Cluster::start(spec(&FAST)).await?;
    create(&cluster, "plain", None).await?;
    let vms = all_running(&cluster, &["plain".to_string()], Duration::from_secs(20)).await?;
    let victim = vms["plain"]["host"]
        .as_str()
        .context("plain is placed")?
        .to_string();
    let generation = vms["plain"]["generation"].as_u64().context("generation")?;

    eprintln!("phase: freeze {victim}'s hostd; wait until its lease has certainly lapsed");
    let hostd = cluster
        .agent(&victim)?
        .process
        .as_ref()
        .context("victim runs")?;
    hostd.signal(Signal::SIGSTOP)?;
    wait_until("victim dead", Duration::from_secs(30), || async {
        let h = cluster.cli_json(&["host", "get", &victim]).await?;
        Ok((h["health"] == "dead").then_some(()))
    })
    .await?;

    eprintln!("phase: drain {victim}: plain is blocked, not moved");
    let op = cluster
        .cli_json(&["host", "drain", &victim, "--detach"])
        .await
        .map_err(anyhow::Error::msg)?;
    let id = op["id"].as_u64().context("drain id")?.to_string();
    let why = wait_until(
        "plain listed as blocked",
        Duration::from_secs(20),
        || async {
            let op = cluster.cli_json(&["op", "get", &id]).await?;
            Ok(op["drain"]["blocked"]["plain"].as_str().map(String::from))
        },
    )
    .await?;
    assert!(
        why.contains(&format!("drover host fence {victim} --yes-it-is-off")),
        "the reason names the command that unblocks it: {why}"
    );
    // The drain has stepped (it reported the block); the VM must not have moved, now or
    // in the next steps.
    for _ in 0..3 {
        let op = cluster
            .cli_json(&["op", "get", &id])
            .await
            .map_err(anyhow::Error::msg)?;
        assert_eq!(op["state"], "running", "{op}");
        let vm = cluster
            .cli_json(&["vm", "get", "plain"])
            .await
            .map_err(anyhow::Error::msg)?;
        assert_eq!(
            vm["host"],
            victim.as_str(),
            "moved off a host that may run it: {vm}"
        );
        assert_eq!(vm["generation"].as_u64(), Some(generation), "{vm}");
    }

    eprintln!("phase: the operator confirms {victim} is off; the drain moves plain");
    cluster
        .cli(&["host", "fence", &victim, "--yes-it-is-off"])
        .await?;
    let moved = wait_until(
        "plain running elsewhere",
        Duration::from_secs(30),
        || async {
            let vm = cluster.cli_json(&["vm", "get", "plain"]).await?;
            let elsewhere = vm["observed_state"] == "running" && vm["host"] != victim.as_str();
            Ok(elsewhere.then_some(vm))
        },
    )
    .await?;
    eprintln!("plain runs on {}", moved["host"]);

    eprintln!("phase: {victim} wakes up; the copy it still holds is destroyed");
    hostd.signal(Signal::SIGCONT)?;
    wait_until("the old copy gone", Duration::from_secs(30), || async {
        let domains = cluster.domains(&victim).await.map_err(|e| e.to_string())?;
        let running = domains.iter().any(|d| {
            d.name == "plain" && d.state() == drover_proto::agent::v1::DomainState::Running
        });
        Ok((!running).then_some(()))
    })
    .await?;

    eprintln!("phase: the drain ends; the empty host can be removed");
    wait_until("drain succeeded", Duration::from_secs(30), || async {
        let op = cluster.cli_json(&["op", "get", &id]).await?;
        Ok((op["state"] == "succeeded").then_some(()))
    })
    .await?;
    cluster.cli(&["host", "remove", &victim]).await?;
    let hosts = cluster
        .cli_json(&["host", "list"])
        .await
        .map_err(anyhow::Error::msg)?;
    let names: Vec<&str> = hosts
        .as_array()
        .context("host list")?
        .iter()
        .filter_map(|h| h["name"].as_str())
        .collect();
    assert!(!names.contains(&victim.as_str()), "{names:?}");
    Ok(())
}
