//! Whether this host could fence itself right now, and the probe that keeps that answer
//! fresh (issue 9, point 6).
//!
//! A lease is a promise: "if the controllers stop hearing from me, my HA guests are dead by
//! the time the lease lapses". hostd keeps that promise by destroying them through libvirt
//! (layer 1), so it asks for a lease only while libvirt answers. While libvirtd is gone
//! (restarting, crashed, hung) no renewal is asked for: a short restart is ridden out on the
//! lease in hand, a long one lets it lapse, and then the watchdog (layers 2 and 3) either
//! fences through its own connection or stops petting the device.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{error, info};

use crate::error::{error_chain, HostdError};
use crate::hypervisor::Hypervisor;

/// How often libvirt is probed. Well under a heartbeat (1 s by default), so that a renewal
/// is rarely asked for on a stale answer.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(250);
/// A probe that takes longer than this counts as a failure: a hung libvirtd cannot fence.
/// The probe is a call libvirtd answers without touching any domain, so a busy daemon
/// (guests starting under TCG) should still answer it well within this.
pub const PROBE_DEADLINE: Duration = Duration::from_secs(2);

/// The answer, shared by the probe loop and the sessions.
#[derive(Debug)]
pub struct FenceReady(AtomicBool);

impl Default for FenceReady {
    /// hostd opened libvirt just before: it starts able to fence.
    fn default() -> Self {
        Self(AtomicBool::new(true))
    }
}

impl FenceReady {
    pub fn can_fence(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    /// Records `now`; returns whether it changed.
    fn set(&self, now: bool) -> bool {
        self.0.swap(now, Ordering::Relaxed) != now
    }
}

/// Probes libvirt every [`PROBE_INTERVAL`] until `stop` turns true. At most one probe runs
/// at a time: one stuck in a hung daemon is waited out, not joined by more threads.
pub async fn run_probe_loop(
    host: String,
    hypervisor: Arc<dyn Hypervisor>,
    ready: Arc<FenceReady>,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(PROBE_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pending: Option<tokio::task::JoinHandle<Result<(), HostdError>>> = None;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let mut probe = match pending.take() {
            Some(stuck) => stuck,
            None => {
                let hv = Arc::clone(&hypervisor);
                tokio::task::spawn_blocking(move || hv.probe())
            }
        };
        let outcome = match tokio::time::timeout(PROBE_DEADLINE, &mut probe).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(HostdError::Blocking(join)),
            Err(_) => {
                pending = Some(probe);
                Err(HostdError::LibvirtTimeout(PROBE_DEADLINE))
            }
        };
        match outcome {
            Ok(()) => {
                if ready.set(true) {
                    info!(%host, "libvirt answers again: this host can fence; lease renewals resume");
                }
            }
            Err(e) => {
                if ready.set(false) {
                    error!(
                        %host, error = %error_chain(&e),
                        "libvirt does not answer: this host cannot fence; no lease renewals until it does"
                    );
                }
            }
        }
    }
}
