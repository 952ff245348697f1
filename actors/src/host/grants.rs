//! `GrantBook`: when this leader last sent each host a lease grant. The host actors write
//! it; the API reads it for `drover host list` (the lease column), and a restarted host
//! actor reads it back so it never forgets a grant it sent in this term.
//!
//! Only the leader's own grants are here, and only in memory: a new leader starts empty and
//! makes up for what it cannot know by waiting a full ttl + margin (see `health`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

#[derive(Debug, Clone, Default)]
pub struct GrantBook {
    sent: Arc<Mutex<HashMap<String, Instant>>>,
}

impl GrantBook {
    pub fn record(&self, host: &str, at: Instant) {
        self.lock().insert(host.to_string(), at);
    }

    pub fn last(&self, host: &str) -> Option<Instant> {
        self.lock().get(host).copied()
    }

    /// Forgets every grant: called when this node stops leading.
    pub fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Instant>> {
        // A panic elsewhere cannot leave a map of instants inconsistent.
        self.sent.lock().unwrap_or_else(|p| p.into_inner())
    }
}
