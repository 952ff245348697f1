//! One chaos run: the multi-host rig with a watchdog beside every hostd, the libvirt
//! sampler, the workload, the seeded schedule of faults, then the checkers. Everything a
//! post-mortem needs goes into the run's directory: the seed, the schedule, the fault log,
//! the history, the report, and (when the run fails) every process's log.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;
use tokio::sync::watch;

use super::faults::{self, Watchdogs};
use super::history::{register_events, History, Outcome};
use super::load;
use super::schedule::{schedule, Mix};
use super::verdicts::{lost_writes, Final};
use super::{linearizable, verdicts};
use crate::multihost::Rig;
use crate::Sampler;

#[derive(Debug, Clone)]
pub struct ChaosConfig {
    pub seed: u64,
    pub duration: Duration,
    pub mix: Mix,
    pub hosts: usize,
    /// Where the run's files go (created).
    pub out: PathBuf,
    /// How long the healed cluster gets to be live again.
    pub liveness_bound: Duration,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct ChaosReport {
    pub seed: u64,
    pub duration_s: u64,
    pub faults: BTreeMap<String, u64>,
    /// Operation kind → (ok, failed, unknown).
    pub operations: BTreeMap<String, (u64, u64, u64)>,
    /// Events the cluster recorded (the newest of its bounded log): hosts declared dead,
    /// VMs restarted elsewhere, live migrations done.
    pub hosts_dead: u64,
    pub failovers: u64,
    pub migrations: u64,
    pub never_twice_samples: usize,
    pub register_ops: usize,
    pub live_after_ms: Option<u64>,
    pub violations: Vec<String>,
}

/// Runs the chaos run; `Ok` with the report whether or not it found violations (the
/// caller decides), `Err` when the run itself could not be carried out.
pub async fn run(cfg: &ChaosConfig) -> anyhow::Result<ChaosReport> {
    std::fs::create_dir_all(&cfg.out)?;
    let plan = schedule(cfg.seed, cfg.duration, cfg.mix, 3, cfg.hosts);
    write_json(&cfg.out.join("schedule.json"), &plan)?;
    std::fs::write(cfg.out.join("seed"), cfg.seed.to_string())?;
    let mut fault_log = String::new();

    let mut rig = Rig::start_distinct(cfg.hosts, &["--domain-type", "qemu"]).await?;
    let result = drive(cfg, &mut rig, &plan, &mut fault_log).await;
    std::fs::write(cfg.out.join("faults.log"), &fault_log)?;
    let failed = !matches!(&result, Ok(r) if r.violations.is_empty());
    if failed {
        keep_logs(&rig, &cfg.out);
    }
    let report = result?;
    write_json(&cfg.out.join("report.json"), &report)?;
    Ok(report)
}

async fn drive(
    cfg: &ChaosConfig,
    rig: &mut Rig,
    plan: &[super::schedule::Planned],
    fault_log: &mut String,
) -> anyhow::Result<ChaosReport> {
    let mut watchdogs = Watchdogs::new();
    for (i, (host, _)) in rig.uris().into_iter().enumerate() {
        watchdogs.insert(i + 1, rig.cluster.start_watchdog(&host).await?);
    }
    let endpoints: Vec<String> = rig.cluster.addrs();
    let admin = load::client(&endpoints)?;
    let start = Instant::now();
    let history = Arc::new(History::new(start));
    let initial = load::read(0, &admin, &history)
        .await
        .context("the register's first read")?;
    let sampler = Sampler::start_running(&rig.uris()).await?;
    let (stop_load, load_stopped) = watch::channel(false);
    let workload = tokio::spawn(load::run(
        endpoints.clone(),
        cfg.seed,
        format!("c{}", cfg.seed % 100_000),
        Arc::clone(&history),
        load_stopped,
    ));

    let mut report = ChaosReport {
        seed: cfg.seed,
        duration_s: cfg.duration.as_secs(),
        ..ChaosReport::default()
    };
    for p in plan {
        tokio::time::sleep_until((start + p.at).into()).await;
        let leader = admin
            .cluster_status()
            .await
            .ok()
            .map(|s| s.leader_id)
            .filter(|l| *l != 0);
        let line = match faults::inject(rig, &watchdogs, &p.fault, leader).await {
            Ok((active, target)) => {
                *report.faults.entry(p.fault.kind().into()).or_default() += 1;
                let line = format!(
                    "{:>7.1}s {} {target} for {} ms\n",
                    start.elapsed().as_secs_f64(),
                    p.fault.kind(),
                    p.hold.as_millis()
                );
                tokio::time::sleep(p.hold).await;
                faults::heal(rig, active)
                    .await
                    .with_context(|| format!("healing {}", p.fault.kind()))?;
                line
            }
            Err(e) => format!(
                "{:>7.1}s {} not injected: {e:#}\n",
                start.elapsed().as_secs_f64(),
                p.fault.kind()
            ),
        };
        eprint!("{line}");
        fault_log.push_str(&line);
    }
    tokio::time::sleep_until((start + cfg.duration).into()).await;
    stop_load.send_replace(true);
    workload.await??;

    // Liveness: the healed cluster must have a leader, run every VM meant to run, and
    // finish every operation within the bound.
    let healed = Instant::now();
    let mut problems = Vec::new();
    while healed.elapsed() < cfg.liveness_bound {
        problems = live_problems(&admin).await;
        if problems.is_empty() {
            report.live_after_ms = Some(healed.elapsed().as_millis() as u64);
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    for p in &problems {
        report.violations.push(format!(
            "not live {} s after the last heal: {p}",
            cfg.liveness_bound.as_secs()
        ));
    }
    load::read(0, &admin, &history).await;

    let samples = sampler.finish().await?;
    report.never_twice_samples = samples.0.len();
    if let Some((s, vm)) = samples.twice() {
        report
            .violations
            .push(format!("never twice: {vm} ran on {:?}", s.active.get(vm)));
    }
    let ops = history.ops();
    write_history(&cfg.out.join("history.jsonl"), &ops)?;
    for o in &ops {
        let e = report.operations.entry(o.kind.into()).or_default();
        match &o.outcome {
            Some(Outcome::Ok) => e.0 += 1,
            Some(Outcome::Fail(_)) => e.1 += 1,
            Some(Outcome::Unknown(_)) | None => e.2 += 1,
        }
    }
    let vms = final_vms(&admin).await?;
    report.violations.extend(lost_writes(&ops, &vms));
    let events = register_events(&ops);
    report.register_ops = events.len();
    if let Err(e) = linearizable::check(initial, &events) {
        report.violations.push(format!("register: {e}"));
    }
    if let Ok(ev) = admin.events(Default::default()).await {
        let count = |kind: &str| ev.events.iter().filter(|e| e.kind == kind).count() as u64;
        report.hosts_dead = count("host-dead");
        report.failovers = count("failed-over");
        report.migrations = count("migrated");
        let lines: Vec<String> = ev
            .events
            .iter()
            .map(|e| format!("{} {} {} {} {}", e.at_ms, e.kind, e.host, e.vm, e.message))
            .collect();
        std::fs::write(cfg.out.join("events.log"), lines.join("\n"))?;
    }
    drop(watchdogs);
    Ok(report)
}

async fn final_vms(c: &drover_control::client::Client) -> anyhow::Result<BTreeMap<String, Final>> {
    let vms = c.vms(false).await?.value;
    Ok(vms
        .into_iter()
        .map(|v| {
            let f = Final {
                desired: drover_control::cli::output::desired(v.desired_state).into(),
                observed: drover_control::cli::output::observed(v.observed_state).into(),
                ha: v.ha,
            };
            (v.name, f)
        })
        .collect())
}

async fn live_problems(c: &drover_control::client::Client) -> Vec<String> {
    let leader = match c.cluster_status().await {
        Ok(s) if s.leader_id != 0 => Some(s.leader_id),
        _ => None,
    };
    let Ok(vms) = final_vms(c).await else {
        return vec!["cannot list VMs".into()];
    };
    let running: Vec<String> = match c.operations(true, false).await {
        Ok(ops) => ops
            .value
            .iter()
            .map(|o| format!("{} {}", o.kind, o.id))
            .collect(),
        Err(e) => vec![format!("cannot list operations: {e}")],
    };
    verdicts::not_live(leader, &vms, &running)
}

fn write_json<T: Serialize>(path: &Path, value: &T) -> anyhow::Result<()> {
    std::fs::write(path, serde_json::to_vec_pretty(value)?)?;
    Ok(())
}

fn write_history(path: &Path, ops: &[super::history::Op]) -> anyhow::Result<()> {
    let mut out = String::new();
    for o in ops {
        out.push_str(&serde_json::to_string(o)?);
        out.push('\n');
    }
    std::fs::write(path, out)?;
    Ok(())
}

/// Copies every process's log (controllers, hostds, watchdogs, libvirtds) into `out`.
fn keep_logs(rig: &Rig, out: &Path) {
    let logs = out.join("logs");
    let _ = std::fs::create_dir_all(&logs);
    let mut dirs = vec![rig.cluster.dir.path().to_path_buf()];
    dirs.extend(rig.lv.hosts().iter().map(|h| h.state_dir.clone()));
    for dir in dirs {
        copy_logs(&dir, &logs, 0);
    }
}

fn copy_logs(dir: &Path, to: &Path, depth: usize) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        if path.is_dir() && depth < 3 {
            copy_logs(&path, to, depth + 1);
        } else if path.extension().is_some_and(|x| x == "log") {
            let name = path
                .strip_prefix(dir.parent().unwrap_or(dir))
                .map(|p| {
                    p.to_string_lossy()
                        .trim_start_matches('.')
                        .replace('/', "_")
                })
                .unwrap_or_default();
            let _ = std::fs::copy(&path, to.join(name));
        }
    }
}
