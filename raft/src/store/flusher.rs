//! `Flusher`: group commit for the log. One thread owns the log's fsyncs: an append queues
//! its `LogFlushed` callback and returns, and the thread flushes once for every callback
//! queued before that flush began, then fires them in order, so an append never waits
//! for its own flush nor for a hand-off to tokio's blocking pool. Measured (BENCHMARKS.md,
//! issue 10, session 6): no throughput change by itself — the switches the profile blamed
//! came from sled's batches, not from these hand-offs — and openraft 0.9 still waits for
//! each flush before its next batch, so one flush seldom covers more than one append.
//!
//! The blocking `sled::Db::flush` is used, never `flush_async` (see `super::flush`).

use std::sync::{mpsc, Arc};
use std::thread;

use openraft::storage::LogFlushed;
use tokio::sync::oneshot;

use crate::election_guard::FlushWatch;
use crate::TypeConfig;

/// Something waiting for everything written before it to be on disk.
enum Waiter {
    /// openraft's append: the entries it wrote are durable once this fires.
    Append(LogFlushed<TypeConfig>),
    /// A caller awaiting the flush itself (vote, truncate, purge).
    Barrier(oneshot::Sender<Result<(), String>>),
}

/// The handle appends use; cloning it shares the one thread. Dropping the last handle
/// stops the thread and waits for it, so the `Db` it holds (and sled's lock on the
/// directory) is released by the time the store is dropped.
#[derive(Debug, Clone)]
pub(super) struct Flusher {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// `None` only while dropping.
    queue: Option<mpsc::Sender<Waiter>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the queue ends the thread's loop after the flush in progress.
        drop(self.queue.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The flush thread is gone (it cannot fail otherwise: it holds no state but the `Db`).
#[derive(Debug, thiserror::Error)]
#[error("the log's flush thread has stopped")]
pub(super) struct FlusherGone;

impl Flusher {
    /// Reports every flush's start and end to `watch`.
    pub(super) fn start(db: sled::Db, watch: Arc<FlushWatch>) -> std::io::Result<Self> {
        let (queue, waiting) = mpsc::channel();
        let thread = thread::Builder::new()
            .name("drover-log-flush".into())
            .spawn(move || run(&db, &waiting, &watch))?;
        Ok(Self {
            inner: Arc::new(Inner {
                queue: Some(queue),
                thread: Some(thread),
            }),
        })
    }

    fn send(&self, waiter: Waiter) -> Result<(), mpsc::SendError<Waiter>> {
        match &self.inner.queue {
            Some(q) => q.send(waiter),
            None => Err(mpsc::SendError(waiter)),
        }
    }

    /// Fires `callback` once everything written so far is on disk.
    pub(super) fn after_flush(&self, callback: LogFlushed<TypeConfig>) -> Result<(), FlusherGone> {
        self.send(Waiter::Append(callback)).map_err(|e| {
            if let Waiter::Append(cb) = e.0 {
                cb.log_io_completed(Err(std::io::Error::other(FlusherGone)));
            }
            FlusherGone
        })
    }

    /// Returns once everything written before the call is on disk.
    pub(super) async fn flush(&self) -> std::io::Result<()> {
        let (tx, rx) = oneshot::channel();
        self.send(Waiter::Barrier(tx))
            .map_err(|_| std::io::Error::other(FlusherGone))?;
        match rx.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(std::io::Error::other(e)),
            Err(_) => Err(std::io::Error::other(FlusherGone)),
        }
    }
}

/// A flush slower than this is logged.
const SLOW_FLUSH: std::time::Duration = std::time::Duration::from_millis(100);

fn run(db: &sled::Db, waiting: &mpsc::Receiver<Waiter>, watch: &FlushWatch) {
    let mut batch = Vec::new();
    // Blocks for the first waiter, then takes everyone who queued meanwhile: all of them
    // wrote before this flush starts, so it covers them all.
    while let Ok(first) = waiting.recv() {
        batch.push(first);
        batch.extend(waiting.try_iter());
        let started = std::time::Instant::now();
        watch.started();
        let result = db.flush().map(drop).map_err(|e| e.to_string());
        let took = started.elapsed();
        watch.ended(took);
        metrics::histogram!("drover_raft_log_flush_waiters").record(batch.len() as f64);
        metrics::histogram!("drover_raft_log_flush_seconds").record(took.as_secs_f64());
        if took > SLOW_FLUSH {
            // A follower's flush answers the leader's AppendEntries: past the election
            // timeout, the leader's calls to it pile up (issue 10).
            tracing::warn!(
                flush_ms = took.as_millis() as u64,
                waiters = batch.len(),
                "slow log flush"
            );
        }
        for waiter in batch.drain(..) {
            match waiter {
                Waiter::Append(cb) => {
                    cb.log_io_completed(result.clone().map_err(std::io::Error::other));
                }
                Waiter::Barrier(tx) => {
                    let _ = tx.send(result.clone());
                }
            }
        }
    }
}
