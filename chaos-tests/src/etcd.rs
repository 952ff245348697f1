//! A 3-member etcd cluster on loopback, from Debian's `etcd-server` (3.4), for the
//! side-by-side write benchmark: what a user would pick instead of drover's replicated
//! store, on the same machine, same disk and same load generator. Each member has its own
//! data directory (fsync on, etcd's default timers). Dropping [`EtcdCluster`] kills the
//! members by PID.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context as _;

use crate::process::ChildProcess;
use crate::{free_port, wait_until};

/// Where Debian puts the server.
const ETCD: &str = "/usr/bin/etcd";

pub struct EtcdCluster {
    pub members: Vec<EtcdMember>,
}

pub struct EtcdMember {
    pub name: String,
    /// `127.0.0.1:PORT` clients connect to.
    pub client_addr: String,
    pub process: ChildProcess,
}

/// Why etcd cannot run here, if it cannot (`scripts/deps.sh` installs it).
pub fn available() -> Result<(), String> {
    if Path::new(ETCD).exists() {
        Ok(())
    } else {
        Err(format!("{ETCD} is missing: install Debian's etcd-server"))
    }
}

impl EtcdCluster {
    /// Starts `n` members with their data under `dir`; returns once each answers.
    pub async fn start(dir: &Path, n: usize) -> anyhow::Result<Self> {
        available().map_err(anyhow::Error::msg)?;
        let ports = (0..n)
            .map(|_| Ok((free_port()?, free_port()?)))
            .collect::<anyhow::Result<Vec<(u16, u16)>>>()?;
        let initial = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("e{}=http://127.0.0.1:{peer}", i + 1))
            .collect::<Vec<_>>()
            .join(",");
        let token = format!("drover-bench-{}", std::process::id());
        let mut members = Vec::new();
        for (i, (client, peer)) in ports.iter().enumerate() {
            let name = format!("e{}", i + 1);
            let data: PathBuf = dir.join(&name);
            let args: Vec<String> = [
                "--name",
                &name,
                "--data-dir",
                &data.display().to_string(),
                "--listen-client-urls",
                &format!("http://127.0.0.1:{client}"),
                "--advertise-client-urls",
                &format!("http://127.0.0.1:{client}"),
                "--listen-peer-urls",
                &format!("http://127.0.0.1:{peer}"),
                "--initial-advertise-peer-urls",
                &format!("http://127.0.0.1:{peer}"),
                "--initial-cluster",
                &initial,
                "--initial-cluster-state",
                "new",
                "--initial-cluster-token",
                &token,
                "--logger",
                "zap",
            ]
            .map(String::from)
            .to_vec();
            let log = dir.join(format!("{name}.log"));
            let process = ChildProcess::spawn_logged(&name, Path::new(ETCD), &args, &log)?;
            members.push(EtcdMember {
                name,
                client_addr: format!("127.0.0.1:{client}"),
                process,
            });
        }
        let cluster = Self { members };
        for m in &cluster.members {
            wait_until(
                &format!("{} to answer", m.name),
                Duration::from_secs(30),
                || async { Ok(cluster.status(&m.client_addr).await.ok()) },
            )
            .await
            .with_context(|| format!("see {}", dir.join(format!("{}.log", m.name)).display()))?;
        }
        Ok(cluster)
    }

    /// One member's view: (its id, the leader's id, the Raft term).
    pub async fn status(&self, addr: &str) -> Result<(u64, u64, u64), String> {
        let mut client = connect(addr).await?;
        let s = client.status().await.map_err(|e| e.to_string())?;
        let id = s.header().map(|h| h.member_id()).unwrap_or_default();
        Ok((id, s.leader(), s.raft_term()))
    }

    /// The leader's client address and the current term, once there is a leader.
    pub async fn leader(&self) -> anyhow::Result<(String, u64)> {
        wait_until("an etcd leader", Duration::from_secs(30), || async {
            for m in &self.members {
                if let Ok((id, leader, term)) = self.status(&m.client_addr).await {
                    if id == leader && leader != 0 {
                        return Ok(Some((m.client_addr.clone(), term)));
                    }
                }
            }
            Ok(None)
        })
        .await
    }

    /// The highest term any member reports.
    pub async fn term(&self) -> u64 {
        let mut term = 0;
        for m in &self.members {
            if let Ok((_, _, t)) = self.status(&m.client_addr).await {
                term = term.max(t);
            }
        }
        term
    }
}

/// A client with its own connection to `addr` only.
pub async fn connect(addr: &str) -> Result<etcd_client::Client, String> {
    let options = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_millis(500))
        .with_timeout(Duration::from_secs(5));
    etcd_client::Client::connect([format!("http://{addr}")], Some(options))
        .await
        .map_err(|e| e.to_string())
}
