//! A cluster whose one host runs real guests: 3 controllers and hostd `q1` on the system
//! libvirt (`qemu:///system`) under TCG (the test guests boot in seconds there and have
//! been seen to stall under nested KVM), with a dir pool in a fresh directory QEMU can use.
//! What the test defines on the system daemon is removed when this is dropped.

use anyhow::Context as _;

use crate::system_libvirt::{self, Leftovers, QEMU_SYSTEM};
use crate::{Cluster, ClusterSpec};

pub struct QemuHost {
    pub cluster: Cluster,
    /// The pool's name in the cluster.
    pub pool: String,
    /// Its directory (every volume of the pool is a file here).
    pub dir: tempfile::TempDir,
    // Dropped after the cluster: its processes are gone by then.
    _leftovers: Leftovers,
    // Dropped last: the next test cluster on the system libvirt may start then.
    _exclusive: nix::fcntl::Flock<std::fs::File>,
}

impl QemuHost {
    /// Starts the cluster (`tls`: mutual TLS, for tests of roles) and creates pool
    /// `<prefix>pool-<pid>`; `vms` are the domain names the test will define, removed
    /// from the system daemon on drop.
    pub async fn start(prefix: &str, tls: bool, vms: &[&str]) -> anyhow::Result<QemuHost> {
        let exclusive = system_libvirt::exclusive().await?;
        let pool = format!("{prefix}pool-{}", std::process::id());
        let leftovers = Leftovers {
            domains: vms.iter().map(|v| v.to_string()).collect(),
            pools: vec![pool.clone()],
        };
        let mut cluster = Cluster::start(ClusterSpec {
            hosts: 0,
            tls,
            hostd_args: vec!["--domain-type".into(), "qemu".into()],
            ..ClusterSpec::default()
        })
        .await?;
        cluster.add_agent("q1", QEMU_SYSTEM).await?;
        cluster.wait_hosts_up().await?;
        let dir = system_libvirt::pool_dir(&format!("drover-{prefix}"))?;
        let path = dir.path().to_str().context("utf-8 path")?;
        let out = cluster
            .cli(&["pool", "create", &pool, "--path", path, "--wait", "30s"])
            .await?;
        anyhow::ensure!(out.success, "pool create: {}", out.stderr);
        Ok(QemuHost {
            cluster,
            pool,
            dir,
            _leftovers: leftovers,
            _exclusive: exclusive,
        })
    }

    /// Imports the image file at `file` as `name` into the pool.
    pub async fn import(&self, name: &str, file: &std::path::Path) -> anyhow::Result<()> {
        let file = file.to_str().context("utf-8 path")?;
        let out = self
            .cluster
            .cli(&[
                "image", "import", name, "--file", file, "--pool", &self.pool,
            ])
            .await?;
        anyhow::ensure!(out.success, "image import {name}: {}", out.stderr);
        Ok(())
    }
}
