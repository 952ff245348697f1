//! `drover drill host-failure HOST` for real (issue 12, point 1) on three controllers and
//! three hosts on libvirt's test driver, with mutual TLS: the host is isolated (its hostd
//! drops the session and refuses new ones), its lease lapses, it fences itself, the leader
//! declares it dead and restarts its HA VMs elsewhere, the drill lifts the isolation and
//! waits until the host is trusted again. The report must show all of it: detection by
//! the lease, the self-fence, every HA VM running on another host, the non-HA one down
//! with the reason, never-twice rounds with no violation, the host back, verdict passed.
//! A viewer may read drills but not run one; `op cancel` lifts the isolation at once and
//! the drill ends cancelled; a cluster that could not survive the drill (HA disarmed)
//! refuses it with the reason.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use drover_chaos_tests::{wait_until, Cluster, ClusterSpec};
use serde_json::Value;

/// `drover vm create NAME` with one vCPU and 64 MiB, HA or not.
async fn create_vm(cluster: &Cluster, name: &str, ha: bool) -> anyhow::Result<()> {
    let mut args = vec!["vm", "create", name, "--vcpus", "1", "--memory-mib", "64"];
    if ha {
        args.push("--ha");
    }
    let out = cluster.cli(&args).await?;
    anyhow::ensure!(out.success, "vm create {name}: {}", out.stderr);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_failure_drill_fails_the_host_over_and_restores_it() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterSpec {
        hosts: 3,
        tls: true,
        ..ClusterSpec::default()
    })
    .await?;
    cluster.wait_hosts_up().await?;
    for (name, ha) in [("a", true), ("b", true), ("c", true), ("d", false)] {
        create_vm(&cluster, name, ha).await?;
    }
    let placed: BTreeMap<String, String> =
        wait_until("all running", Duration::from_secs(60), || async {
            let vms = cluster.cli_json(&["vm", "list"]).await?;
            let running: BTreeMap<String, String> = vms
                .as_array()
                .into_iter()
                .flatten()
                .filter(|v| v["observed_state"] == "running")
                .filter_map(|v| {
                    Some((
                        v["name"].as_str()?.to_string(),
                        v["host"].as_str()?.to_string(),
                    ))
                })
                .collect();
            Ok((running.len() == 4).then_some(running))
        })
        .await?;
    // The drilled host: the one of HA VM "a" (so at least one HA VM must move).
    let host = placed["a"].clone();
    let on_host: Vec<&String> = placed
        .iter()
        .filter(|(_, h)| **h == host)
        .map(|(n, _)| n)
        .collect();
    eprintln!("phase: drilling {host}, which runs {on_host:?}");

    eprintln!("phase: a viewer may not run a drill");
    let viewer = cluster
        .user("watcher", "viewer")
        .await?
        .context("TLS cluster")?;
    let mut args = vec!["drill", "host-failure", host.as_str()];
    let flags = viewer.flags();
    args.extend(flags.iter().map(String::as_str));
    let out = cluster.cli(&args).await?;
    assert!(!out.success, "a viewer ran a drill: {}", out.stdout);
    assert!(
        out.stderr.to_lowercase().contains("permission"),
        "{}",
        out.stderr
    );

    eprintln!("phase: the drill runs to its end");
    let out = cluster
        .cli(&["drill", "host-failure", &host, "--max-duration", "90"])
        .await?;
    anyhow::ensure!(out.success, "drill: {}", out.stderr);
    let report: Value = serde_json::from_str(&out.stdout).context("drill report JSON")?;
    eprintln!("{report:#}");
    assert_eq!(report["state"], "succeeded", "{report}");
    assert_eq!(report["verdict"], "passed", "{report}");
    assert_eq!(report["phase"], "done", "{report}");
    assert_eq!(report["dead_reason"], "lease", "{report}");
    let detection = report["detection_ms"].as_u64().context("detection_ms")?;
    // Declared dead only after the lease (5 s by default) had certainly lapsed.
    assert!(
        detection >= 5_000,
        "declared dead inside the lease: {report}"
    );
    let fence = report["fence_path"].to_string();
    assert!(fence.contains("host-dead"), "{report}");
    assert!(fence.contains("self-fenced"), "{report}");
    assert!(
        report["never_twice"]["samples"].as_u64().unwrap_or(0) > 0,
        "{report}"
    );
    assert_eq!(report["never_twice"]["violations"], serde_json::json!([]));
    assert!(
        report["back_after_restore_ms"].as_u64().is_some(),
        "{report}"
    );
    assert_eq!(
        report["restore_reason"], "every HA VM runs elsewhere",
        "{report}"
    );
    let vms = report["vms"].as_array().context("vms")?;
    let mut reported: Vec<&str> = vms.iter().filter_map(|v| v["name"].as_str()).collect();
    reported.sort_unstable();
    assert_eq!(reported, on_host, "{report}");
    for v in vms {
        if v["ha"] == true {
            let on = v["restarted_on"]
                .as_str()
                .context("an HA VM did not restart")?;
            assert_ne!(on, host, "{report}");
            let restart = v["restart_ms"].as_u64().context("restart_ms")?;
            assert!(
                restart >= detection,
                "restarted before its host was dead: {report}"
            );
        } else {
            assert_eq!(v["restarted_on"], Value::Null, "{report}");
            assert!(
                v["down_reason"].as_str().unwrap_or("").contains("not HA"),
                "{report}"
            );
        }
    }
    // The state agrees: the host is up again and the HA VMs run elsewhere.
    let h = cluster
        .cli_json(&["host", "get", &host])
        .await
        .map_err(anyhow::Error::msg)?;
    assert_eq!(h["health"], "up", "{h}");
    let vms = cluster
        .cli_json(&["vm", "list"])
        .await
        .map_err(anyhow::Error::msg)?;
    for v in vms.as_array().into_iter().flatten() {
        if v["ha"] == true && on_host.iter().any(|n| v["name"] == n.as_str()) {
            assert_ne!(v["host"], host.as_str(), "{v}");
            assert_eq!(v["observed_state"], "running", "{v}");
        }
    }

    eprintln!("phase: history and report read it back, a viewer too");
    let id = report["id"].as_u64().context("id")?;
    let mut args = vec!["drill", "history"];
    args.extend(flags.iter().map(String::as_str));
    let out = cluster.cli(&args).await?;
    anyhow::ensure!(out.success, "history: {}", out.stderr);
    let history: Value = serde_json::from_str(&out.stdout)?;
    assert_eq!(history[0]["id"], id, "{history}");
    assert_eq!(history[0]["verdict"], "passed", "{history}");
    let id_s = id.to_string();
    let again = cluster
        .cli_json(&["drill", "report", &id_s])
        .await
        .map_err(anyhow::Error::msg)?;
    assert_eq!(again["vms"], report["vms"]);
    let text = cluster
        .cli(&["drill", "report", &id_s, "-o", "table"])
        .await?;
    assert!(text.stdout.contains("verdict: passed"), "{}", text.stdout);

    eprintln!("phase: a cancelled drill restores its host at once");
    let out = cluster
        .cli(&["drill", "host-failure", &host, "--detach"])
        .await?;
    anyhow::ensure!(out.success, "drill --detach: {}", out.stderr);
    let started: Value = serde_json::from_str(&out.stdout)?;
    let id2 = started["id"].as_u64().context("id")?.to_string();
    wait_until("the host isolated", Duration::from_secs(30), || async {
        let r = cluster.cli_json(&["drill", "report", &id2]).await?;
        Ok((r["phase"] == "failover").then_some(()))
    })
    .await?;
    let out = cluster.cli(&["op", "cancel", &id2]).await?;
    anyhow::ensure!(out.success, "op cancel: {}", out.stderr);
    let cancelled = wait_until("the drill ended", Duration::from_secs(60), || async {
        let r = cluster.cli_json(&["drill", "report", &id2]).await?;
        Ok((r["state"] != "running").then_some(r))
    })
    .await?;
    assert_eq!(cancelled["state"], "cancelled", "{cancelled}");
    assert_eq!(cancelled["verdict"], "failed", "{cancelled}");
    assert!(
        cancelled["failures"].to_string().contains("cancelled"),
        "{cancelled}"
    );
    // Lifted well before the 120 s the drill could have lasted.
    let lifted = cancelled["restored_after_ms"]
        .as_u64()
        .context("restored")?;
    assert!(lifted < 30_000, "{cancelled}");
    let h = cluster
        .cli_json(&["host", "get", &host])
        .await
        .map_err(anyhow::Error::msg)?;
    assert_eq!(h["health"], "up", "{h}");

    eprintln!("phase: stop-agent without a watchdog beside hostd: refused before it starts");
    let out = cluster
        .cli(&["drill", "host-failure", &host, "--mode", "stop-agent"])
        .await?;
    assert!(
        !out.success,
        "stopped an agent with no watchdog: {}",
        out.stdout
    );
    let said = format!("{}{}", out.stdout, out.stderr);
    assert!(said.contains("No hostd-watchdog"), "{said}");
    let h = cluster
        .cli_json(&["host", "get", &host])
        .await
        .map_err(anyhow::Error::msg)?;
    assert_eq!(h["health"], "up", "{h}");
    // Nobody would start it again here: it must still be the hostd that answers.
    cluster
        .domains(&host)
        .await
        .context("hostd stopped although it refused to")?;

    eprintln!("phase: with HA disarmed a drill is refused, and says why");
    let out = cluster.cli(&["ha", "disarm"]).await?;
    anyhow::ensure!(out.success, "ha disarm: {}", out.stderr);
    let out = cluster.cli(&["drill", "host-failure", &host]).await?;
    assert!(!out.success, "a drill ran with HA disarmed: {}", out.stdout);
    assert!(out.stderr.contains("disarmed"), "{}", out.stderr);
    let history = cluster
        .cli_json(&["drill", "history"])
        .await
        .map_err(anyhow::Error::msg)?;
    assert_eq!(
        history.as_array().map(Vec::len),
        Some(2),
        "a refused drill left a record: {history}"
    );
    Ok(())
}

/// A fence agent must never power off the drilled host: the drill could not restore it,
/// and its non-HA guests would die with it. The agent here only records that it ran and
/// reports success (which would declare the host dead by `fence-agent`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_never_runs_the_fence_agent_on_its_host() -> anyhow::Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let dir = tempfile::tempdir()?;
    let ran = dir.path().join("fenced");
    let agent = dir.path().join("power-off");
    std::fs::write(
        &agent,
        format!("#!/bin/sh\necho \"$1\" >> {}\n", ran.display()),
    )?;
    std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755))?;
    let cluster = Cluster::start(ClusterSpec {
        hosts: 3,
        controller_args: vec!["--fence-agent".into(), agent.display().to_string()],
        ..ClusterSpec::default()
    })
    .await?;
    cluster.wait_hosts_up().await?;
    create_vm(&cluster, "a", true).await?;
    let host = wait_until("a running", Duration::from_secs(60), || async {
        let v = cluster.cli_json(&["vm", "get", "a"]).await?;
        Ok((v["observed_state"] == "running")
            .then(|| v["host"].as_str().map(String::from))
            .flatten())
    })
    .await?;
    let out = cluster
        .cli(&["drill", "host-failure", &host, "--max-duration", "90"])
        .await?;
    anyhow::ensure!(out.success, "drill: {}", out.stderr);
    let report: Value = serde_json::from_str(&out.stdout)?;
    assert_eq!(report["dead_reason"], "lease", "{report}");
    assert_eq!(report["verdict"], "passed", "{report}");
    assert!(
        !ran.exists(),
        "the fence agent ran against {}",
        std::fs::read_to_string(&ran).unwrap_or_default()
    );
    Ok(())
}

/// Scheduled drills (issue 12, point 4): a schedule due now starts an ordinary drill on
/// its host through the leader's cadence, remembers the run and its verdict, and does not
/// start another before its period is over; a schedule whose drill the plan refuses (HA
/// disarmed) is skipped with a `drill-skipped` event saying why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_drills_run_when_due_and_skip_when_refused() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterSpec {
        hosts: 3,
        ..ClusterSpec::default()
    })
    .await?;
    cluster.wait_hosts_up().await?;
    create_vm(&cluster, "a", true).await?;
    let bad = cluster
        .cli(&["drill", "schedule", "host-failure", "--every", "10m"])
        .await?;
    assert!(!bad.success && bad.stderr.contains("every hour"), "{bad:?}");
    let bad = cluster
        .cli(&[
            "drill",
            "schedule",
            "host-failure",
            "--every",
            "1h",
            "--hosts",
            "nosuch",
        ])
        .await?;
    assert!(!bad.success && bad.stderr.contains("nosuch"), "{bad:?}");

    eprintln!("phase: a schedule due now drills h2");
    let out = cluster
        .cli(&[
            "drill",
            "schedule",
            "host-failure",
            "--every",
            "1h",
            "--hosts",
            "h2",
            "--name",
            "hourly",
        ])
        .await?;
    anyhow::ensure!(out.success, "schedule: {}", out.stderr);
    let run = wait_until(
        "the scheduled drill ran",
        Duration::from_secs(120),
        || async {
            let s = cluster.cli_json(&["drill", "schedules"]).await?;
            let run = s[0]["runs"][0].clone();
            Ok((run["state"] == "succeeded" || run["state"] == "failed").then_some(run))
        },
    )
    .await?;
    assert_eq!(run["host"], "h2", "{run}");
    let report = cluster
        .cli_json(&["drill", "report", &run["op"].to_string()])
        .await
        .map_err(anyhow::Error::msg)?;
    // The report says why, when it did not pass.
    assert_eq!(run["verdict"], "passed", "{run}\n{report}");
    assert_eq!(report["host"], "h2", "{report}");
    let events = cluster
        .cli_json(&["event", "list"])
        .await
        .map_err(anyhow::Error::msg)?;
    assert!(events.to_string().contains("drill-finished"), "{events}");
    eprintln!("phase: with HA disarmed, a due schedule is skipped and says why");
    let out = cluster.cli(&["ha", "disarm"]).await?;
    anyhow::ensure!(out.success, "{}", out.stderr);
    let out = cluster
        .cli(&[
            "drill",
            "schedule",
            "host-failure",
            "--every",
            "1h",
            "--name",
            "other",
        ])
        .await?;
    anyhow::ensure!(out.success, "{}", out.stderr);
    wait_until("a drill-skipped event", Duration::from_secs(30), || async {
        let events = cluster.cli_json(&["event", "list"]).await?;
        let skipped = events
            .as_array()
            .into_iter()
            .flatten()
            .find(|e| e["kind"] == "drill-skipped")
            .cloned();
        Ok(skipped.filter(|e| e["message"].to_string().contains("disarmed")))
    })
    .await?;
    // The cadence has ticked since the first run (it reported the skip): "hourly" is not
    // due again for an hour and ran once.
    let s = cluster
        .cli_json(&["drill", "schedules"])
        .await
        .map_err(anyhow::Error::msg)?;
    let hourly = s
        .as_array()
        .into_iter()
        .flatten()
        .find(|x| x["name"] == "hourly")
        .context("hourly")?;
    assert_eq!(hourly["runs"].as_array().map(Vec::len), Some(1), "{s}");
    let out = cluster.cli(&["drill", "unschedule", "other"]).await?;
    anyhow::ensure!(out.success, "{}", out.stderr);
    let s = cluster
        .cli_json(&["drill", "schedules"])
        .await
        .map_err(anyhow::Error::msg)?;
    assert_eq!(s.as_array().map(Vec::len), Some(1), "{s}");
    Ok(())
}
