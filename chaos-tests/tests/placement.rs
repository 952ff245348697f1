//! The scheduler as operators drive it, through `drover` against a real cluster (three
//! controllers, two hostd on libvirt's test driver): the replicated placement policy
//! (pack vs spread, overcommit ratios, bad values refused), anti-affinity groups, required
//! labels, host labels, and `vm get` explaining per host why a VM waits.

use std::collections::BTreeSet;
use std::time::Duration;

use drover_chaos_tests::{wait_until, Cluster, ClusterSpec};
use serde_json::Value;

async fn json(c: &Cluster, args: &[&str]) -> anyhow::Result<Value> {
    c.cli_json(args).await.map_err(anyhow::Error::msg)
}

async fn create(c: &Cluster, name: &str, extra: &[&str]) -> anyhow::Result<()> {
    let mut args = vec!["vm", "create", name, "--vcpus", "1", "--memory-mib", "64"];
    args.extend_from_slice(extra);
    json(c, &args).await?;
    Ok(())
}

/// The VM once it is placed (or, with `placed` false, once it records why it is not).
async fn settled(c: &Cluster, name: &str, placed: bool) -> anyhow::Result<Value> {
    wait_until(
        &format!("{name} settled"),
        Duration::from_secs(20),
        || async {
            let vm = c.cli_json(&["vm", "get", name]).await?;
            let done = if placed {
                vm["host"].is_string()
            } else {
                vm["reason"]
                    .as_str()
                    .is_some_and(|r| r.starts_with("pending"))
            };
            Ok(done.then_some(vm))
        },
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_policy_groups_and_labels() -> anyhow::Result<()> {
    let c = Cluster::start(ClusterSpec::default()).await?;

    eprintln!("phase: the default policy, and bad values refused with the reason");
    let p = json(&c, &["cluster", "placement"]).await?;
    assert_eq!(p["cpu_overcommit"], 4.0, "{p}");
    assert_eq!(p["memory_overcommit"], 1.0, "{p}");
    assert_eq!(p["weigher"], "spread", "{p}");
    let bad = c
        .cli(&["cluster", "placement", "--cpu-overcommit", "0.01"])
        .await?;
    assert!(
        !bad.success && bad.stderr.contains("CPU overcommit 0.01"),
        "{bad:?}"
    );
    let bad = c
        .cli(&["cluster", "placement", "--weigher", "even"])
        .await?;
    assert!(!bad.success, "{bad:?}");

    eprintln!("phase: pack fills one host first");
    let p = json(&c, &["cluster", "placement", "--weigher", "pack"]).await?;
    assert_eq!(p["weigher"], "pack", "{p}");
    assert_eq!(p["cpu_overcommit"], 4.0, "unchanged fields stay: {p}");
    let mut hosts = BTreeSet::new();
    for i in 0..3 {
        create(&c, &format!("p{i}"), &[]).await?;
        hosts.insert(settled(&c, &format!("p{i}"), true).await?["host"].to_string());
    }
    assert_eq!(hosts.len(), 1, "packed onto one host: {hosts:?}");

    eprintln!("phase: spread again; an anti-affinity group takes one host each");
    json(&c, &["cluster", "placement", "--weigher", "spread"]).await?;
    let mut group_hosts = BTreeSet::new();
    for i in 0..2 {
        create(&c, &format!("g{i}"), &["--anti-affinity", "db"]).await?;
        group_hosts.insert(settled(&c, &format!("g{i}"), true).await?["host"].to_string());
    }
    assert_eq!(group_hosts.len(), 2, "{group_hosts:?}");
    create(&c, "g2", &["--anti-affinity", "db"]).await?;
    let waiting = settled(&c, "g2", false).await?;
    assert_eq!(waiting["anti_affinity"], "db", "{waiting}");
    let why = &waiting["placement_refusals"];
    for h in ["h1", "h2"] {
        assert!(
            why[h]
                .as_str()
                .is_some_and(|r| r.contains("anti-affinity group db")),
            "{h} says why: {waiting}"
        );
    }
    let table = c.cli(&["vm", "get", "g2", "-o", "table"]).await?;
    assert!(
        table
            .stdout
            .contains("h1: already runs a VM of anti-affinity group db"),
        "{table:?}"
    );

    eprintln!("phase: required labels, and labelled hosts");
    create(&c, "pinned", &["--require-label", "rack=r9"]).await?;
    let pinned = settled(&c, "pinned", false).await?;
    assert!(
        pinned["placement_refusals"]["h1"]
            .as_str()
            .is_some_and(|r| r.contains("lacks label rack=r9")),
        "{pinned}"
    );
    let bad = c
        .cli(&[
            "vm",
            "create",
            "x",
            "--vcpus",
            "1",
            "--memory-mib",
            "64",
            "--require-label",
            "rack",
        ])
        .await?;
    assert!(!bad.success && bad.stderr.contains("key=value"), "{bad:?}");
    let h = json(
        &c,
        &[
            "host",
            "add",
            "h9",
            "--address",
            "127.0.0.1:1",
            "--label",
            "rack=r9",
            "--label",
            "ssd=yes",
        ],
    )
    .await?;
    assert_eq!(h["labels"]["rack"], "r9", "{h}");
    assert_eq!(h["admin_state"], "active", "{h}");
    // h9 has the label but no hostd: the reason changes to "not up".
    wait_until("pinned explains h9", Duration::from_secs(10), || async {
        let vm = c.cli_json(&["vm", "get", "pinned"]).await?;
        Ok((vm["placement_refusals"]["h9"] == "not up").then_some(()))
    })
    .await?;
    Ok(())
}
