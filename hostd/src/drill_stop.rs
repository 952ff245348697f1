//! A stop-agent drill's record, `drill-stop.json` in hostd's data directory. hostd writes
//! it before it exits for the drill; the hostd its service manager starts next reads it
//! and, while the drill's time lasts, comes back cut off from the controllers and without
//! its own fence loop — still "stopped" as far as the cluster and the fencing go, so that
//! hostd-watchdog alone fences, as it would for a hostd that is really gone. The record
//! ends with EndIsolation or at its deadline (then it is ignored, and removed).

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::BootInstant;
use crate::error::HostdError;
use crate::lease_file::boot_id;
use crate::state_file;
use crate::watchdog_status::WatchdogStatus;

pub const FILE_NAME: &str = "drill-stop.json";

/// The exit code of a hostd stopped by a drill, for service managers and harnesses.
pub const EXIT_CODE: u8 = 75;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillStop {
    pub drill: u64,
    pub term: u64,
    pub boot_id: String,
    pub stopped_boot_ns: u64,
    pub until_boot_ns: u64,
}

pub fn path_in(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE_NAME)
}

impl DrillStop {
    pub fn new(drill: u64, term: u64, duration: Duration) -> Self {
        let now = BootInstant::now();
        Self {
            drill,
            term,
            boot_id: boot_id(),
            stopped_boot_ns: now.as_nanos(),
            until_boot_ns: (now + duration).as_nanos(),
        }
    }

    /// How much of the drill's time is left; `None` once over or from another boot.
    pub fn remaining(&self) -> Option<Duration> {
        if self.boot_id != boot_id() {
            return None;
        }
        BootInstant::from_nanos(self.until_boot_ns).checked_duration_since(BootInstant::now())
    }

    pub fn write(&self, data_dir: &Path) -> Result<(), HostdError> {
        state_file::write(&path_in(data_dir), self)
    }

    /// What the watchdog did since hostd stopped, in words for the drill's report.
    pub fn fence_note(&self, watchdog: Option<&WatchdogStatus>) -> String {
        let Some(status) = watchdog else {
            return "no hostd-watchdog status to read: nobody is known to have fenced".into();
        };
        match &status.last_fence {
            Some(f) if f.at_boot_ns >= self.stopped_boot_ns => format!(
                "hostd-watchdog destroyed HA guests {:?} {} ms after hostd stopped",
                f.destroyed,
                (f.at_boot_ns - self.stopped_boot_ns) / 1_000_000
            ),
            _ => "hostd-watchdog destroyed no HA guest while hostd was stopped".into(),
        }
    }
}

/// The stop in force, if hostd was stopped by a drill whose time is not over. A record
/// that is over (or garbled: hostd must start either way) is removed.
pub fn in_force(data_dir: &Path) -> Option<(DrillStop, Duration)> {
    let path = path_in(data_dir);
    let read: Result<Option<DrillStop>, _> = state_file::read(&path);
    match read {
        Ok(Some(stop)) => {
            if let Some(left) = stop.remaining() {
                return Some((stop, left));
            }
        }
        Ok(None) => return None,
        Err(e) => tracing::warn!(error = %e, "Ignoring an unreadable drill stop record"),
    }
    clear(data_dir);
    None
}

/// Removes the record (the drill gave the host back).
pub fn clear(data_dir: &Path) {
    if let Err(e) = state_file::remove(&path_in(data_dir)) {
        tracing::warn!(error = %e, "Cannot remove the drill stop record");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watchdog_status::WatchdogFence;

    #[test]
    fn a_stop_holds_until_its_deadline_and_is_cleared_after() {
        let dir = tempfile::tempdir().unwrap();
        assert!(in_force(dir.path()).is_none());
        let stop = DrillStop::new(4, 2, Duration::from_secs(60));
        stop.write(dir.path()).unwrap();
        let (read, left) = in_force(dir.path()).unwrap();
        assert_eq!(read, stop);
        assert!(left > Duration::from_secs(50) && left <= Duration::from_secs(60));
        let over = DrillStop {
            until_boot_ns: stop.stopped_boot_ns,
            ..stop.clone()
        };
        over.write(dir.path()).unwrap();
        assert!(in_force(dir.path()).is_none());
        assert!(
            !path_in(dir.path()).exists(),
            "an expired record is removed"
        );
        let other_boot = DrillStop {
            boot_id: "another".into(),
            ..stop
        };
        other_boot.write(dir.path()).unwrap();
        assert!(in_force(dir.path()).is_none());
    }

    #[test]
    fn the_note_says_what_the_watchdog_fenced_after_the_stop() {
        let stop = DrillStop::new(1, 1, Duration::from_secs(60));
        assert!(stop.fence_note(None).contains("nobody"));
        let mut status = WatchdogStatus::now(None);
        assert!(stop.fence_note(Some(&status)).contains("no HA guest"));
        status.last_fence = Some(WatchdogFence {
            at_boot_ns: stop.stopped_boot_ns - 1,
            destroyed: vec!["old".into()],
        });
        assert!(
            stop.fence_note(Some(&status)).contains("no HA guest"),
            "a fence from before the stop is not this drill's"
        );
        status.last_fence = Some(WatchdogFence {
            at_boot_ns: stop.stopped_boot_ns + 1_500_000_000,
            destroyed: vec!["keeper".into()],
        });
        let note = stop.fence_note(Some(&status));
        assert!(
            note.contains("keeper") && note.contains("1500 ms"),
            "{note}"
        );
    }
}
