//! Self-fencing, layer 1 of DESIGN.md's fence layers: hostd's own lease and the timer task
//! that destroys this host's HA guests once the lease lapses.
//!
//! `LeaseKeeper` wraps the pure [`Lease`] bookkeeping with what hostd does around it: it
//! mirrors every extension into the lease file (so that the watchdog process, layer 2, can
//! fence even when hostd is frozen), resumes a lease a previous hostd process left there,
//! and counts self-fences for the heartbeat. [`run_fence_loop`] is the timer.
//!
//! Non-HA guests are never touched: the cluster never restarts them elsewhere without a
//! confirmed fence, so they cannot run twice, and a control-plane outage must not stop them.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use tracing::{error, info, warn};

use crate::clock::BootInstant;
use crate::error::{error_chain, HostdError};
use crate::hypervisor::{Hypervisor, PowerState};
use crate::lease::{Ignored, Lease};
use crate::lease_file::{self, LeaseRecord};

/// How often the fence timer looks at the lease. Bounds how late after the lapse the
/// guests die; DESIGN.md's margin (1 s by default) must cover it.
pub const FENCE_CHECK: Duration = Duration::from_millis(100);

pub struct LeaseKeeper {
    /// The lease, and whether the newest grant disarmed self-fencing.
    lease: Mutex<(Lease, bool)>,
    file: PathBuf,
    boot_id: String,
    self_fences: AtomicU64,
    /// The HA epoch of the grant that set the disarmed flag (written under `lease`'s lock
    /// with it), reported back so the cluster can tell a current "armed" from a stale one.
    ha_epoch: AtomicU64,
}

/// What the heartbeat reports about the lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseView {
    pub remaining: Option<Duration>,
    pub self_fences: u64,
    /// This host fences itself when the lease lapses (HA not disarmed).
    pub armed: bool,
    /// The HA epoch of the grant `armed` comes from.
    pub ha_epoch: u64,
}

impl LeaseKeeper {
    /// Opens the keeper for `data_dir`, resuming a lease an earlier hostd process on this
    /// host was granted and that has not lapsed yet: the lease belongs to the host, and a
    /// restarted hostd must neither drop it (killing guests for nothing) nor forget it.
    pub fn open(data_dir: &std::path::Path) -> Result<Self, HostdError> {
        let file = lease_file::path_in(data_dir);
        let mut lease = Lease::default();
        let mut disarmed = false;
        match lease_file::read(&file) {
            Ok(Some(record)) => {
                if let Some(left) = record.remaining() {
                    info!(remaining = ?left, term = record.term, "Resuming the lease a previous hostd held");
                    lease.resume(BootInstant::now() + left, record.term);
                }
                // Disarmed stays disarmed across restarts: the cluster counts this host as
                // not armed until it reports otherwise.
                disarmed = record.disarmed && record.boot_id == lease_file::boot_id();
            }
            Ok(None) => {}
            // An unreadable file is no lease at all: the safe reading.
            Err(e) => warn!(error = %e, "Ignoring an unreadable lease file"),
        }
        Ok(Self {
            lease: Mutex::new((lease, disarmed)),
            file,
            boot_id: lease_file::boot_id(),
            self_fences: AtomicU64::new(0),
            ha_epoch: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (Lease, bool)> {
        // Lease has no invariant a panic mid-update could break.
        self.lease.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Notes that request `seq` is being sent now. Call it before the send.
    pub fn request_sent(&self, seq: u64) {
        self.lock().0.request_sent(seq, BootInstant::now());
    }

    /// Applies a grant and mirrors the new expiry into the lease file. The file is written
    /// under the lock, so it never goes backwards.
    pub fn granted(
        &self,
        seq: u64,
        term: u64,
        ttl: Duration,
        disarmed: bool,
        ha_epoch: u64,
    ) -> Result<BootInstant, Ignored> {
        let mut guard = self.lock();
        let (lease, was_disarmed) = &mut *guard;
        let until = lease.granted(seq, term, ttl)?;
        if *was_disarmed != disarmed {
            warn!(
                term,
                "Self-fencing {} by the controllers",
                if disarmed { "DISARMED" } else { "re-armed" }
            );
        }
        *was_disarmed = disarmed;
        self.ha_epoch.store(ha_epoch, Ordering::Relaxed);
        if let Some(expiry) = lease.expiry() {
            let record = LeaseRecord {
                expires_boot_ns: Some(expiry.as_nanos()),
                term,
                boot_id: self.boot_id.clone(),
                disarmed,
            };
            if let Err(e) = lease_file::write(&self.file, &record) {
                // The watchdog will fence early, at the last expiry it could read: safe.
                warn!(error = %e, "Cannot update the lease file");
            }
        }
        Ok(until)
    }

    pub fn holds(&self) -> bool {
        self.lock().0.holds(BootInstant::now())
    }

    /// Whether the newest grant disarmed self-fencing.
    pub fn disarmed(&self) -> bool {
        self.lock().1
    }

    /// Refuses with `NoLease` unless the lease holds.
    pub fn require(&self) -> Result<(), HostdError> {
        if self.holds() {
            Ok(())
        } else {
            Err(HostdError::NoLease)
        }
    }

    pub fn view(&self) -> LeaseView {
        let now = BootInstant::now();
        let guard = self.lock();
        LeaseView {
            remaining: guard.0.expiry().and_then(|e| e.checked_duration_since(now)),
            self_fences: self.self_fences.load(Ordering::Relaxed),
            armed: !guard.1,
            ha_epoch: self.ha_epoch.load(Ordering::Relaxed),
        }
    }
}

/// The fence timer: every [`FENCE_CHECK`], while the lease does not hold, destroys every
/// active HA guest. It keeps looking after the lapse, so a guest started in a race with
/// the lapse dies on the next check. Ends when `stop` turns true.
pub async fn run_fence_loop(
    host: String,
    keeper: Arc<LeaseKeeper>,
    hypervisor: Arc<dyn Hypervisor>,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(FENCE_CHECK);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Whether the previous check found the lease holding, to count lapses, not checks.
    let mut held = keeper.holds();
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        // Disarmed (planned maintenance): the cluster does not count on this host fencing
        // itself, and will not restart its guests elsewhere.
        if keeper.holds() || keeper.disarmed() {
            held = true;
            continue;
        }
        let hv = Arc::clone(&hypervisor);
        let destroyed = tokio::task::spawn_blocking(move || destroy_ha_guests(hv.as_ref())).await;
        let destroyed = match destroyed {
            Ok(Ok(names)) => names,
            Ok(Err(e)) => {
                error!(%host, error = %error_chain(&e), "Self-fence failed; retrying");
                continue;
            }
            Err(e) => {
                error!(%host, error = %e, "Self-fence task failed; retrying");
                continue;
            }
        };
        if held || !destroyed.is_empty() {
            keeper.self_fences.fetch_add(1, Ordering::Relaxed);
            warn!(
                %host, destroyed = ?destroyed,
                "Lease lapsed: fenced this host (HA guests destroyed, starts refused until a new lease)"
            );
        }
        held = false;
    }
}

/// Destroys the active HA guests; returns their names.
pub fn destroy_ha_guests(hv: &dyn Hypervisor) -> Result<Vec<String>, HostdError> {
    let mut destroyed = Vec::new();
    for d in hv.list_managed()? {
        if d.ha
            && matches!(
                d.state,
                PowerState::Running | PowerState::Paused | PowerState::Other
            )
        {
            hv.destroy(&d.name)?;
            destroyed.push(d.name);
        }
    }
    Ok(destroyed)
}
