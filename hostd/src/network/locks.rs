//! One read-write lock per network. Wiring a network (EnsureNetwork, a start's wiring)
//! and removing it hold it exclusive: two wirings at once would both create the libvirt
//! network or the VXLAN link, and one would fail; a removal checks that no domain uses the
//! network and tears it down, and a start between the two would lose its network at once.
//! A start holds it shared from its wiring until its domain runs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedRwLockWriteGuard, RwLock};

#[derive(Default)]
pub(crate) struct NetworkLocks {
    locks: Mutex<HashMap<String, Arc<RwLock<()>>>>,
}

impl NetworkLocks {
    fn lock_of(&self, name: &str) -> Arc<RwLock<()>> {
        // The map holds no invariant a panic could break.
        let mut locks = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(locks.entry(name.to_string()).or_default())
    }

    /// Exclusive holds of every network in `names`, taken in sorted order (so two
    /// callers never wait on each other crosswise); `downgrade` them to shared ones.
    pub(crate) async fn wiring(&self, names: &[String]) -> Vec<OwnedRwLockWriteGuard<()>> {
        let mut sorted: Vec<&String> = names.iter().collect();
        sorted.sort();
        sorted.dedup();
        let mut guards = Vec::with_capacity(sorted.len());
        for name in sorted {
            guards.push(self.lock_of(name).write_owned().await);
        }
        guards
    }

    /// The exclusive hold of network `name`.
    pub(crate) async fn changing(&self, name: &str) -> OwnedRwLockWriteGuard<()> {
        self.lock_of(name).write_owned().await
    }
}
