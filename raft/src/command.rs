//! Every change to the cluster state is one `Command`, committed through Raft and applied
//! by [`ClusterState::apply`](crate::model::ClusterState::apply) on every controller.
//!
//! Commands carry everything `apply` needs (no clocks, no randomness), so the same log
//! yields the same state everywhere.

use serde::{Deserialize, Serialize};

use crate::model::{
    Capacity, DeadReason, DesiredState, DrainProgress, DrillMode, DrillReport, EventKind, Host,
    HostHealth, Labels, LeaderDrillMeasure, LeaderDrillMode, MigrationDrillReport, MigrationPolicy,
    MigrationProgress, ObservedState, OpState, Operation, PlacementPolicy, Pool, PoolOnHost,
    PoolSpec, Vm, VmOptions, VmSpec, Window,
};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Operator registers a host running hostd at `address`.
    AddHost {
        name: String,
        address: String,
        #[serde(default)]
        labels: Labels,
    },
    /// The leader's view of a host changed (session up/down, capacity reported). Cannot
    /// declare a host dead: that is `DeclareHostDead`, with its justification.
    HostObserved {
        name: String,
        health: HostHealth,
        capacity: Option<Capacity>,
        /// What the host says about self-fencing (`None`: unchanged).
        #[serde(default)]
        fencing_armed: Option<bool>,
        /// The HA epoch of the grant the host's report reflects; "armed" counts only when
        /// it is the current one.
        #[serde(default)]
        armed_epoch: u64,
        /// Where peers reach its libvirt for migration (`None`: unchanged).
        #[serde(default)]
        migration_uri: Option<String>,
    },
    /// A host reported other networking (underlay address, interfaces) than the state
    /// holds; committed only when it changed.
    HostNetworkingObserved {
        name: String,
        networking: crate::model::HostNetworking,
    },
    /// Appends to the event log (`at_ms`: the recording leader's wall clock).
    RecordEvent {
        at_ms: u64,
        kind: EventKind,
        host: Option<String>,
        vm: Option<String>,
        message: String,
    },
    /// `drover ha arm|disarm`. Disarming marks every host not armed in the same entry, so
    /// no grant saying "disarmed" can reach a host the state still counts as armed.
    SetHaArmed {
        armed: bool,
    },
    /// `drover ha lease` (or a new cluster's first leader, from its flags): the lease
    /// timings. Refused while an earlier change is still settling.
    SetLeaseConfig {
        config: crate::model::LeaseConfig,
    },
    /// The leader waited out every grant made under `previous_lease`: forget it.
    LeaseSettled {
        previous: crate::model::LeaseConfig,
    },
    /// The host may no longer run anything: its lease has certainly lapsed, or an operator
    /// confirmed it is off. Its HA VMs become eligible for `FailoverVm`.
    DeclareHostDead {
        name: String,
        reason: DeadReason,
    },
    /// `drover host remove`: forgets a host that runs nothing (no VM placed on it or
    /// migrating to or from it, no drain running on it).
    RemoveHost {
        name: String,
    },
    /// Operator creates a VM; `start` makes its desired state `Running`.
    CreateVm {
        name: String,
        spec: VmSpec,
        start: bool,
        /// Flattened: the log's JSON is the same as when these were fields here.
        #[serde(flatten)]
        options: VmOptions,
    },
    /// Starts a live migration of a running VM from its host to `dst`: a running
    /// operation, the VM locked to it (no other placement change until it ends), `dst`
    /// booked for the VM's size.
    StartMigration {
        vm: String,
        expected_generation: u64,
        dst: String,
        policy: MigrationPolicy,
        at_ms: u64,
        /// Refuse when this many migrations already run (out of the source host, in the
        /// cluster): a drain's parallelism limits, checked here so that several drains
        /// deciding at once cannot exceed them together. `None`: an operator's migration.
        #[serde(default)]
        limits: Option<(u32, u32)>,
    },
    /// The latest job statistics of a running migration.
    MigrationProgress {
        op: u64,
        progress: MigrationProgress,
    },
    /// Ends a migration: `Succeeded` moves the VM to the destination (generation + 1,
    /// which the destination domain already carries); any other end leaves it on the source.
    FinishMigration {
        op: u64,
        state: OpState,
        message: String,
        /// libvirt's final statistics, when it completed.
        progress: Option<MigrationProgress>,
        at_ms: u64,
    },
    /// `drover host drain`: the host takes no new VMs, and a drain operation starts moving
    /// its VMs away.
    StartDrain {
        host: String,
        stop_when_blocked: bool,
        at_ms: u64,
    },
    DrainProgress {
        op: u64,
        progress: DrainProgress,
    },
    /// Ends a drain: `Succeeded` (the host is empty) puts the host in maintenance; any
    /// other end returns it to service.
    FinishDrain {
        op: u64,
        state: OpState,
        message: String,
        at_ms: u64,
    },
    /// `drover drill host-failure`: starts a drill operation on `host` (refused unless the
    /// cluster could survive losing it now, as far as the state tells).
    StartDrill {
        host: String,
        mode: DrillMode,
        max_duration_ms: u64,
        at_ms: u64,
    },
    /// The drill's report so far.
    DrillProgress {
        op: u64,
        report: DrillReport,
    },
    /// Ends a drill with its final report (which carries the verdict).
    FinishDrill {
        op: u64,
        state: OpState,
        message: String,
        report: DrillReport,
        at_ms: u64,
    },
    /// `drover drill leader-failover`: starts a leader drill (the API has checked the
    /// controllers' health; `apply` checks what the state tells).
    StartLeaderDrill {
        mode: LeaderDrillMode,
        leader: u64,
        observer: u64,
        max_duration_ms: u64,
        at_ms: u64,
    },
    /// One probe write of a running leader drill; `apply` records its sequence number.
    DrillProbe {
        op: u64,
        seq: u64,
    },
    /// Ends a leader drill with the observer's measure; `apply` checks every acknowledged
    /// probe against those it applied and sets the verdict.
    FinishLeaderDrill {
        op: u64,
        measure: LeaderDrillMeasure,
        at_ms: u64,
    },
    /// `drover drill migration VM`: starts a migration drill (a round trip).
    StartMigrationDrill {
        vm: String,
        at_ms: u64,
    },
    /// The next leg of migration drill `op`: migrates its VM to `dst` and records it.
    StartDrillLeg {
        op: u64,
        dst: String,
        at_ms: u64,
    },
    /// Ends a migration drill with its report (which carries the verdict).
    FinishMigrationDrill {
        op: u64,
        state: OpState,
        message: String,
        report: MigrationDrillReport,
        at_ms: u64,
    },
    /// `drover drill schedule host-failure`: a drill that runs by itself.
    CreateDrillSchedule {
        name: String,
        mode: DrillMode,
        every_ms: u64,
        hosts: Vec<String>,
        window: Option<Window>,
        at_ms: u64,
    },
    DeleteDrillSchedule {
        name: String,
    },
    /// The leader's cadence starts a due schedule's drill on `host` (refused unless the
    /// schedule is due with that host at `at_ms`, so two leaders cannot both start it).
    StartScheduledDrill {
        schedule: String,
        host: String,
        max_duration_ms: u64,
        at_ms: u64,
    },
    /// `drover op cancel`: asks the operation's coordinator to stop it.
    CancelOperation {
        op: u64,
    },
    /// `drover cluster placement`: overcommit ratios and weigher for every placement.
    SetPlacementPolicy {
        policy: PlacementPolicy,
    },
    /// `drover host activate`: back in service (a running drain is cancelled).
    ActivateHost {
        name: String,
        at_ms: u64,
    },
    /// Takes an HA VM off its dead host so it can be placed elsewhere: placement none,
    /// generation + 1 (the old host's copy is now stale everywhere). Refused unless the
    /// VM's host is `Dead` — the state machine itself never moves a VM off a live host.
    FailoverVm {
        name: String,
        expected_generation: u64,
    },
    /// Operator start/stop/delete.
    SetDesiredState {
        name: String,
        desired: DesiredState,
    },
    /// `drover vm delete [--keep-disks]`: desired `Deleted`, and whether its volumes stay
    /// in their pools (kept, they are the operator's from then on).
    DeleteVm {
        name: String,
        keep_disks: bool,
    },
    /// `drover vm disk add`: one more empty disk, while the VM's domain is not active.
    AddDisk {
        name: String,
        disk: crate::model::DiskSpec,
    },
    /// `drover vm disk resize`: disk `index` grows to `size_bytes` (never shrinks).
    ResizeDisk {
        name: String,
        index: u32,
        size_bytes: u64,
    },
    /// `drover vm disk remove`: disk `index` goes; its volume, if it exists, is deleted by
    /// the VM's actor through its host.
    RemoveDisk {
        name: String,
        index: u32,
    },
    /// The VM's actor had these removed disks' volumes deleted.
    DiskVolumesDeleted {
        name: String,
        volumes: Vec<String>,
    },
    /// The VM's actor chose a host. Only applies if the VM still has `expected_generation`,
    /// so a stale actor cannot move a VM someone else already moved.
    PlaceVm {
        name: String,
        host: String,
        expected_generation: u64,
    },
    /// The VM's actor is about to send a start to the VM's host: generation + 1 and
    /// observed `Starting`, before the start leaves. The start carries the new generation,
    /// so a host's report of the domain at that generation proves the start was handled,
    /// and no "shut off" recorded earlier can let a cold move race the start in flight.
    BeginStart {
        name: String,
        expected_generation: u64,
    },
    /// What the VM's host reports (or why it could not be placed or started), for the
    /// placement of `generation`; reports about an older placement are ignored.
    VmObserved {
        name: String,
        generation: u64,
        observed: ObservedState,
        reason: String,
        /// The [`ClusterState::placements`](crate::model::ClusterState::placements) the
        /// host had been told of when it listed its domains (the count its newest lease
        /// grant carried). Checked for `Missing` only: a listing from before the VM's
        /// current placement (`Vm::placed_at`) does not show a domain a migration brought.
        #[serde(default)]
        listed_after: u64,
    },
    /// The VM's domain is gone from its host; drop the VM (it must be `Deleted`).
    RemoveVm {
        name: String,
        expected_generation: u64,
    },
    /// An admin created a bearer token (its hash; the API made the secret and shows it
    /// once). Expired tokens are dropped at the same time.
    CreateToken {
        token: crate::model::Token,
    },
    /// An admin revoked a token: it is forgotten, so it authenticates nobody.
    RevokeToken {
        id: String,
    },
    /// `drover pool create`: declares a storage pool; the hosts it includes set it up.
    CreatePool {
        name: String,
        spec: PoolSpec,
    },
    /// `drover pool delete`: forgets a pool (its hosts undefine it in libvirt and leave
    /// the files).
    DeletePool {
        name: String,
    },
    /// What `host` reports about the pools it includes, by pool name: every such pool it
    /// does not report is not set up there yet. Reports of pools that no longer exist, or
    /// do not include the host, are ignored.
    PoolsObserved {
        host: String,
        pools: std::collections::BTreeMap<String, PoolOnHost>,
    },
    /// `drover net create`: declares a network; hosts wire it where its VMs run.
    CreateNetwork {
        name: String,
        spec: crate::model::NetworkSpec,
    },
    /// `drover net delete`: refused while a NIC is on it.
    DeleteNetwork {
        name: String,
    },
    /// `drover sg put`: a security group created, or its rules replaced.
    PutSecurityGroup {
        name: String,
        rules: Vec<crate::model::SgRule>,
    },
    /// `drover sg delete`: refused while a VM is in it.
    DeleteSecurityGroup {
        name: String,
    },
    /// `drover vm sg`: the VM's security groups, replaced (empty: none).
    SetVmSecurityGroups {
        name: String,
        groups: Vec<String>,
    },
    /// `drover net subnet add`.
    AddSubnet {
        network: String,
        subnet: crate::model::Subnet,
    },
    /// `drover net subnet remove`: refused while an address of it is held.
    RemoveSubnet {
        network: String,
        cidr: String,
    },
    /// `drover vm nic add`: a NIC with a new MAC and (on a network with subnets) address.
    AddNic {
        name: String,
        nic: crate::model::NicSpec,
        /// The leader plugs it into a running guest after the commit. `false` (entries
        /// written before hot-plug): refused for a running VM, as they were then, so that
        /// they replay as applied.
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        hot_plug: bool,
    },
    /// `drover vm nic remove`: the NIC goes and its address is released.
    RemoveNic {
        name: String,
        mac: String,
        /// For a running VM: the generation of the domain the leader had the host unplug
        /// the NIC from (refused without it, or for another generation).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        unplugged_at: Option<u64>,
    },
    /// `drover image import`, first step: the image's name and volume are taken and the
    /// leader of `term` streams the file to `host`, whose pool `pool` must be active.
    BeginImageImport {
        name: String,
        pool: String,
        host: String,
        term: u64,
    },
    /// The host stored and checked the file: the image is ready.
    FinishImageImport(ImageImported),
    /// `drover image delete`, or an import that failed or was abandoned: refused while a
    /// disk is a clone of it; the image's host then deletes the volume.
    DeleteImage {
        name: String,
        /// Only if the image still has this volume: an import abandoning itself must not
        /// take a later image of the same name with it. `None` (the operator): any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        volume: Option<String>,
    },
    /// The host deleted image `name`'s volume `volume`: it is forgotten (once no other
    /// host holds a copy).
    ImageRemoved {
        name: String,
        volume: String,
    },
    /// `host` is to get a copy of image `name` (in a pool its hosts do not share) before a
    /// VM cloned from it starts or arrives there: the leader of `term` streams it from the
    /// image's host into the same pool and volume name on `host`.
    BeginImageCopy {
        name: String,
        host: String,
        term: u64,
    },
    /// The copy on `host` arrived with the image's checksum (`ok`: ready), or did not
    /// (forgotten: the host deletes what arrived of a failed upload itself).
    FinishImageCopy {
        name: String,
        volume: String,
        host: String,
        ok: bool,
    },
    /// `host` deleted its copy of image `name` (being deleted, or abandoned mid-copy).
    ImageCopyRemoved {
        name: String,
        volume: String,
        host: String,
    },
    /// Writes that arrived together, committed as one log entry (group commit, see
    /// `raft::write_batch`) and applied one after the other exactly as if each had its own
    /// entry: each with its own request id and its own result. Only ever a whole entry: a
    /// batch inside a batch is refused.
    Batch {
        requests: Vec<Request>,
    },
}

/// What a host found in an imported file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageImported {
    pub name: String,
    /// The volume `BeginImageImport` gave it: a finish for an earlier import of the name
    /// is refused.
    pub volume: String,
    pub format: crate::model::ImageFormat,
    pub virtual_bytes: u64,
    pub file_bytes: u64,
    /// Lowercase hex.
    pub sha256: String,
}

/// This machine's wall clock in Unix milliseconds, for the times commands carry (read by
/// the writer; `apply` never reads a clock).
pub fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Command {
    /// A `RecordEvent` stamped with this machine's wall clock (read here, by the writer;
    /// `apply` never reads a clock).
    pub fn event(
        kind: EventKind,
        host: Option<&str>,
        vm: Option<&str>,
        message: impl Into<String>,
    ) -> Command {
        Command::RecordEvent {
            at_ms: wall_clock_ms(),
            kind,
            host: host.map(String::from),
            vm: vm.map(String::from),
            message: message.into(),
        }
    }

    /// Short name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::AddHost { .. } => "add_host",
            Command::RemoveHost { .. } => "remove_host",
            Command::HostObserved { .. } => "host_observed",
            Command::DeclareHostDead { .. } => "declare_host_dead",
            Command::SetHaArmed { .. } => "set_ha_armed",
            Command::SetLeaseConfig { .. } => "set_lease_config",
            Command::LeaseSettled { .. } => "lease_settled",
            Command::RecordEvent { .. } => "record_event",
            Command::FailoverVm { .. } => "failover_vm",
            Command::CreateVm { .. } => "create_vm",
            Command::SetDesiredState { .. } => "set_desired_state",
            Command::DeleteVm { .. } => "delete_vm",
            Command::AddDisk { .. } => "add_disk",
            Command::ResizeDisk { .. } => "resize_disk",
            Command::RemoveDisk { .. } => "remove_disk",
            Command::DiskVolumesDeleted { .. } => "disk_volumes_deleted",
            Command::PlaceVm { .. } => "place_vm",
            Command::BeginStart { .. } => "begin_start",
            Command::VmObserved { .. } => "vm_observed",
            Command::RemoveVm { .. } => "remove_vm",
            Command::StartMigration { .. } => "start_migration",
            Command::MigrationProgress { .. } => "migration_progress",
            Command::FinishMigration { .. } => "finish_migration",
            Command::StartDrain { .. } => "start_drain",
            Command::DrainProgress { .. } => "drain_progress",
            Command::FinishDrain { .. } => "finish_drain",
            Command::StartDrill { .. } => "start_drill",
            Command::DrillProgress { .. } => "drill_progress",
            Command::FinishDrill { .. } => "finish_drill",
            Command::StartLeaderDrill { .. } => "start_leader_drill",
            Command::DrillProbe { .. } => "drill_probe",
            Command::FinishLeaderDrill { .. } => "finish_leader_drill",
            Command::StartMigrationDrill { .. } => "start_migration_drill",
            Command::CreateDrillSchedule { .. } => "create_drill_schedule",
            Command::DeleteDrillSchedule { .. } => "delete_drill_schedule",
            Command::StartScheduledDrill { .. } => "start_scheduled_drill",
            Command::StartDrillLeg { .. } => "start_drill_leg",
            Command::FinishMigrationDrill { .. } => "finish_migration_drill",
            Command::CancelOperation { .. } => "cancel_operation",
            Command::ActivateHost { .. } => "activate_host",
            Command::SetPlacementPolicy { .. } => "set_placement_policy",
            Command::CreateToken { .. } => "create_token",
            Command::RevokeToken { .. } => "revoke_token",
            Command::CreatePool { .. } => "create_pool",
            Command::DeletePool { .. } => "delete_pool",
            Command::PoolsObserved { .. } => "pools_observed",
            Command::CreateNetwork { .. } => "create_network",
            Command::DeleteNetwork { .. } => "delete_network",
            Command::PutSecurityGroup { .. } => "put_security_group",
            Command::DeleteSecurityGroup { .. } => "delete_security_group",
            Command::SetVmSecurityGroups { .. } => "set_vm_security_groups",
            Command::AddSubnet { .. } => "add_subnet",
            Command::RemoveSubnet { .. } => "remove_subnet",
            Command::HostNetworkingObserved { .. } => "host_networking_observed",
            Command::AddNic { .. } => "add_nic",
            Command::RemoveNic { .. } => "remove_nic",
            Command::BeginImageImport { .. } => "begin_image_import",
            Command::FinishImageImport(_) => "finish_image_import",
            Command::DeleteImage { .. } => "delete_image",
            Command::ImageRemoved { .. } => "image_removed",
            Command::BeginImageCopy { .. } => "begin_image_copy",
            Command::FinishImageCopy { .. } => "finish_image_copy",
            Command::ImageCopyRemoved { .. } => "image_copy_removed",
            Command::Batch { .. } => "batch",
        }
    }
}

/// What goes into the Raft log: a command and, when the client sent one, its request id
/// (see [`crate::dedup`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub id: Option<String>,
    pub command: Command,
}

impl Request {
    /// A request without an id: applied every time it is committed. Internal writers
    /// (actors) use this; their commands are compare-and-set on generations instead.
    pub fn anonymous(command: Command) -> Self {
        Self { id: None, command }
    }
}

impl std::fmt::Display for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.command.kind())?;
        if let Some(id) = &self.id {
            write!(f, " (request {id})")?;
        }
        Ok(())
    }
}

/// What a successfully applied command returns to its writer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    Host(Host),
    Vm(Vm),
    VmRemoved {
        name: String,
    },
    Operation(Operation),
    Placement(PlacementPolicy),
    HostRemoved {
        name: String,
    },
    /// The HA switch after `SetHaArmed`.
    Ha {
        disarmed: bool,
        hosts_not_armed: Vec<String>,
    },
    /// Raft-internal entries (blank, membership) and no-op observations.
    Nothing,
    /// The token created or revoked (its hash, never the secret).
    Token(crate::model::Token),
    Pool(Pool),
    Image(crate::model::Image),
    PoolDeleted {
        name: String,
    },
    Network(crate::model::Network),
    SecurityGroup(crate::model::SecurityGroup),
    NetworkDeleted {
        name: String,
    },
    /// One result per request of a `Command::Batch`, in its order.
    Batch(Vec<ApplyResult>),
}

/// Why `apply` refused a command. Replicated like any result: every node refuses the same
/// command for the same reason, and the state is left untouched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ApplyError {
    #[error("Invalid {what} name: {reason}")]
    InvalidName { what: String, reason: String },
    #[error("Invalid VM spec: {0}")]
    InvalidSpec(String),
    #[error("Invalid cloud-init settings: {0}")]
    InvalidCloudInit(#[from] crate::model::CloudInitError),
    #[error("{0}")]
    Network(#[from] crate::model::NetworkError),
    #[error("Security group {0:?} not found")]
    UnknownSecurityGroup(String),
    #[error("Security group {group:?} is in use by VMs {vms}")]
    SecurityGroupInUse { group: String, vms: String },
    #[error("Invalid security group {group:?}: {reason}")]
    InvalidSecurityGroup { group: String, reason: String },
    #[error(
        "VM {0:?} is starting (or running, and the request is not a hot-plug): its NICs \
         change once it runs or is stopped"
    )]
    NicsInUse(String),
    #[error(
        "NIC {mac} of VM {vm:?} is on the running guest: it is unplugged first (as \
         `drover vm nic remove` does), or removed while the VM is stopped"
    )]
    NicPlugged { vm: String, mac: String },
    #[error("Invalid host address {address:?}: {reason}")]
    InvalidAddress { address: String, reason: String },
    #[error("Host {0:?} already exists")]
    HostExists(String),
    #[error("VM {0:?} already exists")]
    VmExists(String),
    #[error("Host {0:?} not found")]
    UnknownHost(String),
    #[error("VM {0:?} not found")]
    UnknownVm(String),
    #[error("VM {vm:?} has generation {actual}, the command expected {expected}")]
    StaleGeneration {
        vm: String,
        expected: u64,
        actual: u64,
    },
    #[error("VM {0:?} is being deleted")]
    VmDeleting(String),
    #[error("VM {0:?} is not marked for deletion")]
    VmNotDeleted(String),
    #[error("Host {host:?} is {health}, not dead: its VMs cannot fail over")]
    HostNotDead { host: String, health: String },
    #[error("VM {0:?} is not placed on any host")]
    VmNotPlaced(String),
    #[error("VM {0:?} is not HA: it is never restarted elsewhere without a confirmed fence")]
    VmNotHa(String),
    #[error("Only DeclareHostDead may mark host {0:?} dead")]
    DeadNeedsReason(String),
    #[error("Invalid labels: {0}")]
    InvalidLabels(String),
    #[error("Invalid placement policy: {0}")]
    InvalidPlacement(String),
    #[error("Invalid lease: {0}")]
    InvalidLease(String),
    #[error(
        "A lease change is still settling (grants under the previous lease may be live for \
         up to {lapse_ms} ms after it); try again then"
    )]
    LeaseSettling { lapse_ms: u64 },
    #[error("Invalid migration policy: {0}")]
    InvalidPolicy(String),
    #[error("Host report refused: {0}")]
    InvalidReport(String),
    #[error("Operation {0} not found")]
    UnknownOperation(u64),
    #[error("Operation {id} is {state}, not running")]
    OperationFinished { id: u64, state: String },
    #[error("Operation {id} is a {kind}, not a {expected}")]
    WrongOperation {
        id: u64,
        kind: String,
        expected: String,
    },
    #[error("VM {vm:?} is being migrated by operation {op}; wait for it or cancel it")]
    VmMigrating { vm: String, op: u64 },
    #[error("VM {vm:?} is {state}; only a running VM can be live-migrated")]
    VmNotRunning { vm: String, state: String },
    #[error("VM {vm:?} is already on host {host:?}")]
    SameHost { vm: String, host: String },
    #[error("Host {host:?} is {health}; it must be up")]
    HostNotUp { host: String, health: String },
    #[error("Migration limit reached: {running} running {scope} (limit {limit})")]
    MigrationLimit {
        scope: String,
        running: u32,
        limit: u32,
    },
    #[error("Host {host:?} has no room for VM {vm:?}: {reason}")]
    NoRoom {
        host: String,
        vm: String,
        reason: String,
    },
    #[error("Host {host:?} is in admin state {admin}; it takes no VMs")]
    HostNotActive { host: String, admin: String },
    #[error("Host {host:?} has not reported a migration URI (is its hostd current?)")]
    NoMigrationUri { host: String },
    #[error("Host {host:?} is already {admin}")]
    HostAlreadyDraining { host: String, admin: String },
    #[error("Host {host:?} still has VMs: {vms}")]
    HostNotEmpty { host: String, vms: String },
    #[error("Host {host:?} has a running {kind} operation {op}; wait for it or cancel it")]
    HostBusy { host: String, op: u64, kind: String },
    #[error("VM {vm:?} cannot move: {why}")]
    VmMayStillRun {
        vm: String,
        why: crate::model::MayStillRun,
    },
    #[error(
        "VM {0:?} is starting: only a report of its domain at the new generation ends that \
         (a start may still be in flight)"
    )]
    StartUnconfirmed(String),
    #[error(
        "VM {vm:?} was placed at {placed_at}; a listing made after placement {listed_after} \
         cannot show it missing"
    )]
    StaleListing {
        vm: String,
        listed_after: u64,
        placed_at: u64,
    },
    #[error("VM {vm:?} is desired {desired}; only a VM that should run is started")]
    NotToStart { vm: String, desired: String },
    #[error(
        "Host {0:?} cannot be declared dead by its lease: it has not reported self-fencing \
         armed (or HA is disarmed); only an operator fence can"
    )]
    FencingNotArmed(String),
    #[error("Invalid token: {0}")]
    InvalidToken(String),
    #[error("Token {0} exists already")]
    TokenExists(String),
    #[error("No token {0}")]
    UnknownToken(String),
    #[error("The cluster keeps at most {0} tokens: revoke some first")]
    TooManyTokens(usize),
    #[error("Invalid pool: {0}")]
    InvalidPool(String),
    #[error("Pool {0:?} already exists")]
    PoolExists(String),
    #[error("Pool {0:?} not found")]
    UnknownPool(String),
    #[error("Path {path:?} is already pool {pool:?} on a host both pools include")]
    PoolPathTaken { path: String, pool: String },
    #[error("VM {vm:?} is HA, so its disks must be on shared pools; pool {pool:?} is local to each host")]
    HaNeedsSharedPool { vm: String, pool: String },
    #[error(
        "VM {vm:?} has a disk in pool {pool:?}, which is local to its host: it moves only \
         running, by live migration, which copies the disk (started anywhere else it would \
         find no disk)"
    )]
    LocalDisk { vm: String, pool: String },
    #[error("Invalid disk: {0}")]
    InvalidDisk(String),
    #[error("Pool {pool:?} holds disks of VMs {vms}; delete them first")]
    PoolInUse { pool: String, vms: String },
    #[error("Pool {pool:?} holds images {images}; delete them first")]
    PoolHoldsImages { pool: String, images: String },
    #[error("Pool {pool:?} is not active on host {host:?} (or the host is not up)")]
    PoolNotActive { pool: String, host: String },
    #[error("Host {host:?} holds images {images} in a pool no other host sees; delete them first")]
    HostHoldsImages { host: String, images: String },
    #[error(
        "Pool {pool:?} has at most {free} bytes free on any of its hosts; the new disks there need {need}"
    )]
    NoSpace { pool: String, need: u64, free: u64 },
    #[error("Image {0:?} already exists")]
    ImageExists(String),
    #[error("Image {0:?} not found")]
    UnknownImage(String),
    #[error("Image {0:?} is not being imported (deleted, or imported already)")]
    ImageNotImporting(String),
    #[error("Image {0:?} is not ready (still importing, or being deleted)")]
    ImageNotReady(String),
    #[error("Image {image:?} is being copied to host {host:?} already")]
    ImageCopyUnderWay { image: String, host: String },
    #[error("Image {image:?} needs no copy on host {host:?}: {why}")]
    ImageCopyNeedless {
        image: String,
        host: String,
        why: String,
    },
    #[error("Image {image:?} is the base of disks of VMs {vms}; delete them first")]
    ImageInUse { image: String, vms: String },
    #[error("VM {0:?} is running (or starting): stop it to change its disks (hot-plug and online resize are not implemented yet)")]
    DisksInUse(String),
    #[error("Drill {op} ({target}) is running; one drill at a time")]
    DrillRunning { op: u64, target: String },
    #[error("HA is disarmed: a drill would restart nothing (arm it first)")]
    DrillHaDisarmed,
    #[error("Host {host:?} is already {health}: a drill would add a second failure")]
    OtherHostDown { host: String, health: String },
    #[error("Invalid drill: {0}")]
    InvalidDrill(String),
    #[error("Drill schedule {0:?} not found")]
    UnknownSchedule(String),
    #[error("Drill schedule {0:?} exists already")]
    ScheduleExists(String),
    #[error("Drill schedule {name:?} is not due for host {host:?} now")]
    ScheduleNotDue { name: String, host: String },
    #[error("A batch of writes is only ever a whole log entry; it cannot be nested")]
    NestedBatch,
}

/// The state machine's answer to one log entry.
pub type ApplyResult = Result<Reply, ApplyError>;
