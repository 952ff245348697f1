//! The seam between hostd and whatever runs the guests: the [`Hypervisor`] trait and the
//! plain data it speaks in. The libvirt implementation ([`libvirt::LibvirtHypervisor`]) is the
//! product and the only implementation: tests run it against libvirt's `test:///` driver or
//! real QEMU. The trait keeps libvirt types inside this module, as Cloud Hypervisor's
//! `hypervisor` crate does.
//!
//! Every method blocks (libvirt calls do). Callers on the async side run them inside
//! `tokio::task::spawn_blocking`.

pub mod domain_type;
pub mod domain_xml;
pub mod libvirt;
mod libvirt_conn;
mod libvirt_console;
mod libvirt_leases;
mod libvirt_migrate;
mod libvirt_network;
mod libvirt_nics;
mod libvirt_nwfilter;
mod libvirt_pool;
pub mod pool_xml;

use crate::error::HostdError;

/// What hostd needs to define and start one VM.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmSpec {
    pub name: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    /// The VM's placement generation, recorded in the domain so that a later fencing check
    /// can compare it with the controller's.
    pub generation: u64,
    /// The Raft term of the leader that asked; recorded alongside the generation.
    pub term: u64,
    /// Destroyed when this host's lease lapses.
    pub ha: bool,
    /// Its disks, the boot disk first.
    pub disks: Vec<VmDisk>,
    /// Create missing volumes (the VM has never run); otherwise a missing one is refused.
    pub create_volumes: bool,
    /// Its cloud-init seed, kept in the boot disk's pool.
    pub seed: Option<crate::seed::Seed>,
    /// Its NICs, in the guest's order; their networks are set up here first.
    pub nics: Vec<crate::network::VmNic>,
}

/// A volume of a VM in one of this host's pools.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmDisk {
    /// The cluster's pool name (libvirt's is `pool_xml::libvirt_name` of it).
    pub pool: String,
    pub volume: String,
    pub size_bytes: u64,
    pub format: String,
    /// A new volume is a qcow2 overlay on this one (a linked clone of an image).
    pub backing: Option<VolumeRef>,
    /// Create the volume if it is missing even though the VM has run (a disk added since).
    pub create: bool,
}

/// A volume of one of this host's pools, and its format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeRef {
    /// The cluster's pool name.
    pub pool: String,
    pub volume: String,
    /// `qcow2` or `raw`.
    pub format: String,
}

/// The bytes of a file being uploaded, chunk by chunk, as the gRPC stream delivers them;
/// an error ends the upload (the sender went away).
pub type UploadChunks<'a> = &'a mut dyn Iterator<Item = Result<Vec<u8>, HostdError>>;

/// Power state of a domain, reduced to what the controller reasons about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerState {
    Running,
    Paused,
    ShutOff,
    Crashed,
    /// Transitional or unknown states (no state, shutting down).
    Other,
}

/// A domain hostd manages, as observed now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedDomain {
    pub name: String,
    pub state: PowerState,
    pub generation: u64,
    pub term: u64,
    pub ha: bool,
    pub vcpus: u32,
    pub memory_mib: u64,
}

/// Host capacity and hypervisor identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCapacity {
    pub vcpus: u32,
    pub memory_mib: u64,
    /// The hypervisor driver's name as libvirt reports it (`QEMU`, `TEST`, ...).
    pub hypervisor: String,
}

/// One live migration, as the controller asked for it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MigrationRequest {
    pub name: String,
    /// The destination's libvirt URI, as this host's libvirt reaches it (peer to peer).
    pub dest_uri: String,
    /// The generation written into the destination domain's marker.
    pub new_generation: u64,
    /// The leader's term, written alongside.
    pub term: u64,
    pub max_downtime_ms: u64,
    /// MiB/s; 0 = unlimited.
    pub bandwidth_mibps: u64,
    pub auto_converge: bool,
    /// The VM's disks in order, and the indexes of those in pools local to each host:
    /// created on the destination, copied with the memory, deleted here afterwards.
    pub disks: Vec<VmDisk>,
    pub copy_disks: Vec<usize>,
    /// Built on the destination too when it is in a local pool (the boot disk's).
    pub seed: Option<crate::seed::Seed>,
}

impl MigrationRequest {
    /// The disks the migration copies.
    pub fn copied_disks(&self) -> impl Iterator<Item = &VmDisk> + '_ {
        self.copy_disks.iter().filter_map(|&i| self.disks.get(i))
    }

    /// The seed's volume when it is in a local pool (the boot disk's, copied with it).
    pub fn local_seed(&self) -> Option<VmDisk> {
        let seed = self.seed.as_ref()?;
        if !self.copy_disks.contains(&0) {
            return None;
        }
        Some(VmDisk {
            pool: self.disks.first()?.pool.clone(),
            volume: seed.volume.clone(),
            format: "raw".into(),
            ..Default::default()
        })
    }

    /// The volumes a successful migration leaves stale here: the guest runs on their
    /// copies at the destination.
    pub fn source_copies(&self) -> Vec<VmDisk> {
        self.copied_disks()
            .cloned()
            .chain(self.local_seed())
            .collect()
    }
}

/// A migration job's statistics, from libvirt.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JobStats {
    pub data_total: u64,
    pub data_processed: u64,
    pub data_remaining: u64,
    /// Bytes of guest memory dirtied per second.
    pub dirty_rate: u64,
    pub iteration: u64,
    pub elapsed_ms: u64,
    /// Set on completion.
    pub downtime_ms: Option<u64>,
}

/// A storage pool hostd has defined in libvirt (see [`pool_xml`]), as libvirt reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedPool {
    /// The cluster's name (without hostd's prefix).
    pub name: String,
    pub path: String,
    pub active: bool,
    pub capacity_bytes: u64,
    pub available_bytes: u64,
}

/// Drives the guests of one host. Only domains carrying drover's ownership marker are
/// visible through it: a domain of the same name that hostd did not create is reported as
/// [`HostdError::NotManaged`] where a name clash matters (starting) and as absent elsewhere.
pub trait Hypervisor: Send + Sync {
    /// Creates `spec`'s volumes that do not exist yet, defines the domain persistently
    /// with them attached, and starts it. A running managed domain of that name
    /// is returned as it is; a shut-off one is redefined with `spec` and started.
    fn define_and_start(&self, spec: &VmSpec) -> Result<ManagedDomain, HostdError>;

    /// Asks the guest to shut down and returns at once; the caller decides how long to wait
    /// before [`Hypervisor::destroy`]. A domain already shut off is left alone.
    fn shutdown(&self, name: &str) -> Result<ManagedDomain, HostdError>;

    /// Powers the domain off at once if it is active, and returns it.
    fn destroy(&self, name: &str) -> Result<ManagedDomain, HostdError>;

    /// Destroys the domain if active, then removes its definition, then deletes `volumes`
    /// (those already gone are fine). Returns whether a managed domain of that name existed.
    fn undefine(&self, name: &str, volumes: &[VmDisk]) -> Result<bool, HostdError>;

    /// Every managed domain, active or not, sorted by name.
    fn list_managed(&self) -> Result<Vec<ManagedDomain>, HostdError>;

    /// One managed domain, or `None` if no managed domain has that name.
    fn domain(&self, name: &str) -> Result<Option<ManagedDomain>, HostdError>;

    /// The host's capacity.
    fn host_info(&self) -> Result<HostCapacity, HostdError>;

    /// Live-migrates a running managed domain to `req.dest_uri` (peer to peer, persistent
    /// at the destination, undefined here) and blocks until libvirt is done. Returns the
    /// completed job's statistics (with downtime) as the destination reports them. The
    /// source's copies of copied disks stay ([`MigrationRequest::source_copies`]): the
    /// caller deletes them once it has reported the migration done.
    fn migrate(&self, req: &MigrationRequest) -> Result<JobStats, HostdError>;

    /// The running job of domain `name`, `None` when it has none.
    fn job_stats(&self, name: &str) -> Result<Option<JobStats>, HostdError>;

    /// Aborts domain `name`'s running job; `false` when it had none.
    fn abort_job(&self, name: &str) -> Result<bool, HostdError>;

    /// Defines storage pool `name` as a directory pool at `path` (persistent, autostarted)
    /// and starts it; one already there at `path` is refreshed. The directory must exist
    /// and be writable ([`HostdError::PoolPath`] otherwise): hostd never creates it.
    fn ensure_pool(&self, name: &str, path: &str) -> Result<ManagedPool, HostdError>;

    /// Sets network `wiring` up here (a libvirt network, and an overlay's VXLAN link);
    /// idempotent, and brings a changed wiring (its peers) up to date. Returns the bridge
    /// guests join.
    fn ensure_network(&self, wiring: &crate::network::NetworkWiring) -> Result<String, HostdError>;

    /// Stops and undefines network `name` and its VXLAN link; `false` if it was not defined.
    fn remove_network(&self, name: &str) -> Result<bool, HostdError>;

    /// Every network hostd has defined, by cluster name, sorted.
    fn list_networks(&self) -> Result<Vec<String>, HostdError>;

    /// Whether VLAN networks can be wired here (the kernel makes 802.1Q links; always on
    /// the test driver, whose networks are libvirt's alone). Cheap after the first call.
    fn makes_vlan_links(&self) -> bool;

    /// The host's own network interfaces (bridges, VLAN parents; not guests' devices).
    fn host_links(&self) -> Result<std::collections::BTreeSet<String>, HostdError>;

    /// Stops and undefines pool `name`, leaving its files; `false` if it was not defined.
    fn remove_pool(&self, name: &str) -> Result<bool, HostdError>;

    /// Every pool hostd has defined, sorted by name.
    fn list_pools(&self) -> Result<Vec<ManagedPool>, HostdError>;

    /// Creates volume `volume` (raw, `size_bytes`) in pool `pool` and writes exactly
    /// `size_bytes` bytes from `data` into it through libvirt; returns its path. A volume
    /// of that name already there is refused; on failure the new volume is deleted again.
    fn upload_volume(
        &self,
        pool: &str,
        volume: &str,
        size_bytes: u64,
        data: UploadChunks<'_>,
    ) -> Result<String, HostdError>;

    /// Streams volume `volume` of pool `pool` to `out` in chunks (libvirt's download),
    /// from the first byte to the last; stops early when `out` returns false (the reader
    /// went away).
    fn read_volume(
        &self,
        pool: &str,
        volume: &str,
        out: &mut dyn FnMut(Vec<u8>) -> bool,
    ) -> Result<(), HostdError>;

    /// Deletes a volume of pool `pool`; `false` when it was not there.
    fn delete_volume(&self, pool: &str, volume: &str) -> Result<bool, HostdError>;

    /// One cheap round trip to the hypervisor, reconnecting first if the connection was
    /// lost. Succeeding means this host could fence (destroy its guests) right now.
    fn probe(&self) -> Result<(), HostdError>;

    /// Grows disk `index` of managed domain `name` (its volume `disk`) to
    /// `disk.size_bytes`: the running guest's device when it runs (`true`), else the
    /// volume. Never shrinks.
    fn grow_disk(&self, name: &str, index: usize, disk: &VmDisk) -> Result<bool, HostdError>;

    /// Hot-plugs `nic` into managed domain `name` if it runs (`true`; one with its MAC
    /// there already is fine). Off: nothing (`false`), its next start has the NIC.
    fn plug_nic(&self, name: &str, nic: &crate::network::VmNic) -> Result<bool, HostdError>;

    /// Unplugs the NIC with `mac` from managed domain `name` if it runs, and returns once
    /// the guest has released it; then (or when it is off, or has no such NIC) no running
    /// guest here uses it. `NicNotReleased`: the guest did not let go in time.
    fn unplug_nic(&self, name: &str, mac: &str) -> Result<(), HostdError>;

    /// Gives managed domain `name`'s NICs their filters as `nics` say, if it runs
    /// (`true`); off: nothing (`false`).
    fn update_nic_filters(
        &self,
        name: &str,
        nics: &[crate::network::VmNic],
    ) -> Result<bool, HostdError>;

    /// Attaches to managed domain `name`'s serial console, which must be running. An
    /// earlier session on it is cut off (the newest attach wins, as `virsh console
    /// --force`), so a session whose client vanished never locks the console.
    fn open_console(&self, name: &str) -> Result<Box<dyn Console>, HostdError>;
}

/// One attached serial console. Blocking calls: use from blocking threads. `recv` and
/// `send` may run on two threads at once; `close` from either ends a blocked `recv`.
pub trait Console: Send + Sync {
    /// The guest's next bytes into `buf`; 0 when the console closed (the guest stopped,
    /// another session took it over, `close` was called, or the stream failed).
    fn recv(&self, buf: &mut [u8]) -> Result<usize, HostdError>;
    /// Writes all of `data` to the guest.
    fn send(&self, data: &[u8]) -> Result<(), HostdError>;
    /// Ends the session.
    fn close(&self);
    /// A handle on the same session, for the other direction's thread.
    fn handle(&self) -> Box<dyn Console>;
}
