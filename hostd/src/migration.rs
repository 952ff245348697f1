//! The live migrations this hostd runs as a source. One task per migrating domain drives
//! the blocking libvirt call, polls the job's statistics, aborts the job when it stops
//! making progress, and publishes every update on a `watch` channel. Streams attach to that
//! channel, so a controller that lost its stream (a new leader) calls `MigrateVm` again and
//! follows the same migration instead of starting a second one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures::FutureExt as _;
use tokio::sync::watch;
use tokio::time::Instant;
use tonic::Code;
use tracing::{info, warn};

use crate::error::{error_chain, HostdError};
use crate::hypervisor::{Hypervisor, JobStats, MigrationRequest, VmDisk};

/// How often a running migration's statistics are read and published.
pub(crate) const POLL_INTERVAL: Duration = Duration::from_millis(500);

/// The same while disks are copied too. Each query takes QEMU's monitor and libvirt's
/// job lock from the copy: giving virsh hostd's 500 ms polling slowed its migration of
/// a 1 GiB local disk by ~5 % (BENCHMARKS.md, R4). Such a copy runs for seconds to
/// minutes, and the controller commits progress at most once a second anyway.
pub(crate) const DISK_COPY_POLL_INTERVAL: Duration = Duration::from_secs(2);

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
        guard: crate::vm_locks::VmGuard,
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
            let stale = req.source_copies();
            let outcome = drive(
                Arc::clone(&hypervisor),
                req,
                progress_timeout,
                &tx,
                &cancelled,
            )
            .await;
            match &outcome {
                Update::Done(s) => {
                    info!(vm = %name, downtime_ms = ?s.downtime_ms, elapsed_ms = s.elapsed_ms, "migration completed")
                }
                Update::Failed { message, .. } => warn!(vm = %name, %message, "migration failed"),
                Update::Progress(_) => {}
            }
            this.lock().remove(&name);
            let done = matches!(outcome, Update::Done(_));
            let _ = tx.send(outcome);
            // After the report, not before: the guest runs on the destination's copies
            // already, and deleting 1 GiB took a fifth of a second the caller need not
            // wait for. A migration back waits for these to be gone (libvirt_migrate).
            if done && !stale.is_empty() {
                delete_stale_copies(hypervisor, &name, stale).await;
            }
            drop(guard);
        });
        rx
    }
}

/// Deletes the source's copies of the disks a finished migration copied.
async fn delete_stale_copies(hypervisor: Arc<dyn Hypervisor>, name: &str, stale: Vec<VmDisk>) {
    let vm = name.to_string();
    let deleted = tokio::task::spawn_blocking(move || {
        for disk in &stale {
            if let Err(e) = hypervisor.delete_volume(&disk.pool, &disk.volume) {
                warn!(vm = %vm, volume = %disk.volume, error = %error_chain(&e), "cannot delete the source's copy of a migrated disk");
            }
        }
    })
    .await;
    if let Err(e) = deleted {
        warn!(vm = %name, error = %e, "deleting the source's copies failed");
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
    let poll = if req.copy_disks.is_empty() {
        POLL_INTERVAL
    } else {
        DISK_COPY_POLL_INTERVAL
    };
    let hv = Arc::clone(&hypervisor);
    let mut job = tokio::task::spawn_blocking(move || hv.migrate(&req));
    let mut tick = tokio::time::interval(poll);
    let mut stall = StallWatch::new(progress_timeout, Instant::now());
    let mut stalled = false;
    // At most one statistics query in flight. A query libvirt holds up (seen while the
    // destination is frozen) must not hold up this loop: the tick goes on, and the time
    // without an answer counts as time without progress.
    let mut query: Option<tokio::task::JoinHandle<Result<Option<JobStats>, HostdError>>> = None;
    let mut last = None;
    let result = loop {
        tokio::select! {
            r = &mut job => break r,
            _ = tick.tick() => {
                let mut fresh = None;
                if query.as_ref().is_some_and(|q| q.is_finished()) {
                    if let Some(Ok(Ok(Some(stats)))) = query.take().and_then(|q| q.now_or_never()) {
                        fresh = Some(stats);
                    }
                }
                if query.is_none() {
                    let hv = Arc::clone(&hypervisor);
                    let n = name.clone();
                    query = Some(tokio::task::spawn_blocking(move || hv.job_stats(&n)));
                }
                // Before the first iteration libvirt reports an empty job: no news.
                let fresh = fresh.filter(|s| s.data_total > 0);
                if let Some(stats) = fresh {
                    last = Some(stats);
                    let _ = tx.send(Update::Progress(stats));
                }
                let now = Instant::now();
                if !stalled && stall.observe(fresh.map(|s| s.data_remaining), now) {
                    warn!(vm = %name, ?progress_timeout, "migration made no progress; aborting");
                    stalled = true;
                    let hv = Arc::clone(&hypervisor);
                    let n = name.clone();
                    // Not awaited: the abort shows as the migrate call's end.
                    tokio::task::spawn_blocking(move || hv.abort_job(&n));
                }
            }
        }
    };
    match result {
        Ok(Ok(stats)) => Update::Done(final_stats(stats, last)),
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

/// The completed job's statistics (the destination's, which know nothing of a disk the
/// source mirrored to it), with the amount of data the source's last reading counted when
/// that was more: what the migration moved in all, disks included.
fn final_stats(done: JobStats, last: Option<JobStats>) -> JobStats {
    match last {
        Some(l) if l.data_total > done.data_total => JobStats {
            data_total: l.data_total,
            data_processed: l.data_total,
            data_remaining: 0,
            ..done
        },
        _ => done,
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
/// new low for `timeout` (counted from the start, so a migration that never gets going is
/// caught too). A poll without an answer is no news, and no progress. Pure, so its
/// arithmetic is tested without libvirt.
#[derive(Debug)]
pub(crate) struct StallWatch {
    timeout: Duration,
    lowest: Option<u64>,
    since: Instant,
}

impl StallWatch {
    pub(crate) fn new(timeout: Duration, now: Instant) -> Self {
        Self {
            timeout,
            lowest: None,
            since: now,
        }
    }

    /// Feeds one poll (`None`: no answer); `true` when the migration is stalled.
    pub(crate) fn observe(&mut self, remaining: Option<u64>, now: Instant) -> bool {
        if let Some(r) = remaining {
            if self.lowest.is_none_or(|low| r < low) {
                self.lowest = Some(r);
                self.since = now;
                return false;
            }
        }
        now.duration_since(self.since) >= self.timeout
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The destination's completed statistics know the memory only; the source's last
    /// reading counted the mirrored disk too, and the final report keeps that.
    #[test]
    fn the_final_report_counts_a_mirrored_disk() {
        let done = JobStats {
            data_total: 64 << 20,
            data_processed: 64 << 20,
            elapsed_ms: 4000,
            downtime_ms: Some(30),
            ..Default::default()
        };
        let source = JobStats {
            data_total: (1 << 30) + (64 << 20),
            data_processed: 1 << 30,
            data_remaining: 64 << 20,
            ..Default::default()
        };
        let f = final_stats(done, Some(source));
        assert_eq!(f.data_total, (1 << 30) + (64 << 20));
        assert_eq!((f.data_processed, f.data_remaining), (f.data_total, 0));
        assert_eq!((f.elapsed_ms, f.downtime_ms), (4000, Some(30)));
        assert_eq!(final_stats(done, None), done);
    }

    #[test]
    fn stalls_only_without_a_new_low_for_the_whole_timeout() {
        let t0 = Instant::now();
        let s = |ms| t0 + Duration::from_millis(ms);
        let mut w = StallWatch::new(Duration::from_secs(10), t0);
        assert!(!w.observe(Some(1000), s(0)));
        // Dirty pages push the remaining data up and down; no new low for 9.9 s is fine.
        assert!(!w.observe(Some(1200), s(5_000)));
        assert!(!w.observe(Some(1000), s(9_900)));
        // A new low restarts the clock.
        assert!(!w.observe(Some(900), s(9_950)));
        assert!(!w.observe(Some(950), s(19_000)));
        assert!(w.observe(Some(950), s(19_950)));
    }

    #[test]
    fn silence_counts_as_no_progress_from_the_start() {
        let t0 = Instant::now();
        let s = |ms| t0 + Duration::from_millis(ms);
        let mut w = StallWatch::new(Duration::from_secs(2), t0);
        assert!(!w.observe(None, s(1_999)));
        assert!(w.observe(None, s(2_000)));
        let mut w = StallWatch::new(Duration::from_secs(2), t0);
        assert!(!w.observe(Some(10), s(1_000)));
        assert!(!w.observe(None, s(2_999)));
        assert!(w.observe(None, s(3_000)));
    }
}
