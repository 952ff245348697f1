//! One lock per VM name, and what lets a heartbeat tell a settled domain from one a command
//! is changing.
//!
//! Commands that change a domain (start, stop, undefine, a migration out) hold its lock, so
//! they never interleave. Heartbeats do not take the locks (a long stop or migration must
//! not hold them up); instead each lock counts its acquisitions and releases, seqlock
//! style, and a heartbeat reads the counts before and after listing the domains: a domain
//! whose count moved or is odd was mid-command, and is reported `busy`. The controllers
//! count a report as proof of a domain's state only when it is not busy — a start that
//! has written the new generation but not yet started QEMU must never read as "shut off".

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::OwnedMutexGuard;

#[derive(Default)]
struct Slot {
    lock: Arc<tokio::sync::Mutex<()>>,
    /// Odd while held; bumped on every acquisition and release.
    seq: Arc<AtomicU64>,
}

/// The per-VM locks of one hostd.
#[derive(Default)]
pub(crate) struct VmLocks {
    slots: Mutex<HashMap<String, Slot>>,
}

/// Holds one VM's lock; releasing it is visible to [`VmLocks::snapshot`].
pub(crate) struct VmGuard {
    _guard: OwnedMutexGuard<()>,
    seq: Arc<AtomicU64>,
}

impl Drop for VmGuard {
    fn drop(&mut self) {
        self.seq.fetch_add(1, Ordering::SeqCst);
    }
}

/// Every VM's lock count at one moment.
pub(crate) struct Snapshot(HashMap<String, u64>);

impl VmLocks {
    pub(crate) async fn lock(&self, name: &str) -> VmGuard {
        let (lock, seq) = {
            // The map holds no invariant a panic could break, so a poisoned lock is usable.
            let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
            let slot = slots.entry(name.to_string()).or_default();
            (Arc::clone(&slot.lock), Arc::clone(&slot.seq))
        };
        let guard = lock.lock_owned().await;
        seq.fetch_add(1, Ordering::SeqCst);
        VmGuard { _guard: guard, seq }
    }

    pub(crate) fn snapshot(&self) -> Snapshot {
        let slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        Snapshot(
            slots
                .iter()
                .map(|(name, slot)| (name.clone(), slot.seq.load(Ordering::SeqCst)))
                .collect(),
        )
    }
}

impl Snapshot {
    /// Whether a command on `name` was under way at either snapshot or ran between them.
    pub(crate) fn busy(&self, after: &Snapshot, name: &str) -> bool {
        let before = self.0.get(name).copied().unwrap_or(0);
        let later = after.0.get(name).copied().unwrap_or(0);
        before != later || before % 2 == 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_command_during_the_listing_marks_the_domain_busy() {
        let locks = VmLocks::default();
        // Settled: nothing held, nothing in between.
        let (a, b) = (locks.snapshot(), locks.snapshot());
        assert!(!a.busy(&b, "web"));
        // Held across the whole listing.
        let guard = locks.lock("web").await;
        let (a, b) = (locks.snapshot(), locks.snapshot());
        assert!(a.busy(&b, "web"));
        // Released during the listing.
        drop(guard);
        let c = locks.snapshot();
        assert!(b.busy(&c, "web"));
        // A whole command run between the two reads (even count at both ends).
        let before = locks.snapshot();
        drop(locks.lock("web").await);
        let after = locks.snapshot();
        assert!(before.busy(&after, "web"));
        // A first command on a new name during the listing.
        let before = locks.snapshot();
        let _g = locks.lock("db").await;
        assert!(before.busy(&locks.snapshot(), "db"));
        // Other VMs are not affected.
        let (a, b) = (locks.snapshot(), locks.snapshot());
        assert!(!a.busy(&b, "web"));
    }
}
