//! Self-fencing, layers 2 and 3 (DESIGN.md, fence layers): `hostd-watchdog`, a separate
//! small process beside hostd. It does not talk to hostd or the controllers at all: it reads
//! the lease file hostd rewrites on every grant, and once the lease there has lapsed it
//! destroys every active HA domain through its own libvirt connection. A hostd that is
//! frozen (SIGSTOP, deadlock) stops renewing the file, so its guests are fenced anyway.
//!
//! Layer 3, optional: with `device` set (`/dev/watchdog`, softdog or hardware), the loop
//! pets the device on every healthy round — the lease holds, or it lapsed and no HA domain
//! is left running. If this process freezes, or cannot fence (libvirt hangs or fails), the
//! petting stops and the kernel resets the host: the guests die with it.
//!
//! The arithmetic that makes layer 3 a fence: while the lease holds nothing is owed, so the
//! device is petted even if libvirt is away for a moment (a restart); from the lapse on, a
//! round pets only once no HA guest runs. The last pet is then at the lapse at the latest,
//! and the kernel resets the host `device_timeout` later, which this process sets on the
//! device itself: it must not exceed the cluster's lease margin (1 s by default), the time
//! the controllers wait after a lapse before restarting the guests elsewhere. The libvirt
//! connection is reopened after libvirtd restarts (`LibvirtConn`), so a restart does not
//! leave the watchdog unable to fence for good.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tracing::{error, info, warn};

use crate::clock::BootInstant;
use crate::error::{error_chain, HostdError};
use crate::hypervisor::domain_xml::DomainType;
use crate::hypervisor::libvirt::LibvirtHypervisor;
use crate::hypervisor::Hypervisor;
use crate::lease_file::{self, LeaseRecord};
use crate::self_fence::destroy_ha_guests;
use crate::watchdog_status::{self, WatchdogFence, WatchdogStatus};

#[derive(Debug, Clone)]
pub struct WatchdogConfig {
    pub libvirt_uri: String,
    /// hostd's data directory, where the lease file lives.
    pub data_dir: PathBuf,
    /// How often to look; bounds how late after the lapse the guests die.
    pub interval: Duration,
    /// The kernel watchdog device to pet, if any.
    pub device: Option<PathBuf>,
    /// The reset timeout set on the device: at most the cluster's lease margin.
    pub device_timeout: Duration,
}

/// What one look at the lease file says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Holds(Duration),
    /// HA is disarmed (planned maintenance): nothing is fenced.
    Disarmed,
    /// No lease, a lapsed one, one from another boot, or a file that cannot be read: HA
    /// guests may be running elsewhere by now.
    Lapsed(String),
}

/// Pure: the verdict on what was read from the lease file.
pub fn verdict(read: &Result<Option<LeaseRecord>, HostdError>) -> Verdict {
    match read {
        Ok(Some(record)) if record.disarmed && record.boot_id == lease_file::boot_id() => {
            Verdict::Disarmed
        }
        Ok(Some(record)) => match (record.remaining(), record.expires_boot_ns) {
            (Some(left), _) => Verdict::Holds(left),
            (None, None) => Verdict::Lapsed(format!(
                "lease of term {} was recorded on the monotonic clock, not trusted",
                record.term
            )),
            (None, Some(_)) => Verdict::Lapsed(format!("lease of term {} has lapsed", record.term)),
        },
        Ok(None) => Verdict::Lapsed("no lease was ever granted".into()),
        Err(e) => Verdict::Lapsed(format!("lease file unreadable: {e}")),
    }
}

/// Runs until `stop` completes; `ready` is called once libvirt and the device are open.
/// Returns an error only if it cannot start; once running it keeps trying.
pub async fn run(
    config: WatchdogConfig,
    ready: impl FnOnce(),
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), HostdError> {
    let uri = config.libvirt_uri.clone();
    let hypervisor: Arc<dyn Hypervisor> = Arc::new(
        // The watchdog never defines a domain, so the domain type plays no part.
        tokio::task::spawn_blocking(move || LibvirtHypervisor::open(&uri, DomainType::Qemu))
            .await
            .map_err(HostdError::Blocking)??,
    );
    let mut device = match &config.device {
        Some(path) => Some(Device::open(path, config.device_timeout)?),
        None => None,
    };
    let file = lease_file::path_in(&config.data_dir);
    info!(lease_file = %file.display(), uri = %config.libvirt_uri, device = ?config.device, "Watchdog running");
    ready();
    let mut ticker = tokio::time::interval(config.interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(stop);
    let mut lapsed = false;
    // Whether the last fence failed, to log failures once and not every round.
    let mut unable = false;
    // What `watchdog.json` says: that this watchdog runs, and what it fenced last.
    let mut last_fence: Option<WatchdogFence> = None;
    let mut status_written: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = &mut stop => break,
        }
        let healthy = match verdict(&lease_file::read(&file)) {
            Verdict::Holds(_) | Verdict::Disarmed => {
                lapsed = false;
                true
            }
            Verdict::Lapsed(why) => {
                let hv = Arc::clone(&hypervisor);
                match tokio::task::spawn_blocking(move || destroy_ha_guests(hv.as_ref())).await {
                    Ok(Ok(destroyed)) => {
                        if unable {
                            info!("Watchdog can fence again");
                            unable = false;
                        }
                        if !destroyed.is_empty() || !lapsed {
                            warn!(%why, ?destroyed, "Watchdog fenced this host's HA guests");
                        }
                        if !destroyed.is_empty() {
                            last_fence = Some(WatchdogFence {
                                at_boot_ns: BootInstant::now().as_nanos(),
                                destroyed,
                            });
                            status_written = None;
                        }
                        lapsed = true;
                        true
                    }
                    Ok(Err(e)) => {
                        // Every round fails alike until libvirt is back: say it once.
                        if !unable {
                            error!(%why, error = %error_chain(&e), "Watchdog cannot fence: the device is no longer petted");
                        }
                        unable = true;
                        false
                    }
                    Err(e) => {
                        error!(%why, error = %e, "Watchdog fence task failed");
                        false
                    }
                }
            }
        };
        if let (true, Some(d)) = (healthy, device.as_mut()) {
            d.pet();
        }
        // Only a watchdog that could fence says it is alive.
        if healthy && status_written.is_none_or(|t| t.elapsed() >= watchdog_status::REFRESH) {
            match WatchdogStatus::now(last_fence.clone()).write(&config.data_dir) {
                Ok(()) => status_written = Some(tokio::time::Instant::now()),
                Err(e) => warn!(error = %e, "Cannot write the watchdog status"),
            }
        }
    }
    if let Some(d) = device {
        d.disarm();
    }
    info!("Watchdog stopped");
    Ok(())
}

/// The kernel watchdog device: every write postpones the reset; writing `V` before close
/// disarms it (the "magic close"), so a clean stop does not reset the host.
struct Device {
    path: PathBuf,
    file: std::fs::File,
}

// linux/watchdog.h: WDIOC_SETTIMEOUT = _IOWR('W', 6, int), WDIOC_GETTIMEOUT = _IOR('W', 7, int).
nix::ioctl_readwrite!(wdioc_settimeout, b'W', 6, std::ffi::c_int);
nix::ioctl_read!(wdioc_gettimeout, b'W', 7, std::ffi::c_int);

impl Device {
    /// Opens the device and sets its reset timeout to `timeout` (whole seconds, as the
    /// kernel counts). A driver that cannot go that low is refused: a longer timeout would
    /// reset the host only after its guests were restarted elsewhere. A path that is not a
    /// character device (a file or FIFO, as tests use to watch the petting) is petted
    /// without a timeout, with a warning.
    fn open(path: &std::path::Path, timeout: Duration) -> Result<Self, HostdError> {
        let unusable = |reason: String| HostdError::WatchdogDevice {
            path: path.to_path_buf(),
            reason,
        };
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| unusable(e.to_string()))?;
        let is_device = {
            use std::os::unix::fs::FileTypeExt as _;
            file.metadata()
                .map_err(|e| unusable(e.to_string()))?
                .file_type()
                .is_char_device()
        };
        let device = Self {
            path: path.to_path_buf(),
            file,
        };
        if !is_device {
            warn!(device = %path.display(), "Not a character device: petted, but no reset timeout is set");
            return Ok(device);
        }
        let wanted = device_timeout_secs(timeout).map_err(unusable)?;
        let now = set_timeout(&device.file, wanted).map_err(unusable)?;
        if now > wanted {
            // The magic close first: a watchdog that refuses to start must not leave the
            // host to be reset by a device nobody pets.
            device.disarm();
            return Err(unusable(format!(
                "the driver set a {now} s timeout, longer than the {wanted} s asked for"
            )));
        }
        info!(device = %path.display(), timeout_s = now, "Watchdog device armed");
        Ok(device)
    }

    fn pet(&mut self) {
        if let Err(e) = self.file.write_all(b"\0").and_then(|()| self.file.flush()) {
            error!(device = %self.path.display(), error = %e, "Cannot pet the watchdog device");
        }
    }

    fn disarm(mut self) {
        if let Err(e) = self.file.write_all(b"V").and_then(|()| self.file.flush()) {
            warn!(device = %self.path.display(), error = %e, "Cannot disarm the watchdog device");
        }
    }
}

/// Sets the reset timeout of the watchdog device `file` to `secs` and returns what the
/// driver settled on (drivers round to what their hardware counts).
// The kernel's watchdog API is ioctls only; nix wraps them as unsafe fns.
#[allow(unsafe_code)]
fn set_timeout(file: &std::fs::File, secs: std::ffi::c_int) -> Result<std::ffi::c_int, String> {
    let fd = std::os::fd::AsRawFd::as_raw_fd(file);
    let mut asked = secs;
    // SAFETY: `fd` is open for as long as `file` is borrowed, and both ioctls read or write
    // exactly one int through the pointer, which points at a live local.
    unsafe { wdioc_settimeout(fd, &mut asked) }
        .map_err(|e| format!("cannot set a {secs} s timeout: {e}"))?;
    let mut now: std::ffi::c_int = 0;
    // SAFETY: as above.
    unsafe { wdioc_gettimeout(fd, &mut now) }
        .map_err(|e| format!("cannot read the timeout back: {e}"))?;
    Ok(now)
}

/// Pure: the device timeout, in the whole seconds the kernel takes. Rounds down (a shorter
/// reset is the safe side) but never to zero, which drivers read as "never".
pub fn device_timeout_secs(timeout: Duration) -> Result<std::ffi::c_int, String> {
    if timeout < Duration::from_secs(1) {
        return Err(format!(
            "device timeout {timeout:?} is below the 1 s the kernel can count"
        ));
    }
    std::ffi::c_int::try_from(timeout.as_secs())
        .map_err(|_| format!("device timeout {timeout:?} is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_timeouts_round_down_to_whole_seconds() {
        assert_eq!(device_timeout_secs(Duration::from_millis(1999)), Ok(1));
        assert_eq!(device_timeout_secs(Duration::from_secs(3)), Ok(3));
        assert!(device_timeout_secs(Duration::from_millis(999)).is_err());
        assert!(device_timeout_secs(Duration::from_secs(u64::MAX)).is_err());
    }

    #[test]
    fn verdicts() {
        let ahead = (BootInstant::now() + Duration::from_secs(30)).as_nanos();
        let record = |expires: u64, boot_id: String| LeaseRecord {
            expires_boot_ns: Some(expires),
            term: 4,
            boot_id,
            disarmed: false,
        };
        assert!(matches!(
            verdict(&Ok(Some(record(ahead, lease_file::boot_id())))),
            Verdict::Holds(d) if d > Duration::from_secs(29)
        ));
        assert!(matches!(
            verdict(&Ok(Some(record(1, lease_file::boot_id())))),
            Verdict::Lapsed(_)
        ));
        assert!(matches!(
            verdict(&Ok(Some(record(ahead, "other".into())))),
            Verdict::Lapsed(_)
        ));
        assert!(matches!(verdict(&Ok(None)), Verdict::Lapsed(_)));
        let monotonic = LeaseRecord {
            expires_boot_ns: None,
            ..record(ahead, lease_file::boot_id())
        };
        assert!(matches!(verdict(&Ok(Some(monotonic))), Verdict::Lapsed(_)));
        let disarmed = LeaseRecord {
            disarmed: true,
            ..record(1, lease_file::boot_id())
        };
        assert_eq!(verdict(&Ok(Some(disarmed))), Verdict::Disarmed);
        let unreadable = Err(HostdError::LeaseFile {
            path: "x".into(),
            reason: "garbled".into(),
        });
        assert!(matches!(verdict(&unreadable), Verdict::Lapsed(_)));
    }
}
