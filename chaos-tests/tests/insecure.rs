//! Plaintext only when asked for: `drover server` and `hostd` without TLS material refuse
//! to start unless `--insecure`; `--insecure` on a non-loopback address needs
//! `--allow-insecure-non-loopback` too; and a plaintext cluster says so, in its logs and
//! in `drover cluster status`.

use std::time::Duration;

use drover_chaos_tests::cluster::CliOutput;
use drover_chaos_tests::process::binary;
use drover_chaos_tests::{ChildProcess, Cluster, ClusterSpec};

/// Runs `program args`, which must exit (refusing) within a bound; a process that keeps
/// running has accepted the flags.
async fn refused(program: &str, args: &[&str]) -> anyhow::Result<CliOutput> {
    let run = tokio::process::Command::new(binary(program))
        .args(args)
        .env_remove("DROVER_CA")
        .env_remove("DROVER_CERT")
        .env_remove("DROVER_KEY")
        .kill_on_drop(true)
        .output();
    let out: CliOutput = tokio::time::timeout(Duration::from_secs(20), run)
        .await
        .map_err(|_| anyhow::anyhow!("{program} {args:?} started: it should have refused"))??
        .into();
    assert!(!out.success, "{program} {args:?} succeeded");
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_only_when_asked_for() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let data = |name: &str| dir.path().join(name).display().to_string();
    let (c1, h1, h2) = (data("c1"), data("h1"), data("h2"));
    let server = |listen: &'static str| {
        vec![
            "server",
            "--id",
            "1",
            "--listen",
            listen,
            "--initial-cluster",
            "1=127.0.0.1:1",
            "--data-dir",
            &c1,
        ]
    };
    let hostd = |listen: &'static str, data_dir: &str| {
        [
            "--name",
            "h1",
            "--listen",
            listen,
            "--libvirt-uri",
            "test:///default",
            "--data-dir",
            data_dir,
        ]
        .map(String::from)
        .to_vec()
    };

    eprintln!("phase: without TLS material and without --insecure, both refuse to start");
    let out = refused("drover", &server("127.0.0.1:0")).await?;
    assert!(out.stderr.contains("--insecure"), "{}", out.stderr);
    let args = hostd("127.0.0.1:0", &h1);
    let out = refused(
        "hostd",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await?;
    assert!(out.stderr.contains("--insecure"), "{}", out.stderr);

    eprintln!("phase: --insecure on a non-loopback address needs a second flag");
    let mut args = server("0.0.0.0:0");
    args.push("--insecure");
    let out = refused("drover", &args).await?;
    assert!(
        out.stderr.contains("--allow-insecure-non-loopback"),
        "{}",
        out.stderr
    );
    let mut args = hostd("0.0.0.0:0", &h1);
    args.push("--insecure".into());
    let out = refused(
        "hostd",
        &args.iter().map(String::as_str).collect::<Vec<_>>(),
    )
    .await?;
    assert!(
        out.stderr.contains("--allow-insecure-non-loopback"),
        "{}",
        out.stderr
    );
    args.push("--allow-insecure-non-loopback".into());
    args[7] = h2;
    let log = dir.path().join("hostd.log");
    let (hostd, _) = ChildProcess::spawn("hostd", &binary("hostd"), &args, &log).await?;
    drop(hostd);

    eprintln!("phase: a plaintext cluster says so in its log and in cluster status");
    let cluster = Cluster::start(ClusterSpec {
        controllers: 1,
        hosts: 0,
        ..Default::default()
    })
    .await?;
    let status = cluster
        .cli_json(&["cluster", "status"])
        .await
        .map_err(anyhow::Error::msg)?;
    assert_eq!(status["members"][0]["insecure"], true, "{status}");
    let table = cluster.cli(&["cluster", "status", "-o", "table"]).await?;
    assert!(table.stdout.contains("INSECURE"), "{}", table.stdout);
    let log = std::fs::read_to_string(cluster.controllers[0].data_dir.with_extension("log"))?;
    assert!(log.contains("INSECURE: serving plaintext"), "{log}");
    Ok(())
}
