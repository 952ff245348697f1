//! A controller whose store is unreadable refuses to start, says what is wrong and how to
//! recover, and the documented recovery (docs/OPERATIONS.md) works: remove the member,
//! move the data dir away, start it with `--join`, add it again; it catches up.

use std::time::Duration;

use drover_chaos_tests::client::{ClientConfig, LeaderClient};
use drover_chaos_tests::{wait_until, Cluster, ClusterSpec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_store_refuses_to_start_and_recovers_by_rejoining() -> anyhow::Result<()> {
    // Snapshots every 2 writes: the state machine's durable form is its snapshot.
    let mut cluster = Cluster::start(ClusterSpec {
        hosts: 0,
        controller_args: vec![
            "--snapshot-logs".into(),
            "2".into(),
            "--snapshot-fixed".into(),
        ],
        ..Default::default()
    })
    .await?;
    for name in ["a", "b", "c"] {
        cluster.create_stopped_vm(name).await?;
    }
    let leader = cluster.wait_for_leader(None).await?;
    let victim = if leader == 3 { 2 } else { 3 };
    let victim_addr = cluster.addrs()[(victim - 1) as usize].clone();
    let client = LeaderClient::new(&cluster.addrs(), ClientConfig::default())?;
    wait_until(
        "the victim took a snapshot",
        Duration::from_secs(15),
        || async {
            let m = client
                .local_status(&victim_addr)
                .await
                .map_err(|s| s.message().to_string())?;
            Ok((m.snapshot_index > 0).then_some(()))
        },
    )
    .await?;

    // phase: stop the victim and damage its snapshot.
    cluster.kill_controller(victim).await?;
    let data_dir = cluster.controllers[(victim - 1) as usize].data_dir.clone();
    {
        // The snapshot's data is a file in `store/snapshots/` (in sled before).
        let files: Vec<_> = std::fs::read_dir(data_dir.join("store/snapshots"))?
            .map(|e| e.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        anyhow::ensure!(!files.is_empty(), "no snapshot data to damage");
        for f in files {
            std::fs::write(f, b"\x00garbage")?;
        }
    }

    // phase: it refuses to start, naming the problem and the way out.
    cluster.start_controller(victim).await?;
    let status = cluster
        .take_controller_process(victim)?
        .exited(Duration::from_secs(20))
        .await?;
    assert!(!status.success());
    let log = std::fs::read_to_string(data_dir.with_extension("log"))?;
    assert!(
        log.contains("unreadable") && log.contains("sm_snapshot"),
        "{log}"
    );
    assert!(log.contains("rejoining this node"), "{log}");

    // phase: recovery — remove it, wipe, start it with --join, add it back.
    let out = cluster
        .cli(&["cluster", "remove-node", &victim.to_string()])
        .await?;
    assert!(out.success, "{}", out.stderr);
    std::fs::rename(&data_dir, data_dir.with_extension("damaged"))?;
    let addr = cluster.start_joining_controller(victim).await?;
    let out = cluster
        .cli(&["cluster", "add-node", &victim.to_string(), &addr])
        .await?;
    assert!(out.success, "{}", out.stderr);
    wait_until(
        "rejoined node serves the data",
        Duration::from_secs(15),
        || async {
            let out = cluster
                .cli_at(&addr, &["vm", "list", "--stale"])
                .await
                .map_err(|e| e.to_string())?;
            let vms: serde_json::Value =
                serde_json::from_str(&out.stdout).map_err(|e| e.to_string())?;
            Ok((vms.as_array().map(Vec::len) == Some(3)).then_some(()))
        },
    )
    .await?;
    Ok(())
}
