//! The `drover` command line: flags (clap) and the client commands. `server` and `dev`
//! live in their own modules.

pub mod output;

use std::path::PathBuf;

use drover_proto::v1 as pb;

use crate::client::{Client, VmVerb};
use output::Format;

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
    #[command(subcommand)]
    pub command: Command,
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
}

#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// This node's Raft id (must appear in --initial-cluster).
    #[arg(long)]
    pub id: u64,
    #[arg(long)]
    pub data_dir: PathBuf,
    /// Address to listen on for Raft peers and clients.
    #[arg(long)]
    pub listen: String,
    /// Founding members: 1=HOST:PORT,2=HOST:PORT,3=HOST:PORT.
    #[arg(long)]
    pub initial_cluster: String,
    /// Heartbeat interval asked of every hostd, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub heartbeat_interval_ms: u64,
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
}

#[derive(Debug, clap::Subcommand)]
pub enum HostCmd {
    /// Register a host running hostd.
    Add {
        name: String,
        /// hostd's gRPC address (host:port).
        #[arg(long)]
        address: String,
    },
    List,
    Get {
        name: String,
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
    },
    List,
    Get {
        name: String,
    },
    Start {
        name: String,
    },
    Stop {
        name: String,
    },
    Delete {
        name: String,
    },
}

/// Where and how long client commands try.
#[derive(Debug, Clone)]
pub struct Target {
    pub endpoints: Vec<String>,
    pub timeout: std::time::Duration,
}

fn client(target: &Target) -> anyhow::Result<Client> {
    Ok(Client::new(&target.endpoints)?.with_deadline(target.timeout))
}

fn json(v: &serde_json::Value) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(v)?)
}

fn show_vm(format: Format, vm: &pb::Vm) -> anyhow::Result<String> {
    match format {
        Format::Json => json(&output::vm_json(vm)),
        Format::Table => Ok(output::vm_rows(std::slice::from_ref(vm))),
    }
}

fn show_host(format: Format, h: &pb::Host) -> anyhow::Result<String> {
    match format {
        Format::Json => json(&output::host_json(h)),
        Format::Table => Ok(output::host_rows(std::slice::from_ref(h))),
    }
}

/// Runs a `drover cluster …` command; returns what to print.
pub async fn cluster(target: &Target, format: Format, cmd: ClusterCmd) -> anyhow::Result<String> {
    let c = client(target)?;
    match cmd {
        ClusterCmd::Status => {
            let s = c.cluster_status().await?;
            match format {
                Format::Json => json(&output::status_json(&s)),
                Format::Table => Ok(output::status_rows(&s)),
            }
        }
    }
}

/// Runs a `drover host …` command; returns what to print.
pub async fn host(target: &Target, format: Format, cmd: HostCmd) -> anyhow::Result<String> {
    let c = client(target)?;
    match cmd {
        HostCmd::Add { name, address } => show_host(format, &c.add_host(&name, &address).await?),
        HostCmd::Get { name } => show_host(format, &c.host(&name).await?),
        HostCmd::List => {
            let hosts = c.hosts().await?;
            match format {
                Format::Json => json(&hosts.iter().map(output::host_json).collect()),
                Format::Table => Ok(output::host_rows(&hosts)),
            }
        }
    }
}

/// Runs a `drover vm …` command; returns what to print.
pub async fn vm(target: &Target, format: Format, cmd: VmCmd) -> anyhow::Result<String> {
    let c = client(target)?;
    match cmd {
        VmCmd::Create {
            name,
            vcpus,
            memory_mib,
            stopped,
        } => {
            let req = pb::CreateVmRequest {
                name,
                spec: Some(pb::VmSpec { vcpus, memory_mib }),
                start: !stopped,
            };
            show_vm(format, &c.create_vm(req).await?)
        }
        VmCmd::Get { name } => show_vm(format, &c.vm(&name).await?),
        VmCmd::List => {
            let vms = c.vms().await?;
            match format {
                Format::Json => json(&vms.iter().map(output::vm_json).collect()),
                Format::Table => Ok(output::vm_rows(&vms)),
            }
        }
        VmCmd::Start { name } => show_vm(format, &c.vm_action(VmVerb::Start, &name).await?),
        VmCmd::Stop { name } => show_vm(format, &c.vm_action(VmVerb::Stop, &name).await?),
        VmCmd::Delete { name } => show_vm(format, &c.vm_action(VmVerb::Delete, &name).await?),
    }
}
