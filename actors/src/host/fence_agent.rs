//! The optional external fence agent (DESIGN.md, fence layer 4): a program the operator
//! installs on every controller, run by the leader as `AGENT HOST` when a host turns
//! suspect. Exit status 0 means "that host is powered off": the leader declares it dead at
//! once, without waiting for its lease. Anything else (failure, timeout) changes nothing:
//! the lease wait still applies. The agent decides how to reach the host's BMC (IPMI,
//! Redfish); drover passes only the host's name.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FenceAgent {
    pub program: PathBuf,
    pub timeout: Duration,
}

/// How one run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The agent confirmed the host is off.
    PoweredOff,
    /// It did not; the reason is for the log and the events.
    Failed(String),
}

impl FenceAgent {
    /// Runs the agent for `host` and waits (asynchronously) for its verdict. The child is
    /// killed if it outlives the timeout.
    pub async fn fence(&self, host: &str) -> Outcome {
        let child = tokio::process::Command::new(&self.program)
            .arg(host)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn();
        let child = match child {
            Ok(c) => c,
            Err(e) => {
                return Outcome::Failed(format!("cannot run {}: {e}", self.program.display()))
            }
        };
        match tokio::time::timeout(self.timeout, child.wait_with_output()).await {
            Ok(Ok(out)) if out.status.success() => Outcome::PoweredOff,
            Ok(Ok(out)) => Outcome::Failed(format!(
                "{} {host} exited with {}: {}",
                self.program.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Ok(Err(e)) => Outcome::Failed(format!("waiting for the fence agent: {e}")),
            Err(_) => Outcome::Failed(format!(
                "{} {host} did not finish within {:?}",
                self.program.display(),
                self.timeout
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(script: &str, timeout: Duration) -> (tempfile::TempDir, FenceAgent) {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let program = dir.path().join("agent");
        std::fs::write(&program, format!("#!/bin/sh\n{script}\n")).unwrap();
        std::fs::set_permissions(&program, std::fs::Permissions::from_mode(0o755)).unwrap();
        (dir, FenceAgent { program, timeout })
    }

    #[tokio::test]
    async fn success_failure_timeout_and_missing() {
        let (_d, ok) = agent("test \"$1\" = h1", Duration::from_secs(5));
        assert_eq!(ok.fence("h1").await, Outcome::PoweredOff);
        assert!(matches!(ok.fence("h2").await, Outcome::Failed(_)));
        let (_d, slow) = agent("sleep 5", Duration::from_millis(200));
        assert!(
            matches!(slow.fence("h1").await, Outcome::Failed(m) if m.contains("did not finish"))
        );
        let missing = FenceAgent {
            program: "/nonexistent/agent".into(),
            timeout: Duration::from_secs(1),
        };
        assert!(
            matches!(missing.fence("h1").await, Outcome::Failed(m) if m.contains("cannot run"))
        );
    }
}
