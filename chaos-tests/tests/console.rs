//! `drover vm console` end to end: 3 controllers with mutual TLS, one hostd on real QEMU
//! (TCG), the test guest booted from an image clone. The CLI, its stdin and stdout piped,
//! reaches the guest's shell through the leader and hostd: a command typed in comes back
//! evaluated. Ctrl-] detaches (the CLI exits 0); a second session takes the console over
//! from a first (which is told so); a viewer may not attach; a stopped VM has no console.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use drover_chaos_tests::system_libvirt::{self, Leftovers, QEMU_SYSTEM};
use drover_chaos_tests::{guest, require, wait_until, Cluster, ClusterSpec};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin};

const WAIT: Duration = Duration::from_secs(90);

/// A `drover vm console` process and everything it printed so far.
struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
}

impl Session {
    async fn open(cluster: &Cluster, vm: &str, identity: &[String]) -> anyhow::Result<Session> {
        let mut args = vec!["vm", "console", vm];
        args.extend(identity.iter().map(String::as_str));
        let mut cmd = cluster.cli_command(&cluster.endpoints(), &args).await?;
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()?;
        let stdin = child.stdin.take();
        let stdout = collect(child.stdout.take().context("stdout")?);
        let stderr = collect(child.stderr.take().context("stderr")?);
        Ok(Session {
            child,
            stdin,
            stdout,
            stderr,
        })
    }

    async fn type_in(&mut self, text: &[u8]) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().context("stdin closed")?;
        stdin.write_all(text).await?;
        stdin.flush().await?;
        Ok(())
    }

    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned()
    }

    fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Waits until the guest's output holds `needle`, typing `poke` every few seconds
    /// meanwhile (the shell may not be up yet when the first line is typed).
    async fn expect(&mut self, needle: &str, poke: &[u8]) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            self.type_in(poke).await?;
            let seen = wait_until(needle, Duration::from_secs(5), || async {
                Ok(self.stdout().contains(needle).then_some(()))
            })
            .await;
            if seen.is_ok() {
                return Ok(());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "no {needle:?} on the console; stdout {:?}, stderr {:?}",
                self.stdout(),
                self.stderr()
            );
        }
    }

    /// Waits for the process to exit; its success.
    async fn exit(&mut self) -> anyhow::Result<bool> {
        let status = tokio::time::timeout(WAIT, self.child.wait())
            .await
            .context("the console CLI did not exit")??;
        Ok(status.success())
    }
}

fn collect(mut from: impl tokio::io::AsyncRead + Unpin + Send + 'static) -> Arc<Mutex<Vec<u8>>> {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&buf);
    tokio::spawn(async move {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = from.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&chunk[..n]);
        }
    });
    buf
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_reaches_the_guests_shell_through_the_cluster() -> anyhow::Result<()> {
    if !require::prerequisite(system_libvirt::available()) {
        return Ok(());
    }
    let Some(image) = guest::image_or_skip() else {
        return Ok(());
    };
    let pid = std::process::id();
    let (vm, pool) = (format!("con-{pid}"), format!("conpool-{pid}"));
    let _leftovers = Leftovers {
        domains: vec![vm.clone()],
        pools: vec![pool.clone()],
    };
    let mut cluster = Cluster::start(ClusterSpec {
        hosts: 0,
        tls: true,
        hostd_args: vec!["--domain-type".into(), "qemu".into()],
        ..ClusterSpec::default()
    })
    .await?;
    cluster.add_agent("q1", QEMU_SYSTEM).await?;
    cluster.wait_hosts_up().await?;
    let dir = system_libvirt::pool_dir("drover-console")?;
    let path = dir.path().to_str().context("utf-8 path")?;
    let image_s = image.to_str().context("utf-8 path")?;
    for args in [
        vec!["pool", "create", &pool, "--path", path, "--wait", "30s"],
        vec![
            "image", "import", "guest", "--file", image_s, "--pool", &pool,
        ],
        vec![
            "vm",
            "create",
            &vm,
            "--vcpus",
            "1",
            "--memory-mib",
            "256",
            "--image",
            "guest",
            "--pool",
            &pool,
        ],
    ] {
        let out = cluster.cli(&args).await?;
        anyhow::ensure!(out.success, "{args:?}: {}", out.stderr);
    }
    wait_until(&format!("{vm} running"), WAIT, || async {
        let v = cluster.cli_json(&["vm", "get", &vm]).await?;
        Ok((v["observed_state"] == "running").then_some(()))
    })
    .await?;

    eprintln!("phase: a command typed into the console comes back evaluated by the guest");
    let mut first = Session::open(&cluster, &vm, &[]).await?;
    // $((6*7)) is only 42 once a shell evaluated it: the echo of the typed line is not.
    first.expect("drover-42", b"echo drover-$((6*7))\r").await?;

    eprintln!("phase: a second session takes the console over; the first is told");
    let mut second = Session::open(&cluster, &vm, &[]).await?;
    second
        .expect("drover-56", b"echo drover-$((7*8))\r")
        .await?;
    anyhow::ensure!(first.exit().await?, "first session: {}", first.stderr());
    anyhow::ensure!(
        first.stderr().contains("The console closed"),
        "first session's stderr: {}",
        first.stderr()
    );

    eprintln!("phase: Ctrl-] detaches and the CLI exits 0");
    second.type_in(&[0x1d]).await?;
    anyhow::ensure!(second.exit().await?, "detach: {}", second.stderr());
    anyhow::ensure!(second.stderr().contains("Detached"), "{}", second.stderr());

    eprintln!("phase: a viewer may not attach");
    let viewer = cluster
        .user("watcher", "viewer")
        .await?
        .context("TLS cluster")?;
    let mut refused = Session::open(&cluster, &vm, &viewer.flags()).await?;
    anyhow::ensure!(!refused.exit().await?, "a viewer attached");
    anyhow::ensure!(
        refused.stderr().to_lowercase().contains("permission"),
        "viewer: {}",
        refused.stderr()
    );

    eprintln!("phase: a stopped VM has no console, and says so");
    let out = cluster.cli(&["vm", "stop", &vm]).await?;
    anyhow::ensure!(out.success, "stop: {}", out.stderr);
    wait_until(&format!("{vm} stopped"), WAIT, || async {
        let v = cluster.cli_json(&["vm", "get", &vm]).await?;
        Ok((v["observed_state"] == "shut off").then_some(()))
    })
    .await?;
    let mut stopped = Session::open(&cluster, &vm, &[]).await?;
    anyhow::ensure!(!stopped.exit().await?, "a stopped VM's console opened");
    anyhow::ensure!(
        stopped.stderr().contains("not running"),
        "stopped: {}",
        stopped.stderr()
    );
    let out = cluster.cli(&["vm", "delete", &vm]).await?;
    anyhow::ensure!(out.success, "delete: {}", out.stderr);
    Ok(())
}
