//! Building blocks of the HA tests: a cluster with HA and non-HA VMs and a chosen victim
//! host, waits for VMs to run elsewhere, and the never-twice assertion.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use serde_json::Value;

use crate::{wait_until, Cluster, ClusterSpec, Samples};

/// Fast lease timings for the HA tests: failover after ~2.5 s instead of ~7 s.
pub const FAST: [&str; 6] = [
    "--heartbeat-interval-ms",
    "200",
    "--lease-ttl-ms",
    "1500",
    "--lease-margin-ms",
    // The margin must cover the fence's own latency (100 ms timer + a destroy) even on a
    // loaded 2-core CI machine; a thinner one would make the ordering checks flaky for
    // a real reason.
    "1000",
];

pub fn spec(controller_args: &[&str]) -> ClusterSpec {
    ClusterSpec {
        hosts: 3,
        controller_args: controller_args.iter().map(|s| s.to_string()).collect(),
        ..ClusterSpec::default()
    }
}

pub async fn create(cluster: &Cluster, name: &str, ha: Option<i32>) -> anyhow::Result<()> {
    let mut args = vec!["vm", "create", name, "--vcpus", "1", "--memory-mib", "64"];
    let priority;
    if let Some(p) = ha {
        priority = p.to_string();
        args.extend(["--ha", "--ha-priority", &priority]);
    }
    let vm = cluster.cli_json(&args).await.map_err(anyhow::Error::msg)?;
    anyhow::ensure!(vm["ha"] == ha.is_some(), "ha flag round trip: {vm}");
    Ok(())
}

/// Every VM by name, once all of `names` are observed running.
pub async fn all_running(
    cluster: &Cluster,
    names: &[String],
    within: Duration,
) -> anyhow::Result<BTreeMap<String, Value>> {
    wait_until("VMs running", within, || async {
        let vms = cluster.cli_json(&["vm", "list"]).await?;
        let by_name: BTreeMap<String, Value> = vms
            .as_array()
            .ok_or("vm list is not an array")?
            .iter()
            .map(|v| {
                (
                    v["name"].as_str().unwrap_or_default().to_string(),
                    v.clone(),
                )
            })
            .collect();
        let ready = names.iter().all(|n| {
            by_name
                .get(n)
                .is_some_and(|v| v["observed_state"] == "running")
        });
        Ok(ready.then_some(by_name))
    })
    .await
}

/// Creates one non-HA and several HA VMs, and picks as victim the host of the non-HA one,
/// adding HA VMs until the victim runs at least one.
pub async fn populate(cluster: &Cluster) -> anyhow::Result<(String, Vec<String>)> {
    create(cluster, "plain", None).await?;
    let mut names = vec!["plain".to_string()];
    for i in 1..=4 {
        create(cluster, &format!("ha-{i}"), Some(i % 3)).await?;
        names.push(format!("ha-{i}"));
    }
    let mut vms = all_running(cluster, &names, Duration::from_secs(60)).await?;
    let victim = vms["plain"]["host"]
        .as_str()
        .context("plain is placed")?
        .to_string();
    let mut next = 5;
    while !vms
        .values()
        .any(|v| v["ha"] == true && v["host"] == victim.as_str())
    {
        anyhow::ensure!(next < 12, "no HA VM ever landed on {victim}: {vms:?}");
        create(cluster, &format!("ha-{next}"), Some(0)).await?;
        names.push(format!("ha-{next}"));
        next += 1;
        vms = all_running(cluster, &names, Duration::from_secs(20)).await?;
    }
    let on_victim = vms
        .values()
        .filter(|v| v["ha"] == true && v["host"] == victim.as_str())
        .map(|v| v["name"].as_str().unwrap_or_default().to_string())
        .collect();
    eprintln!("victim {victim}; its HA VMs {on_victim:?}; all {names:?}");
    Ok((victim, on_victim))
}

/// Waits until every VM in `moved` runs on a host other than `victim` with a newer
/// generation, and returns the VMs.
pub async fn moved_elsewhere(
    cluster: &Cluster,
    victim: &str,
    moved: &[String],
    within: Duration,
) -> anyhow::Result<BTreeMap<String, Value>> {
    wait_until("HA VMs running elsewhere", within, || async {
        let mut out = BTreeMap::new();
        for name in moved {
            let vm = cluster.cli_json(&["vm", "get", name]).await?;
            if vm["observed_state"] != "running" || vm["host"] == victim {
                return Ok(None);
            }
            out.insert(name.clone(), vm);
        }
        Ok(Some(out))
    })
    .await
}

pub async fn host_json(cluster: &Cluster, name: &str) -> Result<Value, String> {
    cluster.cli_json(&["host", "get", name]).await
}

/// The port `host`'s hostd listens on (what a partition cuts).
pub fn agent_port(cluster: &Cluster, host: &str) -> anyhow::Result<u16> {
    cluster
        .agent(host)?
        .addr
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("{host}'s port"))
}

pub fn assert_never_twice(samples: &Samples) {
    if let Some((sample, vm)) = samples.twice() {
        panic!(
            "{vm} was active on several hosts at once: {:?}",
            sample.active[vm]
        );
    }
    // A round before the fault (taken by `Sampler::start`) and some during it.
    assert!(
        samples.0.len() >= 3,
        "the sampler must have sampled: {}",
        samples.0.len()
    );
}

/// After a partition: heals it, waits until `victim` is trusted again, stops the sampler,
/// and checks that no VM ran twice and that each of `moved`'s copies on `victim` was gone
/// before its replacement appeared. Returns the samples for further checks.
pub async fn heal_and_check_fenced_first(
    cluster: &Cluster,
    cut: crate::partition::Partition,
    sampler: crate::Sampler,
    victim: &str,
    moved: &[String],
    cut_at: std::time::Instant,
) -> anyhow::Result<Samples> {
    cut.heal()?;
    wait_until("victim up again", Duration::from_secs(30), || async {
        let h = host_json(cluster, victim).await?;
        Ok((h["health"] == "up").then_some(()))
    })
    .await?;
    let samples = sampler.finish().await?;
    assert_never_twice(&samples);
    for vm in moved {
        let fenced = samples
            .last_active_on(vm, victim)
            .with_context(|| format!("{vm} was seen on {victim}"))?;
        let replaced = samples
            .first_active_elsewhere(vm, victim)
            .with_context(|| format!("{vm} was seen elsewhere"))?;
        assert!(
            fenced < replaced,
            "{vm}: the copy on {victim} was still active when its replacement started"
        );
        eprintln!(
            "{vm}: fenced {:?} after the cut, replaced {:?} later",
            fenced.saturating_duration_since(cut_at),
            replaced - fenced
        );
    }
    Ok(samples)
}

/// The cluster's events about `host`, oldest first (`drover event list --host`).
pub async fn host_events(cluster: &Cluster, host: &str) -> anyhow::Result<Vec<Value>> {
    let v = cluster
        .cli_json(&["event", "list", "--host", host, "--limit", "0"])
        .await
        .map_err(anyhow::Error::msg)?;
    Ok(v.as_array().cloned().unwrap_or_default())
}

/// Waits until the event log has an event about `host` of `kind` whose message contains
/// `text` (and, when given, about `vm`).
pub async fn wait_event(
    cluster: &Cluster,
    host: &str,
    kind: &str,
    vm: Option<&str>,
    text: &str,
) -> anyhow::Result<Value> {
    wait_until(
        &format!("a {kind} event about {host}"),
        Duration::from_secs(10),
        || async {
            let events = host_events(cluster, host)
                .await
                .map_err(|e| e.to_string())?;
            Ok(events.into_iter().find(|e| {
                e["kind"] == kind
                    && vm.is_none_or(|v| e["vm"] == v)
                    && e["message"].as_str().is_some_and(|m| m.contains(text))
            }))
        },
    )
    .await
}
