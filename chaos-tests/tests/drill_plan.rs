//! `drover drill host-failure HOST --dry-run` (issue 12, point 1) on a cluster of three
//! controllers and three hosts on libvirt's test driver, with mutual TLS: the plan names
//! every HA VM of the host with the host it would restart on (never the host itself), the
//! non-HA ones as staying down with the reason, and no refusal while the cluster could
//! survive it; with HA disarmed it says a drill would be refused and why. A viewer may
//! read plans; an unknown host is NOT_FOUND.

use std::collections::BTreeMap;

use anyhow::Context as _;
use drover_chaos_tests::{Cluster, ClusterSpec};
use serde_json::Value;

async fn plan(cluster: &Cluster, host: &str, extra: &[String]) -> anyhow::Result<Value> {
    let mut args = vec!["drill", "host-failure", host, "--dry-run"];
    args.extend(extra.iter().map(String::as_str));
    let out = cluster.cli(&args).await?;
    anyhow::ensure!(out.success, "drill plan: {}", out.stderr);
    Ok(serde_json::from_str(&out.stdout)?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dry_run_says_what_a_host_failure_would_do() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterSpec {
        hosts: 3,
        tls: true,
        ..ClusterSpec::default()
    })
    .await?;
    cluster.wait_hosts_up().await?;
    for (name, ha) in [
        ("a", true),
        ("b", true),
        ("c", true),
        ("d", false),
        ("e", false),
    ] {
        let mut args = vec!["vm", "create", name, "--vcpus", "1", "--memory-mib", "64"];
        if ha {
            args.push("--ha");
        }
        let out = cluster.cli(&args).await?;
        anyhow::ensure!(out.success, "vm create {name}: {}", out.stderr);
    }
    let placed = drover_chaos_tests::wait_until(
        "all placed",
        std::time::Duration::from_secs(30),
        || async {
            let vms = cluster.cli_json(&["vm", "list"]).await?;
            let placed: BTreeMap<String, (String, bool)> = vms
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| {
                    Some((
                        v["name"].as_str()?.to_string(),
                        (v["host"].as_str()?.to_string(), v["ha"].as_bool()?),
                    ))
                })
                .collect();
            Ok((placed.len() == 5).then_some(placed))
        },
    )
    .await?;
    // The host of the first HA VM: it has at least one to move.
    let host = placed["a"].0.clone();
    let on_host = |ha: bool| -> Vec<String> {
        placed
            .iter()
            .filter(|(_, (h, is_ha))| *h == host && *is_ha == ha)
            .map(|(n, _)| n.clone())
            .collect()
    };

    eprintln!("phase: the plan for {host}: its HA VMs move elsewhere, the others stay down");
    let viewer = cluster
        .user("watcher", "viewer")
        .await?
        .context("TLS cluster")?;
    let p = plan(&cluster, &host, &viewer.flags()).await?;
    assert_eq!(p["refusals"], serde_json::json!([]), "{p}");
    let mut moved: Vec<String> = p["moves"]
        .as_array()
        .context("moves")?
        .iter()
        .map(|m| {
            assert_ne!(m["host"], host.as_str(), "restarts on the failed host: {p}");
            assert!(!m["host"].as_str().unwrap_or_default().is_empty(), "{p}");
            m["vm"].as_str().unwrap_or_default().to_string()
        })
        .collect();
    moved.sort();
    assert_eq!(moved, on_host(true), "{p}");
    let down: Vec<String> = p["stay_down"]
        .as_object()
        .context("stay_down")?
        .keys()
        .cloned()
        .collect();
    assert_eq!(down, on_host(false), "{p}");
    for why in p["stay_down"].as_object().into_iter().flatten() {
        assert!(why.1.as_str().unwrap_or_default().contains("not HA"), "{p}");
    }
    assert_eq!(
        (p["voters"].as_u64(), p["healthy_voters"].as_u64()),
        (Some(3), Some(3))
    );

    eprintln!("phase: HA disarmed, a drill would be refused, and the plan says why");
    let out = cluster.cli(&["ha", "disarm"]).await?;
    anyhow::ensure!(out.success, "ha disarm: {}", out.stderr);
    let p = plan(&cluster, &host, &[]).await?;
    let refusals = p["refusals"].to_string();
    assert!(refusals.contains("disarmed"), "{p}");
    let table = cluster
        .cli(&["drill", "host-failure", &host, "--dry-run", "-o", "table"])
        .await?;
    assert!(
        table.stdout.contains("a drill would be refused now"),
        "{}",
        table.stdout
    );

    eprintln!("phase: an unknown host is named");
    let out = cluster
        .cli(&["drill", "host-failure", "nowhere", "--dry-run"])
        .await?;
    assert!(
        !out.success && out.stderr.contains("\"nowhere\" not found"),
        "{}",
        out.stderr
    );
    Ok(())
}
