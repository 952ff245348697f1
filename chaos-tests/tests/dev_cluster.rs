//! `drover dev`, the README's run command: it comes up with a leader and three healthy hosts,
//! prints the endpoints to use, runs a VM, and on Ctrl-C (SIGINT) stops every child; killed
//! outright (SIGKILL), it still takes every child with it.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use drover_chaos_tests::process::binary;
use drover_chaos_tests::wait_until;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};

/// The CLI as an operator runs it after `drover dev`: its endpoints and client certificate.
struct Operator {
    endpoints: String,
    /// `DROVER_CA`, `DROVER_CERT`, `DROVER_KEY` from the banner's export line.
    tls_env: Vec<(String, String)>,
}

async fn drover(op: &Operator, args: &[&str]) -> Result<serde_json::Value, String> {
    let out = tokio::process::Command::new(binary("drover"))
        .args(args)
        .args([
            "--endpoints",
            &op.endpoints,
            "-o",
            "json",
            "--timeout",
            "10",
        ])
        .envs(op.tls_env.iter().cloned())
        .output()
        .await
        .map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    serde_json::from_slice(&out.stdout).map_err(|e| e.to_string())
}

/// SIGKILLs the whole process group on drop: if the test fails before `drover dev` stops
/// its children, they must not outlive the test.
struct GroupGuard(Pid);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        // ESRCH (all gone) is the normal case after a clean stop.
        let _ = nix::sys::signal::killpg(self.0, Signal::SIGKILL);
    }
}

/// `drover dev` running in `dir`, up: its banner printed, so its children are up too.
struct Dev {
    process: tokio::process::Child,
    pid: Pid,
    op: Operator,
    /// Kept open: drover dev writes the rest of its banner after the lines read here, and
    /// a closed pipe would fail that write and end it.
    _stdout: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    _group: GroupGuard,
}

async fn start_dev(dir: &Path) -> anyhow::Result<Dev> {
    let mut process = tokio::process::Command::new(binary("drover"))
        .args(["dev", "--dir"])
        .arg(dir.join("dev"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        // Its own process group, so a failing test can take down the children too.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()?;
    let pid = Pid::from_raw(process.id().expect("pid") as i32);
    let group = GroupGuard(pid);
    let mut lines = BufReader::new(process.stdout.take().expect("stdout")).lines();
    let op = tokio::time::timeout(Duration::from_secs(60), async {
        let mut endpoints = None;
        while let Some(line) = lines.next_line().await? {
            let line = line.trim();
            if let Some(e) = line.strip_prefix("export DROVER_ENDPOINTS=") {
                endpoints = Some(e.to_string());
            } else if let Some(vars) = line.strip_prefix("export DROVER_CA=") {
                let tls_env = format!("DROVER_CA={vars}")
                    .split_whitespace()
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect();
                let endpoints = endpoints.take().unwrap_or_default();
                return anyhow::Ok(Operator { endpoints, tls_env });
            }
        }
        anyhow::bail!("drover dev exited before printing its endpoints")
    })
    .await??;
    Ok(Dev {
        process,
        pid,
        op,
        _stdout: lines,
        _group: group,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_cluster_runs_a_vm_and_stops_cleanly() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let Dev {
        process: mut dev,
        pid,
        op,
        _stdout,
        _group,
    } = start_dev(dir.path()).await?;
    let endpoints = op.endpoints.clone();
    assert_eq!(
        op.tls_env.len(),
        3,
        "CA, certificate and key: {:?}",
        op.tls_env
    );

    let hosts = drover(&op, &["host", "list"])
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
        &op,
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
        let vm = drover(&op, &["vm", "get", "demo"]).await?;
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

/// A process, told apart from a later one that reuses its PID by its start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Proc {
    pid: i32,
    start: u64,
}

/// (state, parent PID, start time) from `/proc/PID/stat`; `None` once the PID is gone.
fn stat(pid: i32) -> Option<(char, i32, u64)> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces and parentheses: the fields start after the last ')'.
    let fields: Vec<&str> = text.rsplit_once(')')?.1.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    Some((
        state,
        fields.get(1)?.parse().ok()?,
        fields.get(19)?.parse().ok()?,
    ))
}

/// Every process whose parent is `parent`, found by walking /proc.
fn children_of(parent: Pid) -> Vec<Proc> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            let (_, ppid, start) = stat(pid)?;
            (ppid == parent.as_raw()).then_some(Proc { pid, start })
        })
        .collect()
}

/// Still running: the same process (not a reuse of its PID), and not a zombie.
fn running(p: &Proc) -> bool {
    stat(p.pid).is_some_and(|(state, _, start)| start == p.start && state != 'Z')
}

/// `drover dev` killed outright (SIGKILL, as a closed terminal may) has no chance to stop
/// its controllers and agents; the kernel's parent-death signal must take them down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_cluster_children_die_when_it_is_killed() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let mut dev = start_dev(dir.path()).await?;
    let children = children_of(dev.pid);
    assert_eq!(children.len(), 6, "3 controllers and 3 hostd: {children:?}");

    eprintln!(
        "phase: SIGKILL drover dev ({}); its children must go too",
        dev.pid
    );
    kill(dev.pid, Signal::SIGKILL)?;
    dev.process.wait().await?;
    wait_until(
        "every child of drover dev gone",
        Duration::from_secs(30),
        || async {
            let left: Vec<_> = children.iter().filter(|p| running(p)).collect();
            if left.is_empty() {
                Ok(Some(()))
            } else {
                Err(format!("still running: {left:?}"))
            }
        },
    )
    .await?;
    Ok(())
}
