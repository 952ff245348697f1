//! One child process of a test: started from a drover binary, stopped by PID (never by
//! name), killed when dropped so a failing test leaves nothing behind.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Where the drover binaries are: `$DROVER_BIN_DIR`, else the `target/<profile>` directory
/// this executable was built into (a test lives in `target/<profile>/deps`, a binary such
/// as `bench_raft` in `target/<profile>` itself).
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("DROVER_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("current_exe");
    let dir = exe.parent().expect("executable lives in target/<profile>");
    match dir.file_name() {
        Some(name) if name == "deps" => dir.parent().unwrap_or(dir).to_path_buf(),
        _ => dir.to_path_buf(),
    }
}

pub fn binary(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.exists(),
        "{} is missing: build the binaries first with `cargo build --bins` (`--release` for \
         release executables), or point DROVER_BIN_DIR at them",
        path.display()
    );
    path
}

pub struct ChildProcess {
    pub name: String,
    child: Child,
    pid: Pid,
}

impl std::fmt::Debug for ChildProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}[{}]", self.name, self.pid)
    }
}

impl ChildProcess {
    /// Starts `program` with `args`, stderr to `log`, and waits for its `listening on ADDR`
    /// line; returns the process and that address.
    pub async fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        log: &Path,
    ) -> anyhow::Result<(Self, String)> {
        Self::spawn_until(name, program, args, log, "listening on ").await
    }

    /// Like [`ChildProcess::spawn`], for a first line starting with `ready`; returns the
    /// rest of that line.
    pub async fn spawn_until(
        name: &str,
        program: &Path,
        args: &[String],
        log: &Path,
        ready: &str,
    ) -> anyhow::Result<(Self, String)> {
        let log_file = std::fs::File::create(log)?;
        let mut child = Command::new(program)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {name}"))?;
        let pid = Pid::from_raw(child.id().context("child has no pid")? as i32);
        let stdout = child.stdout.take().context("stdout not captured")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .with_context(|| format!("{name} did not say it is ready"))??
            .with_context(|| {
                // The log lives in a temporary directory that is gone once the test fails:
                // say why here.
                let text = std::fs::read_to_string(log).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(8).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!(
                    "{name} exited at start; the end of {}:\n{}",
                    log.display(),
                    tail.join("\n")
                )
            })?;
        let addr = line
            .strip_prefix(ready)
            .with_context(|| format!("{name}: unexpected first line {line:?}"))?
            .to_string();
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok((
            Self {
                name: name.to_string(),
                child,
                pid,
            },
            addr,
        ))
    }

    /// Starts `program` with stdout and stderr to `log`, without waiting for a line: for
    /// programs that announce nothing on stdout (etcd); the caller waits for readiness.
    pub fn spawn_logged(
        name: &str,
        program: &Path,
        args: &[String],
        log: &Path,
    ) -> anyhow::Result<Self> {
        let log_file = std::fs::File::create(log)?;
        let child = Command::new(program)
            .args(args)
            .stdout(Stdio::from(log_file.try_clone()?))
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("cannot start {name} ({})", program.display()))?;
        let pid = Pid::from_raw(child.id().context("child has no pid")? as i32);
        Ok(Self {
            name: name.to_string(),
            child,
            pid,
        })
    }

    /// CPU time (user + system) the process has used so far, from `/proc/PID/stat`.
    pub fn cpu_time(&self) -> anyhow::Result<Duration> {
        cpu_time(self.pid)
    }

    pub fn pid(&self) -> Pid {
        self.pid
    }

    pub fn signal(&self, sig: Signal) -> anyhow::Result<()> {
        kill(self.pid, sig).with_context(|| format!("cannot send {sig} to {self:?}"))
    }

    /// SIGKILL and reap: the power-loss fault.
    pub async fn kill9(mut self) -> anyhow::Result<()> {
        self.signal(Signal::SIGKILL)?;
        self.child.wait().await?;
        Ok(())
    }

    /// Waits for the process to exit by itself (a start-up refusal, say).
    pub async fn exited(mut self, within: Duration) -> anyhow::Result<std::process::ExitStatus> {
        let status = tokio::time::timeout(within, self.child.wait())
            .await
            .with_context(|| format!("{self:?} still running after {within:?}"))??;
        Ok(status)
    }

    /// SIGTERM, and wait for a clean exit.
    pub async fn terminate(mut self) -> anyhow::Result<std::process::ExitStatus> {
        self.signal(Signal::SIGTERM)?;
        let status = tokio::time::timeout(Duration::from_secs(15), self.child.wait())
            .await
            .with_context(|| format!("{self:?} ignored SIGTERM"))??;
        Ok(status)
    }
}

/// CPU time (user + system) process `pid` has used, from `/proc/PID/stat`.
pub fn cpu_time(pid: Pid) -> anyhow::Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The command name (field 2) is in parentheses and may hold spaces: count after it.
    let after = stat
        .rsplit_once(") ")
        .map(|(_, rest)| rest)
        .context("malformed /proc/PID/stat")?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks = |i: usize| -> anyhow::Result<u64> {
        Ok(fields.get(i).context("short /proc/PID/stat")?.parse()?)
    };
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)?
        .filter(|hz| *hz > 0)
        .context("no CLK_TCK")? as u64;
    let total = ticks(11)? + ticks(12)?;
    Ok(Duration::from_micros(total * 1_000_000 / hz))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_of_this_process_grows_with_work() {
        let me = Pid::this();
        let before = cpu_time(me).expect("stat");
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(200) {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1);
        }
        std::hint::black_box(x);
        assert!(cpu_time(me).expect("stat") > before);
    }
}
