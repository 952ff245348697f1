//! A whole drover cluster as child processes: controllers (`drover server`) bootstrapped
//! with `--initial-cluster`, and hostd agents on libvirt, registered as hosts. Tests drive
//! it through the real CLI (`-o json`) and check hosts through the agents' own gRPC API.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};
use drover_proto::agent::v1::host_agent_client::HostAgentClient;
use drover_proto::agent::v1::{Domain, ListDomainsRequest};
use serde_json::Value;
use tempfile::TempDir;

use crate::process::{binary, ChildProcess};
use crate::wait::wait_until;

#[derive(Debug, Clone)]
pub struct ClusterSpec {
    pub controllers: u64,
    pub hosts: u64,
    pub libvirt_uri: String,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        Self {
            controllers: 3,
            hosts: 2,
            libvirt_uri: "test:///default".into(),
        }
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
    pub addr: String,
    pub process: Option<ChildProcess>,
}

/// What one CLI invocation did.
#[derive(Debug)]
pub struct CliOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

#[derive(Debug)]
pub struct Cluster {
    pub dir: TempDir,
    pub controllers: Vec<Controller>,
    pub agents: Vec<Agent>,
    initial_cluster: String,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Cluster {
    /// Starts the controllers, waits for a leader, starts and registers the agents, and
    /// waits until every host is up.
    pub async fn start(spec: ClusterSpec) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut controllers = Vec::new();
        for id in 1..=spec.controllers {
            controllers.push(Controller {
                id,
                addr: format!("127.0.0.1:{}", free_port()?),
                data_dir: dir.path().join(format!("controller-{id}")),
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
        };
        for id in 1..=spec.controllers {
            cluster.start_controller(id).await?;
        }
        cluster.wait_for_leader(None).await?;
        for i in 1..=spec.hosts {
            let name = format!("h{i}");
            let args: Vec<String> = vec![
                "--name".into(),
                name.clone(),
                "--listen".into(),
                "127.0.0.1:0".into(),
                "--libvirt-uri".into(),
                spec.libvirt_uri.clone(),
                "--data-dir".into(),
                cluster
                    .dir
                    .path()
                    .join(format!("hostd-{name}"))
                    .display()
                    .to_string(),
            ];
            let log = cluster.dir.path().join(format!("hostd-{name}.log"));
            let (process, addr) =
                ChildProcess::spawn(&format!("hostd-{name}"), &binary("hostd"), &args, &log)
                    .await?;
            let out = cluster
                .cli(&["host", "add", &name, "--address", &addr])
                .await?;
            if !out.success {
                bail!("host add {name} failed: {}", out.stderr);
            }
            cluster.agents.push(Agent {
                name,
                addr,
                process: Some(process),
            });
        }
        wait_until("all hosts up", Duration::from_secs(20), || async {
            let hosts = cluster.cli_json(&["host", "list"]).await?;
            let all_up = hosts
                .as_array()
                .is_some_and(|hs| hs.iter().all(|h| h["health"] == "up"));
            Ok(all_up.then_some(()))
        })
        .await?;
        Ok(cluster)
    }

    /// (Re)starts controller `id` on its address and data dir.
    pub async fn start_controller(&mut self, id: u64) -> anyhow::Result<()> {
        let initial = self.initial_cluster.clone();
        let c = self.controller_mut(id)?;
        let args: Vec<String> = vec![
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
        let log = c.data_dir.with_extension("log");
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
            .map(|c| c.addr.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Runs `drover <args> --endpoints … -o json`.
    pub async fn cli(&self, args: &[&str]) -> anyhow::Result<CliOutput> {
        self.cli_at(&self.endpoints(), args).await
    }

    /// Runs the CLI against the given endpoints only.
    pub async fn cli_at(&self, endpoints: &str, args: &[&str]) -> anyhow::Result<CliOutput> {
        let mut cmd = tokio::process::Command::new(binary("drover"));
        cmd.args(args)
            .args(["--endpoints", endpoints, "-o", "json"]);
        if !args.contains(&"--timeout") {
            cmd.args(["--timeout", "20"]);
        }
        let out = cmd.env_remove("DROVER_ENDPOINTS").output().await?;
        Ok(CliOutput {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    /// Runs the CLI and parses its JSON; a failing command is an `Err` with its stderr.
    pub async fn cli_json(&self, args: &[&str]) -> Result<Value, String> {
        let out = self.cli(args).await.map_err(|e| e.to_string())?;
        if !out.success {
            return Err(out.stderr);
        }
        serde_json::from_str(&out.stdout).map_err(|e| format!("bad JSON {:?}: {e}", out.stdout))
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
        let agent = self
            .agents
            .iter()
            .find(|a| a.name == host)
            .with_context(|| format!("no agent {host}"))?;
        let mut client = HostAgentClient::connect(format!("http://{}", agent.addr)).await?;
        Ok(client
            .list_domains(ListDomainsRequest {})
            .await?
            .into_inner()
            .domains)
    }
}
