//! Bad input gets a clear error naming the problem, and changes nothing.

use drover_chaos_tests::{Cluster, ClusterSpec};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clear_errors() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterSpec {
        hosts: 1,
        ..Default::default()
    })
    .await?;
    let expect_err = |args: &'static [&'static str], needle: &'static str| {
        let cluster = &cluster;
        async move {
            let out = cluster.cli(args).await?;
            assert!(!out.success, "{args:?} should fail");
            assert!(
                out.stderr.contains(needle),
                "{args:?}: {:?} lacks {needle:?}",
                out.stderr
            );
            anyhow::Ok(())
        }
    };
    expect_err(&["vm", "get", "nope"], "not found: VM \"nope\" not found").await?;
    expect_err(&["vm", "stop", "nope"], "not found").await?;
    expect_err(
        &["host", "get", "nope"],
        "not found: Host \"nope\" not found",
    )
    .await?;
    cluster.create_stopped_vm("dup").await?;
    expect_err(
        &["vm", "create", "dup", "--vcpus", "1", "--memory-mib", "64"],
        "already exists: VM \"dup\" already exists",
    )
    .await?;
    expect_err(
        &["vm", "create", "zero", "--vcpus", "1", "--memory-mib", "0"],
        "invalid argument: Invalid VM spec: memory_mib must be at least 1",
    )
    .await?;
    expect_err(
        &[
            "vm",
            "create",
            "bad/name",
            "--vcpus",
            "1",
            "--memory-mib",
            "64",
        ],
        "Invalid VM name",
    )
    .await?;
    expect_err(
        &["host", "add", "h1", "--address", "127.0.0.1:1"],
        "already exists: Host \"h1\" already exists",
    )
    .await?;
    expect_err(
        &["host", "add", "hx", "--address", "no-port"],
        "Invalid host address",
    )
    .await?;

    expect_err(
        &["host", "add", "hy", "--address", "evil host:80"],
        "Invalid host address",
    )
    .await?;
    // One command is bounded as a whole (issue 9, point 13): refused before the log.
    let huge = format!("{}:80", "a".repeat(131_000));
    let out = cluster
        .cli(&["host", "add", "hz", "--address", &huge])
        .await?;
    assert!(!out.success);
    assert!(
        out.stderr.contains("invalid argument") && out.stderr.contains("at most 131072"),
        "{}",
        &out.stderr[..out.stderr.len().min(500)]
    );

    // Nothing above changed the state: only `dup` exists, still stopped and unplaced.
    let vms = cluster
        .cli_json(&["vm", "list"])
        .await
        .map_err(anyhow::Error::msg)?;
    assert_eq!(vms.as_array().map(Vec::len), Some(1), "{vms}");
    assert_eq!(vms[0]["desired_state"], "stopped");

    // An endpoint nobody listens on: a clear error after the deadline, not a hang.
    let dead = format!("127.0.0.1:{}", drover_chaos_tests::free_port()?);
    let out = cluster
        .cli_at(&dead, &["vm", "list", "--timeout", "2"])
        .await?;
    assert!(!out.success);
    assert!(
        out.stderr.contains("No controller answered") && out.stderr.contains("Connection refused"),
        "{}",
        out.stderr
    );
    Ok(())
}

/// `drover server` checks its HA flags before it starts anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_refuses_bad_ha_flags() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterSpec {
        controllers: 1,
        hosts: 0,
        ..Default::default()
    })
    .await?;
    let dir = tempfile::tempdir()?;
    let data_dir = dir.path().display().to_string();
    let base = [
        "server",
        "--id",
        "1",
        "--listen",
        "127.0.0.1:0",
        "--initial-cluster",
        "1=127.0.0.1:1",
        "--data-dir",
        &data_dir,
        "--insecure",
    ];
    for (extra, needle) in [
        (
            &["--lease-ttl-ms", "2000"][..],
            "lease ttl 2000 ms must be at least 3 heartbeats",
        ),
        (
            &["--lease-margin-ms", "0"][..],
            "lease margin 0 ms must be in 1..=",
        ),
        (
            &["--heartbeat-interval-ms", "0"][..],
            "heartbeat interval must be positive",
        ),
        (
            &["--fence-agent", "/nonexistent/fence"][..],
            "--fence-agent /nonexistent/fence",
        ),
    ] {
        let args: Vec<&str> = base.iter().copied().chain(extra.iter().copied()).collect();
        let out = tokio::time::timeout(std::time::Duration::from_secs(20), cluster.drover(&args))
            .await
            .map_err(|_| anyhow::anyhow!("{extra:?} was accepted: the server kept running"))??;
        assert!(!out.success, "{extra:?} should be refused");
        assert!(out.stderr.contains(needle), "{extra:?}: {:?}", out.stderr);
    }
    let out = cluster
        .cli(&[
            "vm",
            "create",
            "x",
            "--vcpus",
            "1",
            "--memory-mib",
            "64",
            "--ha-priority",
            "3",
        ])
        .await?;
    assert!(!out.success && out.stderr.contains("--ha"), "{out:?}");
    Ok(())
}
