//! `watchdog.json` in hostd's data directory: `hostd-watchdog` says there that it is alive
//! and what it fenced last. hostd reads it for a stop-agent drill, which may only stop
//! hostd when a watchdog is there to fence in its place, and whose report says what the
//! watchdog did. Times are `CLOCK_BOOTTIME` readings, like the lease file's.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::BootInstant;
use crate::error::HostdError;
use crate::lease_file::boot_id;
use crate::state_file;

pub const FILE_NAME: &str = "watchdog.json";

/// How often the watchdog rewrites the file while nothing happens.
pub const REFRESH: Duration = Duration::from_secs(1);
/// A file older than this means no watchdog is running.
pub const FRESH: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchdogStatus {
    pub boot_id: String,
    pub pid: u32,
    /// When the watchdog last looked at the lease.
    pub alive_boot_ns: u64,
    /// The last round that destroyed HA guests.
    pub last_fence: Option<WatchdogFence>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WatchdogFence {
    pub at_boot_ns: u64,
    pub destroyed: Vec<String>,
}

pub fn path_in(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE_NAME)
}

impl WatchdogStatus {
    pub fn now(last_fence: Option<WatchdogFence>) -> Self {
        Self {
            boot_id: boot_id(),
            pid: std::process::id(),
            alive_boot_ns: BootInstant::now().as_nanos(),
            last_fence,
        }
    }

    pub fn write(&self, data_dir: &Path) -> Result<(), HostdError> {
        state_file::write(&path_in(data_dir), self)
    }

    /// How long ago the watchdog last looked; `None` for a file from another boot.
    pub fn age(&self) -> Option<Duration> {
        if self.boot_id != boot_id() {
            return None;
        }
        Some(
            BootInstant::now()
                .checked_duration_since(BootInstant::from_nanos(self.alive_boot_ns))
                .unwrap_or_default(),
        )
    }
}

/// The watchdog's status if one ran within [`FRESH`]; otherwise why not, in words.
pub fn fresh(data_dir: &Path) -> Result<WatchdogStatus, HostdError> {
    let status: Option<WatchdogStatus> = state_file::read(&path_in(data_dir))?;
    let Some(status) = status else {
        return Err(HostdError::NoWatchdog(format!(
            "{} was never written (run hostd-watchdog with --data-dir {})",
            FILE_NAME,
            data_dir.display()
        )));
    };
    match status.age() {
        Some(age) if age <= FRESH => Ok(status),
        Some(age) => Err(HostdError::NoWatchdog(format!(
            "hostd-watchdog (pid {}) last looked at the lease {} ms ago",
            status.pid,
            age.as_millis()
        ))),
        None => Err(HostdError::NoWatchdog(format!(
            "{FILE_NAME} is from an earlier boot"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fresh_status_passes_and_a_stale_or_missing_one_names_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let missing = fresh(dir.path()).unwrap_err().to_string();
        assert!(missing.contains("never written"), "{missing}");
        let status = WatchdogStatus::now(None);
        status.write(dir.path()).unwrap();
        assert_eq!(fresh(dir.path()).unwrap(), status);
        let stale = WatchdogStatus {
            alive_boot_ns: BootInstant::now().as_nanos().saturating_sub(10_000_000_000),
            ..status.clone()
        };
        stale.write(dir.path()).unwrap();
        let err = fresh(dir.path()).unwrap_err().to_string();
        assert!(err.contains("ms ago"), "{err}");
        let other_boot = WatchdogStatus {
            boot_id: "another".into(),
            ..status
        };
        other_boot.write(dir.path()).unwrap();
        let err = fresh(dir.path()).unwrap_err().to_string();
        assert!(err.contains("earlier boot"), "{err}");
    }
}
