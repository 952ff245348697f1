//! The never-twice sampler: asks every agent, over and over, which domains it runs, and
//! keeps every answer with its time. A VM listed active (running or paused) by two hosts in
//! one round is the violation drover exists to prevent; [`Samples::twice`] finds it.
//!
//! Rounds are sequential per agent, so "one round" spans a few milliseconds; a VM that
//! moved within that window could in principle show on both. The checks here would report
//! that as a violation — on the strict side.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use drover_proto::agent::v1::DomainState;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::cluster::{Cluster, Probe};

const ROUND: Duration = Duration::from_millis(50);

/// One round: for each VM, the hosts that listed it active.
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Instant,
    pub active: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Default)]
pub struct Samples(pub Vec<Sample>);

impl Samples {
    /// The first round where a VM was active on two hosts.
    pub fn twice(&self) -> Option<(&Sample, &str)> {
        self.0.iter().find_map(|s| {
            s.active
                .iter()
                .find(|(_, hosts)| hosts.len() > 1)
                .map(|(vm, _)| (s, vm.as_str()))
        })
    }

    /// When `vm` was first seen active on a host other than `not`.
    pub fn first_active_elsewhere(&self, vm: &str, not: &str) -> Option<Instant> {
        self.0.iter().find_map(|s| {
            s.active
                .get(vm)
                .is_some_and(|hosts| hosts.iter().any(|h| h != not))
                .then_some(s.at)
        })
    }

    /// When `vm` was last seen active on `host`.
    pub fn last_active_on(&self, vm: &str, host: &str) -> Option<Instant> {
        self.0.iter().rev().find_map(|s| {
            s.active
                .get(vm)
                .is_some_and(|hosts| hosts.iter().any(|h| h == host))
                .then_some(s.at)
        })
    }
}

pub struct Sampler {
    stop: watch::Sender<bool>,
    task: JoinHandle<Samples>,
}

/// Where one host's active domains are read from.
#[derive(Debug, Clone)]
enum Source {
    /// hostd's ListDomains, over the probe.
    Agent(String),
    /// libvirt itself (`virsh list`): for a host whose hostd may be frozen.
    Libvirt(String),
}

impl Sampler {
    /// Starts sampling every agent of `cluster` (killed agents simply answer nothing).
    pub async fn start(cluster: &Cluster) -> anyhow::Result<Sampler> {
        Self::start_with(cluster, &[]).await
    }

    /// Like [`Sampler::start`], but reads the hosts named in `from_libvirt` straight from
    /// their libvirt (their hostd may be frozen; the guests are what matters).
    pub async fn start_with(cluster: &Cluster, from_libvirt: &[&str]) -> anyhow::Result<Sampler> {
        let probe = cluster.probe().await?;
        let mut sources = Vec::new();
        for (name, addr) in cluster.agent_addrs() {
            let source = if from_libvirt.contains(&name.as_str()) {
                Source::Libvirt(cluster.agent(&name)?.libvirt_uri.clone())
            } else {
                Source::Agent(addr)
            };
            sources.push((name, source));
        }
        let (stop, mut stopped) = watch::channel(false);
        // One round before returning, so every run has a sample from before the fault.
        let first = round(&probe, &sources).await;
        let task = tokio::spawn(async move {
            let mut samples = Samples(vec![first]);
            loop {
                samples.0.push(round(&probe, &sources).await);
                tokio::select! {
                    _ = tokio::time::sleep(ROUND) => {}
                    _ = stopped.wait_for(|s| *s) => return samples,
                }
            }
        });
        Ok(Sampler { stop, task })
    }

    pub async fn finish(self) -> anyhow::Result<Samples> {
        self.stop.send_replace(true);
        Ok(self.task.await?)
    }
}

async fn round(probe: &Probe, sources: &[(String, Source)]) -> Sample {
    let at = Instant::now();
    let mut active: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (host, source) in sources {
        // A host that does not answer runs nothing we can see: killed with its
        // test-driver domains, or restarting.
        let names = match source {
            Source::Agent(addr) => match probe.domains(addr).await {
                Ok(domains) => domains
                    .into_iter()
                    .filter(|d| matches!(d.state(), DomainState::Running | DomainState::Paused))
                    .map(|d| d.name)
                    .collect(),
                Err(_) => continue,
            },
            Source::Libvirt(uri) => match libvirt_active(uri).await {
                Ok(names) => names,
                Err(_) => continue,
            },
        };
        for name in names {
            active.entry(name).or_default().push(host.clone());
        }
    }
    Sample { at, active }
}

/// The active (running or paused) domains libvirt at `uri` lists.
async fn libvirt_active(uri: &str) -> anyhow::Result<Vec<String>> {
    let out = tokio::process::Command::new("virsh")
        .args(["-c", uri, "list", "--name"])
        .output()
        .await?;
    anyhow::ensure!(out.status.success(), "virsh list failed");
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect())
}
