//! The clock hostd and `hostd-watchdog` count lease time on: [`BootInstant`], a reading of
//! `CLOCK_BOOTTIME`.
//!
//! Not `std::time::Instant`: that is `CLOCK_MONOTONIC`, which stops while the machine is
//! suspended. A host suspended past its lease would resume believing the lease still held,
//! while the cluster, which saw the lease lapse, had already restarted its HA guests
//! elsewhere: for a moment both copies run. `CLOCK_BOOTTIME` also counts the time spent
//! suspended, so on resume the lease has lapsed and the fence layers act at once. Like
//! `CLOCK_MONOTONIC` it is system-wide (hostd and the watchdog read the same clock; the
//! lease file relies on that), never jumps with the wall clock, and restarts at boot.

use std::ops::Add;
use std::time::Duration;

use nix::time::{clock_gettime, ClockId};

/// A point on `CLOCK_BOOTTIME`, in nanoseconds since boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BootInstant(u64);

impl BootInstant {
    /// Now.
    pub fn now() -> BootInstant {
        // Fails only for an unknown clock id (kernels before 2.6.39), where hostd cannot
        // count leases safely at all: there is no safe value to go on with.
        let t = clock_gettime(ClockId::CLOCK_BOOTTIME)
            .expect("CLOCK_BOOTTIME exists on every supported Linux kernel");
        BootInstant(
            (t.tv_sec() as u64)
                .saturating_mul(1_000_000_000)
                .saturating_add(t.tv_nsec() as u64),
        )
    }

    /// The reading `nanos` (as stored in the lease file).
    pub fn from_nanos(nanos: u64) -> BootInstant {
        BootInstant(nanos)
    }

    pub fn as_nanos(self) -> u64 {
        self.0
    }

    /// How long after `earlier` this is; `None` if it is not later.
    pub fn checked_duration_since(self, earlier: BootInstant) -> Option<Duration> {
        self.0
            .checked_sub(earlier.0)
            .filter(|ns| *ns > 0)
            .map(Duration::from_nanos)
    }
}

impl Add<Duration> for BootInstant {
    type Output = BootInstant;

    /// Saturates: a lease "until the end of time" is not a wrap to the past.
    fn add(self, d: Duration) -> BootInstant {
        BootInstant(
            self.0
                .saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nanos(clock: ClockId) -> u64 {
        let t = clock_gettime(clock).unwrap();
        t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
    }

    #[test]
    fn reads_boottime_between_two_direct_readings() {
        let before = nanos(ClockId::CLOCK_BOOTTIME);
        let now = BootInstant::now().as_nanos();
        let after = nanos(ClockId::CLOCK_BOOTTIME);
        assert!(before <= now && now <= after, "{before} {now} {after}");
    }

    #[test]
    fn arithmetic() {
        let t = BootInstant::from_nanos(1_000);
        assert_eq!(
            t + Duration::from_nanos(500),
            BootInstant::from_nanos(1_500)
        );
        assert_eq!(
            (t + Duration::from_nanos(500)).checked_duration_since(t),
            Some(Duration::from_nanos(500))
        );
        assert_eq!(t.checked_duration_since(t), None);
        assert_eq!(t.checked_duration_since(t + Duration::from_nanos(1)), None);
        assert_eq!(
            BootInstant::from_nanos(u64::MAX - 1) + Duration::from_secs(1),
            BootInstant::from_nanos(u64::MAX)
        );
    }
}
