//! The lease file: how hostd tells the separate watchdog process (`hostd-watchdog`) until
//! when this host may run its HA guests. hostd rewrites it on every grant; the watchdog
//! only reads it. If hostd freezes, the file stops moving and the watchdog fences at the
//! time it names — the fence does not depend on hostd being alive.
//!
//! Times are the system-wide `CLOCK_MONOTONIC` in nanoseconds, which every process on the
//! host shares and which never jumps with the wall clock. That clock restarts at boot, so
//! the record names the boot it belongs to; a record from another boot is no lease at all. The file is replaced atomically
//! (write, then rename) and not fsynced: it must survive a process crash, and a machine
//! crash takes the guests with it anyway.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::time::{clock_gettime, ClockId};
use serde::{Deserialize, Serialize};

use crate::error::HostdError;

/// The file's name inside hostd's data directory.
pub const FILE_NAME: &str = "lease.json";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// The lease holds while `CLOCK_MONOTONIC` is below this.
    pub expires_mono_ns: u64,
    /// The term of the leader whose grant set it.
    pub term: u64,
    /// `/proc/sys/kernel/random/boot_id` when it was written.
    pub boot_id: String,
    /// The newest grant said HA is disarmed: nobody fences this host's guests.
    #[serde(default)]
    pub disarmed: bool,
}

impl LeaseRecord {
    /// How long the lease still holds, if it does: `None` once lapsed or when the record
    /// comes from an earlier boot (whose monotonic clock meant something else).
    pub fn remaining(&self) -> Option<Duration> {
        if self.boot_id != boot_id() {
            return None;
        }
        remaining(self.expires_mono_ns)
    }
}

/// This boot's id; empty if the kernel does not say (then no record ever matches one
/// written with an id, and an empty one is only trusted within the same unknown boot).
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// `CLOCK_MONOTONIC` now, in nanoseconds.
pub fn mono_now_ns() -> u64 {
    // CLOCK_MONOTONIC cannot fail on Linux; 0 would only make a lease look lapsed.
    clock_gettime(ClockId::CLOCK_MONOTONIC)
        .map(|t| {
            (t.tv_sec() as u64)
                .saturating_mul(1_000_000_000)
                .saturating_add(t.tv_nsec() as u64)
        })
        .unwrap_or(0)
}

/// `at` on the shared monotonic clock. The clock is read before `Instant::now()`, so the
/// result can only come out early (in the safe direction), never late.
pub fn instant_to_mono_ns(at: Instant) -> u64 {
    let mono = mono_now_ns();
    let now = Instant::now();
    match at.checked_duration_since(now) {
        Some(ahead) => mono.saturating_add(ahead.as_nanos() as u64),
        None => mono.saturating_sub(now.duration_since(at).as_nanos() as u64),
    }
}

/// How long until `mono_ns`, or `None` if it has passed.
pub fn remaining(mono_ns: u64) -> Option<Duration> {
    mono_ns
        .checked_sub(mono_now_ns())
        .filter(|ns| *ns > 0)
        .map(Duration::from_nanos)
}

pub fn path_in(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE_NAME)
}

/// Replaces the file at `path` with `record`.
pub fn write(path: &Path, record: &LeaseRecord) -> Result<(), HostdError> {
    let fail = |reason: String| HostdError::LeaseFile {
        path: path.to_path_buf(),
        reason,
    };
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec(record).map_err(|e| fail(e.to_string()))?;
    std::fs::write(&tmp, bytes).map_err(|e| fail(e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| fail(e.to_string()))
}

/// Reads the file; `None` when there is none yet. A garbled file is an error: the watchdog
/// treats it like an expired lease.
pub fn read(path: &Path) -> Result<Option<LeaseRecord>, HostdError> {
    let fail = |reason: String| HostdError::LeaseFile {
        path: path.to_path_buf(),
        reason,
    };
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| fail(e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(fail(e.to_string())),
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
            expires_mono_ns: 42,
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
        let ahead = instant_to_mono_ns(Instant::now() + Duration::from_secs(60));
        let mut record = LeaseRecord {
            expires_mono_ns: ahead,
            term: 1,
            boot_id: boot_id(),
            disarmed: false,
        };
        assert!(record.remaining().is_some());
        record.boot_id = "another-boot".into();
        assert_eq!(record.remaining(), None);
    }

    #[test]
    fn instants_map_onto_the_shared_clock_never_late() {
        let at = Instant::now() + Duration::from_secs(5);
        let before = mono_now_ns();
        let mono = instant_to_mono_ns(at);
        // At most 5 s after the clock reading taken before the conversion.
        assert!(
            mono <= before + 5_000_000_000 + 1_000_000,
            "{mono} vs {before}"
        );
        assert!(mono >= before + 4_900_000_000);
        assert!(remaining(mono).is_some());
        assert_eq!(remaining(mono_now_ns().saturating_sub(1)), None);
    }
}
