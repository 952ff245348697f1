//! Backup round trip: `drover cluster snapshot save` on a live cluster, `drover cluster
//! restore` into the data dirs of a brand-new cluster, which starts with exactly that state
//! (hosts, VMs with their placement and generation), accepts writes, and drives the old
//! cluster's host: its Raft terms start again at 1, below what hostd has seen, but its
//! fencing terms continue above them (issue 9, point 8).

use std::time::Duration;

use drover_chaos_tests::process::binary;
use drover_chaos_tests::{free_port, wait_until, ChildProcess, Cluster, ClusterSpec};
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn save_restore_round_trip() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(ClusterSpec {
        hosts: 1,
        ..Default::default()
    })
    .await?;
    for name in ["a", "b"] {
        cluster.create_stopped_vm(name).await?;
    }

    // phase: a second leader (term 2 or more) drives h1, which remembers that term.
    let first = cluster.wait_for_leader(None).await?;
    cluster.kill_controller(first).await?;
    cluster.wait_for_leader(Some(first)).await?;
    cluster.cli(&["vm", "start", "a"]).await?;
    wait_until("a running", Duration::from_secs(30), || async {
        let vm = cluster.cli_json(&["vm", "get", "a"]).await?;
        Ok((vm["observed_state"] == "running").then_some(()))
    })
    .await?;
    let before_vms = cluster
        .cli_json(&["vm", "list"])
        .await
        .map_err(anyhow::Error::msg)?;
    let before_hosts = cluster
        .cli_json(&["host", "list"])
        .await
        .map_err(anyhow::Error::msg)?;

    // phase: save.
    let file = cluster.dir.path().join("backup.json");
    let saved = cluster
        .cli_json(&["cluster", "snapshot", "save", &file.display().to_string()])
        .await
        .map_err(anyhow::Error::msg)?;
    assert!(saved["applied_index"].as_u64() > Some(0), "{saved}");
    assert!(file.exists());

    // phase: restore into three fresh data dirs with new addresses.
    let dir = tempfile::tempdir()?;
    let addrs: Vec<String> = (0..3)
        .map(|_| Ok(format!("127.0.0.1:{}", free_port()?)))
        .collect::<anyhow::Result<_>>()?;
    let initial = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}={a}", i + 1))
        .collect::<Vec<_>>()
        .join(",");
    for id in 1..=3 {
        let data_dir = dir.path().join(format!("n{id}")).display().to_string();
        let out = cluster
            .drover(&[
                "cluster",
                "restore",
                &file.display().to_string(),
                "--data-dir",
                &data_dir,
                "--initial-cluster",
                &initial,
                "-o",
                "json",
            ])
            .await?;
        assert!(out.success, "{}", out.stderr);
        let report: Value = serde_json::from_str(&out.stdout)?;
        assert_eq!(report["vms"], 2);
    }
    // Restoring over an existing store is refused.
    let again = cluster
        .drover(&[
            "cluster",
            "restore",
            &file.display().to_string(),
            "--data-dir",
            &dir.path().join("n1").display().to_string(),
            "--initial-cluster",
            &initial,
        ])
        .await?;
    assert!(
        !again.success && again.stderr.contains("already holds a store"),
        "{}",
        again.stderr
    );

    // phase: the old cluster is gone (the disaster the backup is for).
    for id in 1..=3 {
        if id != first {
            cluster.kill_controller(id).await?;
        }
    }

    // phase: start the new cluster; it holds the backed-up state.
    let mut processes = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let id = (i + 1).to_string();
        let data_dir = dir.path().join(format!("n{id}")).display().to_string();
        let args: Vec<String> = [
            "server",
            "--id",
            &id,
            "--listen",
            addr,
            "--data-dir",
            &data_dir,
            "--insecure",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain(["--initial-cluster".to_string(), initial.clone()])
        .collect();
        let log = dir.path().join(format!("n{id}.log"));
        let (p, _) =
            ChildProcess::spawn(&format!("restored-{id}"), &binary("drover"), &args, &log).await?;
        processes.push(p);
    }
    let endpoints = addrs.join(",");
    let vms = cluster.cli_at(&endpoints, &["vm", "list"]).await?;
    assert!(vms.success, "{}", vms.stderr);
    assert_eq!(serde_json::from_str::<Value>(&vms.stdout)?, before_vms);
    let hosts = cluster.cli_at(&endpoints, &["host", "list"]).await?;
    let hosts: Value = serde_json::from_str(&hosts.stdout)?;
    assert_eq!(hosts[0]["name"], before_hosts[0]["name"]);
    assert_eq!(hosts[0]["address"], before_hosts[0]["address"]);
    // The restored cluster takes writes.
    cluster.create_stopped_vm_at(&endpoints, "c").await?;
    // And its host follows it: h1 takes its session and starts a VM for it.
    let started = cluster.cli_at(&endpoints, &["vm", "start", "b"]).await?;
    assert!(started.success, "{}", started.stderr);
    wait_until(
        "b running, started by the restored cluster",
        Duration::from_secs(30),
        || async {
            let out = cluster
                .cli_at(&endpoints, &["vm", "get", "b", "-o", "json"])
                .await
                .map_err(|e| e.to_string())?;
            let vm: Value = serde_json::from_str(&out.stdout).map_err(|e| e.to_string())?;
            Ok((vm["observed_state"] == "running").then_some(()))
        },
    )
    .await?;
    for p in processes {
        p.terminate().await?;
    }
    Ok(())
}
