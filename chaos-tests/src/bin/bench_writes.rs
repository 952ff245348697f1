//! `bench_writes`: drover's replicated write path side by side with etcd, on this machine,
//! in one run, with one load generator (issue 10, point 1).
//!
//! Both clusters have three members on loopback with fsync on, their data on the same disk.
//! N clients, each with its own connection to the leader and one request in flight:
//! drover `CreateVm` of a stopped 1-vCPU/64-MiB VM with a request id; etcd `Put` of a
//! 256-byte value under a new key. Errors are counted by gRPC code and not retried in
//! place (a client that is told `UNAVAILABLE` finds the leader again, as a real client
//! would); leader changes are the term's growth over the window; CPU is the user + system
//! time of the cluster's three processes over the window, divided by the writes
//! acknowledged in it. Afterwards every acknowledged write is looked for in the store.
//!
//!     cargo build --release --bins
//!     target/release/bench_writes                       # 1,16,64,256 clients, 8 s, 2 rounds
//!     target/release/bench_writes --clients 256 --duration 600   # the stability run
//!
//! drover's binaries are found next to this executable or in `$DROVER_BIN_DIR`; etcd is
//! Debian's `/usr/bin/etcd` (`scripts/deps.sh`). `$DROVER_CONTROLLER_ARGS` adds flags to
//! every controller (to compare timer settings in one build).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::{Parser, ValueEnum};
use drover_chaos_tests::client::{ClientConfig, LeaderClient};
use drover_chaos_tests::etcd::{self, EtcdCluster};
use drover_chaos_tests::process::cpu_time;
use drover_chaos_tests::{Cluster, ClusterSpec};
use drover_proto::v1::vm_service_client::VmServiceClient;
use drover_proto::v1::{CreateVmRequest, VmSpec};
use tokio::task::JoinSet;
use tonic::transport::{Channel, Endpoint};

#[derive(Parser, Debug)]
#[command(about = "drover's replicated writes beside etcd's, same machine, same load")]
struct Args {
    /// Client counts, in the order run.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64,256")]
    clients: Vec<usize>,
    /// Measured seconds per level (after a 1 s warm-up).
    #[arg(long, default_value_t = 8)]
    secs: u64,
    /// Rounds of all levels, alternating the systems.
    #[arg(long, default_value_t = 2)]
    rounds: u32,
    /// A long run instead: this many seconds at each level, one round.
    #[arg(long)]
    duration: Option<u64>,
    /// Which systems to drive.
    #[arg(long, value_enum, default_value_t = Only::Both)]
    only: Only,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Only {
    Both,
    Drover,
    Etcd,
}

const WARMUP: Duration = Duration::from_secs(1);
const VALUE_BYTES: usize = 256;
/// Keys per page when the etcd side is checked.
const PAGE: i64 = 50_000;
/// One attempt's bound: a write that takes longer counts as an error (`DEADLINE_EXCEEDED`).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);

/// What one level measured.
#[derive(Debug, Default)]
struct Level {
    /// Latencies of writes acknowledged inside the window.
    latencies: Vec<Duration>,
    /// Errors by code, inside the window.
    errors: BTreeMap<String, u64>,
    leader_changes: u64,
    cpu: Duration,
    window: Duration,
    /// Every key acknowledged (inside the window or not), for the check afterwards.
    acked: Vec<String>,
    /// Writes inside the window slower than [`SLOW`]: when they were sent (wall clock, to
    /// match against the controllers' logs) and how long they took.
    slow: Vec<(std::time::SystemTime, Duration)>,
}

/// A write slower than this is a stall worth finding in the logs.
const SLOW: Duration = Duration::from_millis(500);

impl Level {
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.window.as_secs_f64()
    }

    fn cpu_per_write_ms(&self) -> f64 {
        self.cpu.as_secs_f64() * 1000.0 / self.latencies.len().max(1) as f64
    }
}

/// One write, one client: `Ok` or an error's code name.
type Outcome = Result<(), String>;

/// What a system under test offers the load generator.
trait System: Send + Sync + 'static {
    type Conn: Send + 'static;
    fn name(&self) -> &'static str;
    /// A new connection to the current leader.
    fn connect(&self) -> impl std::future::Future<Output = anyhow::Result<Self::Conn>> + Send;
    fn write(conn: &mut Self::Conn, key: &str)
        -> impl std::future::Future<Output = Outcome> + Send;
    fn term(&self) -> impl std::future::Future<Output = u64> + Send;
    /// CPU time of the cluster's processes so far.
    fn cpu(&self) -> Duration;
    /// The keys of `acked` that are not in the store.
    fn missing(
        &self,
        acked: &[String],
    ) -> impl std::future::Future<Output = anyhow::Result<Vec<String>>> + Send;
}

struct Drover {
    cluster: Cluster,
}

impl Drover {
    /// Every controller that answers, with its own view of itself.
    async fn members(&self) -> Vec<(String, drover_proto::v1::Member)> {
        let Ok(client) = LeaderClient::new(&self.cluster.addrs(), ClientConfig::default()) else {
            return Vec::new();
        };
        let mut members = Vec::new();
        for addr in self.cluster.addrs() {
            if let Ok(m) = client.local_status(&addr).await {
                members.push((addr, m));
            }
        }
        members
    }
}

impl System for Drover {
    type Conn = VmServiceClient<Channel>;

    fn name(&self) -> &'static str {
        "drover"
    }

    async fn connect(&self) -> anyhow::Result<Self::Conn> {
        let addr = self
            .members()
            .await
            .into_iter()
            .find(|(_, m)| m.role == "leader")
            .map(|(addr, _)| addr)
            .context("no drover leader")?;
        let channel = Endpoint::from_shared(format!("http://{addr}"))?
            .tcp_nodelay(true)
            .connect()
            .await?;
        Ok(VmServiceClient::new(channel))
    }

    async fn write(conn: &mut Self::Conn, key: &str) -> Outcome {
        let mut req = tonic::Request::new(CreateVmRequest {
            name: key.to_string(),
            spec: Some(VmSpec {
                vcpus: 1,
                memory_mib: 64,
            }),
            start: false,
            ..Default::default()
        });
        req.set_timeout(ATTEMPT_TIMEOUT);
        if let Ok(id) = key.parse() {
            req.metadata_mut()
                .insert(drover_proto::REQUEST_ID_METADATA_KEY, id);
        }
        conn.create_vm(req)
            .await
            .map(drop)
            .map_err(|s| format!("{:?}", s.code()))
    }

    async fn term(&self) -> u64 {
        let members = self.members().await;
        members.iter().map(|(_, m)| m.term).max().unwrap_or(0)
    }

    fn cpu(&self) -> Duration {
        self.cluster
            .controllers
            .iter()
            .filter_map(|c| c.process.as_ref())
            .filter_map(|p| cpu_time(p.pid()).ok())
            .sum()
    }

    async fn missing(&self, acked: &[String]) -> anyhow::Result<Vec<String>> {
        let mut client = LeaderClient::new(&self.cluster.addrs(), ClientConfig::default())?;
        let vms = client
            .vm_names_paged(20_000)
            .await
            .map_err(|s| anyhow::anyhow!("ListVms: {s}"))?;
        let names: BTreeSet<&str> = vms.iter().map(String::as_str).collect();
        Ok(acked
            .iter()
            .filter(|k| !names.contains(k.as_str()))
            .cloned()
            .collect())
    }
}

struct Etcd {
    cluster: EtcdCluster,
    value: Vec<u8>,
}

impl System for Etcd {
    type Conn = (etcd_client::Client, Vec<u8>);

    fn name(&self) -> &'static str {
        "etcd"
    }

    async fn connect(&self) -> anyhow::Result<Self::Conn> {
        let (leader, _) = self.cluster.leader().await?;
        let client = etcd::connect(&leader).await.map_err(anyhow::Error::msg)?;
        Ok((client, self.value.clone()))
    }

    async fn write(conn: &mut Self::Conn, key: &str) -> Outcome {
        let (client, value) = conn;
        match client.put(key, value.clone(), None).await {
            Ok(_) => Ok(()),
            Err(etcd_client::Error::GRpcStatus(s)) => Err(format!("{:?}", s.code())),
            Err(e) => Err(format!("transport: {e}")),
        }
    }

    async fn term(&self) -> u64 {
        self.cluster.term().await
    }

    fn cpu(&self) -> Duration {
        self.cluster
            .members
            .iter()
            .filter_map(|m| m.process.cpu_time().ok())
            .sum()
    }

    async fn missing(&self, acked: &[String]) -> anyhow::Result<Vec<String>> {
        let (leader, _) = self.cluster.leader().await?;
        let mut client = etcd::connect(&leader).await.map_err(anyhow::Error::msg)?;
        // Every key the bench wrote starts with "b": read them in pages, so that a long
        // run's million keys never make one oversized answer.
        let mut keys = BTreeSet::new();
        let mut from = b"b".to_vec();
        loop {
            let options = etcd_client::GetOptions::new()
                .with_range(b"c".to_vec())
                .with_keys_only()
                .with_limit(PAGE);
            let resp = client.get(from.clone(), Some(options)).await?;
            let page: Vec<Vec<u8>> = resp.kvs().iter().map(|kv| kv.key().to_vec()).collect();
            let more = resp.more();
            if let Some(last) = page.last() {
                from = last.clone();
                from.push(0);
            }
            keys.extend(page.into_iter().filter_map(|k| String::from_utf8(k).ok()));
            if !more {
                break;
            }
        }
        Ok(acked
            .iter()
            .filter(|k| !keys.contains(*k))
            .cloned()
            .collect())
    }
}

/// Runs `clients` writers against `system` for `WARMUP + window`.
async fn level<S: System>(
    system: &Arc<S>,
    clients: usize,
    window: Duration,
    tag: &str,
) -> anyhow::Result<Level> {
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let from = start + WARMUP;
    let to = from + window;
    let mut tasks = JoinSet::new();
    for c in 0..clients {
        let (system, stop) = (Arc::clone(system), Arc::clone(&stop));
        let prefix = format!("b{tag}c{c}n");
        tasks.spawn(async move {
            let mut seen = Level::default();
            let mut conn = None;
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let Some(c) = conn.as_mut() else {
                    match system.connect().await {
                        Ok(c) => conn = Some(c),
                        // No leader right now (an election): ask again shortly.
                        Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
                    }
                    continue;
                };
                let key = format!("{prefix}{n}");
                n += 1;
                let sent = Instant::now();
                let sent_wall = std::time::SystemTime::now();
                let outcome = S::write(c, &key).await;
                let done = Instant::now();
                let counted = sent >= from && done < to;
                match outcome {
                    Ok(()) => {
                        if counted {
                            seen.latencies.push(done - sent);
                            if done - sent > SLOW {
                                seen.slow.push((sent_wall, done - sent));
                            }
                        }
                        seen.acked.push(key);
                    }
                    Err(code) => {
                        if counted {
                            *seen.errors.entry(code).or_default() += 1;
                        }
                        // Not the leader, or the connection broke: find the leader again.
                        conn = None;
                    }
                }
            }
            seen
        });
    }
    tokio::time::sleep_until(from.into()).await;
    let (term0, cpu0) = (system.term().await, system.cpu());
    tokio::time::sleep_until(to.into()).await;
    let (term1, cpu1) = (system.term().await, system.cpu());
    stop.store(true, Ordering::Relaxed);
    let mut total = Level {
        leader_changes: term1.saturating_sub(term0),
        cpu: cpu1.saturating_sub(cpu0),
        window,
        ..Level::default()
    };
    while let Some(seen) = tasks.join_next().await {
        let seen = seen?;
        total.latencies.extend(seen.latencies);
        total.acked.extend(seen.acked);
        total.slow.extend(seen.slow);
        for (code, n) in seen.errors {
            *total.errors.entry(code).or_default() += n;
        }
    }
    total.latencies.sort();
    Ok(total)
}

/// Nearest-rank percentile of sorted `v`, in ms.
fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1000.0
}

fn errors(e: &BTreeMap<String, u64>) -> String {
    if e.is_empty() {
        return "0".into();
    }
    e.iter()
        .map(|(code, n)| format!("{n} {code}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The seconds in which writes were slower than [`SLOW`], with how many and the slowest:
/// where to look in the controllers' logs.
fn stalls(l: &Level) -> String {
    let mut by_second: BTreeMap<u64, (u64, Duration)> = BTreeMap::new();
    for (at, took) in &l.slow {
        let secs = at
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let e = by_second.entry(secs).or_default();
        e.0 += 1;
        e.1 = e.1.max(*took);
    }
    by_second
        .iter()
        .map(|(secs, (n, max))| {
            let hms = secs % 86_400;
            format!(
                "{:02}:{:02}:{:02}Z {n}× up to {} ms",
                hms / 3600,
                hms / 60 % 60,
                hms % 60,
                max.as_millis()
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn row(system: &str, clients: usize, round: u32, l: &Level) -> String {
    format!(
        "| {system} | {clients} | {round} | {:.0} | {:.1} | {:.1} | {:.1} | {} | {} | {:.3} |",
        l.rate(),
        pct(&l.latencies, 50.0),
        pct(&l.latencies, 99.0),
        l.latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1000.0),
        errors(&l.errors),
        l.leader_changes,
        l.cpu_per_write_ms(),
    )
}

async fn verify<S: System>(system: &S, acked: &[String]) -> anyhow::Result<()> {
    let missing = system.missing(acked).await?;
    anyhow::ensure!(
        missing.is_empty(),
        "{}: {} acknowledged writes are missing, e.g. {:?}",
        system.name(),
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    println!(
        "verified: {} acknowledged {} writes all present",
        acked.len(),
        system.name()
    );
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (secs, rounds) = match args.duration {
        Some(d) => (d, 1),
        None => (args.secs, args.rounds),
    };
    let window = Duration::from_secs(secs);
    let dir = tempfile::tempdir()?;
    let controller_args = std::env::var("DROVER_CONTROLLER_ARGS")
        .map(|a| a.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default();
    let drover = match args.only {
        Only::Etcd => None,
        _ => Some(Arc::new(Drover {
            cluster: Cluster::start(ClusterSpec {
                hosts: 0,
                controller_args,
                ..Default::default()
            })
            .await?,
        })),
    };
    let (mut drover_warm, mut etcd_warm) = (Vec::new(), Vec::new());
    let etcd = match args.only {
        Only::Drover => None,
        _ => Some(Arc::new(Etcd {
            cluster: EtcdCluster::start(dir.path(), 3).await?,
            value: vec![b'v'; VALUE_BYTES],
        })),
    };
    // The first election and the clients' first connections happen here, not in a window.
    if let Some(d) = &drover {
        drover_warm = level(d, 4, Duration::from_secs(2), "warm").await?.acked;
    }
    if let Some(e) = &etcd {
        etcd_warm = level(e, 4, Duration::from_secs(2), "warm").await?.acked;
    }
    println!("| system | clients | round | writes/s | p50 ms | p99 ms | max ms | errors | leader changes | CPU ms/write |");
    println!("|---|--:|--:|--:|--:|--:|--:|---|--:|--:|");
    let mut results: BTreeMap<(usize, &str), Vec<f64>> = BTreeMap::new();
    let (mut drover_acked, mut etcd_acked) = (drover_warm, etcd_warm);
    for round in 1..=rounds {
        for &clients in &args.clients {
            let tag = format!("r{round}l{clients}");
            if let Some(d) = &drover {
                let l = level(d, clients, window, &tag).await?;
                println!("{}", row("drover", clients, round, &l));
                if !l.slow.is_empty() {
                    eprintln!("drover writes over {SLOW:?}: {}", stalls(&l));
                }
                results
                    .entry((clients, "drover"))
                    .or_default()
                    .push(l.rate());
                drover_acked.extend(l.acked);
            }
            if let Some(e) = &etcd {
                let l = level(e, clients, window, &tag).await?;
                println!("{}", row("etcd", clients, round, &l));
                if !l.slow.is_empty() {
                    eprintln!("etcd writes over {SLOW:?}: {}", stalls(&l));
                }
                results.entry((clients, "etcd")).or_default().push(l.rate());
                etcd_acked.extend(l.acked);
            }
        }
    }
    if drover.is_some() && etcd.is_some() {
        println!();
        println!("| clients | drover / etcd writes/s (mean of rounds) |");
        println!("|--:|--:|");
        for &clients in &args.clients {
            let mean = |s: &str| {
                let v = &results[&(clients, s)];
                v.iter().sum::<f64>() / v.len() as f64
            };
            println!("| {clients} | {:.2} |", mean("drover") / mean("etcd"));
        }
    }
    if let Some(d) = &drover {
        verify(d.as_ref(), &drover_acked).await?;
    }
    if let Some(e) = &etcd {
        verify(e.as_ref(), &etcd_acked).await?;
    }
    Ok(())
}
