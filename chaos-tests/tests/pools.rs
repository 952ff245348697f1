//! Storage pools end to end: `drover pool create` on a 3-controller cluster with two real
//! hostd processes (libvirt's test driver); every host sets the pool up and reports its
//! space, a path missing on the hosts is reported as such per host, bad input is refused
//! with the reason and leaves nothing behind, and deleting a pool makes its hosts drop it.

use std::time::Duration;

use drover_chaos_tests::wait::wait_until;
use drover_chaos_tests::{Cluster, ClusterSpec};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

fn on_host<'a>(pool: &'a Value, host: &str) -> &'a Value {
    pool["on_hosts"]
        .as_array()
        .and_then(|hs| hs.iter().find(|h| h["host"] == host))
        .unwrap_or(&Value::Null)
}

async fn wait_pool(
    cluster: &Cluster,
    name: &str,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    wait_until(what, WAIT, || async {
        let pool = cluster.cli_json(&["pool", "get", name]).await?;
        if ok(&pool) {
            Ok(Some(pool))
        } else {
            Err(format!("not yet: {pool}"))
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_are_set_up_on_their_hosts_and_dropped_with_reasons() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterSpec {
        hosts: 2,
        ..Default::default()
    })
    .await?;
    cluster.wait_hosts_up().await?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("images");
    std::fs::create_dir(&path)?;
    let path = path.to_str().expect("utf-8 path");

    eprintln!("phase: a pool on every host is set up and reports its space");
    let created = cluster
        .cli_json(&["pool", "create", "images", "--path", path])
        .await
        .map_err(anyhow::Error::msg)?;
    assert_eq!(created["path"], path);
    assert_eq!(created["hosts"], "all");
    let pool = wait_pool(&cluster, "images", "both hosts to set the pool up", |p| {
        ["h1", "h2"]
            .iter()
            .all(|h| on_host(p, h)["state"] == "active")
    })
    .await?;
    for h in ["h1", "h2"] {
        let s = on_host(&pool, h);
        let (cap, free) = (s["capacity_bytes"].as_u64(), s["available_bytes"].as_u64());
        assert!(cap.is_some_and(|c| c > 0) && free <= cap, "{h}: {s}");
    }

    eprintln!("phase: a path the hosts lack is reported, per host, with the reason");
    let missing = dir.path().join("not-there");
    let missing = missing.to_str().expect("utf-8 path");
    let out = cluster
        .cli(&[
            "pool", "create", "ghost", "--path", missing, "--hosts", "h2", "--wait", "20s",
        ])
        .await?;
    assert!(
        !out.success,
        "--wait must fail when a host cannot set it up"
    );
    assert!(out.stderr.contains("not set up on: h2"), "{}", out.stderr);
    let ghost = cluster
        .cli_json(&["pool", "get", "ghost"])
        .await
        .map_err(anyhow::Error::msg)?;
    let h2 = on_host(&ghost, "h2");
    assert_eq!(h2["state"], "failed", "{ghost}");
    assert!(
        h2["reason"]
            .as_str()
            .is_some_and(|r| r.contains("does not exist")),
        "{h2}"
    );
    // h1 is not in the pool: not listed at all.
    assert_eq!(on_host(&ghost, "h1"), &Value::Null, "{ghost}");

    eprintln!("phase: once the directory exists, the host sets it up by itself");
    std::fs::create_dir(missing)?;
    wait_pool(&cluster, "ghost", "h2 to retry the pool", |p| {
        on_host(p, "h2")["state"] == "active"
    })
    .await?;

    eprintln!("phase: bad input is refused with the reason and changes nothing");
    for (args, says) in [
        (
            vec!["pool", "create", "images", "--path", path],
            "already exists",
        ),
        (
            vec!["pool", "create", "x", "--path", "relative"],
            "not absolute",
        ),
        (
            vec!["pool", "create", "y", "--path", path, "--hosts", "h1,h9"],
            "Host \"h9\" not found",
        ),
        (
            vec!["pool", "create", "z", "--path", path, "--hosts", "h1"],
            "is already pool \"images\"",
        ),
        (
            vec!["pool", "create", "w", "--path", "/srv/w", "--type", "lvm"],
            "Unknown pool type",
        ),
        (
            vec!["pool", "create", "bad/name", "--path", "/srv/b"],
            "Invalid pool name",
        ),
        (vec!["pool", "get", "nope"], "Pool \"nope\" not found"),
        (vec!["pool", "delete", "nope"], "Pool \"nope\" not found"),
    ] {
        let out = cluster.cli(&args).await?;
        assert!(!out.success, "{args:?} succeeded");
        assert!(out.stderr.contains(says), "{args:?}: {}", out.stderr);
    }
    let names: Vec<String> = cluster
        .cli_json(&["pool", "list"])
        .await
        .map_err(anyhow::Error::msg)?
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| p["name"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(names, ["ghost", "images"]);

    eprintln!("phase: a deleted pool is dropped by its hosts, which keep the files");
    std::fs::write(dir.path().join("images/keep.qcow2"), b"x")?;
    cluster
        .cli_json(&["pool", "delete", "images"])
        .await
        .map_err(anyhow::Error::msg)?;
    // Declared again at once under the same name elsewhere: the hosts must replace their
    // definition, not keep reporting the old path.
    let other = dir.path().join("other");
    std::fs::create_dir(&other)?;
    let other = other.to_str().expect("utf-8 path");
    cluster
        .cli_json(&["pool", "create", "images", "--path", other, "--hosts", "h1"])
        .await
        .map_err(anyhow::Error::msg)?;
    wait_pool(&cluster, "images", "h1 to move the pool", |p| {
        on_host(p, "h1")["state"] == "active" && on_host(p, "h2") == &Value::Null
    })
    .await?;
    assert!(dir.path().join("images/keep.qcow2").exists());
    Ok(())
}

async fn vm(cluster: &Cluster, name: &str) -> Result<Value, String> {
    cluster.cli_json(&["vm", "get", name]).await
}

/// VMs with disks on the test driver: created in a pool, placed only where it is set up,
/// refused with the reason when they cannot be had, and the pool stays while they live.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vms_get_disks_in_pools_and_keep_them_while_they_live() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterSpec {
        hosts: 2,
        ..Default::default()
    })
    .await?;
    cluster.wait_hosts_up().await?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().to_str().expect("utf-8 path");
    // On h2 only: the VM can go nowhere else.
    cluster
        .cli_json(&[
            "pool", "create", "local", "--path", path, "--hosts", "h2", "--wait", "20s",
        ])
        .await
        .map_err(anyhow::Error::msg)?;

    eprintln!("phase: a VM with a boot disk and a data disk runs on the pool's host");
    cluster
        .cli_json(&[
            "vm",
            "create",
            "db",
            "--vcpus",
            "1",
            "--memory-mib",
            "64",
            "--pool",
            "local",
            "--disk-size",
            "1G",
            "--disk",
            "2G",
        ])
        .await
        .map_err(anyhow::Error::msg)?;
    let running = wait_until("db to run", WAIT, || async {
        let v = vm(&cluster, "db").await?;
        if v["observed_state"] == "running" {
            Ok(Some(v))
        } else {
            Err(format!("not yet: {v}"))
        }
    })
    .await?;
    assert_eq!(running["host"], "h2", "{running}");
    let disks = running["disks"].as_array().cloned().unwrap_or_default();
    let sizes: Vec<u64> = disks
        .iter()
        .filter_map(|d| d["size_bytes"].as_u64())
        .collect();
    assert_eq!(sizes, [1 << 30, 2 << 30], "{running}");
    assert!(
        disks
            .iter()
            .all(|d| d["pool"] == "local"
                && d["volume"].as_str().is_some_and(|v| v.starts_with("db-"))),
        "{running}"
    );

    eprintln!("phase: what cannot be had is refused with the reason, and nothing is left");
    for (args, says) in [
        (
            vec![
                "vm",
                "create",
                "ha",
                "--vcpus",
                "1",
                "--memory-mib",
                "64",
                "--ha",
                "--pool",
                "local",
                "--disk-size",
                "1G",
            ],
            "must be on shared pools",
        ),
        (
            vec![
                "vm",
                "create",
                "np",
                "--vcpus",
                "1",
                "--memory-mib",
                "64",
                "--disk-size",
                "1G",
            ],
            "add --pool",
        ),
        (
            vec![
                "vm",
                "create",
                "gp",
                "--vcpus",
                "1",
                "--memory-mib",
                "64",
                "--pool",
                "ghost",
                "--disk-size",
                "1G",
            ],
            "Pool \"ghost\" not found",
        ),
        (
            vec![
                "vm",
                "create",
                "bs",
                "--vcpus",
                "1",
                "--memory-mib",
                "64",
                "--pool",
                "local",
                "--disk-size",
                "20X",
            ],
            "unknown unit",
        ),
        (
            vec![
                "vm",
                "create",
                "huge",
                "--vcpus",
                "1",
                "--memory-mib",
                "64",
                "--pool",
                "local",
                "--disk-size",
                "60T",
            ],
            "bytes free on any of its hosts",
        ),
        (vec!["pool", "delete", "local"], "holds disks of VMs db"),
        // The scheduler's refusal comes first; apply's own (a local disk is never
        // live-migrated yet) is tested in `apply_vm_create`.
        (
            vec!["vm", "migrate", "db", "--to", "h1"],
            "storage pool local is not set up here",
        ),
    ] {
        let out = cluster.cli(&args).await?;
        assert!(!out.success, "{args:?} succeeded");
        assert!(out.stderr.contains(says), "{args:?}: {}", out.stderr);
    }
    for refused in ["ha", "np", "gp", "bs", "huge"] {
        assert!(vm(&cluster, refused).await.is_err(), "{refused} exists");
    }

    eprintln!("phase: deleting the VM (and its volumes) frees the pool");
    cluster
        .cli_json(&["vm", "stop", "db"])
        .await
        .map_err(anyhow::Error::msg)?;
    cluster
        .cli_json(&["vm", "delete", "db"])
        .await
        .map_err(anyhow::Error::msg)?;
    wait_until("db to be gone", WAIT, || async {
        match vm(&cluster, "db").await {
            Err(e) if e.contains("not found") => Ok(Some(())),
            other => Err(format!("{other:?}")),
        }
    })
    .await?;
    cluster
        .cli_json(&["pool", "delete", "local"])
        .await
        .map_err(anyhow::Error::msg)?;
    Ok(())
}
