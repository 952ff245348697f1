//! `chaos`: drover against a seeded schedule of faults for a long while, judged by the
//! checkers (never twice, no acknowledged write lost, a linearizable register, liveness
//! after healing). A thin binary over [`drover_chaos_tests::chaos`]; the seed is printed
//! and replays the same schedule. A failing run leaves its history, schedule, fault log,
//! report and every process's log in one directory and says where.
//!
//! `cargo build --bins && cargo run -p drover-chaos-tests --bin chaos -- --duration 30m`
//! (root, libvirt, iptables: the multi-host rig with real QEMU guests).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use drover_chaos_tests::chaos::{self, ChaosConfig, Mix};
use drover_chaos_tests::libvirt_hosts::LibvirtHosts;

#[derive(Parser, Debug)]
#[command(about = "A long seeded chaos run against a real drover cluster")]
struct Args {
    /// How long faults are injected: 90s, 5m, 30m, 1h.
    #[arg(long, default_value = "30m")]
    duration: String,
    /// Replays a run; random when not given.
    #[arg(long)]
    seed: Option<u64>,
    /// ci: kill, pause, leader and host partitions, full restarts; long: every fault.
    #[arg(long, default_value = "long")]
    profile: String,
    #[arg(long, default_value_t = 2)]
    hosts: usize,
    /// Where the run's files go; /tmp/drover-chaos-SEED by default.
    #[arg(long)]
    out: Option<PathBuf>,
}

fn duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: u64 = n.parse().map_err(|_| format!("bad duration {s:?}"))?;
    let secs = match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => return Err(format!("bad duration unit in {s:?}: s, m or h")),
    };
    Ok(Duration::from_secs(secs))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let args = Args::parse();
    let Ok(duration) = duration(&args.duration).map_err(|e| eprintln!("chaos: {e}")) else {
        return ExitCode::FAILURE;
    };
    let mix = match args.profile.as_str() {
        "ci" => Mix::Ci,
        "long" => Mix::All,
        other => {
            eprintln!("chaos: unknown profile {other:?}: ci or long");
            return ExitCode::FAILURE;
        }
    };
    if let Err(why) = LibvirtHosts::available() {
        eprintln!("chaos: the multi-host rig cannot run here: {why}");
        return ExitCode::FAILURE;
    }
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let out = args
        .out
        .unwrap_or_else(|| PathBuf::from(format!("/tmp/drover-chaos-{seed}")));
    eprintln!(
        "chaos: seed {seed}, {} s, profile {}, {} hosts; files in {}",
        duration.as_secs(),
        args.profile,
        args.hosts,
        out.display()
    );
    let cfg = ChaosConfig {
        seed,
        duration,
        mix,
        hosts: args.hosts,
        out: out.clone(),
        liveness_bound: Duration::from_secs(120),
    };
    match chaos::run(&cfg).await {
        Ok(report) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&report).unwrap_or_default()
            );
            if report.violations.is_empty() {
                eprintln!("chaos: passed (seed {seed}); files in {}", out.display());
                ExitCode::SUCCESS
            } else {
                eprintln!(
                    "chaos: FAILED (seed {seed}, replay with --seed {seed}); history, logs and schedule in {}",
                    out.display()
                );
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!(
                "chaos: the run broke off: {e:#} (seed {seed}); what there is is in {}",
                out.display()
            );
            ExitCode::FAILURE
        }
    }
}
