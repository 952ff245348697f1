//! The client commands (`cluster`, `host`, `vm`): call the API through [`Client`] and
//! render the answer. They return what to print; `main` prints it.

use drover_proto::v1 as pb;

use super::follow::{follow, summary};
use super::output::{self, Format};
use super::{ClusterCmd, DiskCmd, EventCmd, HaCmd, HostCmd, OpCmd, ReadOpts, SnapshotCmd, VmCmd};
use crate::client::{Client, DiskOp, Membership, Read, VmVerb};

/// Where and how long client commands try.
#[derive(Debug, Clone)]
pub struct Target {
    pub endpoints: Vec<String>,
    pub timeout: std::time::Duration,
    pub tls: drover_proto::transport::TlsHandle,
    /// A bearer token to send with every call.
    pub token: Option<String>,
}

/// A command's result: the output proper, and a note for stderr (what a stale read
/// reflects) that must not mix into JSON.
#[derive(Debug, Default)]
pub struct Printed {
    pub stdout: String,
    pub note: Option<String>,
    /// The command printed its result but failed (a drill whose verdict is failed): the
    /// process exits non-zero with this, so that scripts notice.
    pub failure: Option<String>,
}

impl From<String> for Printed {
    fn from(stdout: String) -> Self {
        Printed {
            stdout,
            ..Printed::default()
        }
    }
}

pub(super) fn client(target: &Target) -> anyhow::Result<Client> {
    Ok(Client::new(&target.endpoints)?
        .with_deadline(target.timeout)
        .with_tls(target.tls.clone())
        .with_token(target.token.as_deref())?)
}

pub(super) fn json(v: &serde_json::Value) -> anyhow::Result<String> {
    Ok(serde_json::to_string_pretty(v)?)
}

/// Renders a read, noting what a stale one reflects.
pub(super) fn read<T>(
    r: Read<T>,
    stale: bool,
    render: impl FnOnce(&T) -> anyhow::Result<String>,
) -> anyhow::Result<Printed> {
    let stdout = render(&r.value)?;
    let note = stale.then(|| {
        format!(
            "stale read: controller {} at applied index {}",
            r.served_by, r.applied_index
        )
    });
    Ok(Printed {
        stdout,
        note,
        ..Printed::default()
    })
}

fn show_vm(format: Format, vm: &pb::Vm) -> anyhow::Result<String> {
    match format {
        Format::Json => json(&output::vm_json(vm)),
        Format::Table => {
            let mut out = output::vm_rows(std::slice::from_ref(vm));
            let mut refusals: Vec<_> = vm.placement_refusals.iter().collect();
            refusals.sort();
            for (host, why) in refusals {
                out.push_str(&format!("\n{host}: {why}"));
            }
            for (i, d) in vm.disks.iter().enumerate() {
                out.push_str(&format!(
                    "\ndisk {i}: {} in pool {} ({})",
                    output::bytes(d.size_bytes),
                    d.pool,
                    d.volume
                ));
                if !d.image.is_empty() {
                    out.push_str(&format!(", a clone of image {}", d.image));
                }
            }
            for n in &vm.nics {
                let ip = if n.ip.is_empty() { "no address" } else { &n.ip };
                out.push_str(&format!("\nnic {}: network {}, {ip}", n.mac, n.network));
            }
            if let Some(c) = &vm.cloud_init {
                out.push_str(&format!(
                    "\ncloud-init: hostname {}, instance {}, {} SSH key(s), {} bytes of user-data",
                    c.hostname,
                    c.instance_id,
                    c.ssh_keys.len(),
                    c.user_data_bytes
                ));
            }
            Ok(out)
        }
    }
}

fn show_vms(format: Format, vms: &[pb::Vm]) -> anyhow::Result<String> {
    match format {
        Format::Json => json(&vms.iter().map(output::vm_json).collect()),
        Format::Table => Ok(output::vm_rows(vms)),
    }
}

fn show_host(format: Format, h: &pb::Host) -> anyhow::Result<String> {
    match format {
        Format::Json => json(&output::host_json(h)),
        Format::Table => Ok(output::host_rows(std::slice::from_ref(h))),
    }
}

fn show_hosts(format: Format, hosts: &[pb::Host]) -> anyhow::Result<String> {
    match format {
        Format::Json => json(&hosts.iter().map(output::host_json).collect()),
        Format::Table => Ok(output::host_rows(hosts)),
    }
}

fn show_status(format: Format, s: &pb::ClusterStatusResponse) -> anyhow::Result<String> {
    match format {
        Format::Json => json(&output::status_json(s)),
        Format::Table => Ok(output::status_rows(s)),
    }
}

/// Runs a `drover cluster …` command.
pub async fn cluster(target: &Target, format: Format, cmd: ClusterCmd) -> anyhow::Result<Printed> {
    if let ClusterCmd::Restore {
        file,
        data_dir,
        initial_cluster,
    } = &cmd
    {
        return super::backup::restore(file, data_dir, initial_cluster, format).await;
    }
    let c = client(target)?;
    if let ClusterCmd::Placement {
        cpu_overcommit,
        memory_overcommit,
        weigher,
    } = cmd
    {
        let change = pb::PlacementPolicy {
            cpu_overcommit: cpu_overcommit.unwrap_or(0.0),
            memory_overcommit: memory_overcommit.unwrap_or(0.0),
            weigher: weigher.unwrap_or_default(),
        };
        let unchanged = change == pb::PlacementPolicy::default();
        if cpu_overcommit == Some(0.0) || memory_overcommit == Some(0.0) {
            anyhow::bail!("an overcommit ratio must be above 0");
        }
        let policy = if unchanged {
            c.placement().await?
        } else {
            c.set_placement(change).await?
        };
        return Ok(match format {
            Format::Json => json(&serde_json::json!({
                "cpu_overcommit": policy.cpu_overcommit,
                "memory_overcommit": policy.memory_overcommit,
                "weigher": policy.weigher,
            }))?,
            Format::Table => format!(
                "cpu overcommit {:.2}, memory overcommit {:.2}, weigher {}",
                policy.cpu_overcommit, policy.memory_overcommit, policy.weigher
            ),
        }
        .into());
    }
    let status = match cmd {
        ClusterCmd::Placement { .. } => unreachable!("handled above"),
        ClusterCmd::Status => c.cluster_status().await?,
        ClusterCmd::AddNode { id, address } => {
            c.membership(Membership::Add { id, address }).await?
        }
        ClusterCmd::RemoveNode { id } => c.membership(Membership::Remove { id }).await?,
        ClusterCmd::TransferLeader { id } => {
            c.membership(Membership::TransferLeader { id }).await?
        }
        ClusterCmd::Snapshot(SnapshotCmd::Save { file }) => {
            return super::backup::save(&c, &file, format).await;
        }
        ClusterCmd::Restore { .. } => unreachable!("handled above"),
    };
    Ok(show_status(format, &status)?.into())
}

/// Runs a `drover event …` command.
pub async fn event(target: &Target, format: Format, cmd: EventCmd) -> anyhow::Result<Printed> {
    let c = client(target)?;
    let EventCmd::List {
        host,
        vm,
        limit,
        read: ReadOpts { stale },
    } = cmd;
    let events = c
        .events(pb::ListEventsRequest {
            stale,
            host: host.unwrap_or_default(),
            vm: vm.unwrap_or_default(),
            limit,
        })
        .await?
        .events;
    Ok(match format {
        Format::Json => json(&serde_json::Value::Array(
            events.iter().map(output::event_json).collect(),
        ))?,
        Format::Table => output::event_rows(&events),
    }
    .into())
}

/// Runs a `drover ha …` command.
pub async fn ha(target: &Target, format: Format, cmd: HaCmd) -> anyhow::Result<Printed> {
    let c = client(target)?;
    let status = match cmd {
        HaCmd::Disarm => c.set_ha_armed(false).await?,
        HaCmd::Arm => c.set_ha_armed(true).await?,
        HaCmd::Status => c.ha_status().await?,
        HaCmd::Lease {
            heartbeat_ms,
            ttl_ms,
            margin_ms,
        } => {
            c.set_lease(pb::SetLeaseRequest {
                heartbeat_ms: heartbeat_ms.unwrap_or(0),
                ttl_ms: ttl_ms.unwrap_or(0),
                margin_ms: margin_ms.unwrap_or(0),
            })
            .await?
        }
    };
    Ok(match format {
        Format::Json => json(&output::ha_json(&status))?,
        Format::Table => output::ha_text(&status),
    }
    .into())
}

/// Runs a `drover host …` command.
pub async fn host(target: &Target, format: Format, cmd: HostCmd) -> anyhow::Result<Printed> {
    let c = client(target)?;
    match cmd {
        HostCmd::Add {
            name,
            address,
            labels,
        } => Ok(show_host(format, &c.add_host(&name, &address, &labels).await?)?.into()),
        HostCmd::Activate { name } => Ok(show_host(format, &c.activate_host(&name).await?)?.into()),
        HostCmd::Remove { name } => {
            c.remove_host(&name).await?;
            Ok(match format {
                Format::Json => json(&serde_json::json!({ "removed": name }))?,
                Format::Table => format!("host {name} removed\n"),
            }
            .into())
        }
        HostCmd::Drain {
            name,
            stop_when_blocked,
            detach,
        } => {
            let op = c
                .drain_host(pb::DrainHostRequest {
                    name,
                    stop_when_blocked,
                })
                .await?;
            finish_op(&c, format, op, detach).await
        }
        HostCmd::Get {
            name,
            read: ReadOpts { stale },
        } => read(c.host(&name, stale).await?, stale, |h| show_host(format, h)),
        HostCmd::List {
            read: ReadOpts { stale },
        } => read(c.hosts(stale).await?, stale, |h| show_hosts(format, h)),
        HostCmd::Fence {
            name,
            yes_it_is_off,
        } => {
            if !yes_it_is_off {
                anyhow::bail!(
                    "Refusing to fence {name}: pass --yes-it-is-off once you have powered it \
                     off. Its HA VMs start elsewhere at once; if it still runs, they run twice"
                );
            }
            Ok(show_host(format, &c.fence_host(&name, true).await?)?.into())
        }
    }
}

/// The request a `drover vm disk …` command makes.
async fn disk_op(c: &Client, cmd: DiskCmd) -> anyhow::Result<DiskOp> {
    Ok(match cmd {
        DiskCmd::Add { vm, size, pool } => {
            let pool = match pool {
                Some(p) => p,
                None => c
                    .vm(&vm, false)
                    .await?
                    .value
                    .disks
                    .first()
                    .map(|d| d.pool.clone())
                    .ok_or_else(|| {
                        anyhow::anyhow!("VM {vm} has no disk to take a pool from: add --pool")
                    })?,
            };
            DiskOp::Add(pb::AddDiskRequest {
                vm,
                disk: Some(pb::DiskSpec {
                    pool,
                    size_bytes: size,
                }),
            })
        }
        DiskCmd::Resize { vm, index, size } => DiskOp::Resize(pb::ResizeDiskRequest {
            vm,
            index,
            size_bytes: size,
        }),
        DiskCmd::Remove { vm, index } => DiskOp::Remove(pb::RemoveDiskRequest { vm, index }),
    })
}

/// Runs a `drover vm …` command.
pub async fn vm(target: &Target, format: Format, cmd: VmCmd) -> anyhow::Result<Printed> {
    let c = client(target)?;
    let vm = match cmd {
        VmCmd::Create {
            name,
            vcpus,
            memory_mib,
            stopped,
            ha,
            ha_priority,
            require_labels,
            anti_affinity,
            disk_size,
            disks,
            pool,
            image,
            cloud_init,
            nics,
        } => {
            let nics = nics.into_iter().map(pb::NicSpec::from).collect();
            // A clone boots as big as its image unless asked for more.
            let boot = match (&image, disk_size) {
                (Some(name), None) => Some(c.image(name, false).await?.value.virtual_bytes),
                (_, size) => size,
            };
            let sizes: Vec<u64> = boot.into_iter().chain(disks).collect();
            let disks = match (pool, sizes.is_empty()) {
                (_, true) => Vec::new(),
                (Some(pool), false) => sizes
                    .into_iter()
                    .map(|size_bytes| pb::DiskSpec {
                        pool: pool.clone(),
                        size_bytes,
                    })
                    .collect(),
                (None, false) => anyhow::bail!("disks need a storage pool: add --pool"),
            };
            let req = pb::CreateVmRequest {
                name,
                spec: Some(pb::VmSpec { vcpus, memory_mib }),
                start: !stopped,
                ha,
                ha_priority,
                require_labels: require_labels.into_iter().collect(),
                anti_affinity: anti_affinity.unwrap_or_default(),
                disks,
                image: image.unwrap_or_default(),
                cloud_init: cloud_init.request()?,
                nics,
            };
            c.create_vm(req).await?
        }
        VmCmd::Migrate {
            name,
            to,
            detach,
            max_downtime_ms,
            bandwidth_mibps,
            no_auto_converge,
            progress_timeout_s,
        } => {
            if max_downtime_ms == 0 {
                anyhow::bail!("--max-downtime-ms must be at least 1");
            }
            let op = c
                .migrate_vm(pb::MigrateVmRequest {
                    name,
                    to: to.unwrap_or_default(),
                    max_downtime_ms,
                    bandwidth_mibps,
                    no_auto_converge,
                    progress_timeout_ms: progress_timeout_s.saturating_mul(1000),
                })
                .await?;
            return finish_op(&c, format, op, detach).await;
        }
        VmCmd::Get {
            name,
            read: ReadOpts { stale },
        } => return read(c.vm(&name, stale).await?, stale, |v| show_vm(format, v)),
        VmCmd::List {
            read: ReadOpts { stale },
        } => return read(c.vms(stale).await?, stale, |v| show_vms(format, v)),
        VmCmd::Start { name } => c.vm_action(VmVerb::Start, &name).await?,
        VmCmd::Stop { name } => c.vm_action(VmVerb::Stop, &name).await?,
        VmCmd::Delete { name, keep_disks } => {
            c.vm_action(VmVerb::Delete { keep_disks }, &name).await?
        }
        VmCmd::Disk(cmd) => c.disk_op(disk_op(&c, cmd).await?).await?,
        VmCmd::Nic(cmd) => c.nic_op(super::networks::nic_op(cmd)).await?,
        VmCmd::Sg { name, groups } => {
            let req = drover_proto::v1::SetVmSecurityGroupsRequest { vm: name, groups };
            c.nic_op(crate::client::NicOp::SecurityGroups(req)).await?
        }
        VmCmd::Console { name } => {
            super::console::run(&c, &name).await?;
            return Ok(String::new().into());
        }
    };
    Ok(show_vm(format, &vm)?.into())
}

/// Follows `op` to its end unless `detach`; prints it, and fails unless it succeeded.
async fn finish_op(
    c: &Client,
    format: Format,
    op: pb::Operation,
    detach: bool,
) -> anyhow::Result<Printed> {
    let op = if detach { op } else { follow(c, op).await? };
    let text = match format {
        Format::Json => json(&output::op_json(&op))?,
        Format::Table if detach => format!("operation {} started", op.id),
        Format::Table => summary(&op),
    };
    if !detach && op.state != "succeeded" {
        anyhow::bail!("{}", summary(&op));
    }
    Ok(text.into())
}

/// Runs a `drover op …` command.
pub async fn op(target: &Target, format: Format, cmd: OpCmd) -> anyhow::Result<Printed> {
    let c = client(target)?;
    match cmd {
        OpCmd::List {
            running,
            read: ReadOpts { stale },
        } => read(c.operations(running, stale).await?, stale, |ops| {
            Ok(match format {
                Format::Json => json(&ops.iter().map(output::op_json).collect())?,
                Format::Table => output::op_rows(ops),
            })
        }),
        OpCmd::Get {
            id,
            read: ReadOpts { stale },
        } => read(c.operation(id, stale).await?, stale, |op| {
            Ok(match format {
                Format::Json => json(&output::op_json(op))?,
                Format::Table => output::op_text(op),
            })
        }),
        OpCmd::Cancel { id } => {
            let op = c.cancel_operation(id).await?;
            Ok(match format {
                Format::Json => json(&output::op_json(&op))?,
                Format::Table => format!("cancel requested for operation {}", op.id),
            }
            .into())
        }
    }
}

/// Runs a `drover certs …` command.
pub fn certs(cmd: super::CertsCmd) -> anyhow::Result<Printed> {
    match cmd {
        super::CertsCmd::Init { dir } => {
            let ca = crate::certs::init(&dir)?;
            Ok(format!("created CA {}", ca.display()).into())
        }
        super::CertsCmd::Issue {
            dir,
            controller,
            host,
            user,
            role,
            san,
        } => {
            use drover_proto::identity::Peer;
            let peer = match (controller, host, user) {
                (Some(id), None, None) if id > 0 => Peer::Controller(id),
                (Some(_), None, None) => anyhow::bail!("--controller must be at least 1"),
                (None, Some(name), None) => Peer::Host(name),
                (None, None, Some(name)) => Peer::User {
                    name,
                    role: role.unwrap_or_default().parse()?,
                },
                _ => anyhow::bail!(
                    "Name the holder: --controller N, --host NAME or --user NAME --role R"
                ),
            };
            let issued = crate::certs::issue(&dir, &peer, &san)?;
            Ok(format!(
                "issued {} for {peer} (key {})",
                issued.cert.display(),
                issued.key.display()
            )
            .into())
        }
    }
}
