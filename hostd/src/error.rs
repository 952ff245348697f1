//! hostd's one error type, and how each kind of failure reaches the controller as a gRPC
//! status. The mapping is part of the contract: the controller retries `Internal`, treats
//! `NotFound` as "nothing to do here" and surfaces `AlreadyExists`/`InvalidArgument` to the
//! operator.

use std::path::PathBuf;

use tonic::Status;

/// Everything that can go wrong in hostd.
#[derive(Debug, thiserror::Error)]
pub enum HostdError {
    /// No domain managed by drover carries this name.
    #[error("Domain {name} not found")]
    NotFound { name: String },

    /// The domain is defined here but not running (a console needs a running guest).
    #[error("Domain {name} is not running")]
    NotRunning { name: String },

    /// A domain of this name exists but hostd did not create it, so it must not touch it.
    #[error("Domain {name} exists and is not managed by drover")]
    NotManaged { name: String },

    /// The request cannot be acted on as given.
    #[error("Invalid argument: {0}")]
    InvalidArgument(String),

    /// A libvirt call failed; `op` names the call so the log says which step broke.
    #[error("Libvirt {op} failed")]
    Libvirt {
        op: &'static str,
        #[source]
        source: virt::error::Error,
    },

    /// The single libvirt connection could not be opened at start-up.
    #[error("Cannot connect to libvirt at {uri}")]
    Connect {
        uri: String,
        #[source]
        source: virt::error::Error,
    },

    /// The libvirt connection was lost and the last reopen failed; the next try is due in
    /// `retry_in`.
    #[error("libvirt at {uri} is unreachable (connection lost; next reconnect in {retry_in:?})")]
    LibvirtLost {
        uri: String,
        retry_in: std::time::Duration,
    },

    /// A libvirt round trip did not answer within its deadline.
    #[error("libvirt did not answer within {0:?}")]
    LibvirtTimeout(std::time::Duration),

    /// The data directory could not be created.
    #[error("Cannot create data directory {}", path.display())]
    DataDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A blocking libvirt task panicked or was cancelled.
    #[error("Blocking libvirt task did not complete")]
    Blocking(#[source] tokio::task::JoinError),

    /// The command's term is older than the highest this host has seen: it comes from a
    /// deposed leader.
    #[error("Stale leader term {term}: this host has seen term {highest}")]
    StaleTerm { term: u64, highest: u64 },

    /// The command is for an older placement of the VM than the one this host runs.
    #[error("Stale generation {requested} for VM {vm}: its domain here is generation {held}")]
    StaleGeneration {
        vm: String,
        requested: u64,
        held: u64,
    },

    /// This host holds no lease from the controllers (or it lapsed): it must not start
    /// guests the cluster may already be restarting elsewhere.
    #[error("No lease: this host has not been confirmed by the controllers within the lease ttl")]
    NoLease,

    /// The lease file shared with the watchdog cannot be written.
    #[error("Lease file {} unusable: {reason}", path.display())]
    LeaseFile { path: PathBuf, reason: String },

    /// A small state file hostd or its watchdog keeps (`watchdog.json`, `drill-stop.json`)
    /// cannot be read or written.
    #[error("State file {} unusable: {reason}", path.display())]
    StateFile { path: PathBuf, reason: String },

    /// A stop-agent drill needs hostd-watchdog beside hostd, and none was seen.
    #[error("No hostd-watchdog on this host: {0}")]
    NoWatchdog(String),

    /// The kernel watchdog device cannot be opened.
    #[error("Watchdog device {} unusable: {reason}", path.display())]
    WatchdogDevice { path: PathBuf, reason: String },

    /// The persisted fencing state cannot be read or written.
    #[error("Fencing state at {} unusable: {reason}", path.display())]
    FencingState { path: PathBuf, reason: String },

    /// A storage pool's directory cannot serve as one on this host.
    #[error("Pool path {path} on this host {reason}")]
    PoolPath { path: String, reason: String },

    /// A network cannot be removed while domains here still use it.
    #[error("Network {network} is in use by domains {domains} on this host")]
    NetworkInUse { network: String, domains: String },

    /// A VM's disk is in a pool this host has not set up.
    #[error("Storage pool {pool} is not set up on this host")]
    PoolMissing { pool: String },

    /// A VM that has run before lacks a volume here: its data is elsewhere (or lost), and
    /// an empty disk in its place would boot it without.
    #[error(
        "Volume {volume} is missing from pool {pool} on this host; the VM has run before, so \
         its disk is not created again (is the shared filesystem mounted here?)"
    )]
    VolumeMissing { pool: String, volume: String },

    /// An upload's volume is there already (an earlier upload of it, or a name clash).
    #[error("Volume {volume} exists already in pool {pool}")]
    VolumeExists { pool: String, volume: String },

    /// This host's libvirt driver cannot store data in a volume (the test driver).
    #[error("This host's libvirt cannot store uploaded data: {0}")]
    UploadUnsupported(String),

    /// An uploaded file is not an image drover accepts.
    #[error("Not a usable image: {0}")]
    BadImage(String),

    /// A VM's cloud-init seed could not be built.
    #[error("Cannot build the cloud-init seed: {0}")]
    Seed(String),

    /// A helper program (`qemu-img`) could not be run.
    #[error("Cannot run {program}: {reason}")]
    Tool {
        program: &'static str,
        reason: String,
    },

    /// A running guest did not release a NIC asked to be unplugged (it has no ACPI
    /// hot-plug, or ignored the request).
    #[error(
        "VM {vm}'s guest did not release NIC {mac} within {waited:?} (does it support \
         hot-unplug?); stop the VM to remove it"
    )]
    NicNotReleased {
        vm: String,
        mac: String,
        waited: std::time::Duration,
    },

    /// The host's network interfaces could not be listed.
    #[error("Cannot list the host's network interfaces")]
    HostLinks(#[source] std::io::Error),

    /// The gRPC server failed.
    #[error("gRPC server failed")]
    Serve(#[source] tonic::transport::Error),
}

impl HostdError {
    /// Wraps a libvirt error with the name of the call that produced it.
    pub(crate) fn libvirt(op: &'static str) -> impl FnOnce(virt::error::Error) -> HostdError {
        move |source| HostdError::Libvirt { op, source }
    }
}

impl From<HostdError> for Status {
    fn from(err: HostdError) -> Status {
        match &err {
            HostdError::NotFound { .. } => Status::not_found(err.to_string()),
            HostdError::NotRunning { .. } => Status::failed_precondition(err.to_string()),
            HostdError::NotManaged { .. } | HostdError::VolumeExists { .. } => {
                Status::already_exists(err.to_string())
            }
            HostdError::InvalidArgument(_) => Status::invalid_argument(err.to_string()),
            HostdError::StaleTerm { .. }
            | HostdError::StaleGeneration { .. }
            | HostdError::NoLease
            | HostdError::PoolPath { .. }
            | HostdError::PoolMissing { .. }
            | HostdError::NetworkInUse { .. }
            | HostdError::NicNotReleased { .. }
            | HostdError::VolumeMissing { .. }
            | HostdError::NoWatchdog(_)
            | HostdError::UploadUnsupported(_) => Status::failed_precondition(err.to_string()),
            HostdError::BadImage(_) => Status::invalid_argument(err.to_string()),
            HostdError::Tool { .. } | HostdError::Seed(_) | HostdError::HostLinks(_) => {
                Status::internal(err.to_string())
            }
            HostdError::FencingState { .. }
            | HostdError::LeaseFile { .. }
            | HostdError::StateFile { .. }
            | HostdError::WatchdogDevice { .. }
            | HostdError::LibvirtLost { .. }
            | HostdError::LibvirtTimeout(_) => Status::internal(err.to_string()),
            // libvirt's own message is what an operator needs to act on; the error code
            // suffix that `virt`'s Display adds is noise in a status line.
            HostdError::Libvirt { source, .. } | HostdError::Connect { source, .. } => {
                Status::internal(format!("{err}: {}", source.message()))
            }
            HostdError::DataDir { source, .. } => Status::internal(format!("{err}: {source}")),
            HostdError::Blocking(source) => Status::internal(format!("{err}: {source}")),
            HostdError::Serve(source) => Status::internal(format!("{err}: {source}")),
        }
    }
}

/// `err` and its causes on one line, for logs.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn maps_each_kind_to_its_status_code() {
        let cases = [
            (HostdError::NotFound { name: "a".into() }, Code::NotFound),
            (
                HostdError::NotManaged { name: "a".into() },
                Code::AlreadyExists,
            ),
            (
                HostdError::InvalidArgument("vcpus must be > 0".into()),
                Code::InvalidArgument,
            ),
            (HostdError::NoLease, Code::FailedPrecondition),
        ];
        for (err, code) in cases {
            assert_eq!(Status::from(err).code(), code);
        }
    }
}
