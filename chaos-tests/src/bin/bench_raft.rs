//! `bench_raft`: replicated-write benchmarks against real controller processes (3 voters,
//! sled with fsync as shipped, loopback tonic), using the chaos-test harness.
//!
//! - `writes`: VM creates for a fixed time at each client count, all in one cluster and one
//!   run so the ratios between counts are comparable; throughput and latency percentiles.
//! - `failover`: under a steady write load, SIGKILL the leader and time until the first
//!   write sent after the kill is acknowledged (and, to split that time, until a survivor
//!   reports itself leader); the killed node restarts and catches up between trials.
//!
//! - `hosts`: the leader's CPU with many real hostd processes (libvirt's test driver)
//!   beating and asking for leases, all up, nothing else happening.
//!
//! Build the controllers in the same profile first: `cargo build --release --bins`, then
//! `cargo run --release -p drover-chaos-tests --bin bench_raft -- writes` (binaries are
//! looked up next to this executable, or in `$DROVER_BIN_DIR`).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use drover_chaos_tests::checkers::{check_durability, wait_caught_up, wait_for_leader};
use drover_chaos_tests::client::{ClientConfig, LeaderClient};
use drover_chaos_tests::{wait_until, Cluster, ClusterSpec, History, Workload, WorkloadConfig};

#[derive(Parser, Debug)]
#[command(about = "Raft write benchmarks on real drover controllers")]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Throughput and latency of VM creates at several client counts.
    Writes {
        /// Measured seconds per client count (after a 1 s warm-up).
        #[arg(long, default_value_t = 10)]
        secs: u64,
        /// Client counts, in the order run.
        #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
        clients: Vec<usize>,
    },
    /// The leader's CPU with many hosts beating (each its own hostd process).
    Hosts {
        #[arg(long, default_value_t = 200)]
        count: u64,
        /// Measured seconds, once every host is up.
        #[arg(long, default_value_t = 30)]
        secs: u64,
    },
    /// Time from SIGKILL of the leader to the next acknowledged write.
    Failover {
        /// Leader kills, each followed by a restart and catch-up.
        #[arg(long, default_value_t = 20)]
        trials: u32,
        /// Concurrent writers keeping the load steady.
        #[arg(long, default_value_t = 8)]
        clients: usize,
    },
}

const WARMUP: Duration = Duration::from_secs(1);
const SETTLE: Duration = Duration::from_secs(60);

/// Nearest-rank percentile of sorted `v`.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> String {
    format!("{:.1}", d.as_secs_f64() * 1000.0)
}

/// Extra `drover server` flags from `$DROVER_CONTROLLER_ARGS` (whitespace-separated), to
/// compare settings such as Raft timings in one build.
async fn start_cluster() -> anyhow::Result<(Cluster, LeaderClient)> {
    let controller_args = std::env::var("DROVER_CONTROLLER_ARGS")
        .map(|a| a.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    let cluster = Cluster::start(ClusterSpec {
        hosts: 0,
        controller_args,
        ..Default::default()
    })
    .await?;
    let client = LeaderClient::new(&cluster.addrs(), ClientConfig::default())?;
    Ok((cluster, client))
}

/// Every write acknowledged in the run is in the state, nothing else is: a benchmark whose
/// writes vanish measures nothing.
async fn verify(client: &mut LeaderClient, history: &History) -> anyhow::Result<()> {
    let vms = client
        .list_vms()
        .await
        .map_err(|s| anyhow::anyhow!("ListVms: {s}"))?;
    let report = check_durability(history, &vms).map_err(anyhow::Error::msg)?;
    println!(
        "verified: {} acknowledged writes all present ({} VMs listed, {} unknown outcomes)",
        report.acked, report.listed, report.unknown
    );
    Ok(())
}

async fn writes(secs: u64, levels: &[usize]) -> anyhow::Result<()> {
    let (cluster, mut client) = start_cluster().await?;
    let window = Duration::from_secs(secs);
    let mut all = History::default();
    let mut rows = Vec::new();
    for &clients in levels {
        let load = Workload::start(
            &cluster.addrs(),
            WorkloadConfig {
                clients,
                prefix: format!("w{clients}"),
                client: ClientConfig::default(),
            },
        )?;
        let from = load.started + WARMUP;
        let to = from + window;
        // The measurement window is a span of wall time, not a synchronisation point.
        tokio::time::sleep_until(to.into()).await;
        let history = load.stop().await?;
        let mut lat: Vec<Duration> = history
            .acked()
            .filter(|w| w.finished >= from && w.finished < to)
            .map(|w| w.latency())
            .collect();
        lat.sort();
        let unknown = history.unknown();
        rows.push((
            clients,
            lat.len() as f64 / window.as_secs_f64(),
            lat,
            unknown,
        ));
        all.extend(history);
        wait_caught_up(&client, &cluster.members(), SETTLE).await?;
    }
    let base = rows.first().map(|r| r.1).unwrap_or(1.0);
    println!();
    println!("| clients | writes/s | vs first | p50 ms | p99 ms | max ms | unknown |");
    println!("|--:|--:|--:|--:|--:|--:|--:|");
    for (clients, rate, lat, unknown) in &rows {
        println!(
            "| {clients} | {rate:.0} | {:.2}x | {} | {} | {} | {unknown} |",
            rate / base,
            ms(percentile(lat, 50.0)),
            ms(percentile(lat, 99.0)),
            ms(lat.last().copied().unwrap_or_default()),
        );
    }
    verify(&mut client, &all).await
}

async fn failover(trials: u32, clients: usize) -> anyhow::Result<()> {
    let (mut cluster, mut client) = start_cluster().await?;
    let members = cluster.members();
    let mut all = History::default();
    let mut gaps = Vec::new();
    let mut elections = Vec::new();
    println!(
        "| trial | killed | new leader | survivor says leader (ms) | first write acked (ms) | unknown |"
    );
    println!("|--:|--:|--:|--:|--:|--:|");
    for trial in 0..trials {
        let leader = wait_for_leader(&mut client, None, SETTLE).await?;
        let load = Workload::start(
            &cluster.addrs(),
            WorkloadConfig {
                clients,
                prefix: format!("f{trial}"),
                client: ClientConfig::default(),
            },
        )?;
        // Steady state: every client has found the leader and is committing.
        let steady = 20 * clients as u64;
        wait_until("steady load", SETTLE, || async {
            Ok((load.acked() >= steady).then_some(()))
        })
        .await?;

        // Watch the survivors so the gap can be split into election and the rest.
        let survivors: Vec<String> = members
            .iter()
            .filter(|(id, _)| *id != leader)
            .map(|(_, addr)| addr.clone())
            .collect();
        let elected = tokio::spawn(first_leader(client.clone(), survivors));

        // Taken before the signal, so the gap is never understated.
        let killed_at = Instant::now();
        cluster.kill_controller(leader).await?;
        let at_kill = load.acked();
        wait_until("writes after the kill", SETTLE, || async {
            Ok((load.acked() >= at_kill + steady).then_some(()))
        })
        .await?;
        let new_leader = wait_for_leader(&mut client, Some(leader), SETTLE).await?;
        cluster.start_controller(leader).await?;
        let history = load.stop().await?;
        wait_caught_up(&client, &members, SETTLE).await?;

        let gap = history
            .acked()
            .filter(|w| w.last_attempt_at >= killed_at)
            .map(|w| w.finished - killed_at)
            .min()
            .context("no write acknowledged after the kill")?;
        let election = tokio::time::timeout(SETTLE, elected)
            .await
            .context("no survivor ever called itself leader")??
            .saturating_duration_since(killed_at);
        println!(
            "| {trial} | {leader} | {new_leader} | {} | {} | {} |",
            ms(election),
            ms(gap),
            history.unknown()
        );
        elections.push(election);
        gaps.push(gap);
        all.extend(history);
    }
    println!();
    println!("| after SIGKILL of the leader | trials | p50 ms | p99 ms | max ms | min ms |");
    println!("|--|--:|--:|--:|--:|--:|");
    for (what, v) in [
        ("first write acknowledged", &mut gaps),
        ("a survivor reports itself leader", &mut elections),
    ] {
        v.sort();
        println!(
            "| {what} | {} | {} | {} | {} | {} |",
            v.len(),
            ms(percentile(v, 50.0)),
            ms(percentile(v, 99.0)),
            ms(v.last().copied().unwrap_or_default()),
            ms(v.first().copied().unwrap_or_default()),
        );
    }
    verify(&mut client, &all).await
}

async fn hosts(count: u64, secs: u64) -> anyhow::Result<()> {
    let controller_args = std::env::var("DROVER_CONTROLLER_ARGS")
        .map(|a| a.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    let started = Instant::now();
    let cluster = Cluster::start(ClusterSpec {
        hosts: count,
        controller_args,
        ..Default::default()
    })
    .await?;
    let mut client = LeaderClient::new(&cluster.addrs(), ClientConfig::default())?;
    wait_until("every host up", SETTLE, || async {
        let hosts = cluster.cli_json(&["host", "list"]).await?;
        let up = hosts
            .as_array()
            .map_or(0, |hs| hs.iter().filter(|h| h["health"] == "up").count());
        Ok((up as u64 == count).then_some(()))
    })
    .await?;
    println!("{count} hosts up after {:.1?}", started.elapsed());
    let leader = wait_for_leader(&mut client, None, SETTLE).await?;
    let cpu = |id: u64| -> anyhow::Result<Duration> {
        let c = cluster
            .controllers
            .iter()
            .find(|c| c.id == id)
            .and_then(|c| c.process.as_ref())
            .context("controller process")?;
        c.cpu_time()
    };
    let followers: Vec<u64> = cluster
        .members()
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| *id != leader)
        .collect();
    let before = (cpu(leader)?, cpu(followers[0])?);
    let from = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    let window = from.elapsed().as_secs_f64();
    let after = (cpu(leader)?, cpu(followers[0])?);
    anyhow::ensure!(
        wait_for_leader(&mut client, None, SETTLE).await? == leader,
        "the leader changed during the window"
    );
    println!("| hosts | leader CPU, % of a core | a follower's CPU, % of a core |");
    println!("|--:|--:|--:|");
    println!(
        "| {count} | {:.1} | {:.1} |",
        (after.0 - before.0).as_secs_f64() * 100.0 / window,
        (after.1 - before.1).as_secs_f64() * 100.0 / window,
    );
    Ok(())
}

/// When one of `survivors` first reports itself leader, polled every 10 ms (the
/// resolution of the election column).
async fn first_leader(client: LeaderClient, survivors: Vec<String>) -> Instant {
    loop {
        for addr in &survivors {
            if let Ok(m) = client.local_status(addr).await {
                if m.role == "leader" {
                    return Instant::now();
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let started = Instant::now();
    match args.cmd {
        Cmd::Writes { secs, clients } => writes(secs, &clients).await?,
        Cmd::Failover { trials, clients } => failover(trials, clients).await?,
        Cmd::Hosts { count, secs } => hosts(count, secs).await?,
    }
    println!("total {:.1?}", started.elapsed());
    Ok(())
}
