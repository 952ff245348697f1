//! The chaos workload, through drover's own client as any user's would be: one client
//! keeps creating, starting, stopping, migrating and deleting small HA VMs; two more
//! write and read a register — the cluster's placement policy, one value encoded in its
//! two overcommit ratios ([`encode`]) — for the linearizability checker.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use drover_control::client::{Client, VmVerb};
use drover_proto::v1 as pb;
use tokio::sync::watch;

use super::history::{History, Outcome};
use super::rng::Rng;

/// The register's value `n` as (cpu, memory) overcommit ratios, both in range and never
/// below the defaults (4.0 and 1.0), so that the register never keeps a VM from being
/// placed; the defaults themselves read as 0.
pub fn encode(n: u64) -> (f64, f64) {
    (
        (400 + n / 300) as f64 / 100.0,
        (100 + n % 300) as f64 / 100.0,
    )
}

pub fn decode(cpu: f64, memory: f64) -> u64 {
    let c = (cpu * 100.0).round() as u64;
    let m = (memory * 100.0).round() as u64;
    c.saturating_sub(400) * 300 + m.saturating_sub(100)
}

pub fn client(endpoints: &[String]) -> anyhow::Result<Client> {
    Ok(Client::new(endpoints)?.with_deadline(Duration::from_secs(5)))
}

/// Runs the workload until `stop` turns true.
pub async fn run(
    endpoints: Vec<String>,
    seed: u64,
    prefix: String,
    history: Arc<History>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let next_value = Arc::new(AtomicU64::new(1));
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(lifecycle(
        client(&endpoints)?,
        Rng::new(seed ^ 0x5eed),
        prefix,
        Arc::clone(&history),
        stop.clone(),
    ));
    for c in 1..=2 {
        tasks.spawn(register(
            c,
            client(&endpoints)?,
            Rng::new(seed.wrapping_add(c as u64)),
            Arc::clone(&next_value),
            Arc::clone(&history),
            stop.clone(),
        ));
    }
    while let Some(done) = tasks.join_next().await {
        done?;
    }
    Ok(())
}

async fn pause(rng: &mut Rng, lo: u64, hi: u64) {
    tokio::time::sleep(Duration::from_millis(rng.range(lo, hi))).await;
}

async fn lifecycle(
    c: Client,
    mut rng: Rng,
    prefix: String,
    history: Arc<History>,
    stop: watch::Receiver<bool>,
) {
    let mut alive: Vec<String> = Vec::new();
    let mut made = 0;
    while !*stop.borrow() {
        pause(&mut rng, 200, 700).await;
        if alive.len() < 3 {
            made += 1;
            let name = format!("{prefix}-{made}");
            let i = history.invoke(0, "create", &name, None);
            let req = pb::CreateVmRequest {
                name: name.clone(),
                spec: Some(pb::VmSpec {
                    vcpus: 1,
                    memory_mib: 64,
                }),
                start: true,
                ha: true,
                ..Default::default()
            };
            let outcome = c
                .create_vm(req)
                .await
                .map_or_else(|e| Outcome::of(&e), |_| Outcome::Ok);
            if !matches!(outcome, Outcome::Fail(_)) {
                alive.push(name);
            }
            history.complete(i, outcome, None);
            continue;
        }
        let at = (rng.next_u64() % alive.len() as u64) as usize;
        let vm = alive[at].clone();
        let kind = match rng.range(0, 9) {
            0..=2 => "stop",
            3..=5 => "start",
            6..=8 => "migrate",
            _ => "delete",
        };
        let i = history.invoke(0, kind, &vm, None);
        let result = match kind {
            "stop" => c.vm_action(VmVerb::Stop, &vm).await.map(drop),
            "start" => c.vm_action(VmVerb::Start, &vm).await.map(drop),
            "migrate" => {
                let req = pb::MigrateVmRequest {
                    name: vm.clone(),
                    ..Default::default()
                };
                c.migrate_vm(req).await.map(drop)
            }
            _ => c
                .vm_action(VmVerb::Delete { keep_disks: false }, &vm)
                .await
                .map(drop),
        };
        let outcome = result.map_or_else(|e| Outcome::of(&e), |()| Outcome::Ok);
        if kind == "delete" && !matches!(outcome, Outcome::Fail(_)) {
            alive.remove(at);
        }
        history.complete(i, outcome, None);
    }
}

async fn register(
    id: usize,
    c: Client,
    mut rng: Rng,
    next_value: Arc<AtomicU64>,
    history: Arc<History>,
    stop: watch::Receiver<bool>,
) {
    while !*stop.borrow() {
        pause(&mut rng, 100, 400).await;
        if rng.range(0, 1) == 0 {
            let n = next_value.fetch_add(1, Ordering::Relaxed);
            let (cpu, memory) = encode(n);
            let i = history.invoke(id, "write", "", Some(n));
            let req = pb::PlacementPolicy {
                cpu_overcommit: cpu,
                memory_overcommit: memory,
                weigher: "spread".into(),
            };
            let outcome = c
                .set_placement(req)
                .await
                .map_or_else(|e| Outcome::of(&e), |_| Outcome::Ok);
            history.complete(i, outcome, None);
        } else {
            read(id, &c, &history).await;
        }
    }
}

/// One linearizable read of the register, recorded.
pub async fn read(id: usize, c: &Client, history: &History) -> Option<u64> {
    let i = history.invoke(id, "read", "", None);
    match c.placement().await {
        Ok(p) => {
            let v = decode(p.cpu_overcommit, p.memory_overcommit);
            history.complete(i, Outcome::Ok, Some(v));
            Some(v)
        }
        Err(e) => {
            history.complete(i, Outcome::of(&e), None);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_through_the_ratios_in_range() {
        for n in [0, 1, 299, 300, 12_345, 840_000] {
            let (c, m) = encode(n);
            assert_eq!(decode(c, m), n);
            assert!(
                (4.0..=32.0).contains(&c) && (1.0..=4.0).contains(&m),
                "{n}: {c} {m}"
            );
        }
        assert_eq!(decode(4.0, 1.0), 0, "the defaults are the register's start");
    }
}
