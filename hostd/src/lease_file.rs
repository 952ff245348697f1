//! The lease file: how hostd tells the separate watchdog process (`hostd-watchdog`) until
//! when this host may run its HA guests. hostd rewrites it on every grant; the watchdog
//! only reads it. If hostd freezes, the file stops moving and the watchdog fences at the
//! time it names — the fence does not depend on hostd being alive.
//!
//! Times are readings of the system-wide `CLOCK_BOOTTIME` in nanoseconds
//! ([`BootInstant`]), which every process on the host shares, which never jumps with the
//! wall clock, and which keeps counting while the machine is suspended. That clock restarts
//! at boot, so the record names the boot it belongs to; a record from another boot is no
//! lease at all. The file is replaced atomically (write, then rename; [`crate::state_file`])
//! and not fsynced: it must survive a process crash, and a machine crash takes the guests
//! with it anyway.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::BootInstant;
use crate::error::HostdError;
use crate::state_file;

/// The file's name inside hostd's data directory.
pub const FILE_NAME: &str = "lease.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// The lease holds while `CLOCK_BOOTTIME` is below this.
    ///
    /// `None` in a file written before hostd counted on the boot clock: that file has
    /// `expires_mono_ns` instead (ignored when read), a `CLOCK_MONOTONIC` reading. Such a
    /// file is no lease. Its number lags the boot clock by however long the machine has
    /// been suspended since boot, and nothing in the file says by how much, so it cannot
    /// be converted; and reading it as if it were boottime would be trusting a number for
    /// what it does not mean. Losing the lease once costs an upgraded host its HA guests
    /// unless HA is disarmed for the upgrade (`disarmed` below is still honoured: it is
    /// not a time). An older watchdog cannot read a new file at all, which it treats as a
    /// lapse: the safe side too.
    #[serde(default)]
    pub expires_boot_ns: Option<u64>,
    /// The term of the leader whose grant set it.
    pub term: u64,
    /// `/proc/sys/kernel/random/boot_id` when it was written.
    pub boot_id: String,
    /// The newest grant said HA is disarmed: nobody fences this host's guests.
    #[serde(default)]
    pub disarmed: bool,
}

impl LeaseRecord {
    /// How long the lease still holds, if it does: `None` once lapsed, when the record
    /// comes from an earlier boot (whose clock meant something else), or when it holds no
    /// boot-clock expiry (a file from before that clock, see `expires_boot_ns`).
    pub fn remaining(&self) -> Option<Duration> {
        if self.boot_id != boot_id() {
            return None;
        }
        remaining(BootInstant::from_nanos(self.expires_boot_ns?))
    }
}

/// This boot's id; empty if the kernel does not say (then no record ever matches one
/// written with an id, and an empty one is only trusted within the same unknown boot).
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// How long until `until`, or `None` if it has passed.
pub fn remaining(until: BootInstant) -> Option<Duration> {
    until.checked_duration_since(BootInstant::now())
}

pub fn path_in(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE_NAME)
}

/// Replaces the file at `path` with `record` (atomically, see [`crate::state_file`]).
pub fn write(path: &Path, record: &LeaseRecord) -> Result<(), HostdError> {
    state_file::write(path, record).map_err(as_lease_error)
}

/// Reads the file; `None` when there is none yet. A garbled file is an error: the watchdog
/// treats it like an expired lease.
pub fn read(path: &Path) -> Result<Option<LeaseRecord>, HostdError> {
    state_file::read(path).map_err(as_lease_error)
}

/// The lease file's failures keep their own name in logs and statuses.
fn as_lease_error(e: HostdError) -> HostdError {
    match e {
        HostdError::StateFile { path, reason } => HostdError::LeaseFile { path, reason },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_missing() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_in(dir.path());
        assert_eq!(read(&path).unwrap(), None);
        let record = LeaseRecord {
            expires_boot_ns: Some(42),
            term: 7,
            boot_id: boot_id(),
            disarmed: false,
        };
        write(&path, &record).unwrap();
        assert_eq!(read(&path).unwrap(), Some(record));
        std::fs::write(&path, b"{garbled").unwrap();
        assert!(read(&path).is_err());
    }

    #[test]
    fn a_record_from_another_boot_holds_nothing() {
        let ahead = BootInstant::now() + Duration::from_secs(60);
        let mut record = LeaseRecord {
            expires_boot_ns: Some(ahead.as_nanos()),
            term: 1,
            boot_id: boot_id(),
            disarmed: false,
        };
        assert!(record.remaining().is_some());
        record.boot_id = "another-boot".into();
        assert_eq!(record.remaining(), None);
    }

    #[test]
    fn a_file_from_the_monotonic_clock_is_no_lease() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_in(dir.path());
        // As hostd wrote it before counting on the boot clock, with an expiry far ahead.
        let old = serde_json::json!({
            "expires_mono_ns": u64::MAX / 2,
            "term": 7,
            "boot_id": boot_id(),
            "disarmed": true,
        });
        std::fs::write(&path, old.to_string()).unwrap();
        let record = read(&path).unwrap().expect("still readable");
        assert_eq!(record.expires_boot_ns, None);
        assert_eq!(record.remaining(), None, "not trusted as a boottime expiry");
        assert!(record.disarmed, "the disarm is not a time: it still counts");
    }
}
