//! A `drover vm console` process driven by a test: its stdin written to, its stdout and
//! stderr collected as they come, with waits on what the guest printed.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin};

use crate::{wait_until, Cluster};

/// How long a console process may take to exit once it should.
const EXIT: Duration = Duration::from_secs(60);

/// A `drover vm console` process and everything it printed so far.
pub struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Arc<Mutex<Vec<u8>>>,
    stderr: Arc<Mutex<Vec<u8>>>,
    /// The tasks filling `stdout` and `stderr`; done once the process closed both.
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl Session {
    /// Starts `drover vm console VM` (with the cluster's admin identity unless `identity`
    /// gives TLS flags of its own).
    pub async fn open(cluster: &Cluster, vm: &str, identity: &[String]) -> anyhow::Result<Session> {
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
        let (stdout, out_reader) = collect(child.stdout.take().context("stdout")?);
        let (stderr, err_reader) = collect(child.stderr.take().context("stderr")?);
        Ok(Session {
            child,
            stdin,
            stdout,
            stderr,
            readers: vec![out_reader, err_reader],
        })
    }

    /// Writes `text` to the console's stdin; an error names what the CLI said (it ended).
    pub async fn type_in(&mut self, text: &[u8]) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().context("stdin closed")?;
        let written = match stdin.write_all(text).await {
            Ok(()) => stdin.flush().await,
            Err(e) => Err(e),
        };
        written.with_context(|| {
            format!(
                "the console CLI is gone; stderr {:?}, stdout {:?}",
                self.stderr(),
                self.stdout()
            )
        })
    }

    /// Whether the console CLI has exited.
    pub fn ended(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    /// What the console printed so far (the guest's output).
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.stdout.lock().unwrap()).into_owned()
    }

    /// The CLI's own messages so far.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.stderr.lock().unwrap()).into_owned()
    }

    /// Waits, at most `within`, until the guest's output holds `needle`, typing `poke`
    /// every few seconds meanwhile (the shell may not be up yet when the first line is
    /// typed; empty: type nothing).
    pub async fn expect(
        &mut self,
        needle: &str,
        poke: &[u8],
        within: Duration,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if !poke.is_empty() {
                self.type_in(poke).await?;
            }
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

    /// Waits for the process to exit, and for all it printed to be read; its success.
    pub async fn exit(&mut self) -> anyhow::Result<bool> {
        let status = tokio::time::timeout(EXIT, self.child.wait())
            .await
            .context("the console CLI did not exit")??;
        for reader in self.readers.drain(..) {
            let _ = tokio::time::timeout(EXIT, reader).await;
        }
        Ok(status.success())
    }
}

/// A task reading `from` to its end into the returned buffer.
fn collect(
    mut from: impl tokio::io::AsyncRead + Unpin + Send + 'static,
) -> (Arc<Mutex<Vec<u8>>>, tokio::task::JoinHandle<()>) {
    let buf = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&buf);
    let reader = tokio::spawn(async move {
        let mut chunk = [0u8; 4096];
        while let Ok(n) = from.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().extend_from_slice(&chunk[..n]);
        }
    });
    (buf, reader)
}
