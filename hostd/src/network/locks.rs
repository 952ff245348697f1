//! One read-write lock per network: VM starts hold it shared while they wire the network
//! and start the domain on it, RemoveNetwork holds it exclusive while it checks that no
//! domain uses the network and tears it down. Without it a start could attach a guest to
//! the bridge between that check and the teardown, and lose its network at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock};

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

    /// Shared holds of every network in `names` (taken in sorted order, so two callers
    /// never wait on each other crosswise).
    pub(crate) async fn using(&self, names: &[String]) -> Vec<OwnedRwLockReadGuard<()>> {
        let mut sorted: Vec<&String> = names.iter().collect();
        sorted.sort();
        sorted.dedup();
        let mut guards = Vec::with_capacity(sorted.len());
        for name in sorted {
            guards.push(self.lock_of(name).read_owned().await);
        }
        guards
    }

    /// The exclusive hold of network `name`.
    pub(crate) async fn changing(&self, name: &str) -> OwnedRwLockWriteGuard<()> {
        self.lock_of(name).write_owned().await
    }
}
