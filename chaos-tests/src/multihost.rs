//! A drover cluster on real libvirt hosts, for tests and benchmarks of live migration:
//! [`LibvirtHosts`] (one mount namespace, address and libvirtd per host), three
//! controllers, and one hostd per host on the host's TCP URI (also its migration URI).

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::Value;

use crate::cluster::{AgentNetns, AgentPlace};
use crate::libvirt_hosts::LibvirtHosts;
use crate::{wait_until, Cluster, ClusterSpec};

/// A cluster with one hostd per libvirt host (`h1`.. on their TCP URIs, which are also
/// their migration URIs), all up.
pub struct Rig {
    pub cluster: Cluster,
    // Dropped after the cluster (fields drop in order), so hostd never outlives libvirt
    // for long.
    pub lv: LibvirtHosts,
    _dir: tempfile::TempDir,
}

/// How the rig's processes are laid out on this machine.
#[derive(Debug, Clone, Copy, Default)]
struct Layout {
    /// Every controller and hostd on its own loopback address.
    distinct_addresses: bool,
    /// Every host in its own network namespace.
    netns: bool,
}

impl Rig {
    pub async fn start(hosts: usize) -> anyhow::Result<Rig> {
        Self::start_with(hosts, &[]).await
    }

    /// [`Rig::start`] with extra flags for every hostd.
    pub async fn start_with(hosts: usize, hostd_args: &[&str]) -> anyhow::Result<Rig> {
        Self::start_with_local(hosts, hostd_args, None).await
    }

    /// [`Rig::start_with`], each host with its own files at one path under `local` (see
    /// [`LibvirtHosts::start_with_local`]).
    pub async fn start_with_local(
        hosts: usize,
        hostd_args: &[&str],
        local: Option<&std::path::Path>,
    ) -> anyhow::Result<Rig> {
        Self::start_inner(hosts, hostd_args, local, Layout::default()).await
    }

    /// [`Rig::start_with_local`], each host in a network namespace of its own on a shared
    /// underlay (`LibvirtHosts::start_in_netns`), hostd in it with the host's underlay
    /// address as its `--vtep-address`: overlays and migrations run between namespaces.
    pub async fn start_in_netns(
        hosts: usize,
        hostd_args: &[&str],
        local: Option<&std::path::Path>,
    ) -> anyhow::Result<Rig> {
        let layout = Layout {
            netns: true,
            ..Layout::default()
        };
        Self::start_inner(hosts, hostd_args, local, layout).await
    }

    /// [`Rig::start_with`] with every controller and hostd on its own loopback address,
    /// so that partitions can cut them apart (`ClusterSpec::distinct_addresses`), and the
    /// controllers' data on 256 MiB tmpfs mounts, so that their disks can fill up.
    pub async fn start_distinct(hosts: usize, hostd_args: &[&str]) -> anyhow::Result<Rig> {
        let layout = Layout {
            distinct_addresses: true,
            ..Layout::default()
        };
        Self::start_inner(hosts, hostd_args, None, layout).await
    }

    async fn start_inner(
        hosts: usize,
        hostd_args: &[&str],
        local: Option<&std::path::Path>,
        layout: Layout,
    ) -> anyhow::Result<Rig> {
        let Layout {
            distinct_addresses,
            netns,
        } = layout;
        let dir = tempfile::tempdir()?;
        let path = dir.path().to_path_buf();
        let has_local = local.is_some();
        let local = local.map(std::path::Path::to_path_buf);
        let lv = tokio::task::spawn_blocking(move || {
            if netns {
                LibvirtHosts::start_in_netns(&path, hosts, local.as_deref())
            } else {
                LibvirtHosts::start_with_local(&path, hosts, local.as_deref())
            }
        })
        .await??;
        let mut cluster = Cluster::start(ClusterSpec {
            hosts: 0,
            hostd_args: hostd_args.iter().map(|a| a.to_string()).collect(),
            distinct_addresses,
            data_tmpfs_mib: distinct_addresses.then_some(256),
            ..ClusterSpec::default()
        })
        .await?;
        for h in lv.hosts() {
            // With private local directories, hostd must see the host's files (it reads
            // an uploaded image with qemu-img), so it runs in the host's namespace; in a
            // network namespace of its own, it must make its tunnels there.
            let agent_netns = match &h.netns {
                Some(ns) => Some(AgentNetns {
                    path: crate::netns::ns_path(ns),
                    underlay: h.address.parse().context("a host's underlay address")?,
                }),
                None => None,
            };
            let place = (has_local || agent_netns.is_some())
                .then(|| h.libvirtd_pid())
                .flatten()
                .map(|pid| AgentPlace {
                    pid: pid.as_raw(),
                    netns: agent_netns,
                });
            cluster.add_agent_in(&h.name, &h.tcp_uri(), place).await?;
        }
        cluster.wait_hosts_up().await?;
        Ok(Rig {
            cluster,
            lv,
            _dir: dir,
        })
    }

    /// Host `host` loses power under VM `vm`: its hostd, `vm`'s QEMU and its virtlockd
    /// (the disk locks die with the machine) are killed by PID. libvirtd is left: without
    /// hostd nothing it knows reaches the cluster.
    pub async fn power_loss(&mut self, host: &str, vm: &str) -> anyhow::Result<()> {
        let h = self
            .lv
            .hosts()
            .iter()
            .find(|h| h.name == host)
            .with_context(|| format!("no host {host}"))?;
        let pid_file = h.state_dir.join(format!("run/qemu/{vm}.pid"));
        let qemu: i32 = std::fs::read_to_string(&pid_file)
            .with_context(|| format!("read {}", pid_file.display()))?
            .trim()
            .parse()?;
        let lockd = h.virtlockd_pid().context("virtlockd")?;
        self.cluster.kill_agent(host).await?;
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(qemu),
            nix::sys::signal::Signal::SIGKILL,
        )?;
        nix::sys::signal::kill(lockd, nix::sys::signal::Signal::SIGKILL)?;
        Ok(())
    }

    pub fn uris(&self) -> Vec<(String, String)> {
        self.lv
            .hosts()
            .iter()
            .map(|h| (h.name.clone(), h.tcp_uri()))
            .collect()
    }

    pub async fn json(&self, args: &[&str]) -> anyhow::Result<Value> {
        self.cluster
            .cli_json(args)
            .await
            .map_err(anyhow::Error::msg)
    }

    pub async fn vm(&self, name: &str) -> anyhow::Result<Value> {
        self.json(&["vm", "get", name]).await
    }

    pub async fn create(&self, name: &str, memory_mib: u64) -> anyhow::Result<()> {
        let mem = memory_mib.to_string();
        self.json(&["vm", "create", name, "--vcpus", "1", "--memory-mib", &mem])
            .await?;
        Ok(())
    }

    /// Imports the image file at `file` as `name` into `pool`; fails unless it is ready.
    pub async fn import_image(
        &self,
        name: &str,
        file: &std::path::Path,
        pool: &str,
    ) -> anyhow::Result<Value> {
        let file = file.to_str().context("utf-8 path")?;
        let img = self
            .json(&["image", "import", name, "--file", file, "--pool", pool])
            .await?;
        anyhow::ensure!(img["state"] == "ready", "image {name}: {img}");
        Ok(img)
    }

    /// A pool `shared` at `dir` (every host sees it), with the test guest image at `image`
    /// in it as `guest`.
    pub async fn shared_guest_pool(
        &self,
        dir: &std::path::Path,
        image: &std::path::Path,
    ) -> anyhow::Result<()> {
        let path = dir.to_str().context("utf-8 path")?;
        self.json(&[
            "pool", "create", "shared", "--path", path, "--shared", "--wait", "30s",
        ])
        .await?;
        self.import_image("guest", image, "shared").await?;
        Ok(())
    }

    /// [`Rig::shared_guest_pool`], and HA VM `name` booting a linked clone of the guest
    /// with a 16 MiB data disk (the guest writes its boot marker there). Returns `vm
    /// create`'s answer.
    pub async fn shared_ha_guest(
        &self,
        name: &str,
        dir: &std::path::Path,
        image: &std::path::Path,
    ) -> anyhow::Result<Value> {
        self.shared_guest_pool(dir, image).await?;
        self.json(&crate::guest::create_args(
            name,
            "shared",
            &["--ha", "--disk", "16M"],
        ))
        .await
    }

    /// Waits until every VM in `names` is observed running; returns name → host.
    pub async fn running(&self, names: &[&str]) -> anyhow::Result<BTreeMap<String, String>> {
        wait_until("VMs running", Duration::from_secs(60), || async {
            let vms = self.cluster.cli_json(&["vm", "list"]).await?;
            let mut placed = BTreeMap::new();
            for vm in vms.as_array().into_iter().flatten() {
                let name = vm["name"].as_str().unwrap_or_default();
                if names.contains(&name) && vm["observed_state"] == "running" {
                    placed.insert(name.to_string(), vm["host"].as_str().unwrap_or("").into());
                }
            }
            Ok((placed.len() == names.len()).then_some(placed))
        })
        .await
    }

    pub async fn op(&self, id: u64) -> anyhow::Result<Value> {
        self.json(&["op", "get", &id.to_string()]).await
    }

    /// Waits for operation `id` to end; returns it.
    pub async fn op_end(&self, id: u64, within: Duration) -> anyhow::Result<Value> {
        wait_until(&format!("operation {id} to end"), within, || async {
            let op = self
                .cluster
                .cli_json(&["op", "get", &id.to_string(), "--stale"])
                .await?;
            Ok((op["state"] != "running").then_some(op))
        })
        .await
    }
}
