//! hostd's settings, as `run` receives them. Parsing flags is main's business; tests build a
//! `Config` directly.

use std::path::PathBuf;
use std::time::Duration;

use drover_proto::transport::TlsHandle;

/// How often a session sends heartbeats when the controller's Hello does not say.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(1000);

/// Settings for one hostd process.
#[derive(Debug, Clone)]
pub struct Config {
    /// The host's name in the cluster; reported in `HostInfo` and every heartbeat.
    pub name: String,
    /// The libvirt connection URI (`qemu:///system`, `test:///default`, ...).
    pub libvirt_uri: String,
    /// Where hostd keeps state that must survive restarts (fencing tokens, later). Created
    /// if missing.
    pub data_dir: PathBuf,
    /// Heartbeat interval for sessions whose Hello leaves it at zero.
    pub heartbeat_interval: Duration,
    /// Mutual TLS: serve only clients (controllers) with a certificate from the cluster CA.
    /// `None` serves plaintext, for local trials only.
    pub tls: TlsHandle,
}

impl Config {
    /// A config with the default heartbeat interval.
    pub fn new(
        name: impl Into<String>,
        libvirt_uri: impl Into<String>,
        data_dir: impl Into<PathBuf>,
    ) -> Config {
        Config {
            name: name.into(),
            libvirt_uri: libvirt_uri.into(),
            data_dir: data_dir.into(),
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            tls: None,
        }
    }
}
