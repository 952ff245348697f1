//! Network partitions with iptables: cut one agent off from the controllers without
//! touching the process. Only TCP between 127.0.0.1 and the agent's port is dropped, both
//! ways, so the test's own [`crate::cluster::Probe`] (from 127.0.0.2) still reaches it.
//! [`Partition::between`] cuts whole sets of processes apart by their own loopback
//! addresses instead. Rules carry a comment naming this process and are removed on drop.

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
        let lo = "127.0.0.1";
        // Inbound to the agent and its answers: both halves of every connection.
        Self::install(&[
            drop_rule("INPUT", lo, lo, &["--dport", &port], &tag),
            drop_rule("OUTPUT", lo, lo, &["--sport", &port], &tag),
        ])
    }

    /// Drops all TCP between any address of `a` and any of `b`, both ways (processes with
    /// their own loopback addresses: `ClusterSpec::distinct_addresses`).
    pub fn between(a: &[String], b: &[String]) -> anyhow::Result<Self> {
        let tag = format!("drover-test-{}-split", std::process::id());
        let mut rules = Vec::new();
        for x in a {
            for y in b {
                rules.push(drop_rule("INPUT", x, y, &[], &tag));
                rules.push(drop_rule("INPUT", y, x, &[], &tag));
            }
        }
        Self::install(&rules)
    }

    /// Drops TCP from any address of `from` to any of `to`, one way only (answers still
    /// flow the other way).
    pub fn one_way(from: &[String], to: &[String]) -> anyhow::Result<Self> {
        let tag = format!("drover-test-{}-oneway", std::process::id());
        let mut rules = Vec::new();
        for x in from {
            for y in to {
                rules.push(drop_rule("INPUT", x, y, &[], &tag));
            }
        }
        Self::install(&rules)
    }

    /// Drops `percent` % of the TCP packets between any two of `addrs`, at random (this
    /// kernel has no `tc netem`, so loss is iptables' `statistic` match, and delay is not
    /// available at all).
    pub fn lossy(addrs: &[String], percent: u64) -> anyhow::Result<Self> {
        let tag = format!("drover-test-{}-loss", std::process::id());
        let p = format!("{:.2}", percent as f64 / 100.0);
        let mut rules = Vec::new();
        for x in addrs {
            for y in addrs.iter().filter(|y| *y != x) {
                rules.push(drop_rule(
                    "INPUT",
                    x,
                    y,
                    &["-m", "statistic", "--mode", "random", "--probability", &p],
                    &tag,
                ));
            }
        }
        Self::install(&rules)
    }

    /// Inserts `rules`; the ones already in are removed again if one fails (on drop).
    fn install(rules: &[Vec<String>]) -> anyhow::Result<Self> {
        let mut partition = Partition { rules: Vec::new() };
        for r in rules {
            iptables("-I", r)?;
            partition.rules.push(r.clone());
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

/// `CHAIN -p tcp -s SRC -d DST [extra] -m comment --comment TAG -j DROP`.
fn drop_rule(chain: &str, src: &str, dst: &str, extra: &[&str], tag: &str) -> Vec<String> {
    let mut r: Vec<String> = [chain, "-p", "tcp", "-s", src, "-d", dst]
        .map(String::from)
        .to_vec();
    r.extend(extra.iter().map(|s| s.to_string()));
    r.extend(["-m", "comment", "--comment", tag, "-j", "DROP"].map(String::from));
    r
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
