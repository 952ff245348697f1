//! The live migrations this hostd runs as a source. One task per migrating domain drives
//! the blocking libvirt call, polls the job's statistics, aborts the job when it stops
//! making progress, and publishes every update on a `watch` channel. Streams attach to that
//! channel, so a controller that lost its stream (a new leader) calls `MigrateVm` again and
//! follows the same migration instead of starting a second one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{watch, OwnedMutexGuard};
use tokio::time::Instant;
use tonic::Code;
use tracing::{info, warn};

use crate::error::{error_chain, HostdError};
use crate::hypervisor::{Hypervisor, JobStats, MigrationRequest};

/// How often a running migration's statistics are read and published.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// What attached streams see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Update {
    Progress(JobStats),
    /// The domain runs on the destination and is gone here.
    Done(JobStats),
    /// The domain is still here (libvirt rolls a failed migration back).
    Failed {
        code: Code,
        message: String,
    },
}

impl Update {
    pub(crate) fn is_final(&self) -> bool {
        !matches!(self, Update::Progress(_))
    }
}

struct Running {
    updates: watch::Receiver<Update>,
    cancelled: Arc<AtomicBool>,
}

/// The migrations in flight, by domain name.
#[derive(Default)]
pub(crate) struct Migrations {
    running: Mutex<HashMap<String, Running>>,
}

impl Migrations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Running>> {
        // The map holds no invariant a panic could break.
        self.running.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The updates of `name`'s running migration, if one runs.
    pub(crate) fn attach(&self, name: &str) -> Option<watch::Receiver<Update>> {
        self.lock().get(name).map(|r| r.updates.clone())
    }

    /// Marks `name`'s migration as cancelled, so that its abort reads as a cancel and not
    /// as a failure. Returns whether one runs.
    pub(crate) fn mark_cancelled(&self, name: &str) -> bool {
        self.lock().get(name).is_some_and(|r| {
            r.cancelled.store(true, Ordering::SeqCst);
            true
        })
    }

    /// Starts the migration; `guard` (the VM's lock) is held until it ends, so no start,
    /// stop or undefine of the same VM interleaves with it.
    pub(crate) fn start(
        self: &Arc<Self>,
        hypervisor: Arc<dyn Hypervisor>,
        req: MigrationRequest,
        progress_timeout: Duration,
        guard: OwnedMutexGuard<()>,
    ) -> watch::Receiver<Update> {
        let (tx, rx) = watch::channel(Update::Progress(JobStats::default()));
        let cancelled = Arc::new(AtomicBool::new(false));
        self.lock().insert(
            req.name.clone(),
            Running {
                updates: rx.clone(),
                cancelled: Arc::clone(&cancelled),
            },
        );
        let this = Arc::clone(self);
        tokio::spawn(async move {
            let name = req.name.clone();
            let outcome = drive(hypervisor, req, progress_timeout, &tx, &cancelled).await;
            match &outcome {
                Update::Done(s) => {
                    info!(vm = %name, downtime_ms = ?s.downtime_ms, elapsed_ms = s.elapsed_ms, "migration completed")
                }
                Update::Failed { message, .. } => warn!(vm = %name, %message, "migration failed"),
                Update::Progress(_) => {}
            }
            this.lock().remove(&name);
            let _ = tx.send(outcome);
            drop(guard);
        });
        rx
    }
}

/// Runs the migration to its end and returns the final update.
async fn drive(
    hypervisor: Arc<dyn Hypervisor>,
    req: MigrationRequest,
    progress_timeout: Duration,
    tx: &watch::Sender<Update>,
    cancelled: &AtomicBool,
) -> Update {
    let name = req.name.clone();
    let hv = Arc::clone(&hypervisor);
    let mut job = tokio::task::spawn_blocking(move || hv.migrate(&req));
    let mut tick = tokio::time::interval(POLL_INTERVAL);
    let mut stall = StallWatch::new(progress_timeout);
    let mut stalled = false;
    let result = loop {
        tokio::select! {
            r = &mut job => break r,
            _ = tick.tick() => {
                let hv = Arc::clone(&hypervisor);
                let n = name.clone();
                let stats = tokio::task::spawn_blocking(move || hv.job_stats(&n)).await;
                let Ok(Ok(Some(stats))) = stats else { continue };
                let _ = tx.send(Update::Progress(stats));
                if !stalled && stall.observe(stats.data_remaining, Instant::now()) {
                    warn!(vm = %name, ?progress_timeout, remaining = stats.data_remaining, "migration made no progress; aborting");
                    stalled = true;
                    let hv = Arc::clone(&hypervisor);
                    let n = name.clone();
                    let _ = tokio::task::spawn_blocking(move || hv.abort_job(&n)).await;
                }
            }
        }
    };
    match result {
        Ok(Ok(stats)) => Update::Done(stats),
        Ok(Err(e)) if cancelled.load(Ordering::SeqCst) => Update::Failed {
            code: Code::Aborted,
            message: format!("cancelled: {}", libvirt_message(&e)),
        },
        Ok(Err(e)) if stalled => Update::Failed {
            code: Code::Aborted,
            message: format!(
                "aborted: no progress for {} s ({})",
                progress_timeout.as_secs(),
                libvirt_message(&e)
            ),
        },
        Ok(Err(e)) => {
            let code = match e {
                HostdError::NotFound { .. } => Code::NotFound,
                HostdError::InvalidArgument(_) => Code::FailedPrecondition,
                _ => Code::Aborted,
            };
            Update::Failed {
                code,
                message: libvirt_message(&e),
            }
        }
        Err(join) => Update::Failed {
            code: Code::Internal,
            message: format!("migration task failed: {join}"),
        },
    }
}

/// libvirt's own words when there are some: they name the real cause ("unable to connect
/// to server at 127.0.0.42:16510").
fn libvirt_message(e: &HostdError) -> String {
    match e {
        HostdError::Libvirt { op, source } => format!("{op}: {}", source.message()),
        other => error_chain(other),
    }
}

/// Decides when a migration has stopped converging: the remaining data has not reached a
/// new low for `timeout`. Pure, so its arithmetic is tested without libvirt.
#[derive(Debug)]
pub(crate) struct StallWatch {
    timeout: Duration,
    lowest: Option<u64>,
    since: Option<Instant>,
}

impl StallWatch {
    pub(crate) fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            lowest: None,
            since: None,
        }
    }

    /// Feeds one sample; `true` when the migration is stalled.
    pub(crate) fn observe(&mut self, remaining: u64, now: Instant) -> bool {
        match self.lowest {
            Some(low) if remaining >= low => {
                now.duration_since(self.since.unwrap_or(now)) >= self.timeout
            }
            _ => {
                self.lowest = Some(remaining);
                self.since = Some(now);
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stalls_only_without_a_new_low_for_the_whole_timeout() {
        let t0 = Instant::now();
        let s = |ms| t0 + Duration::from_millis(ms);
        let mut w = StallWatch::new(Duration::from_secs(10));
        assert!(!w.observe(1000, s(0)));
        // Dirty pages push the remaining data up and down; no new low for 9.9 s is fine.
        assert!(!w.observe(1200, s(5_000)));
        assert!(!w.observe(1000, s(9_900)));
        // A new low restarts the clock.
        assert!(!w.observe(900, s(9_950)));
        assert!(!w.observe(950, s(19_000)));
        assert!(w.observe(950, s(19_950)));
    }
}
