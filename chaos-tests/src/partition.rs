//! Network partitions with iptables: cut one agent off from the controllers without
//! touching the process. Only TCP between 127.0.0.1 and the agent's port is dropped, both
//! ways, so the test's own [`crate::cluster::Probe`] (from 127.0.0.2) still reaches it.
//! Rules carry a comment naming this process and are removed on drop.

use std::process::Command;

use anyhow::{bail, Context as _};

/// Whether this machine can partition: root and a working `iptables`. Tests that need it
/// skip with this reason locally; CI (`DROVER_REQUIRE_LIBVIRT`, set as root) fails instead.
pub fn available() -> Result<(), String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Err("partitions need root (iptables)".into());
    }
    match Command::new("iptables")
        .args(["-w", "-S", "INPUT"])
        .output()
    {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => Err(format!(
            "iptables does not work here: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Err(format!("iptables not found: {e}")),
    }
}

/// Traffic between the controllers (127.0.0.1) and the agent listening on `port` is
/// dropped while this lives.
#[derive(Debug)]
pub struct Partition {
    rules: Vec<Vec<String>>,
}

impl Partition {
    pub fn cut(port: u16) -> anyhow::Result<Self> {
        let tag = format!("drover-test-{}-{port}", std::process::id());
        let port = port.to_string();
        let rule = |chain: &str, dir: &str| -> Vec<String> {
            [
                chain,
                "-p",
                "tcp",
                "-s",
                "127.0.0.1",
                "-d",
                "127.0.0.1",
                dir,
                &port,
                "-m",
                "comment",
                "--comment",
                &tag,
                "-j",
                "DROP",
            ]
            .map(String::from)
            .to_vec()
        };
        let mut partition = Partition { rules: Vec::new() };
        // Inbound to the agent and its answers: both halves of every connection.
        for r in [rule("INPUT", "--dport"), rule("OUTPUT", "--sport")] {
            iptables("-I", &r)?;
            partition.rules.push(r);
        }
        Ok(partition)
    }

    /// Removes the rules now (also done on drop).
    pub fn heal(mut self) -> anyhow::Result<()> {
        self.remove()
    }

    fn remove(&mut self) -> anyhow::Result<()> {
        let mut result = Ok(());
        for r in self.rules.drain(..) {
            if let Err(e) = iptables("-D", &r) {
                result = Err(e);
            }
        }
        result
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        if let Err(e) = self.remove() {
            eprintln!("cannot remove partition rules: {e:#}");
        }
    }
}

fn iptables(op: &str, rule: &[String]) -> anyhow::Result<()> {
    let out = Command::new("iptables")
        .arg("-w")
        .arg(op)
        .args(rule)
        .output()
        .context("running iptables")?;
    if !out.status.success() {
        bail!(
            "iptables {op} {}: {}",
            rule.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
