//! `drover dev`, the README's run command: it comes up with a leader and three healthy hosts,
//! prints the endpoints to use, runs a VM, and on Ctrl-C (SIGINT) stops every child.

use std::process::Stdio;
use std::time::Duration;

use drover_chaos_tests::process::binary;
use drover_chaos_tests::wait_until;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};

async fn drover(endpoints: &str, args: &[&str]) -> Result<serde_json::Value, String> {
    let out = tokio::process::Command::new(binary("drover"))
        .args(args)
        .args(["--endpoints", endpoints, "-o", "json", "--timeout", "10"])
        .output()
        .await
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_cluster_runs_a_vm_and_stops_cleanly() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut dev = tokio::process::Command::new(binary("drover"))
        .args(["dev", "--dir"])
        .arg(dir.path().join("dev"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let pid = Pid::from_raw(dev.id().expect("pid") as i32);
    let mut lines = BufReader::new(dev.stdout.take().expect("stdout")).lines();
    let endpoints = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(e) = line.trim().strip_prefix("export DROVER_ENDPOINTS=") {
                return anyhow::Ok(e.to_string());
            }
        }
        anyhow::bail!("drover dev exited before printing its endpoints")
    })
    .await??;

    let hosts = drover(&endpoints, &["host", "list"])
        .await
        .map_err(anyhow::Error::msg)?;
    let health: Vec<_> = hosts
        .as_array()
        .into_iter()
        .flatten()
        .map(|h| h["health"].clone())
        .collect();
    assert_eq!(health, ["up", "up", "up"], "{hosts}");
    drover(
        &endpoints,
        &[
            "vm",
            "create",
            "demo",
            "--vcpus",
            "1",
            "--memory-mib",
            "128",
        ],
    )
    .await
    .map_err(anyhow::Error::msg)?;
    wait_until("demo running", Duration::from_secs(10), || async {
        let vm = drover(&endpoints, &["vm", "get", "demo"]).await?;
        Ok((vm["observed_state"] == "running").then_some(()))
    })
    .await?;

    // Ctrl-C: drover dev stops its children and exits 0; nothing answers any more.
    kill(pid, Signal::SIGINT)?;
    let status = tokio::time::timeout(Duration::from_secs(30), dev.wait()).await??;
    assert!(status.success(), "drover dev exited with {status}");
    for addr in endpoints.split(',') {
        assert!(
            std::net::TcpStream::connect(addr).is_err(),
            "controller at {addr} still listening after drover dev stopped"
        );
    }
    Ok(())
}
