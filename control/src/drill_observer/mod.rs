//! The observer of leader-failover drills: a task on every controller that looks for a
//! running leader drill naming this controller as its observer and carries it out as a
//! client would see it — probe writes through the public API every [`PROBE_EVERY`], a
//! baseline, the cut (`DrillService/CutLeader` on the drill's leader), probes until a new
//! leader has acknowledged [`SETTLED`] in a row, then the figures ([`measure`]) committed
//! with `FinishLeaderDrill`, where `apply` checks every acknowledged probe was applied.
//! A leader drill needs no leader-side actor beyond `LeaderWatch`, which ends one whose
//! observer vanished.

pub mod measure;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use drover_proto::transport::TlsHandle;
use drover_raft::model::{LeaderDrillMeasure, LeaderDrillMode, OpKind};
use drover_raft::{wall_clock_ms, Command, RaftNode, Request};
use tokio::sync::watch;
use tonic::Code;

use crate::client::{Client, ClientError};
use measure::{measure, Outcome, Probe};

const LOOK: Duration = Duration::from_millis(250);
/// Pause between probes.
pub const PROBE_EVERY: Duration = Duration::from_millis(50);
/// One probe attempt, and one probe with its retries (leader discovery).
const PROBE_CALL: Duration = Duration::from_millis(800);
const PROBE_DEADLINE: Duration = Duration::from_millis(1500);
/// Acknowledged probes before the cut.
const BASELINE: usize = 10;
const BASELINE_WITHIN: Duration = Duration::from_secs(15);
/// Consecutive probes a new leader must acknowledge before the drill ends.
pub const SETTLED: usize = 10;

/// A leader drill this controller observes.
#[derive(Debug, Clone)]
struct Job {
    op: u64,
    mode: LeaderDrillMode,
    leader: u64,
    max_duration: Duration,
    /// On the clock of the leader that started it.
    started_at_ms: u64,
}

/// Runs until `stop` turns true (a drill under way is abandoned then; the leader's
/// `LeaderWatch` ends it).
pub async fn run(node: RaftNode, tls: TlsHandle, mut stop: watch::Receiver<bool>) {
    let mut stopped = stop.clone();
    tokio::select! {
        () = observe_all(node, tls, &mut stop) => {}
        _ = stopped.wait_for(|s| *s) => {}
    }
}

async fn observe_all(node: RaftNode, tls: TlsHandle, stop: &mut watch::Receiver<bool>) {
    let mut seen = BTreeSet::new();
    let born_ms = wall_clock_ms();
    // Probe numbers of this process start above every earlier process's, so that a
    // drill observed again after a restart cannot mistake old probes for new ones.
    let epoch = born_ms << 16;
    loop {
        tokio::select! {
            () = tokio::time::sleep(LOOK) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let me = node.id();
        let jobs: Vec<Job> = node.view().read(|d| {
            d.state
                .operations
                .running()
                .filter_map(|o| match &o.kind {
                    OpKind::LeaderDrill {
                        mode,
                        leader,
                        observer,
                        max_duration_ms,
                    } if *observer == me => Some(Job {
                        op: o.id,
                        mode: *mode,
                        leader: *leader,
                        max_duration: Duration::from_millis(*max_duration_ms),
                        started_at_ms: o.started_at_ms,
                    }),
                    _ => None,
                })
                .collect()
        });
        for job in jobs {
            if !seen.insert(job.op) {
                continue;
            }
            let measure = if inherited(job.started_at_ms, born_ms) {
                LeaderDrillMeasure {
                    failure: Some(format!(
                        "observer controller {me} restarted during the drill"
                    )),
                    ..LeaderDrillMeasure::default()
                }
            } else {
                observe(&node, &tls, &job, epoch).await
            };
            finish(&node, job.op, measure).await;
        }
    }
}

/// How far another controller's clock may be behind this one's before a drill it started
/// just after this process did looks older than the process.
const CLOCK_SLACK_MS: u64 = 5_000;

/// Pure: whether a drill started at `started_at_ms` (the leader's clock) began before
/// this process, born at `born_ms`, so that its earlier probes died with the previous
/// process. Drills started around the birth count as new: observing one afresh is safe,
/// since this process's probe numbers are its own.
fn inherited(started_at_ms: u64, born_ms: u64) -> bool {
    started_at_ms + CLOCK_SLACK_MS < born_ms
}

/// Carries out one drill; returns its figures.
async fn observe(node: &RaftNode, tls: &TlsHandle, job: &Job, epoch: u64) -> LeaderDrillMeasure {
    let start = Instant::now();
    tracing::info!(
        op = job.op,
        leader = job.leader,
        mode = job.mode.as_str(),
        "leader drill: observing"
    );
    let addrs: Vec<(u64, String)> = node
        .metrics()
        .membership_config
        .membership()
        .nodes()
        .map(|(id, n)| (*id, n.addr.clone()))
        .collect();
    let endpoints: Vec<String> = addrs.iter().map(|(_, a)| a.clone()).collect();
    let client = match Client::new(&endpoints) {
        Ok(c) => c.with_tls(tls.clone()).with_deadline(PROBE_DEADLINE),
        Err(e) => return failed(format!("cannot make a client: {e}")),
    };
    let history = Arc::new(Mutex::new(Vec::<Probe>::new()));
    let (stop_probes, probes_stopped) = watch::channel(false);
    let prober = tokio::spawn(probe_loop(
        client,
        job.op,
        epoch,
        start,
        Arc::clone(&history),
        probes_stopped,
    ));
    let snapshot = || history.lock().unwrap_or_else(|p| p.into_inner()).clone();

    let mut failure = None;
    let baseline = wait(BASELINE_WITHIN, || {
        snapshot()
            .iter()
            .filter(|p| matches!(p.outcome, Outcome::Acked { .. }))
            .count()
            >= BASELINE
    })
    .await;
    let cancelled = node.view().read(|d| {
        d.state
            .operations
            .ops
            .get(&job.op)
            .is_some_and(|o| o.cancel_requested)
    });
    let mut cut = start.elapsed();
    if !baseline {
        failure = Some(format!(
            "fewer than {BASELINE} probes acknowledged within {} s before the cut",
            BASELINE_WITHIN.as_secs()
        ));
    } else if cancelled {
        failure = Some("cancelled before the cut".into());
    } else {
        let leader_addr = addrs
            .iter()
            .find(|(id, _)| *id == job.leader)
            .map(|(_, a)| a.clone())
            .unwrap_or_default();
        cut = start.elapsed();
        let answer = match Client::new(&[leader_addr]) {
            Ok(c) => {
                c.with_tls(tls.clone())
                    .with_deadline(Duration::from_secs(30))
                    .cut_leader(job.op)
                    .await
            }
            Err(e) => Err(e),
        };
        // The stopping controller may be gone before its answer is; a step-down whose
        // chosen successor lost the election to another voter is still a step-down. What
        // counts is whether a new leader takes the writes.
        let cut_error = answer.err().map(|e| {
            tracing::info!(op = job.op, error = %e, mode = job.mode.as_str(), "leader drill: the cut answered with an error");
            e.to_string()
        });
        let remaining = job.max_duration.saturating_sub(start.elapsed());
        let settled = wait(remaining, || settled(&snapshot(), job.leader)).await;
        if !settled && failure.is_none() {
            failure = Some(format!(
                "no other controller acknowledged {SETTLED} writes in a row within {} s{}",
                job.max_duration.as_secs(),
                cut_error
                    .map(|e| format!(" (the cut answered: {e})"))
                    .unwrap_or_default()
            ));
        }
    }
    stop_probes.send_replace(true);
    if let Err(e) = prober.await {
        tracing::warn!(op = job.op, error = %e, "probe task failed");
    }
    let mut m = measure(&snapshot(), job.leader, cut);
    m.failure = failure;
    tracing::info!(op = job.op, new_leader = ?m.new_leader, unavailable_ms = ?m.unavailable_ms, "leader drill: observed");
    m
}

fn failed(why: String) -> LeaderDrillMeasure {
    LeaderDrillMeasure {
        failure: Some(why),
        ..LeaderDrillMeasure::default()
    }
}

/// Pure: whether the last [`SETTLED`] probes were all acknowledged by a controller other
/// than `old_leader`.
fn settled(probes: &[Probe], old_leader: u64) -> bool {
    probes.len() >= SETTLED
        && probes[probes.len() - SETTLED..]
            .iter()
            .all(|p| matches!(p.outcome, Outcome::Acked { served_by } if served_by != old_leader))
}

/// Polls `done` every probe interval until it holds or `within` has passed.
async fn wait(within: Duration, done: impl Fn() -> bool) -> bool {
    let until = Instant::now() + within;
    while !done() {
        if Instant::now() >= until {
            return false;
        }
        tokio::time::sleep(PROBE_EVERY).await;
    }
    true
}

async fn probe_loop(
    client: Client,
    op: u64,
    epoch: u64,
    start: Instant,
    history: Arc<Mutex<Vec<Probe>>>,
    stop: watch::Receiver<bool>,
) {
    let mut seq = epoch;
    while !*stop.borrow() {
        seq += 1;
        let sent = start.elapsed();
        let outcome = match client.drill_probe(op, seq, PROBE_CALL).await {
            Ok(r) => Outcome::Acked {
                served_by: r.served_by,
            },
            Err(ClientError::Status(s))
                if matches!(
                    s.code(),
                    Code::FailedPrecondition
                        | Code::InvalidArgument
                        | Code::NotFound
                        | Code::PermissionDenied
                ) =>
            {
                Outcome::Refused
            }
            Err(_) => Outcome::Unknown,
        };
        let answered = start.elapsed();
        history
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Probe {
                seq,
                sent,
                answered,
                outcome,
            });
        tokio::time::sleep(PROBE_EVERY).await;
    }
}

/// Commits the end, retrying through a leader change for up to a minute.
async fn finish(node: &RaftNode, op: u64, measure: LeaderDrillMeasure) {
    let until = Instant::now() + Duration::from_secs(60);
    loop {
        let cmd = Command::FinishLeaderDrill {
            op,
            measure: measure.clone(),
            at_ms: wall_clock_ms(),
        };
        match node.write(Request::anonymous(cmd)).await {
            Ok(Ok(_)) => return record_verdict(node, op).await,
            Ok(Err(e)) => {
                tracing::warn!(op, error = %e, "leader drill end refused");
                return;
            }
            Err(e) if Instant::now() < until => {
                tracing::debug!(op, error = %e, "leader drill end not committed yet; retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => {
                tracing::warn!(op, error = %e, "cannot commit the leader drill's end");
                return;
            }
        }
    }
}

/// Once the end has been applied here: the `drill-finished` or `drill-failed` event and
/// the `drover_drills_total` count (the verdict is `apply`'s, which checked the probes).
async fn record_verdict(node: &RaftNode, op: u64) {
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let ended = node.view().read(|d| {
            let o = d.state.operations.ops.get(&op)?;
            match &o.progress {
                drover_raft::model::Progress::LeaderDrill(r) if o.state.is_finished() => {
                    Some((r.verdict.clone()?, o.message.clone()))
                }
                _ => None,
            }
        });
        if let Some((verdict, message)) = ended {
            drover_actors::drill::count_finished("leader-failover", &verdict);
            let event = Command::event(
                drover_actors::drill::finished_event(&verdict),
                None,
                None,
                format!("drill {op}: {message}"),
            );
            if let Err(e) = node.write(Request::anonymous(event)).await {
                tracing::warn!(op, error = %e, "cannot record the leader drill's verdict");
            }
            return;
        }
        if Instant::now() >= until {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acked(seq: u64, by: u64) -> Probe {
        Probe {
            seq,
            sent: Duration::from_millis(seq * 50),
            answered: Duration::from_millis(seq * 50 + 5),
            outcome: Outcome::Acked { served_by: by },
        }
    }

    #[test]
    fn only_drills_clearly_older_than_the_process_are_inherited() {
        assert!(inherited(1_000, 1_000 + CLOCK_SLACK_MS + 1));
        assert!(!inherited(1_000, 1_000 + CLOCK_SLACK_MS));
        assert!(!inherited(9_000, 1_000), "started after this process");
    }

    #[test]
    fn settled_needs_the_last_probes_all_from_another_leader() {
        let mut probes: Vec<Probe> = (1..=5).map(|s| acked(s, 1)).collect();
        probes.extend((6..=15).map(|s| acked(s, 2)));
        assert!(settled(&probes, 1));
        assert!(!settled(&probes[..14], 1), "only 9 from the new leader");
        probes.push(Probe {
            outcome: Outcome::Unknown,
            ..acked(16, 2)
        });
        assert!(!settled(&probes, 1));
        assert!(!settled(&probes[..15], 2), "those were the old leader's");
    }
}
