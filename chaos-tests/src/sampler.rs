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
    /// The newest round, for tests that wait until the sampler has seen something.
    latest: watch::Receiver<Option<Sample>>,
    task: JoinHandle<Samples>,
}

/// Where one host's active domains are read from.
#[derive(Debug, Clone)]
enum Source {
    /// hostd's ListDomains, over the probe.
    Agent(String),
    /// libvirt itself (`virsh list`): for a host whose hostd may be frozen.
    Libvirt(String),
    /// libvirt, running domains only: during a live migration the destination holds a
    /// paused copy by design; what must never happen is two *running* copies.
    LibvirtRunning(String),
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
        Self::spawn(Some(probe), sources).await
    }

    async fn spawn(
        probe: Option<Probe>,
        sources: Vec<(String, Source)>,
    ) -> anyhow::Result<Sampler> {
        let (stop, mut stopped) = watch::channel(false);
        // One round before returning, so every run has a sample from before the fault.
        let first = round(probe.as_ref(), &sources).await;
        let (publish, latest) = watch::channel(Some(first.clone()));
        let task = tokio::spawn(async move {
            let mut samples = Samples(vec![first]);
            loop {
                let sample = round(probe.as_ref(), &sources).await;
                publish.send_replace(Some(sample.clone()));
                samples.0.push(sample);
                tokio::select! {
                    _ = tokio::time::sleep(ROUND) => {}
                    _ = stopped.wait_for(|s| *s) => return samples,
                }
            }
        });
        Ok(Sampler { stop, latest, task })
    }

    /// Waits, at most `within`, for a round in which `vm` is active on a host other than
    /// `not`: a round is slow under load (a `virsh` per libvirt host), so a move the state
    /// already shows may not have been sampled yet.
    pub async fn wait_active_elsewhere(
        &self,
        vm: &str,
        not: &str,
        within: Duration,
    ) -> anyhow::Result<()> {
        let mut latest = self.latest.clone();
        let seen = latest.wait_for(|s| {
            s.as_ref().is_some_and(|s| {
                s.active
                    .get(vm)
                    .is_some_and(|hosts| hosts.iter().any(|h| h != not))
            })
        });
        // The guard `wait_for` returns borrows `latest`: drop it before matching.
        let outcome = tokio::time::timeout(within, seen)
            .await
            .map(|r| r.map(drop));
        match outcome {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => anyhow::bail!("the sampler stopped"),
            Err(_) => anyhow::bail!("no round saw {vm} active off {not} within {within:?}"),
        }
    }

    /// Samples `hosts` (name, libvirt URI) straight from libvirt, counting only running
    /// domains: the check for live migration (see [`Source::LibvirtRunning`]).
    pub async fn start_running(hosts: &[(String, String)]) -> anyhow::Result<Sampler> {
        let sources: Vec<(String, Source)> = hosts
            .iter()
            .map(|(name, uri)| (name.clone(), Source::LibvirtRunning(uri.clone())))
            .collect();
        let probe = None;
        Self::spawn(probe, sources).await
    }

    pub async fn finish(self) -> anyhow::Result<Samples> {
        self.stop.send_replace(true);
        Ok(self.task.await?)
    }
}

async fn round(probe: Option<&Probe>, sources: &[(String, Source)]) -> Sample {
    if sources
        .iter()
        .all(|(_, s)| matches!(s, Source::LibvirtRunning(_)))
        && sources.len() > 1
    {
        return bracketed_round(sources).await;
    }
    let at = Instant::now();
    let mut active: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (host, source) in sources {
        // A host that does not answer runs nothing we can see: killed with its
        // test-driver domains, or restarting.
        let names = match source {
            Source::Agent(addr) => match probe.map(|p| p.domains(addr)) {
                Some(call) => match call.await {
                    Ok(domains) => domains
                        .into_iter()
                        .filter(|d| matches!(d.state(), DomainState::Running | DomainState::Paused))
                        .map(|d| d.name)
                        .collect(),
                    Err(_) => continue,
                },
                None => continue,
            },
            Source::LibvirtRunning(uri) => match libvirt_list(uri, true).await {
                Ok(names) => names,
                Err(_) => continue,
            },
            Source::Libvirt(uri) => match libvirt_list(uri, false).await {
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

/// A round for the running-only check, which must not mistake a handover for a double
/// run: a migration pauses the source and resumes the destination within tens of
/// milliseconds, the time one `virsh list` takes, so "running at h1, then at h2" in one
/// sequential pass proves nothing. Hosts are asked twice in the same order; a VM counts
/// as running on two hosts only when one host saw it running *before and after* another
/// host saw it running — the one pattern a handover cannot produce (after a handover the
/// source never runs that copy again; after a failed one the destination never ran it).
async fn bracketed_round(sources: &[(String, Source)]) -> Sample {
    let at = Instant::now();
    let mut seen: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for (host, source) in sources.iter().chain(sources.iter()) {
        let Source::LibvirtRunning(uri) = source else {
            continue;
        };
        let Ok(names) = libvirt_list(uri, true).await else {
            continue;
        };
        for name in names {
            seen.entry(name).or_default().push(host);
        }
    }
    let active = seen
        .into_iter()
        .map(|(vm, hosts)| {
            let bracket = (0..hosts.len()).find_map(|i| {
                (i + 1..hosts.len()).find_map(|j| {
                    (j + 1..hosts.len())
                        .find(|&k| hosts[i] == hosts[k] && hosts[j] != hosts[i])
                        .map(|_| vec![hosts[i].to_string(), hosts[j].to_string()])
                })
            });
            let last = hosts
                .last()
                .map(|h| vec![h.to_string()])
                .unwrap_or_default();
            (vm, bracket.unwrap_or(last))
        })
        .collect();
    Sample { at, active }
}

/// The active (running or paused) domains libvirt at `uri` lists, or only the running
/// ones.
async fn libvirt_list(uri: &str, running_only: bool) -> anyhow::Result<Vec<String>> {
    let mut args = vec!["-c", uri, "list", "--name"];
    if running_only {
        args.push("--state-running");
    }
    let out = tokio::process::Command::new("virsh")
        .args(&args)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vm_active_on_two_hosts_in_one_round_is_caught() {
        let round = |pairs: &[(&str, &[&str])]| Sample {
            at: Instant::now(),
            active: pairs
                .iter()
                .map(|(vm, hosts)| {
                    (
                        vm.to_string(),
                        hosts.iter().map(|h| h.to_string()).collect(),
                    )
                })
                .collect(),
        };
        let clean = Samples(vec![round(&[("a", &["h1"])]), round(&[("a", &["h2"])])]);
        assert!(
            clean.twice().is_none(),
            "a move between rounds is no double run"
        );
        // The planted violation: in one round, a runs on h1 and h2.
        let double = Samples(vec![
            round(&[("a", &["h1"])]),
            round(&[("a", &["h1", "h2"])]),
        ]);
        assert_eq!(double.twice().map(|(_, vm)| vm), Some("a"));
    }
}
