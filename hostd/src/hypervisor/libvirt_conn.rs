//! hostd's libvirt connection, kept across libvirtd restarts (issue 9, point 6).
//!
//! A daemon restart (a package upgrade, a crash) closes every client socket while the QEMU
//! guests keep running. A connection opened once for life would then fail every call for
//! good: no heartbeat, no destroy, no fence. [`LibvirtConn`] notices a dead connection after
//! a failed call (`virConnectIsAlive` turns false once the client saw the socket close) and
//! reopens it on the next call, no more often than [`retry_delay`] allows.
//!
//! libvirt's keepalive and close callback would notice the same only with libvirt's event
//! loop running in this process; hostd has none. The probe that hostd runs instead
//! ([`crate::fence_ready`]) is a real call with a deadline, which also catches a daemon that
//! hangs rather than dies.
//!
//! A `test:///` connection is never reopened: it is an in-process driver that cannot die,
//! and a node-file URI gives every connection a private instance, so reopening would lose
//! every domain.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use tracing::{info, warn};
use virt::connect::Connect;

use crate::error::HostdError;

/// First wait after a failed reopen; it doubles up to [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(100);
/// libvirtd restarts in about a second: retrying every 2 s at worst reconnects soon after.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(2);

/// Pure: how long to wait after `failures` failed reopens in a row.
pub(crate) fn retry_delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    FIRST_RETRY_DELAY
        .saturating_mul(1 << doublings)
        .min(MAX_RETRY_DELAY)
}

/// One libvirt connection, reopened after it is lost.
pub(crate) struct LibvirtConn {
    uri: String,
    reopens: bool,
    state: Mutex<State>,
}

struct State {
    /// `None` once the connection was found dead, until a reopen succeeds.
    conn: Option<Connect>,
    /// Counts opened connections, so that a failure reported on an old one does not drop
    /// its replacement.
    epoch: u64,
    /// Failed reopens since the connection was lost.
    failures: u32,
    /// No reopen before this.
    not_before: Option<Instant>,
}

impl LibvirtConn {
    /// Opens `uri`; an error here is a start-up error (nothing to keep yet).
    pub(crate) fn open(uri: &str) -> Result<Self, HostdError> {
        let conn = Connect::open(Some(uri)).map_err(|source| HostdError::Connect {
            uri: uri.to_string(),
            source,
        })?;
        Ok(Self {
            uri: uri.to_string(),
            reopens: !uri.starts_with("test:"),
            state: Mutex::new(State {
                conn: Some(conn),
                epoch: 0,
                failures: 0,
                not_before: None,
            }),
        })
    }

    pub(crate) fn uri(&self) -> &str {
        &self.uri
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is three plain fields, consistent after every assignment.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The live connection, reopening a lost one if the backoff allows. Blocks while it
    /// reopens (callers are on blocking threads); concurrent callers wait for that one try
    /// instead of each opening their own.
    pub(crate) fn get(&self) -> Result<(Connect, u64), HostdError> {
        let mut state = self.lock();
        if let Some(conn) = &state.conn {
            return Ok((conn.clone(), state.epoch));
        }
        let now = Instant::now();
        if let Some(not_before) = state.not_before.filter(|t| *t > now) {
            return Err(HostdError::LibvirtLost {
                uri: self.uri.clone(),
                retry_in: not_before - now,
            });
        }
        match Connect::open(Some(&self.uri)) {
            Ok(conn) => {
                info!(uri = %self.uri, failed_tries = state.failures, "Reconnected to libvirt");
                state.failures = 0;
                state.not_before = None;
                state.epoch += 1;
                state.conn = Some(conn.clone());
                Ok((conn, state.epoch))
            }
            Err(source) => {
                state.failures = state.failures.saturating_add(1);
                let delay = retry_delay(state.failures);
                state.not_before = Some(now + delay);
                warn!(
                    uri = %self.uri, failed_tries = state.failures, retry_in = ?delay,
                    error = %source.message(), "Cannot reconnect to libvirt"
                );
                Err(HostdError::Connect {
                    uri: self.uri.clone(),
                    source,
                })
            }
        }
    }

    /// Called after a call on `conn` (of `epoch`, from [`LibvirtConn::get`]) failed: if
    /// the connection is dead, drops it so that the next `get` reopens. A failure on a
    /// live connection (no such domain, say) changes nothing.
    pub(crate) fn failed(&self, conn: &Connect, epoch: u64) {
        if !self.reopens || conn.is_alive().unwrap_or(false) {
            return;
        }
        let mut state = self.lock();
        // Another thread may have replaced it already; only the dead one is dropped.
        if state.conn.is_some() && state.epoch == epoch {
            warn!(uri = %self.uri, "libvirt connection lost (libvirtd restarted or died); reconnecting");
            state.conn = None;
            state.failures = 0;
            state.not_before = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_to_a_ceiling() {
        assert_eq!(retry_delay(0), FIRST_RETRY_DELAY);
        assert_eq!(retry_delay(1), FIRST_RETRY_DELAY);
        assert_eq!(retry_delay(2), FIRST_RETRY_DELAY * 2);
        assert_eq!(retry_delay(4), FIRST_RETRY_DELAY * 8);
        assert_eq!(retry_delay(6), MAX_RETRY_DELAY);
        assert_eq!(retry_delay(u32::MAX), MAX_RETRY_DELAY);
    }
}
