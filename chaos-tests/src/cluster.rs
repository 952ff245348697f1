//! A whole drover cluster as child processes: controllers (`drover server`) bootstrapped
//! with `--initial-cluster`, and hostd agents on libvirt, registered as hosts. Tests drive
//! it through the real CLI (`-o json`) and check hosts through the agents' own gRPC API.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};
use drover_proto::agent::v1::host_agent_client::HostAgentClient;
use drover_proto::agent::v1::{Domain, ListDomainsRequest};
use drover_proto::transport::endpoint;
use serde_json::Value;
use tempfile::TempDir;

use crate::process::{binary, ChildProcess};
use crate::wait::wait_until;

#[derive(Debug, Clone)]
pub struct ClusterSpec {
    pub controllers: u64,
    pub hosts: u64,
    pub libvirt_uri: String,
    /// Extra `drover server` flags for every controller (e.g. `--snapshot-logs 64`, so a
    /// short test still crosses snapshots and log purges).
    pub controller_args: Vec<String>,
    /// Extra `hostd` flags for every host (e.g. `--domain-type qemu` for guests that
    /// stall under nested KVM).
    pub hostd_args: Vec<String>,
    /// Mutual TLS on every hop, with a fresh CA (`drover certs`) for this cluster.
    pub tls: bool,
    /// Give every process its own loopback address — controller N listens on and connects
    /// from 127.0.0.(10+N), host hN listens on 127.0.0.(20+N) — so that
    /// [`crate::partition::Partition::between`] can cut any set of them from any other.
    /// The addresses are fixed, so only one such cluster may run at a time on a machine.
    pub distinct_addresses: bool,
    /// Put each controller's data directory on a tmpfs of this many MiB (root only), so
    /// that a test can fill its disk (the chaos engine's disk-full fault).
    pub data_tmpfs_mib: Option<u64>,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        Self {
            controllers: 3,
            hosts: 2,
            libvirt_uri: "test:///default".into(),
            controller_args: Vec::new(),
            hostd_args: Vec::new(),
            tls: false,
            distinct_addresses: false,
            data_tmpfs_mib: None,
        }
    }
}

/// The PEM files of one process's TLS identity.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl TlsFiles {
    pub fn flags(&self) -> Vec<String> {
        vec![
            "--ca".into(),
            self.ca.display().to_string(),
            "--cert".into(),
            self.cert.display().to_string(),
            "--key".into(),
            self.key.display().to_string(),
        ]
    }

    pub fn load(&self) -> anyhow::Result<drover_proto::transport::Tls> {
        Ok(drover_proto::transport::Tls::load(
            &self.ca, &self.cert, &self.key,
        )?)
    }
}

#[derive(Debug)]
pub struct Controller {
    pub id: u64,
    pub addr: String,
    pub data_dir: PathBuf,
    pub process: Option<ChildProcess>,
}

#[derive(Debug)]
pub struct Agent {
    pub name: String,
    /// Where the cluster reaches it.
    pub addr: String,
    /// For a hostd in a network namespace of its own: what makes `addr` reach it.
    pub forwarder: Option<crate::netns::Forwarder>,
    pub libvirt_uri: String,
    pub data_dir: PathBuf,
    pub process: Option<ChildProcess>,
    /// How to start it again on the same address (see [`Agent::restart_after_drill_stop`]).
    pub program: PathBuf,
    pub args: Vec<String>,
}

/// Where [`Cluster::add_agent_in`] runs a hostd: in the mount namespace of process `pid`
/// (a libvirt host's daemon), and in a network namespace of its own if `netns`.
#[derive(Debug, Clone)]
pub struct AgentPlace {
    pub pid: i32,
    pub netns: Option<AgentNetns>,
}

/// A host's network namespace as its hostd needs it.
#[derive(Debug, Clone)]
pub struct AgentNetns {
    /// `/run/netns/drover-hN`.
    pub path: PathBuf,
    /// The host's underlay address: hostd's `--vtep-address`.
    pub underlay: std::net::Ipv4Addr,
}

impl Agent {
    /// Plays hostd's service manager through a stop-agent drill: waits up to `within` for
    /// `process` (this agent's hostd, taken out of `process`) to exit with the drill's
    /// code, then starts it again on the same address, logging to `log`.
    pub async fn restart_after_drill_stop(
        program: PathBuf,
        args: Vec<String>,
        process: ChildProcess,
        log: PathBuf,
        within: Duration,
    ) -> anyhow::Result<ChildProcess> {
        let name = process.name.clone();
        let status = process.exited(within).await?;
        anyhow::ensure!(
            status.code() == Some(i32::from(drover_hostd::drill_stop::EXIT_CODE)),
            "{name} exited with {status}, not the drill's code"
        );
        let (process, _) = ChildProcess::spawn(&name, &program, &args, &log).await?;
        Ok(process)
    }
}

/// What one CLI invocation did.
#[derive(Debug)]
pub struct CliOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl From<std::process::Output> for CliOutput {
    fn from(out: std::process::Output) -> Self {
        CliOutput {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

#[derive(Debug)]
pub struct Cluster {
    pub dir: TempDir,
    pub controllers: Vec<Controller>,
    pub agents: Vec<Agent>,
    initial_cluster: String,
    controller_args: Vec<String>,
    hostd_args: Vec<String>,
    /// Where the cluster's CA lives, when it uses mutual TLS.
    certs: Option<PathBuf>,
    distinct_addresses: bool,
    /// The controllers the CLI talks to, when not all of them.
    cli_controllers: Option<Vec<u64>>,
    /// tmpfs mounts of the controllers' data (see `ClusterSpec::data_tmpfs_mib`).
    mounts: Vec<PathBuf>,
}

/// `DROVER_KEEP_LOGS=DIR` keeps every process's log of a cluster (copied into DIR when the
/// cluster is dropped, which deletes its directory): the post-mortem of a long benchmark
/// run that ended badly.
impl Drop for Cluster {
    fn drop(&mut self) {
        for m in &self.mounts {
            // Lazily: the controllers still have it open until their fields drop.
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(m)
                .status();
        }
        let Some(keep) = std::env::var_os("DROVER_KEEP_LOGS") else {
            return;
        };
        let keep = PathBuf::from(keep);
        let Ok(entries) = std::fs::read_dir(self.dir.path()) else {
            return;
        };
        let _ = std::fs::create_dir_all(&keep);
        for e in entries.flatten() {
            let path = e.path();
            if path.extension().is_some_and(|x| x == "log") {
                if let Some(name) = path.file_name() {
                    if let Err(err) = std::fs::copy(&path, keep.join(name)) {
                        eprintln!("keeping {}: {err}", path.display());
                    }
                }
            }
        }
    }
}

/// Controller `id`'s own loopback address under `ClusterSpec::distinct_addresses`.
pub fn controller_ip(id: u64) -> String {
    format!("127.0.0.{}", 10 + id)
}

/// Host number `n`'s (1-based) own loopback address under `distinct_addresses`.
pub fn host_ip(n: usize) -> String {
    format!("127.0.0.{}", 20 + n)
}

/// A free loopback port (bind port 0, read it, release it) for processes whose address must
/// be known before they start.
pub fn free_port() -> anyhow::Result<u16> {
    free_port_on("127.0.0.1")
}

/// [`free_port`] on loopback address `ip`, and on the wildcard address too: a port a
/// wildcard socket holds cannot be bound on `ip` either.
pub fn free_port_on(ip: &str) -> anyhow::Result<u16> {
    for _ in 0..20 {
        let port = std::net::TcpListener::bind(format!("{ip}:0"))?
            .local_addr()?
            .port();
        if std::net::TcpListener::bind(("0.0.0.0", port)).is_ok() {
            return Ok(port);
        }
    }
    anyhow::bail!("no port free on {ip} and the wildcard address after 20 tries")
}

impl Cluster {
    /// Starts the controllers, waits for a leader, starts and registers the agents, and
    /// waits until every host is up.
    pub async fn start(spec: ClusterSpec) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut controllers = Vec::new();
        let mut mounts = Vec::new();
        for id in 1..=spec.controllers {
            let ip = if spec.distinct_addresses {
                controller_ip(id)
            } else {
                "127.0.0.1".into()
            };
            let data_dir = dir.path().join(format!("controller-{id}"));
            if let Some(mib) = spec.data_tmpfs_mib {
                std::fs::create_dir_all(&data_dir)?;
                let out = std::process::Command::new("mount")
                    .args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"])
                    .arg(&data_dir)
                    .output()?;
                anyhow::ensure!(
                    out.status.success(),
                    "cannot mount a tmpfs at {}: {}",
                    data_dir.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                mounts.push(data_dir.clone());
            }
            controllers.push(Controller {
                id,
                addr: format!("{ip}:{}", free_port_on(&ip)?),
                data_dir,
                process: None,
            });
        }
        let initial_cluster = controllers
            .iter()
            .map(|c| format!("{}={}", c.id, c.addr))
            .collect::<Vec<_>>()
            .join(",");
        let mut cluster = Cluster {
            dir,
            controllers,
            agents: Vec::new(),
            initial_cluster,
            controller_args: spec.controller_args.clone(),
            hostd_args: spec.hostd_args.clone(),
            certs: None,
            distinct_addresses: spec.distinct_addresses,
            cli_controllers: None,
            mounts,
        };
        if spec.tls {
            let certs = cluster.dir.path().join("certs");
            let out = cluster
                .drover(&["certs", "init", "--dir", &certs.display().to_string()])
                .await?;
            if !out.success {
                bail!("certs init failed: {}", out.stderr);
            }
            cluster.certs = Some(certs);
        }
        for id in 1..=spec.controllers {
            cluster.start_controller(id).await?;
        }
        cluster.wait_for_leader(None).await?;
        for i in 1..=spec.hosts {
            cluster
                .add_agent(&format!("h{i}"), &spec.libvirt_uri)
                .await?;
        }
        cluster.wait_hosts_up().await?;
        Ok(cluster)
    }

    /// Starts a hostd named `name` on `libvirt_uri` and registers it as a host (without
    /// waiting for it to be up).
    pub async fn add_agent(&mut self, name: &str, libvirt_uri: &str) -> anyhow::Result<()> {
        self.add_agent_in(name, libvirt_uri, None).await
    }

    /// [`Cluster::add_agent`], hostd running in the namespaces of a libvirt host's daemon
    /// (then hostd sees the host's files, and its network, as its libvirt does, as on a
    /// real host; `nsenter` execs hostd in place, so the PID is hostd's).
    pub async fn add_agent_in(
        &mut self,
        name: &str,
        libvirt_uri: &str,
        place: Option<AgentPlace>,
    ) -> anyhow::Result<()> {
        let data_dir = self.dir.path().join(format!("hostd-{name}"));
        let in_netns = place.as_ref().and_then(|p| p.netns.as_ref());
        // In a network namespace of its own, hostd listens on that namespace's loopback:
        // a forwarder makes it reachable on the test's.
        let ip = if self.distinct_addresses && in_netns.is_none() {
            host_ip(self.agents.len() + 1)
        } else {
            "127.0.0.1".into()
        };
        let mut args: Vec<String> = vec![
            "--name".into(),
            name.into(),
            "--listen".into(),
            format!("{ip}:0"),
            "--libvirt-uri".into(),
            libvirt_uri.into(),
            "--data-dir".into(),
            data_dir.display().to_string(),
        ];
        args.extend(self.hostd_args.iter().cloned());
        if let Some(ns) = in_netns {
            args.extend(["--vtep-address".into(), ns.underlay.to_string()]);
        }
        match self.identity(&format!("host-{name}")).await? {
            Some(tls) => args.extend(tls.flags()),
            None => args.push("--insecure".into()),
        }
        let log = self.dir.path().join(format!("hostd-{name}.log"));
        let (program, args) = match &place {
            None => (binary("hostd"), args),
            Some(place) => {
                let mut wrapped = vec![format!("--mount=/proc/{}/ns/mnt", place.pid)];
                if let Some(ns) = &place.netns {
                    wrapped.push(format!("--net={}", ns.path.display()));
                }
                wrapped.extend(["--".into(), binary("hostd").display().to_string()]);
                wrapped.extend(args);
                (std::path::PathBuf::from("/usr/bin/nsenter"), wrapped)
            }
        };
        let (process, addr) =
            ChildProcess::spawn(&format!("hostd-{name}"), &program, &args, &log).await?;
        let forwarder = match in_netns {
            Some(ns) => Some(
                crate::netns::Forwarder::start(ns.path.clone(), addr.parse()?)
                    .await
                    .context("forwarder to hostd")?,
            ),
            None => None,
        };
        let registered = forwarder
            .as_ref()
            .map_or_else(|| addr.clone(), |f| f.addr.to_string());
        let out = self
            .cli(&["host", "add", name, "--address", &registered])
            .await?;
        if !out.success {
            bail!("host add {name} failed: {}", out.stderr);
        }
        // Started again, it must listen where the cluster knows it.
        let args = args
            .into_iter()
            .map(|a| {
                if a == format!("{ip}:0") {
                    addr.clone()
                } else {
                    a
                }
            })
            .collect();
        self.agents.push(Agent {
            name: name.into(),
            addr: registered,
            forwarder,
            libvirt_uri: libvirt_uri.into(),
            data_dir,
            process: Some(process),
            program,
            args,
        });
        Ok(())
    }

    /// Starts `hostd-watchdog` beside the hostd of `host` (same libvirt, same data dir).
    pub async fn start_watchdog(&self, host: &str) -> anyhow::Result<ChildProcess> {
        let agent = self.agent(host)?;
        let args: Vec<String> = vec![
            "--libvirt-uri".into(),
            agent.libvirt_uri.clone(),
            "--data-dir".into(),
            agent.data_dir.display().to_string(),
            "--interval-ms".into(),
            "100".into(),
        ];
        let log = self.dir.path().join(format!("watchdog-{host}.log"));
        let (process, _) = ChildProcess::spawn_until(
            &format!("watchdog-{host}"),
            &binary("hostd-watchdog"),
            &args,
            &log,
            "watching ",
        )
        .await?;
        Ok(process)
    }

    pub fn agent_mut(&mut self, host: &str) -> anyhow::Result<&mut Agent> {
        self.agents
            .iter_mut()
            .find(|a| a.name == host)
            .with_context(|| format!("no agent {host}"))
    }

    pub fn agent(&self, host: &str) -> anyhow::Result<&Agent> {
        self.agents
            .iter()
            .find(|a| a.name == host)
            .with_context(|| format!("no agent {host}"))
    }

    /// Waits until every registered host is up.
    pub async fn wait_hosts_up(&self) -> anyhow::Result<()> {
        wait_until("all hosts up", Duration::from_secs(20), || async {
            let hosts = self.cli_json(&["host", "list"]).await?;
            let all_up = hosts
                .as_array()
                .is_some_and(|hs| hs.iter().all(|h| h["health"] == "up"));
            Ok(all_up.then_some(()))
        })
        .await
    }

    /// (Re)starts controller `id` on its address and data dir.
    pub async fn start_controller(&mut self, id: u64) -> anyhow::Result<()> {
        let initial = self.initial_cluster.clone();
        let mut extra = self.controller_args.clone();
        if self.distinct_addresses {
            extra.extend(["--source-address".into(), controller_ip(id)]);
        }
        let c = self.controller_mut(id)?;
        let mut args: Vec<String> = vec![
            "server".into(),
            "--id".into(),
            id.to_string(),
            "--listen".into(),
            c.addr.clone(),
            "--data-dir".into(),
            c.data_dir.display().to_string(),
            "--initial-cluster".into(),
            initial,
        ];
        args.extend(extra);
        let log = c.data_dir.with_extension("log");
        match self.identity(&format!("controller-{id}")).await? {
            Some(tls) => args.extend(tls.flags()),
            None => args.push("--insecure".into()),
        }
        let c = self.controller_mut(id)?;
        let (process, _) =
            ChildProcess::spawn(&format!("controller-{id}"), &binary("drover"), &args, &log)
                .await?;
        c.process = Some(process);
        Ok(())
    }

    fn controller_mut(&mut self, id: u64) -> anyhow::Result<&mut Controller> {
        self.controllers
            .iter_mut()
            .find(|c| c.id == id)
            .with_context(|| format!("no controller {id}"))
    }

    /// Takes controller `id`'s process out of the cluster's hands (to watch it exit).
    pub fn take_controller_process(&mut self, id: u64) -> anyhow::Result<ChildProcess> {
        self.controller_mut(id)?
            .process
            .take()
            .with_context(|| format!("controller {id} is not running"))
    }

    /// SIGKILLs controller `id`.
    pub async fn kill_controller(&mut self, id: u64) -> anyhow::Result<()> {
        let c = self.controller_mut(id)?;
        let p = c
            .process
            .take()
            .with_context(|| format!("controller {id} is not running"))?;
        p.kill9().await
    }

    /// SIGKILLs the hostd of `host` (its test-driver domains vanish with it).
    pub async fn kill_agent(&mut self, host: &str) -> anyhow::Result<()> {
        let a = self
            .agents
            .iter_mut()
            .find(|a| a.name == host)
            .with_context(|| format!("no agent {host}"))?;
        let p = a
            .process
            .take()
            .with_context(|| format!("hostd {host} is not running"))?;
        p.kill9().await
    }

    /// All controller addresses, running or not: the client skips dead ones.
    pub fn endpoints(&self) -> String {
        self.controllers
            .iter()
            .filter(|c| {
                self.cli_controllers
                    .as_ref()
                    .is_none_or(|ids| ids.contains(&c.id))
            })
            .map(|c| c.addr.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// From now on the CLI talks only to these controllers (`None`: all of them) — the
    /// majority side of a partition, whose answers are the ones that count.
    pub fn use_controllers(&mut self, ids: Option<Vec<u64>>) {
        self.cli_controllers = ids;
    }

    /// `(id, address)` of every controller, running or not.
    pub fn members(&self) -> Vec<(u64, String)> {
        self.controllers
            .iter()
            .map(|c| (c.id, c.addr.clone()))
            .collect()
    }

    /// Every controller's address, running or not.
    pub fn addrs(&self) -> Vec<String> {
        self.controllers.iter().map(|c| c.addr.clone()).collect()
    }

    /// The TLS identity with file stem `stem` — `controller-N` or `host-NAME` — issued on
    /// first use, when the cluster uses mutual TLS.
    pub async fn identity(&self, stem: &str) -> anyhow::Result<Option<TlsFiles>> {
        let holder: Vec<String> = if let Some(id) = stem.strip_prefix("controller-") {
            vec!["--controller".into(), id.into()]
        } else if let Some(name) = stem.strip_prefix("host-") {
            vec!["--host".into(), name.into()]
        } else {
            bail!("identity {stem:?}: not controller-N or host-NAME (users: Cluster::user)")
        };
        self.issued(stem, &holder).await
    }

    /// The certificate of user `name` with `role` (issued on first use; a user keeps the
    /// role it was first issued with), when the cluster uses mutual TLS.
    pub async fn user(&self, name: &str, role: &str) -> anyhow::Result<Option<TlsFiles>> {
        let holder = vec![
            "--user".to_string(),
            name.to_string(),
            "--role".to_string(),
            role.to_string(),
        ];
        self.issued(&format!("user-{name}"), &holder).await
    }

    /// The operator's identity every CLI call uses unless it passes its own.
    pub async fn admin(&self) -> anyhow::Result<Option<TlsFiles>> {
        self.user("admin", "admin").await
    }

    async fn issued(&self, stem: &str, holder: &[String]) -> anyhow::Result<Option<TlsFiles>> {
        let Some(certs) = &self.certs else {
            return Ok(None);
        };
        let files = TlsFiles {
            ca: certs.join("ca.pem"),
            cert: certs.join(format!("{stem}.pem")),
            key: certs.join(format!("{stem}-key.pem")),
        };
        if !files.cert.exists() {
            let dir = certs.display().to_string();
            let mut args = vec!["certs", "issue", "--dir", &dir];
            args.extend(holder.iter().map(String::as_str));
            let out = self.drover(&args).await?;
            if !out.success {
                bail!("certs issue {stem} failed: {}", out.stderr);
            }
        }
        Ok(Some(files))
    }

    /// Starts a new controller `id` with `--join` on a fresh port and data dir, and
    /// returns its address (add it with `drover cluster add-node`).
    pub async fn start_joining_controller(&mut self, id: u64) -> anyhow::Result<String> {
        let addr = format!("127.0.0.1:{}", free_port()?);
        let data_dir = self.dir.path().join(format!("controller-{id}"));
        self.controllers.retain(|c| c.id != id);
        self.controllers.push(Controller {
            id,
            addr: addr.clone(),
            data_dir: data_dir.clone(),
            process: None,
        });
        let mut args: Vec<String> = vec![
            "server".into(),
            "--id".into(),
            id.to_string(),
            "--listen".into(),
            addr.clone(),
            "--advertise".into(),
            addr.clone(),
            "--join".into(),
            "--data-dir".into(),
            data_dir.display().to_string(),
        ];
        args.extend(self.controller_args.clone());
        match self.identity(&format!("controller-{id}")).await? {
            Some(tls) => args.extend(tls.flags()),
            None => args.push("--insecure".into()),
        }
        let log = data_dir.with_extension("log");
        let (process, _) =
            ChildProcess::spawn(&format!("controller-{id}"), &binary("drover"), &args, &log)
                .await?;
        self.controller_mut(id)?.process = Some(process);
        Ok(addr)
    }

    /// Runs the drover binary with exactly `args` (no endpoints, no TLS flags).
    pub async fn drover(&self, args: &[&str]) -> anyhow::Result<CliOutput> {
        let out = tokio::process::Command::new(binary("drover"))
            .args(args)
            .env_remove("DROVER_ENDPOINTS")
            .output()
            .await?;
        Ok(out.into())
    }

    /// Runs `drover <args> --endpoints … -o json` (`-o json` unless `args` has `-o`).
    pub async fn cli(&self, args: &[&str]) -> anyhow::Result<CliOutput> {
        self.cli_at(&self.endpoints(), args).await
    }

    /// Runs the CLI against the given endpoints only.
    pub async fn cli_at(&self, endpoints: &str, args: &[&str]) -> anyhow::Result<CliOutput> {
        let out = self.cli_command(endpoints, args).await?.output().await?;
        Ok(out.into())
    }

    /// The CLI command [`Cluster::cli_at`] runs, for a test that drives the process itself
    /// (its stdin, a console session).
    pub async fn cli_command(
        &self,
        endpoints: &str,
        args: &[&str],
    ) -> anyhow::Result<tokio::process::Command> {
        let mut cmd = tokio::process::Command::new(binary("drover"));
        cmd.args(args).args(["--endpoints", endpoints]);
        // JSON unless the test asks for another format.
        if !args.contains(&"-o") {
            cmd.args(["-o", "json"]);
        }
        if !args.contains(&"--timeout") {
            cmd.args(["--timeout", "20"]);
        }
        // A test that passes its own identity means it.
        if !args.contains(&"--cert") {
            if let Some(tls) = self.admin().await? {
                cmd.args(tls.flags());
            }
        }
        cmd.env_remove("DROVER_ENDPOINTS")
            .env_remove("DROVER_CA")
            .env_remove("DROVER_CERT")
            .env_remove("DROVER_KEY");
        Ok(cmd)
    }

    /// Waits, at most `within`, until VM `vm` is observed in state `observed` ("running",
    /// "shut off", ...); returns its JSON then.
    pub async fn wait_vm_state(
        &self,
        vm: &str,
        observed: &str,
        within: std::time::Duration,
    ) -> anyhow::Result<Value> {
        crate::wait_until(&format!("{vm} {observed}"), within, || async {
            let v = self.cli_json(&["vm", "get", vm]).await?;
            Ok((v["observed_state"] == observed).then_some(v))
        })
        .await
    }

    /// Runs the CLI and parses its JSON; a failing command is an `Err` with its stderr.
    pub async fn cli_json(&self, args: &[&str]) -> Result<Value, String> {
        let out = self.cli(args).await.map_err(|e| e.to_string())?;
        if !out.success {
            return Err(out.stderr);
        }
        serde_json::from_str(&out.stdout).map_err(|e| format!("bad JSON {:?}: {e}", out.stdout))
    }

    /// `drover vm create NAME --vcpus 1 --memory-mib 64 --stopped` through `endpoints`;
    /// an error carries the CLI's stderr.
    pub async fn create_stopped_vm_at(&self, endpoints: &str, name: &str) -> anyhow::Result<()> {
        let args = [
            "vm",
            "create",
            name,
            "--vcpus",
            "1",
            "--memory-mib",
            "64",
            "--stopped",
        ];
        let out = self.cli_at(endpoints, &args).await?;
        if !out.success {
            bail!("vm create {name} via {endpoints}: {}", out.stderr);
        }
        Ok(())
    }

    /// [`Cluster::create_stopped_vm_at`] through every controller.
    pub async fn create_stopped_vm(&self, name: &str) -> anyhow::Result<()> {
        self.create_stopped_vm_at(&self.endpoints(), name).await
    }

    /// Waits until the cluster reports a leader other than `not`; returns its id.
    pub async fn wait_for_leader(&self, not: Option<u64>) -> anyhow::Result<u64> {
        wait_until("a leader", Duration::from_secs(30), || async {
            let s = self.cli_json(&["cluster", "status"]).await?;
            let leader = s["leader_id"].as_u64();
            let leading = s["members"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|m| m["role"] == "leader" && m["id"].as_u64() == leader);
            Ok(leader.filter(|l| leading && Some(*l) != not))
        })
        .await
    }

    /// The domains hostd on `host` manages, straight from its gRPC API.
    pub async fn domains(&self, host: &str) -> anyhow::Result<Vec<Domain>> {
        let agent = self.agent(host)?;
        let probe = self.probe().await?;
        probe.domains(&agent.addr).await
    }

    /// A way to ask agents what they run that a partition does not cut (see [`Probe`]).
    pub async fn probe(&self) -> anyhow::Result<Probe> {
        // As a controller would: hostd serves only holders of a cluster certificate.
        let tls = match self.identity("controller-1").await? {
            Some(files) => Some(files.load()?),
            None => None,
        };
        Ok(Probe { tls })
    }

    /// Every agent's name and address, killed ones included.
    pub fn agent_addrs(&self) -> Vec<(String, String)> {
        self.agents
            .iter()
            .map(|a| (a.name.clone(), a.addr.clone()))
            .collect()
    }
}

/// The test's own line to the agents. It connects from 127.0.0.2, while controllers
/// connect from 127.0.0.1, so a partition that drops the controllers' traffic
/// ([`crate::partition`]) still lets the test see what the cut-off host runs.
#[derive(Debug, Clone)]
pub struct Probe {
    tls: Option<drover_proto::transport::Tls>,
}

/// The source address of the test's probes; controllers use 127.0.0.1.
pub const PROBE_SOURCE: std::net::IpAddr =
    std::net::IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));

impl Probe {
    pub async fn domains(&self, addr: &str) -> anyhow::Result<Vec<Domain>> {
        let channel = endpoint(addr, self.tls.as_ref())?
            .local_address(Some(PROBE_SOURCE))
            .connect_timeout(Duration::from_millis(500))
            .timeout(Duration::from_secs(2))
            .connect()
            .await?;
        let mut client = HostAgentClient::new(channel);
        Ok(client
            .list_domains(ListDomainsRequest {})
            .await?
            .into_inner()
            .domains)
    }
}
