//! hostd's settings, as `run` receives them. Parsing flags is main's business; tests build a
//! `Config` directly.

use std::path::PathBuf;
use std::time::Duration;

use drover_proto::transport::TlsHandle;

use crate::hypervisor::domain_type::DomainTypeChoice;

/// How often a session sends heartbeats when the controller's Hello does not say.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_millis(1000);

/// The longest lease a grant may give unless `--max-lease-ttl-ms` says otherwise.
pub const DEFAULT_MAX_LEASE_TTL: Duration = Duration::from_secs(60);

/// Settings for one hostd process.
#[derive(Debug, Clone)]
pub struct Config {
    /// The host's name in the cluster; reported in `HostInfo` and every heartbeat.
    pub name: String,
    /// The libvirt connection URI (`qemu:///system`, `test:///default`, ...).
    pub libvirt_uri: String,
    /// KVM or TCG guests; `Auto` asks whether QEMU can open /dev/kvm (see
    /// [`crate::hypervisor::domain_type`]).
    pub domain_type: DomainTypeChoice,
    /// How peers' libvirt reaches this host's libvirt for live migration. Empty: derived
    /// from `libvirt_uri` when that is a remote URI (`qemu+tcp://...`), else none.
    pub migration_uri: String,
    /// Where hostd keeps state that must survive restarts (fencing tokens, later). Created
    /// if missing.
    pub data_dir: PathBuf,
    /// Heartbeat interval for sessions whose Hello leaves it at zero.
    pub heartbeat_interval: Duration,
    /// Mutual TLS: serve only clients (controllers) with a certificate from the cluster CA.
    /// `None` serves plaintext, for local trials only.
    pub tls: TlsHandle,
    /// The longest lease a grant may give. A longer one is refused: a host must never be
    /// told to keep its HA guests for longer than the controllers wait before failing
    /// them over, whoever sends the grant.
    pub max_lease_ttl: Duration,
    /// This host's underlay address for VXLAN overlays: the address the other hosts'
    /// overlay traffic reaches it at, which must be the one it is registered with (the
    /// controllers name peers by hosts' registered addresses). `None`: overlays are refused.
    pub vtep_address: Option<std::net::Ipv4Addr>,
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
            domain_type: DomainTypeChoice::Auto,
            migration_uri: String::new(),
            data_dir: data_dir.into(),
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            tls: None,
            max_lease_ttl: DEFAULT_MAX_LEASE_TTL,
            vtep_address: None,
        }
    }

    /// The migration URI this host reports: the explicit one, else the libvirt URI when
    /// peers can use it as it is (it names a host, not a local socket).
    pub fn effective_migration_uri(&self) -> String {
        if !self.migration_uri.is_empty() {
            return self.migration_uri.clone();
        }
        if is_remote_uri(&self.libvirt_uri) {
            return self.libvirt_uri.clone();
        }
        String::new()
    }
}

/// `qemu+tcp://10.0.0.5:16509/system` is remote; `qemu:///system`, `test:///default` and
/// `qemu+unix:///system?socket=...` are not.
fn is_remote_uri(uri: &str) -> bool {
    let Some((scheme, rest)) = uri.split_once("://") else {
        return false;
    };
    let transport = scheme.split_once('+').map(|(_, t)| t).unwrap_or("");
    let authority = rest.split('/').next().unwrap_or("");
    !authority.is_empty() && transport != "unix"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migration_uri_defaults_to_a_remote_libvirt_uri_only() {
        let mut c = Config::new("h", "qemu+tcp://127.0.0.2:16510/system", "/tmp");
        assert_eq!(
            c.effective_migration_uri(),
            "qemu+tcp://127.0.0.2:16510/system"
        );
        c.migration_uri = "qemu+tls://h1.example/system".into();
        assert_eq!(c.effective_migration_uri(), "qemu+tls://h1.example/system");
        for local in [
            "qemu:///system",
            "test:///default",
            "qemu+unix:///system?socket=/x/libvirt-sock",
        ] {
            assert_eq!(
                Config::new("h", local, "/tmp").effective_migration_uri(),
                ""
            );
        }
    }
}
