//! A write load: N concurrent tasks, each creating stopped VMs with names no one else uses,
//! straight over gRPC through [`LeaderClient`]. It owns the history of what each client
//! saw — which writes were acknowledged, which have an unknown outcome — the oracle the
//! durability test and the benchmarks judge drover by.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use drover_proto::v1::{CreateVmRequest, VmSpec};
use tokio::task::JoinSet;
use tonic::Code;

use crate::client::{retryable, ClientConfig, LeaderClient};

#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// Concurrent clients, each with its own connections and its own idea of the leader.
    pub clients: usize,
    /// Prefix of every VM name; unique per run so names never collide across runs.
    pub prefix: String,
    pub client: ClientConfig,
}

/// How one write ended, as far as its client can tell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The write was answered `Ok`: it is committed and must never be lost.
    Acked,
    /// A retry was answered `ALREADY_EXISTS`: an earlier attempt of this very write was
    /// committed (names are unique), so it must never be lost either. With request ids
    /// this should not happen (the retry gets the first answer); it is counted apart so
    /// a lapse of deduplication shows.
    AckedByRetry,
    /// No definitive answer (transport errors, timeouts, no leader before the deadline):
    /// the VM may or may not exist.
    Unknown(String),
    /// A definitive refusal that should never happen for this load (bad input, or
    /// `ALREADY_EXISTS` on a first attempt): a bug either in drover or in the workload.
    Refused { code: Code, message: String },
}

impl Outcome {
    pub fn is_acked(&self) -> bool {
        matches!(self, Outcome::Acked | Outcome::AckedByRetry)
    }
}

#[derive(Debug, Clone)]
pub struct WriteRecord {
    pub name: String,
    pub outcome: Outcome,
    pub started: Instant,
    /// When the attempt that produced the outcome was sent.
    pub last_attempt_at: Instant,
    pub finished: Instant,
    pub attempts: u32,
}

impl WriteRecord {
    pub fn latency(&self) -> Duration {
        self.finished - self.started
    }
}

/// Everything the clients of one or more workloads saw.
#[derive(Debug, Default, Clone)]
pub struct History {
    pub writes: Vec<WriteRecord>,
}

impl History {
    pub fn extend(&mut self, other: History) {
        self.writes.extend(other.writes);
    }

    pub fn acked(&self) -> impl Iterator<Item = &WriteRecord> {
        self.writes.iter().filter(|w| w.outcome.is_acked())
    }

    /// Names that must be in the state.
    pub fn acked_names(&self) -> BTreeSet<&str> {
        self.acked().map(|w| w.name.as_str()).collect()
    }

    /// Names that may be in the state: anything ever sent.
    pub fn attempted_names(&self) -> BTreeSet<&str> {
        self.writes.iter().map(|w| w.name.as_str()).collect()
    }

    pub fn acked_by_retry(&self) -> usize {
        self.writes
            .iter()
            .filter(|w| w.outcome == Outcome::AckedByRetry)
            .count()
    }

    pub fn unknown(&self) -> usize {
        self.writes
            .iter()
            .filter(|w| matches!(w.outcome, Outcome::Unknown(_)))
            .count()
    }

    pub fn refused(&self) -> impl Iterator<Item = &WriteRecord> {
        self.writes
            .iter()
            .filter(|w| matches!(w.outcome, Outcome::Refused { .. }))
    }
}

/// A running load. Dropping it aborts the clients; [`Workload::stop`] lets each finish
/// the write it is in, so no write is left in flight when the history is read.
#[derive(Debug)]
pub struct Workload {
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
    tasks: JoinSet<History>,
    pub started: Instant,
}

impl Workload {
    pub fn start(endpoints: &[String], config: WorkloadConfig) -> anyhow::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(AtomicU64::new(0));
        let mut tasks = JoinSet::new();
        for task in 0..config.clients {
            let client = LeaderClient::new(endpoints, config.client.clone())?;
            let prefix = format!("{}-t{task}", config.prefix);
            tasks.spawn(run_client(client, prefix, stop.clone(), acked.clone()));
        }
        Ok(Self {
            stop,
            acked,
            tasks,
            started: Instant::now(),
        })
    }

    /// Writes acknowledged so far, for waiting on progress.
    pub fn acked(&self) -> u64 {
        self.acked.load(Ordering::Relaxed)
    }

    /// Stops issuing writes, waits for the ones in flight, and returns the history.
    pub async fn stop(mut self) -> anyhow::Result<History> {
        self.stop.store(true, Ordering::Relaxed);
        let mut history = History::default();
        while let Some(h) = self.tasks.join_next().await {
            history.extend(h?);
        }
        Ok(history)
    }
}

async fn run_client(
    mut client: LeaderClient,
    prefix: String,
    stop: Arc<AtomicBool>,
    acked: Arc<AtomicU64>,
) -> History {
    let mut history = History::default();
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let name = format!("{prefix}-{seq}");
        seq += 1;
        let req = CreateVmRequest {
            name: name.clone(),
            spec: Some(VmSpec {
                vcpus: 1,
                memory_mib: 64,
            }),
            start: false,
            ..Default::default()
        };
        let started = Instant::now();
        let answer = client.create_vm(req, &name).await;
        let outcome = match answer.result {
            Ok(_) => Outcome::Acked,
            Err(s) if s.code() == Code::AlreadyExists && answer.attempts > 1 => {
                Outcome::AckedByRetry
            }
            Err(s) if retryable(s.code()) => {
                Outcome::Unknown(format!("{:?}: {}", s.code(), s.message()))
            }
            Err(s) => Outcome::Refused {
                code: s.code(),
                message: s.message().to_string(),
            },
        };
        if outcome.is_acked() {
            acked.fetch_add(1, Ordering::Relaxed);
        }
        history.writes.push(WriteRecord {
            name,
            outcome,
            started,
            last_attempt_at: answer.last_attempt_at,
            finished: Instant::now(),
            attempts: answer.attempts,
        });
    }
    history
}
