//! The `drover` command line: flags (clap) and the client commands. `server` and `dev`
//! live in their own modules.

mod backup;
mod cloud_init;
mod commands;
mod console;
mod drill_schedules;
mod drills;
mod follow;
mod images;
mod leader_drills;
mod migration_drills;
mod networks;
pub mod output;
mod pools;
mod security_groups;
pub mod sizes;
mod tokens;

use std::path::PathBuf;

pub use commands::{certs, cluster, event, ha, host, op, vm, Printed, Target};
pub use drills::drill;
pub use images::image;
pub use networks::{net, NicArg};
use output::Format;
pub use pools::pool;
pub use security_groups::sg;
pub use tokens::token;

#[derive(Debug, clap::Parser)]
#[command(
    name = "drover",
    version,
    about = "drover: keeps virtual machines running"
)]
pub struct Cli {
    /// Controller addresses (host:port), comma-separated.
    #[arg(long, global = true, env = "DROVER_ENDPOINTS", value_delimiter = ',')]
    pub endpoints: Vec<String>,
    /// Give up after this many seconds without an answer from a controller.
    #[arg(long, global = true, default_value_t = 15, env = "DROVER_TIMEOUT")]
    pub timeout: u64,
    /// Output format.
    #[arg(short = 'o', long, global = true, value_enum, default_value = "table")]
    pub output: Format,
    #[command(flatten)]
    pub tls: TlsArgs,
    #[command(subcommand)]
    pub command: Command,
}

/// Mutual TLS: the cluster CA and this process's certificate and key (PEM); or, for a
/// client, the CA and a bearer token. Without them, connections are plaintext (only a
/// server started with --insecure answers those).
#[derive(Debug, Clone, clap::Args)]
pub struct TlsArgs {
    #[arg(long, global = true, env = "DROVER_CA")]
    pub ca: Option<PathBuf>,
    #[arg(long, global = true, env = "DROVER_CERT")]
    pub cert: Option<PathBuf>,
    #[arg(long, global = true, env = "DROVER_KEY")]
    pub key: Option<PathBuf>,
    /// A bearer token (`drover token create`), instead of a client certificate: the
    /// controllers are still checked against --ca.
    #[arg(long, global = true, env = "DROVER_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

impl TlsArgs {
    pub fn load(&self) -> anyhow::Result<drover_proto::transport::TlsHandle> {
        use drover_proto::transport::Tls;
        match (&self.ca, &self.cert, &self.key, &self.token) {
            (Some(ca), None, None, Some(_)) => Ok(Some(std::sync::Arc::new(Tls::ca_only(ca)?))),
            // A bearer token in plaintext is a token given away.
            (None, _, _, Some(_)) => {
                anyhow::bail!("--token needs --ca (DROVER_CA): a token is never sent in plaintext")
            }
            _ => Ok(Tls::from_flags(
                self.ca.as_deref(),
                self.cert.as_deref(),
                self.key.as_deref(),
            )?),
        }
    }
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Run a controller node.
    Server(ServerArgs),
    /// Run a local cluster (3 controllers, 3 hostd on libvirt's test driver) for trying drover.
    Dev(DevArgs),
    /// Controller cluster commands.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Host commands.
    #[command(subcommand)]
    Host(HostCmd),
    /// VM commands.
    #[command(subcommand)]
    Vm(VmCmd),
    /// Storage pools: where VM disks and images live.
    #[command(subcommand)]
    Pool(PoolCmd),
    /// Images: disk contents VMs boot from.
    #[command(subcommand)]
    Image(ImageCmd),
    /// Networks VM NICs attach to, their subnets and the addresses handed out.
    #[command(subcommand)]
    Net(NetCmd),
    /// Security groups: what may come into VMs (`drover vm sg` puts a VM in them).
    #[command(subcommand)]
    Sg(SgCmd),
    /// Failover drills: rehearse a failure on the live cluster.
    #[command(subcommand)]
    Drill(DrillCmd),
    /// The cluster-wide HA switch, for planned network maintenance.
    #[command(subcommand)]
    Ha(HaCmd),
    /// The cluster's event log: host deaths, self-fences, failovers, migrations, drains.
    #[command(subcommand)]
    Event(EventCmd),
    /// Long-running operations: live migrations and host drains.
    #[command(subcommand)]
    Op(OpCmd),
    /// A cluster CA and certificates for mutual TLS.
    #[command(subcommand)]
    Certs(CertsCmd),
    /// Users' bearer tokens (admin only).
    #[command(subcommand)]
    Token(TokenCmd),
}

#[derive(Debug, clap::Subcommand)]
pub enum DrillCmd {
    /// What the cluster does if HOST fails: which HA VMs restart where, which VMs stay
    /// down and why, and whether the cluster could survive it now.
    ///
    /// Without --dry-run, the drill runs for real: HOST loses the cluster (isolate: its
    /// hostd drops the controllers' session and refuses new ones, so its lease lapses and
    /// it fences itself, as on a real partition), the failover runs, the host is restored
    /// and trusted again; then the report. Ctrl-C leaves the drill running (`drover op
    /// cancel ID` restores the host at once).
    HostFailure {
        host: String,
        /// Show the plan only.
        #[arg(long)]
        dry_run: bool,
        /// How the host loses the cluster: isolate (hostd cuts the controllers off) or
        /// stop-agent (hostd exits; hostd-watchdog fences; its service manager restarts it).
        #[arg(long, default_value = "isolate")]
        mode: String,
        /// Longest the host stays isolated, in seconds; hostd lifts it by itself after.
        #[arg(long, default_value_t = 120)]
        max_duration: u64,
        /// Print the drill's operation id and return at once.
        #[arg(long)]
        detach: bool,
    },
    /// The leader loses leadership for real while another controller writes probes
    /// through the API as a client: the report gives how long writes were unavailable, the
    /// time to a working leader, and whether any acknowledged write was lost.
    ///
    /// step-down: a planned handover to another voter (as `cluster transfer-leader`);
    /// stop: the leader's controller stops (exit code 75; run it under a service manager
    /// that starts it again) and the others elect a leader as after a crash. Refused when
    /// losing the leader would leave no quorum.
    LeaderFailover {
        #[arg(long, default_value = "step-down")]
        mode: String,
        /// The observer gives up (and the drill fails) after this many seconds.
        #[arg(long, default_value_t = 60)]
        max_duration: u64,
        /// Print the drill's operation id and return at once.
        #[arg(long)]
        detach: bool,
    },
    /// VM live-migrates to the host the scheduler picks and back; the report gives each
    /// leg's downtime (as libvirt measured the guest's pause).
    Migration {
        vm: String,
        /// Print the drill's operation id and return at once.
        #[arg(long)]
        detach: bool,
    },
    /// Run a host-failure drill by itself every so often: one host at a time, in turn,
    /// inside an optional daily window (UTC). Each run is an ordinary drill (skipped, with
    /// a `drill-skipped` event, while its plan refuses it); a failed verdict records a
    /// `drill-failed` event and counts in `drover_drills_total{verdict="failed"}`.
    Schedule {
        /// host-failure (the only kind that can be scheduled).
        kind: String,
        /// How often: 12h, 7d (at least an hour).
        #[arg(long)]
        every: String,
        /// The hosts to drill in turn, comma-separated; every host by default.
        #[arg(long)]
        hosts: Option<String>,
        /// HH:MM-HH:MM UTC: runs start only inside it.
        #[arg(long)]
        window: Option<String>,
        #[arg(long, default_value = "isolate")]
        mode: String,
        /// The schedule's name; the kind by default.
        #[arg(long)]
        name: Option<String>,
    },
    /// The drill schedules, with their last runs' verdicts.
    Schedules {
        #[command(flatten)]
        read: ReadOpts,
    },
    /// Removes a drill schedule (a running drill of it goes on).
    Unschedule { name: String },
    /// The drills kept with the operations, newest first, with their verdicts.
    History {
        #[command(flatten)]
        read: ReadOpts,
    },
    /// One drill's report: detection, fence path, per-VM restarts, never-twice, verdict.
    Report {
        id: u64,
        #[command(flatten)]
        read: ReadOpts,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum PoolCmd {
    /// Declare a pool; every host it includes sets it up in libvirt (admin only).
    Create {
        name: String,
        /// dir: a directory at --path on each host.
        #[arg(long = "type", default_value = "dir")]
        r#type: String,
        /// Absolute path of the directory (it must exist on every host of the pool).
        #[arg(long)]
        path: String,
        /// Every host sees the same files there (NFS, CephFS, ... mounted at --path).
        #[arg(long)]
        shared: bool,
        /// The hosts that see the pool, comma-separated, or "all" (the default; hosts added
        /// later too).
        #[arg(long)]
        hosts: Option<String>,
        /// Wait this long for every host to set it up (or say why not), e.g. 30s; fails
        /// if one has not.
        #[arg(long, value_parser = tokens::parse_ttl)]
        wait: Option<std::time::Duration>,
    },
    /// Every pool, with how many of its hosts have it set up.
    List {
        #[command(flatten)]
        read: ReadOpts,
    },
    /// One pool and its state, capacity and free space on each host.
    Get {
        name: String,
        #[command(flatten)]
        read: ReadOpts,
    },
    /// Forget a pool: its hosts undefine it in libvirt and keep the files.
    Delete { name: String },
}

#[derive(Debug, clap::Subcommand)]
pub enum NetCmd {
    /// Declare a network (admin only): an existing host bridge, a VXLAN overlay hostd
    /// builds among the hosts, or a VLAN on a host interface.
    Create {
        name: String,
        /// bridge, vxlan or vlan.
        #[arg(long = "type")]
        r#type: String,
        /// --type bridge: the bridge every host has (e.g. br0).
        #[arg(long)]
        bridge: Option<String>,
        /// --type vxlan: the VXLAN network identifier, 1-16777215.
        #[arg(long)]
        vni: Option<u32>,
        /// --type vlan: the 802.1Q tag, 1-4094.
        #[arg(long)]
        tag: Option<u32>,
        /// --type vlan: the host interface the tagged frames go out of.
        #[arg(long)]
        parent: Option<String>,
        /// The guests' MTU (default: the bridge's; 1450 on a VXLAN overlay).
        #[arg(long)]
        mtu: Option<u32>,
    },
    /// Every network, with its subnets and how many addresses are held.
    List {
        #[command(flatten)]
        read: ReadOpts,
    },
    /// One network and its subnets.
    Get {
        name: String,
        #[command(flatten)]
        read: ReadOpts,
    },
    /// Forget a network (refused while a NIC is on it).
    Delete { name: String },
    /// A network's subnets.
    #[command(subcommand)]
    Subnet(SubnetCmd),
    /// Who holds which address of a network.
    Ips {
        name: String,
        #[command(flatten)]
        read: ReadOpts,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum SubnetCmd {
    /// Add an IPv4 subnet. Addresses may be written relative to it: `.10-.200`, `.1`.
    Add {
        network: String,
        /// e.g. 10.10.0.0/24.
        cidr: String,
        /// Where NIC addresses come from, FIRST-LAST (repeatable), e.g. .10-.200.
        #[arg(long = "range", required = true)]
        ranges: Vec<String>,
        #[arg(long)]
        gateway: Option<String>,
        /// A DNS server guests are told of (repeatable).
        #[arg(long)]
        dns: Vec<String>,
        /// Addresses never handed out, FIRST-LAST or one (repeatable).
        #[arg(long = "reserve")]
        reserved: Vec<String>,
        /// Serve DHCP from this address (vxlan networks): every host carrying the network
        /// answers from it with the cluster's addresses, for guests without cloud-init.
        #[arg(long)]
        dhcp_server: Option<String>,
    },
    /// Remove a subnet (refused while an address of it is held).
    Remove { network: String, cidr: String },
}

#[derive(Debug, clap::Subcommand)]
pub enum SgCmd {
    /// Create a group, or replace its rules. A VM in groups takes in only what one of
    /// their rules allows (and replies to what it sent, and DHCP answers); running guests
    /// get the change at once.
    Put {
        name: String,
        /// What may come in (repeatable): PROTO[:PORT[-PORT]][,from=CIDR], PROTO tcp, udp
        /// or icmp, e.g. tcp:22,from=10.0.0.0/8. None: nothing new comes in.
        #[arg(long, value_parser = security_groups::parse_rule)]
        allow: Vec<drover_proto::v1::SecurityRule>,
    },
    /// All groups and their rules.
    List {
        #[command(flatten)]
        read: ReadOpts,
    },
    /// Delete a group (refused while a VM is in it).
    Delete { name: String },
}

#[derive(Debug, clap::Subcommand)]
pub enum NicCmd {
    /// Give a VM a NIC: NET or NET,ip=ADDRESS. A running guest gets it at once (hot-plug,
    /// its host must carry the network); a stopped one at its next start.
    Add {
        vm: String,
        #[arg(value_parser = networks::parse_nic)]
        nic: NicArg,
    },
    /// Remove the NIC with this MAC; its address is released. A running guest's host
    /// unplugs it first, and the guest must let go of it (ACPI hot-unplug); if it does
    /// not, nothing changes: stop the VM and remove it then.
    Remove { vm: String, mac: String },
}

#[derive(Debug, clap::Subcommand)]
pub enum DiskCmd {
    /// Give a stopped VM one more empty disk (created at its next start).
    Add {
        vm: String,
        /// e.g. 20G (K, M, G, T: powers of 1024).
        #[arg(long, value_parser = sizes::parse_size)]
        size: u64,
        /// The pool (default: its boot disk's).
        #[arg(long)]
        pool: Option<String>,
    },
    /// Grow disk INDEX (0 = the boot disk, as `vm get` numbers them) of a stopped VM.
    Resize {
        vm: String,
        index: u32,
        #[arg(long, value_parser = sizes::parse_size)]
        size: u64,
    },
    /// Remove disk INDEX of a stopped VM; its volume is deleted.
    Remove { vm: String, index: u32 },
}

#[derive(Debug, clap::Subcommand)]
pub enum ImageCmd {
    /// Import a qcow2 or raw file into a pool (the format is detected and checked).
    Import {
        name: String,
        /// The file to import (sent from here).
        #[arg(long, required_unless_present = "url", conflicts_with = "url")]
        file: Option<std::path::PathBuf>,
        /// An http:// URL the cluster fetches the image from itself (it must send a
        /// Content-Length; https and redirects are not followed).
        #[arg(long)]
        url: Option<String>,
        /// The pool to keep it in (a shared one serves every host).
        #[arg(long)]
        pool: String,
    },
    /// Every image, with its format, sizes and state.
    List {
        #[command(flatten)]
        read: ReadOpts,
    },
    /// One image, with its checksum and the host that holds it.
    Get {
        name: String,
        #[command(flatten)]
        read: ReadOpts,
    },
    /// Delete an image (refused while a VM's disk is a clone of it).
    Delete { name: String },
}

#[derive(Debug, clap::Subcommand)]
pub enum TokenCmd {
    /// Create a token; it is printed once, on the last line, and never shown again.
    Create {
        #[arg(long)]
        user: String,
        /// admin, operator or viewer.
        #[arg(long)]
        role: String,
        /// How long it works: e.g. 90s, 30m, 24h, 7d.
        #[arg(long, value_parser = tokens::parse_ttl)]
        ttl: std::time::Duration,
    },
    /// Every token's id, user, role and expiry (never the secret).
    List {
        #[command(flatten)]
        read: ReadOpts,
    },
    /// Revoke a token by id: it authenticates nobody from then on.
    Revoke { id: String },
}

#[derive(Debug, clap::Subcommand)]
pub enum EventCmd {
    /// Events, oldest first.
    List {
        /// Only events about this host.
        #[arg(long)]
        host: Option<String>,
        /// Only events about this VM.
        #[arg(long)]
        vm: Option<String>,
        /// Only the newest N (0: all the cluster keeps, up to 1000).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        #[command(flatten)]
        read: ReadOpts,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum OpCmd {
    /// Operations, oldest first (running ones and the newest 200 finished).
    List {
        /// Only running operations.
        #[arg(long)]
        running: bool,
        #[command(flatten)]
        read: ReadOpts,
    },
    /// One operation, with its progress.
    Get {
        id: u64,
        #[command(flatten)]
        read: ReadOpts,
    },
    /// Stop an operation: a migration is aborted (the VM stays on its source, running), a
    /// drain stops and its host returns to service.
    Cancel { id: u64 },
}

#[derive(Debug, clap::Subcommand)]
pub enum HaCmd {
    /// Suspend failover and self-fencing: hosts keep their guests even if they lose the
    /// controllers, and nothing is restarted elsewhere. For planned network maintenance.
    Disarm,
    /// Resume failover and self-fencing (each host counts as armed once it confirms).
    Arm,
    /// Whether HA is armed, which hosts have not confirmed it yet, and the lease.
    Status,
    /// Change the cluster's lease timings (omitted values stay). Every leader grants and
    /// judges hosts by them; a change waits out grants made under the previous lease.
    Lease {
        #[arg(long)]
        heartbeat_ms: Option<u64>,
        #[arg(long)]
        ttl_ms: Option<u64>,
        #[arg(long)]
        margin_ms: Option<u64>,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum CertsCmd {
    /// Create a CA (ca.pem, ca-key.pem) in DIR.
    Init {
        #[arg(long)]
        dir: PathBuf,
    },
    /// Issue a certificate and its key (STEM.pem, STEM-key.pem), signed by the CA in DIR,
    /// for exactly one holder: a controller (`controller-N`), a host (`host-NAME`) or a
    /// user with a role (`user-NAME`). The holder is named in the certificate as a
    /// drover:// URI; what it may call follows from that.
    #[command(group(clap::ArgGroup::new("holder").required(true)))]
    Issue {
        #[arg(long)]
        dir: PathBuf,
        /// A controller's certificate, for `drover server --id N`.
        #[arg(long, group = "holder")]
        controller: Option<u64>,
        /// A host's certificate, for `hostd --name NAME`.
        #[arg(long, group = "holder")]
        host: Option<String>,
        /// A user's certificate (with --role).
        #[arg(long, group = "holder", requires = "role")]
        user: Option<String>,
        /// The user's role: admin, operator or viewer.
        #[arg(long, requires = "user")]
        role: Option<String>,
        /// Extra addresses or DNS names the certificate is valid for (localhost and
        /// 127.0.0.1 always are).
        #[arg(long, value_delimiter = ',')]
        san: Vec<String>,
    },
}

#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// This node's Raft id (unique in the cluster, at least 1).
    #[arg(long)]
    pub id: u64,
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Address to listen on for Raft peers and clients.
    #[arg(long)]
    pub listen: String,
    /// Founding members: 1=HOST:PORT,2=HOST:PORT,3=HOST:PORT. Used once, on a pristine
    /// data dir; a restart rejoins from its stored membership.
    #[arg(long, required_unless_present = "join", conflicts_with = "join")]
    pub initial_cluster: Option<String>,
    /// Start without bootstrapping and wait to be added (`drover cluster add-node`).
    #[arg(long)]
    pub join: bool,
    /// The address peers use to reach this node (default: --listen). Required with
    /// --join when --listen is not a concrete address.
    #[arg(long)]
    pub advertise: Option<String>,
    /// Connect to peers and hosts from this IP address (a multi-homed controller, or a
    /// firewall that tells controllers apart by source). Default: chosen by the OS.
    #[arg(long)]
    pub source_address: Option<std::net::IpAddr>,
    /// Serve plaintext, without TLS or authentication (only on a loopback address unless
    /// --allow-insecure-non-loopback). Without it, a server with no --ca/--cert/--key
    /// refuses to start.
    #[arg(long)]
    pub insecure: bool,
    /// With --insecure: listen on a non-loopback address anyway.
    #[arg(long, requires = "insecure")]
    pub allow_insecure_non_loopback: bool,
    /// Serve Prometheus metrics at http://ADDR/metrics.
    #[arg(long)]
    pub metrics_listen: Option<String>,
    /// Raft heartbeat interval between controllers, in milliseconds.
    #[arg(long, default_value_t = drover_raft::RaftTimings::default().heartbeat_ms)]
    pub raft_heartbeat_ms: u64,
    /// Raft election timeout range MIN-MAX in milliseconds. Failover takes about MAX (the
    /// leader lease followers honour) plus a random MIN..MAX; too short and a loaded
    /// machine sees spurious elections.
    #[arg(long, default_value = "80-160")]
    pub raft_election_timeout_ms: String,
    /// Take a snapshot (and compact the log) after this many applied writes at least, or
    /// after as many writes as the state holds records when that is more (a snapshot
    /// costs the whole state; this keeps its cost per write constant). Between snapshots
    /// the state is rebuilt at restart by re-applying the log.
    #[arg(long, default_value_t = 10_000)]
    pub snapshot_logs: u64,
    /// Snapshot every --snapshot-logs writes whatever the state's size (tests that must
    /// cross snapshots often; a big state then pays for a whole snapshot each time).
    #[arg(long)]
    pub snapshot_fixed: bool,
    /// Heartbeat (and lease request) interval asked of every hostd, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub heartbeat_interval_ms: u64,
    /// How long a lease grant lets a host run its HA VMs, counted from when the host sent
    /// the request. Must be at least 3 heartbeats. Failover waits ttl + margin.
    #[arg(long, default_value_t = 5000)]
    pub lease_ttl_ms: u64,
    /// Slack the leader adds before declaring a host dead (clock-rate drift, scheduling).
    #[arg(long, default_value_t = 1000)]
    pub lease_margin_ms: u64,
    /// A power-fencing program, run by the leader as `PROGRAM HOST` when a host turns
    /// suspect. Exit 0 must mean "the host is off": its HA VMs fail over at once instead of
    /// after the lease. Any other outcome falls back to the lease wait.
    #[arg(long)]
    pub fence_agent: Option<std::path::PathBuf>,
    /// How long the fence agent may run before it counts as failed.
    #[arg(long, default_value_t = 30_000)]
    pub fence_agent_timeout_ms: u64,
}

#[derive(Debug, clap::Args)]
pub struct DevArgs {
    /// Where the dev cluster keeps its data and logs (wiped at start).
    #[arg(long, default_value = ".dev")]
    pub dir: PathBuf,
    #[arg(long, default_value_t = 3)]
    pub controllers: u64,
    #[arg(long, default_value_t = 3)]
    pub hosts: u64,
    /// libvirt URI every hostd uses.
    #[arg(long, default_value = "test:///default")]
    pub libvirt_uri: String,
}

#[derive(Debug, clap::Subcommand)]
pub enum ClusterCmd {
    /// Members, their roles, terms and applied indexes.
    Status,
    /// Add a controller (started with `drover server --join`): it joins as a learner and
    /// becomes a voter once it has caught up.
    AddNode { id: u64, address: String },
    /// Remove a controller. Refused if the rest could not form a quorum.
    RemoveNode { id: u64 },
    /// Make another voter the leader (before restarting this one, say).
    TransferLeader { id: u64 },
    /// Show the placement policy, or change the parts given: overcommit ratios and how
    /// hosts are ranked (spread: least loaded first; pack: fill one host first).
    Placement {
        /// vCPUs allocatable per physical CPU (default 4.0).
        #[arg(long)]
        cpu_overcommit: Option<f64>,
        /// Memory allocatable per MiB present (default 1.0: no overcommit).
        #[arg(long)]
        memory_overcommit: Option<f64>,
        #[arg(long, value_parser = ["spread", "pack"])]
        weigher: Option<String>,
    },
    /// Backups of the whole cluster state.
    #[command(subcommand)]
    Snapshot(SnapshotCmd),
    /// Seed a new controller's data dir from a backup (offline; run it for every founding
    /// member with the same --initial-cluster, then start them with it).
    Restore {
        file: PathBuf,
        #[arg(long)]
        data_dir: PathBuf,
        /// The new cluster's founding members: 1=HOST:PORT,2=HOST:PORT,3=HOST:PORT.
        #[arg(long)]
        initial_cluster: String,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum SnapshotCmd {
    /// Save a consistent backup, taken on the leader, to FILE.
    Save { file: PathBuf },
}

fn parse_label(text: &str) -> Result<(String, String), String> {
    drover_raft::model::parse_label(text)
}

// How a `get`/`list` reads. (A plain comment: clap would show a doc comment here as the
// help of every subcommand that flattens this and has none of its own.)
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct ReadOpts {
    /// Answer from the contacted controller's own state, without a quorum check.
    #[arg(long)]
    pub stale: bool,
}

#[derive(Debug, clap::Subcommand)]
pub enum HostCmd {
    /// Register a host running hostd.
    Add {
        name: String,
        /// hostd's gRPC address (host:port).
        #[arg(long)]
        address: String,
        /// A label VMs can require, KEY=VALUE (repeatable).
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
    },
    /// Maintenance: live-migrate every VM off the host (2 at a time from it, 8 in the
    /// cluster), then mark it `maintenance`. Waits and shows progress unless --detach.
    Drain {
        name: String,
        /// Stop the drain (host back in service) when a VM can go nowhere, instead of
        /// waiting for room.
        #[arg(long)]
        stop_when_blocked: bool,
        /// Return at once with the operation id.
        #[arg(long)]
        detach: bool,
    },
    /// Return a host in maintenance (or draining) to service.
    Activate { name: String },
    /// Forget a host that runs nothing (drain it first; a dead host's VMs must have
    /// failed over or been moved). Its hostd gets no more leases.
    Remove { name: String },
    /// Every host: health, capacity and what is allocated, admin state.
    List {
        #[command(flatten)]
        read: ReadOpts,
    },
    /// One host, with its labels, migration URI, underlay address and interfaces.
    Get {
        name: String,
        #[command(flatten)]
        read: ReadOpts,
    },
    /// Declare a host powered off, so its HA VMs fail over now instead of after its lease.
    /// Only for a host you have switched off: if it still runs, its VMs would run twice.
    Fence {
        name: String,
        /// Required: confirms the host is powered off.
        #[arg(long)]
        yes_it_is_off: bool,
    },
}

#[derive(Debug, clap::Subcommand)]
pub enum VmCmd {
    /// Create a VM; it is placed and started unless --stopped.
    Create {
        name: String,
        #[arg(long)]
        vcpus: u32,
        #[arg(long)]
        memory_mib: u64,
        /// Create it without starting it.
        #[arg(long)]
        stopped: bool,
        /// Restart it on another host when its host dies (its host destroys it when its
        /// lease lapses, so it never runs twice).
        #[arg(long)]
        ha: bool,
        /// Failover order among HA VMs: higher first.
        #[arg(
            long,
            requires = "ha",
            default_value_t = 0,
            allow_negative_numbers = true
        )]
        ha_priority: i32,
        /// Only hosts with this label, KEY=VALUE (repeatable).
        #[arg(long = "require-label", value_parser = parse_label)]
        require_labels: Vec<(String, String)>,
        /// Never on one host with another VM of this group.
        #[arg(long)]
        anti_affinity: Option<String>,
        /// Size of the boot disk, e.g. 20G (K, M, G, T: powers of 1024).
        #[arg(long, value_parser = sizes::parse_size)]
        disk_size: Option<u64>,
        /// A further empty disk of this size (repeatable).
        #[arg(long = "disk", value_parser = sizes::parse_size)]
        disks: Vec<u64>,
        /// The storage pool of the disks (shared for an HA VM).
        #[arg(long)]
        pool: Option<String>,
        /// Boot from a linked clone of this image (the boot disk is the image's size
        /// unless --disk-size says more).
        #[arg(long, requires = "pool")]
        image: Option<String>,
        #[command(flatten)]
        cloud_init: cloud_init::CloudInitArgs,
        /// A NIC: NET, or NET,ip=ADDRESS for a chosen address (repeatable; in order).
        #[arg(long = "nic", value_parser = networks::parse_nic)]
        nics: Vec<NicArg>,
    },
    /// Attach the terminal to a running VM's serial console (Ctrl-] detaches). A newer
    /// session on the same VM takes the console over.
    Console { name: String },
    /// Live-migrate a running VM to another host (the scheduler picks one unless --to).
    /// Shows progress and ends with the downtime, unless --detach.
    Migrate {
        name: String,
        #[arg(long)]
        to: Option<String>,
        /// Return at once with the operation id.
        #[arg(long)]
        detach: bool,
        /// Longest pause the guest may see at the switch-over.
        #[arg(long, default_value_t = 300)]
        max_downtime_ms: u64,
        /// Bandwidth cap in MiB/s (0: unlimited).
        #[arg(long, default_value_t = 0)]
        bandwidth_mibps: u64,
        /// Do not throttle the guest's vCPUs when it dirties memory faster than it moves.
        #[arg(long)]
        no_auto_converge: bool,
        /// Abort when the remaining data has not shrunk for this many seconds.
        #[arg(long, default_value_t = 150)]
        progress_timeout_s: u64,
    },
    /// Every VM: desired and observed state, host, size.
    List {
        #[command(flatten)]
        read: ReadOpts,
    },
    /// One VM, with its disks, NICs and placement.
    Get {
        name: String,
        #[command(flatten)]
        read: ReadOpts,
    },
    /// Start a stopped VM (the scheduler places it).
    Start { name: String },
    /// Shut a VM down (ACPI, then forced after the grace period).
    Stop { name: String },
    /// A stopped VM's disks: add, grow, remove (they take effect at its next start).
    #[command(subcommand)]
    Disk(DiskCmd),
    /// A VM's NICs: add, remove (a running guest's at once, by hot-plug).
    #[command(subcommand)]
    Nic(NicCmd),
    /// Put a VM in these security groups, replacing its others (none: it leaves all,
    /// and everything comes in again). A running guest's filters change at once.
    Sg { name: String, groups: Vec<String> },
    /// Delete a VM and (unless --keep-disks) its volumes.
    Delete {
        name: String,
        /// Leave its volumes in their pools (then yours to remove).
        #[arg(long)]
        keep_disks: bool,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_never_sent_in_plaintext() {
        let args = TlsArgs {
            ca: None,
            cert: None,
            key: None,
            token: Some("drover_x_y".into()),
        };
        let e = args.load().unwrap_err().to_string();
        assert!(e.contains("--token needs --ca"), "{e}");
    }
}
