//! `bench_migration`: live migration and drains on real libvirt hosts (the multi-host
//! [`Rig`]: one mount namespace, address and libvirtd per host, 3 controllers, one hostd
//! per host; QEMU guests, TCG where QEMU may not use /dev/kvm: hostd decides).
//!
//! - `migrate`: a drover VM and a *foreign* domain of the same shape (a copy of the drover
//!   domain's XML without the drover marker, so hostd leaves it alone) sit on the same
//!   host. Each round moves both to the other host, one after the other (the order
//!   alternates between rounds): the drover VM through the public API (`MigrateVm`, then
//!   `GetOperation` every `--poll-ms` until the operation ends, over gRPC: the client's
//!   view, without the CLI's process start and 300 ms poll), the foreign one with `virsh
//!   migrate --live --p2p --persistent --undefinesource` (the wall time of the virsh
//!   process). Also reported: the operation's own recorded duration, libvirt's
//!   completed-job statistics (elapsed, downtime) for both, and a `virsh domstate` before
//!   each virsh migration (what starting virsh and connecting costs by itself).
//! - `drain`: N one-vCPU VMs on the drained host(s), the other hosts empty; from
//!   `DrainHost` (what `drover host drain --detach` sends) to the end of every drain
//!   operation, polled every `--poll-ms`, with default limits (2 migrations out of a host,
//!   8 in the cluster). Also the drain operation's recorded duration, each migration's,
//!   the most migrations seen running at once, and how busy the allowed migration slots
//!   were. At the default 4.0 CPU overcommit a host of this 2-CPU machine takes 8
//!   one-vCPU VMs, so 20 VMs need either several drained hosts (`--hosts 9 --drained 4
//!   --vms 20`) or a higher overcommit (`--vms 20 --cpu-overcommit 10`).
//!
//! `cargo build --release --bins && target/release/bench_migration migrate --rounds 10`
//! (needs root and libvirt; the drover binaries are found next to this one, or in
//! `$DROVER_BIN_DIR`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use clap::{Parser, Subcommand};
use drover_chaos_tests::client::{ClientConfig, LeaderClient};
use drover_chaos_tests::libvirt_hosts::{LibvirtHost, LibvirtHosts};
use drover_chaos_tests::multihost::Rig;
use drover_chaos_tests::wait_until;
use drover_proto::v1::host_service_client::HostServiceClient;
use drover_proto::v1::operation_service_client::OperationServiceClient;
use drover_proto::v1::vm_service_client::VmServiceClient;
use drover_proto::v1::{
    ActivateHostRequest, DrainHostRequest, GetOperationRequest, ListOperationsRequest,
    MigrateVmRequest, ObservedState, Operation,
};

#[derive(Parser, Debug)]
#[command(about = "Live migration and drain times on real libvirt hosts")]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
    /// Copy the controllers', hostd's and libvirtd's logs here at the end (they live in
    /// temporary directories otherwise).
    #[arg(long, global = true)]
    keep_logs: Option<std::path::PathBuf>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// drover live migration vs `virsh migrate` of a same-shaped domain, interleaved.
    Migrate(MigrateArgs),
    /// Drain time of N VMs off the first `--drained` hosts onto the others.
    Drain(DrainArgs),
}

#[derive(clap::Args, Debug)]
struct MigrateArgs {
    /// Measured rounds (each moves both guests once, to the other host).
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    /// Unmeasured rounds first.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    #[arg(long, default_value_t = 64)]
    memory_mib: u64,
    /// How often the client polls GetOperation.
    #[arg(long, default_value_t = 20)]
    poll_ms: u64,
    /// Pause after each migration, so the next one does not share the CPU with the
    /// previous one's aftermath (events, hostd reports).
    #[arg(long, default_value_t = 1000)]
    settle_ms: u64,
    /// Experiment: make the virsh migration look more like hostd's: `--auto-converge`,
    /// and the job's statistics queried every 500 ms over one open connection (a `virsh`
    /// shell fed `domjobinfo`) while it runs.
    #[arg(long)]
    virsh_like_hostd: bool,
    /// Give both guests a disk of this many GiB, full of data, in a pool local to each
    /// host: drover copies it with the memory, virsh with `--copy-storage-all`.
    #[arg(long)]
    disk_gib: Option<u64>,
}

#[derive(clap::Args, Debug)]
struct DrainArgs {
    /// Hosts in the rig (at most 9).
    #[arg(long, default_value_t = 3)]
    hosts: usize,
    /// Hosts drained at once (h1..); the VMs are spread over them.
    #[arg(long, default_value_t = 1)]
    drained: usize,
    #[arg(long, default_value_t = 8)]
    vms: usize,
    #[arg(long, default_value_t = 64)]
    memory_mib: u64,
    #[arg(long, default_value_t = 3)]
    trials: usize,
    #[arg(long, default_value_t = 20)]
    poll_ms: u64,
    /// Set the placement policy's CPU overcommit first (`drover cluster placement
    /// --cpu-overcommit`); the default, 4.0, fits 8 one-vCPU VMs on a 2-CPU host.
    #[arg(long)]
    cpu_overcommit: Option<f64>,
}

const VM: &str = "bench-vm";
const FOREIGN: &str = "bench-foreign";
/// The foreign guest's disk (`--disk-gib`): a copy of drover's, in the same local pool.
const FOREIGN_DISK: &str = "bench-foreign-disk.qcow2";
/// The local pool's name in the cluster, and in libvirt (hostd's prefix).
const LOCAL_POOL: &str = "local";
const LOCAL_POOL_LIBVIRT: &str = "drover-local";

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Err(why) = LibvirtHosts::available() {
        eprintln!("bench_migration needs real libvirt hosts on this machine: {why}");
        std::process::exit(2);
    }
    match args.cmd {
        Cmd::Migrate(m) => bench_migrate(&m, args.keep_logs).await,
        Cmd::Drain(d) => bench_drain(&d, args.keep_logs).await,
    }
}

/// Copies the rig's logs to `to` when dropped (at the end, failed or not).
struct KeepLogs<'a> {
    rig: &'a Rig,
    to: Option<std::path::PathBuf>,
}

impl Drop for KeepLogs<'_> {
    fn drop(&mut self) {
        let Some(to) = &self.to else { return };
        let copy = || -> std::io::Result<()> {
            std::fs::create_dir_all(to)?;
            for entry in std::fs::read_dir(self.rig.cluster.dir.path())? {
                let path = entry?.path();
                if path.extension().is_some_and(|e| e == "log") {
                    if let Some(name) = path.file_name() {
                        std::fs::copy(&path, to.join(name))?;
                    }
                }
            }
            for h in self.rig.lv.hosts() {
                let log = h.state_dir.join("log/libvirtd.log");
                if log.is_file() {
                    std::fs::copy(&log, to.join(format!("libvirtd-{}.log", h.name)))?;
                }
            }
            Ok(())
        };
        match copy() {
            Ok(()) => eprintln!("logs copied to {}", to.display()),
            Err(e) => eprintln!("could not copy the logs to {}: {e}", to.display()),
        }
    }
}

fn client(rig: &Rig) -> anyhow::Result<LeaderClient> {
    LeaderClient::new(
        &rig.cluster.addrs(),
        ClientConfig {
            deadline: Duration::from_secs(60),
            ..ClientConfig::default()
        },
    )
}

async fn get_op(c: &mut LeaderClient, id: u64) -> anyhow::Result<Operation> {
    c.call(|ch| async move {
        OperationServiceClient::new(ch)
            .get_operation(GetOperationRequest { id, stale: false })
            .await
            .map(tonic::Response::into_inner)
    })
    .await
    .result
    .map_err(|s| anyhow::anyhow!("GetOperation {id}: {s}"))
}

async fn list_ops(c: &mut LeaderClient, running: bool) -> anyhow::Result<Vec<Operation>> {
    c.call(|ch| async move {
        OperationServiceClient::new(ch)
            .list_operations(ListOperationsRequest {
                stale: false,
                running,
            })
            .await
            .map(|r| r.into_inner().operations)
    })
    .await
    .result
    .map_err(|s| anyhow::anyhow!("ListOperations: {s}"))
}

async fn drain_host(c: &mut LeaderClient, host: &str) -> anyhow::Result<Operation> {
    c.call(|ch| async move {
        HostServiceClient::new(ch)
            .drain_host(DrainHostRequest {
                name: host.to_string(),
                stop_when_blocked: false,
            })
            .await
            .map(tonic::Response::into_inner)
    })
    .await
    .result
    .map_err(|s| anyhow::anyhow!("DrainHost {host}: {s}"))
}

async fn activate_host(c: &mut LeaderClient, host: &str) -> anyhow::Result<()> {
    c.call(|ch| async move {
        HostServiceClient::new(ch)
            .activate_host(ActivateHostRequest {
                name: host.to_string(),
            })
            .await
            .map(drop)
    })
    .await
    .result
    .map_err(|s| anyhow::anyhow!("ActivateHost {host}: {s}"))
}

/// Polls `id` every `poll` until it is no longer running.
async fn op_end(c: &mut LeaderClient, id: u64, poll: Duration) -> anyhow::Result<Operation> {
    let start = Instant::now();
    loop {
        let op = get_op(c, id).await?;
        if op.state != "running" {
            return Ok(op);
        }
        ensure!(
            start.elapsed() < Duration::from_secs(300),
            "operation {id} still running after 5 minutes: {op:?}"
        );
        tokio::time::sleep(poll).await;
    }
}

/// The operation's own duration (leader wall clock, start to end commit).
fn recorded(op: &Operation) -> Option<f64> {
    op.finished_at_ms
        .map(|f| f.saturating_sub(op.started_at_ms) as f64)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn lv_host<'a>(rig: &'a Rig, name: &str) -> anyhow::Result<&'a LibvirtHost> {
    rig.lv
        .hosts()
        .iter()
        .find(|h| h.name == name)
        .with_context(|| format!("no libvirt host {name}"))
}

/// Nearest-rank percentile of `v` (`p` in 0..=100).
fn pct(v: &[f64], p: f64) -> f64 {
    let mut s: Vec<f64> = v.to_vec();
    s.sort_by(f64::total_cmp);
    if s.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * s.len() as f64).ceil().max(1.0) as usize;
    s[rank.min(s.len()) - 1]
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

fn fmt_opt(v: Option<f64>) -> String {
    v.map_or_else(|| "–".into(), |v| format!("{v:.0}"))
}

/// The drover domain's definition as a foreign domain: another name, no UUID, no
/// `<metadata>` (where the drover marker lives), everything else identical.
fn foreign_xml(drover_xml: &str, name: &str) -> anyhow::Result<String> {
    let mut out = String::new();
    let mut in_metadata = false;
    let mut named = false;
    for line in drover_xml.lines() {
        let t = line.trim();
        if in_metadata {
            in_metadata = !t.starts_with("</metadata>");
            continue;
        }
        if t.starts_with("<metadata") {
            in_metadata = !(t.ends_with("</metadata>") || t.ends_with("/>"));
            continue;
        }
        if t.starts_with("<uuid>") {
            continue;
        }
        if !named && t.starts_with("<name>") {
            out += &format!("  <name>{name}</name>\n");
            named = true;
            continue;
        }
        out += line;
        out.push('\n');
    }
    ensure!(
        named && !out.contains("drover"),
        "could not turn the drover domain into a foreign one:\n{out}"
    );
    Ok(out)
}

/// `Key: value unit` lines of `virsh domjobinfo`, value in ms for the keys we use.
fn jobinfo_ms(text: &str, key: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix(key))
        .and_then(|rest| rest.trim_start_matches(':').split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

#[derive(Debug, Default)]
struct DroverRound {
    client_ms: f64,
    recorded_ms: Option<f64>,
    job_ms: Option<f64>,
    downtime_ms: Option<f64>,
    /// What the operation's progress said was moved in all (memory and disks), MiB.
    data_mib: Option<f64>,
}

#[derive(Debug, Default)]
struct VirshRound {
    wall_ms: f64,
    /// `--disk-gib`: deleting the source's stale copy of the disk afterwards (`virsh
    /// vol-delete`), which drover's migration does itself: together, the same end state.
    cleanup_ms: Option<f64>,
    /// A `virsh domstate` just before: what starting virsh and connecting costs.
    noop_ms: f64,
    job_ms: Option<f64>,
    downtime_ms: Option<f64>,
}

async fn drover_migrate(
    c: &mut LeaderClient,
    dst: &str,
    poll: Duration,
) -> anyhow::Result<DroverRound> {
    let start = Instant::now();
    let op = c
        .call(|ch| async move {
            VmServiceClient::new(ch)
                .migrate_vm(MigrateVmRequest {
                    name: VM.into(),
                    to: dst.into(),
                    ..Default::default()
                })
                .await
                .map(tonic::Response::into_inner)
        })
        .await
        .result
        .map_err(|s| anyhow::anyhow!("MigrateVm: {s}"))?;
    let op = op_end(c, op.id, poll).await?;
    let client_ms = ms(start.elapsed());
    ensure!(op.state == "succeeded", "drover migration failed: {op:?}");
    ensure!(op.dst == dst, "moved to {} instead of {dst}", op.dst);
    let m = op.migration.unwrap_or_default();
    Ok(DroverRound {
        client_ms,
        recorded_ms: recorded(&op),
        job_ms: (m.elapsed_ms > 0).then_some(m.elapsed_ms as f64),
        downtime_ms: m.downtime_ms.map(|d| d as f64),
        data_mib: (m.data_total > 0).then(|| m.data_total as f64 / f64::from(1 << 20)),
    })
}

/// A `virsh` shell on `uri` asking for `FOREIGN`'s job statistics every 500 ms (as hostd
/// polls a running migration) until dropped.
struct JobPoller {
    child: std::process::Child,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl JobPoller {
    fn start(uri: &str) -> anyhow::Result<JobPoller> {
        use std::io::Write as _;
        use std::process::{Command, Stdio};
        use std::sync::atomic::{AtomicBool, Ordering};
        let mut child = Command::new("virsh")
            .args(["-c", uri])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot start a virsh shell")?;
        let mut stdin = child.stdin.take().context("virsh stdin")?;
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        // Connected before the migration starts, as hostd's connection is.
        writeln!(stdin, "domstate {FOREIGN}")?;
        stdin.flush()?;
        std::thread::sleep(Duration::from_millis(200));
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::SeqCst) {
                if writeln!(stdin, "domjobinfo {FOREIGN}")
                    .and_then(|()| stdin.flush())
                    .is_err()
                {
                    return;
                }
                std::thread::sleep(Duration::from_millis(500));
            }
        });
        Ok(JobPoller {
            child,
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for JobPoller {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        // Its stdin is closed now, so the shell ends by itself.
        let _ = self.child.wait();
    }
}

/// `local`: the local pool's directory when the guest has a disk there (copied with
/// `--copy-storage-all`; the source's stale copy is deleted afterwards, untimed, as hostd
/// deletes drover's).
fn virsh_migrate(
    src: &LibvirtHost,
    dst: &LibvirtHost,
    like_hostd: bool,
    local: Option<&std::path::Path>,
) -> anyhow::Result<VirshRound> {
    let uri = dst.tcp_uri();
    if local.is_some() {
        // libvirt creates the disk on the destination first, if its pool knows it is not
        // there.
        dst.virsh(&["pool-refresh", LOCAL_POOL_LIBVIRT])?;
    }
    let start = Instant::now();
    src.virsh(&["domstate", FOREIGN])?;
    let noop_ms = ms(start.elapsed());
    let mut args = vec![
        "migrate",
        "--live",
        "--p2p",
        "--persistent",
        "--undefinesource",
    ];
    if like_hostd {
        args.push("--auto-converge");
    }
    if local.is_some() {
        args.push("--copy-storage-all");
    }
    args.extend([FOREIGN, &uri]);
    let poller = like_hostd
        .then(|| JobPoller::start(&src.tcp_uri()))
        .transpose()?;
    let start = Instant::now();
    let migrated = src.virsh(&args);
    let wall_ms = ms(start.elapsed());
    drop(poller);
    migrated?;
    let cleanup_ms = match local {
        Some(local) => {
            let start = Instant::now();
            src.virsh(&["vol-delete", "--pool", LOCAL_POOL_LIBVIRT, FOREIGN_DISK])?;
            let ms = ms(start.elapsed());
            ensure!(
                !local.join(&src.name).join(FOREIGN_DISK).exists(),
                "vol-delete left {FOREIGN_DISK} on {}",
                src.name
            );
            Some(ms)
        }
        None => None,
    };
    // Not timed: libvirt's own account of the job, kept by the destination.
    let info = dst
        .virsh(&["domjobinfo", "--completed", FOREIGN])
        .unwrap_or_default();
    Ok(VirshRound {
        wall_ms,
        cleanup_ms,
        noop_ms,
        job_ms: jobinfo_ms(&info, "Time elapsed"),
        downtime_ms: jobinfo_ms(&info, "Total downtime"),
    })
}

/// Creates the drover VM with a `gib` GiB boot disk in a pool local to each host, full of
/// data (written with `qemu-io` while the VM is stopped, so that a copy moves it all), and
/// starts it; returns the disk's volume name.
async fn create_with_disk(
    rig: &Rig,
    memory_mib: u64,
    gib: u64,
    local: &std::path::Path,
) -> anyhow::Result<String> {
    let path = LibvirtHosts::local_path(local);
    let path = path.to_str().context("utf-8 path")?;
    rig.json(&[
        "pool", "create", LOCAL_POOL, "--path", path, "--wait", "30s",
    ])
    .await?;
    let (mem, size) = (memory_mib.to_string(), format!("{gib}G"));
    let vm = rig
        .json(&[
            "vm",
            "create",
            VM,
            "--vcpus",
            "1",
            "--memory-mib",
            &mem,
            "--disk-size",
            &size,
            "--pool",
            LOCAL_POOL,
        ])
        .await?;
    let volume = vm["disks"][0]["volume"]
        .as_str()
        .context("disk volume")?
        .to_string();
    // Started once, so its host has created the volume; stopped to fill it.
    let host = rig.running(&[VM]).await?[VM].clone();
    rig.json(&["vm", "stop", VM]).await?;
    rig.cluster
        .wait_vm_state(VM, "shut off", Duration::from_secs(120))
        .await?;
    let file = local.join(&host).join(&volume);
    eprintln!("filling {} with {gib} GiB of data", file.display());
    let out = std::process::Command::new("qemu-io")
        .args(["-f", "qcow2", "-c", &format!("write -P 0x5a 0 {gib}G")])
        .arg(&file)
        .output()?;
    ensure!(
        out.status.success(),
        "qemu-io: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    rig.json(&["vm", "start", VM]).await?;
    Ok(volume)
}

async fn bench_migrate(
    args: &MigrateArgs,
    keep_logs: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    let &MigrateArgs {
        rounds,
        warmup,
        memory_mib,
        poll_ms,
        settle_ms,
        virsh_like_hostd,
        disk_gib,
    } = args;
    let (poll, settle) = (
        Duration::from_millis(poll_ms),
        Duration::from_millis(settle_ms),
    );
    eprintln!("starting 2 libvirt hosts and the cluster");
    let local = disk_gib
        .map(|_| drover_chaos_tests::system_libvirt::pool_dir("bench-local"))
        .transpose()?;
    let rig = Rig::start_with_local(2, &[], local.as_ref().map(|d| d.path())).await?;
    let _logs = KeepLogs {
        rig: &rig,
        to: keep_logs,
    };
    let mut c = client(&rig)?;
    let disk = match (disk_gib, &local) {
        (Some(gib), Some(local)) => {
            Some(create_with_disk(&rig, memory_mib, gib, local.path()).await?)
        }
        _ => {
            rig.create(VM, memory_mib).await?;
            None
        }
    };
    let mut at = rig.running(&[VM]).await?[VM].clone();
    eprintln!("{VM} runs on {at}");
    let src = lv_host(&rig, &at)?;
    let xml = src.virsh(&["dumpxml", "--inactive", VM])?;
    let mut foreign = foreign_xml(&xml, FOREIGN)?;
    if let (Some(volume), Some(local)) = (&disk, &local) {
        // Its own copy of drover's disk, data and all, beside it in the local pool.
        let dir = local.path().join(&at);
        std::fs::copy(dir.join(volume), dir.join(FOREIGN_DISK))?;
        src.virsh(&["pool-refresh", LOCAL_POOL_LIBVIRT])?;
        foreign = foreign.replace(volume.as_str(), FOREIGN_DISK);
    }
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("foreign.xml");
    std::fs::write(&file, &foreign)?;
    src.virsh(&["define", &file.display().to_string()])?;
    src.virsh(&["start", FOREIGN])?;
    eprintln!("{FOREIGN} (drover's domain XML without the marker) runs on {at}:\n{foreign}");

    let mut drover = Vec::new();
    let mut virsh = Vec::new();
    if virsh_like_hostd {
        println!(
            "virsh migrations with `--auto-converge`, their job statistics polled every 500 ms \
             (--virsh-like-hostd)\n"
        );
    }
    println!(
        "| round | from → to | first | drover client ms | drover op recorded ms | drover libvirt job ms | drover downtime ms | virsh wall ms | virsh libvirt job ms | virsh downtime ms | virsh no-op ms |"
    );
    println!("|--:|---|---|--:|--:|--:|--:|--:|--:|--:|--:|");
    for round in 0..warmup + rounds {
        let to = if at == "h1" { "h2" } else { "h1" }.to_string();
        let (src, dst) = (lv_host(&rig, &at)?, lv_host(&rig, &to)?);
        let drover_first = round % 2 == 0;
        let mut d = None;
        let mut v = None;
        for step in 0..2 {
            if (step == 0) == drover_first {
                d = Some(drover_migrate(&mut c, &to, poll).await?);
            } else {
                v = Some(tokio::task::block_in_place(|| {
                    virsh_migrate(src, dst, virsh_like_hostd, local.as_ref().map(|d| d.path()))
                })?);
            }
            tokio::time::sleep(settle).await;
        }
        let (d, v) = (d.unwrap_or_default(), v.unwrap_or_default());
        let label = if round < warmup {
            format!("warm-up {}", round + 1)
        } else {
            (round - warmup + 1).to_string()
        };
        println!(
            "| {label} | {at} → {to} | {} | {:.0} | {} | {} | {} | {:.0} | {} | {} | {:.0} |",
            if drover_first { "drover" } else { "virsh" },
            d.client_ms,
            fmt_opt(d.recorded_ms),
            fmt_opt(d.job_ms),
            fmt_opt(d.downtime_ms),
            v.wall_ms,
            fmt_opt(v.job_ms),
            fmt_opt(v.downtime_ms),
            v.noop_ms,
        );
        if round >= warmup {
            drover.push(d);
            virsh.push(v);
        }
        at = to;
    }
    // Both guests are where the last round put them, and only there.
    for h in rig.lv.hosts() {
        let running = h.running_domains()?;
        let here = h.name == at;
        ensure!(
            running.contains(&VM.to_string()) == here
                && running.contains(&FOREIGN.to_string()) == here,
            "{}: running {running:?}, expected both guests only on {at}",
            h.name
        );
    }

    let col = |v: Vec<Option<f64>>| v.into_iter().flatten().collect::<Vec<f64>>();
    let rows: Vec<(&str, Vec<f64>)> = vec![
        (
            "drover, client (MigrateVm → GetOperation says succeeded)",
            drover.iter().map(|d| d.client_ms).collect(),
        ),
        (
            "drover, operation recorded (finished_at − started_at)",
            col(drover.iter().map(|d| d.recorded_ms).collect()),
        ),
        (
            "drover, libvirt job elapsed",
            col(drover.iter().map(|d| d.job_ms).collect()),
        ),
        (
            "virsh migrate, process wall time",
            virsh.iter().map(|v| v.wall_ms).collect(),
        ),
        (
            "virsh, libvirt job elapsed",
            col(virsh.iter().map(|v| v.job_ms).collect()),
        ),
        (
            "drover, outside libvirt's job (client − job elapsed)",
            drover
                .iter()
                .filter_map(|d| d.job_ms.map(|j| d.client_ms - j))
                .collect(),
        ),
        (
            "virsh, outside libvirt's job (wall − job elapsed)",
            virsh
                .iter()
                .filter_map(|v| v.job_ms.map(|j| v.wall_ms - j))
                .collect(),
        ),
        (
            "virsh domstate (process start, connection, one call)",
            virsh.iter().map(|v| v.noop_ms).collect(),
        ),
        (
            "drover, downtime (libvirt)",
            col(drover.iter().map(|d| d.downtime_ms).collect()),
        ),
        (
            "virsh, downtime (libvirt)",
            col(virsh.iter().map(|v| v.downtime_ms).collect()),
        ),
    ];
    println!(
        "\n| {rounds} rounds, {memory_mib} MiB guests | n | median ms | p90 ms | min ms | max ms |"
    );
    println!("|---|--:|--:|--:|--:|--:|");
    let mut medians = BTreeMap::new();
    for (name, v) in &rows {
        println!(
            "| {name} | {} | {:.0} | {:.0} | {:.0} | {:.0} |",
            v.len(),
            pct(v, 50.0),
            pct(v, 90.0),
            min(v),
            max(v)
        );
        medians.insert(*name, pct(v, 50.0));
    }
    let ratio = |a: usize, b: usize| medians[rows[a].0] / medians[rows[b].0];
    println!();
    println!(
        "- ratio of medians, drover client / virsh wall: {:.2} (target ≤ 1.10)",
        ratio(0, 3)
    );
    println!(
        "- ratio of medians, drover operation recorded / virsh wall: {:.2}",
        ratio(1, 3)
    );
    println!(
        "- ratio of medians, libvirt job elapsed drover / virsh: {:.2}",
        ratio(2, 4)
    );
    if disk_gib.is_some() {
        let data: Vec<f64> = drover.iter().filter_map(|d| d.data_mib).collect();
        println!(
            "- drover's progress, data total (memory and disk): median {:.0} MiB",
            pct(&data, 50.0)
        );
        let whole: Vec<f64> = virsh
            .iter()
            .map(|v| v.wall_ms + v.cleanup_ms.unwrap_or(0.0))
            .collect();
        let cleanup: Vec<f64> = virsh.iter().filter_map(|v| v.cleanup_ms).collect();
        println!(
            "- virsh vol-delete of the source's stale copy: median {:.0} ms; virsh migrate + \
             vol-delete (drover's end state): median {:.0} ms; drover client / that: {:.2}",
            pct(&cleanup, 50.0),
            pct(&whole, 50.0),
            medians[rows[0].0] / pct(&whole, 50.0)
        );
    }
    let paired: Vec<f64> = drover
        .iter()
        .zip(&virsh)
        .map(|(d, v)| d.client_ms / v.wall_ms)
        .collect();
    println!(
        "- per round, drover client / virsh wall: median {:.2}, min {:.2}, max {:.2}",
        pct(&paired, 50.0),
        min(&paired),
        max(&paired)
    );
    Ok(())
}

/// Free one-vCPU slots per host, from the hosts' own capacity.
async fn slots_per_host(
    rig: &Rig,
    c: &mut LeaderClient,
    memory_mib: u64,
    cpu_overcommit: Option<f64>,
) -> anyhow::Result<usize> {
    let policy = match cpu_overcommit {
        Some(r) => {
            rig.json(&["cluster", "placement", "--cpu-overcommit", &r.to_string()])
                .await?
        }
        None => rig.json(&["cluster", "placement"]).await?,
    };
    let cpu = policy["cpu_overcommit"]
        .as_f64()
        .with_context(|| format!("placement policy {policy}"))?;
    let mem = policy["memory_overcommit"].as_f64().unwrap_or(1.0);
    let hosts = c.list_hosts().await?;
    let h = hosts.first().context("no hosts")?;
    let by_cpu = (f64::from(h.vcpus) * cpu + 1e-9).floor() as usize;
    let by_mem = (h.memory_mib as f64 * mem / memory_mib.max(1) as f64).floor() as usize;
    eprintln!(
        "each host reports {} vCPUs and {} MiB: at {cpu}x CPU overcommit {by_cpu} one-vCPU \
         VMs fit ({by_mem} by memory)",
        h.vcpus, h.memory_mib
    );
    Ok(by_cpu.min(by_mem))
}

/// Drains `hosts` (all empty) so that they are in maintenance, and waits for it.
async fn to_maintenance(c: &mut LeaderClient, hosts: &[String]) -> anyhow::Result<()> {
    let mut ids = Vec::new();
    for h in hosts {
        ids.push(drain_host(c, h).await?.id);
    }
    for id in ids {
        let op = op_end(c, id, Duration::from_millis(50)).await?;
        ensure!(op.state == "succeeded", "setup drain failed: {op:?}");
    }
    Ok(())
}

/// Waits until all `n` VMs run on `hosts`; returns how many on each.
async fn running_on(
    c: &LeaderClient,
    n: usize,
    hosts: &[String],
) -> anyhow::Result<BTreeMap<String, usize>> {
    wait_until("VMs running", Duration::from_secs(120), || {
        let mut c = c.clone();
        async move {
            let vms = c.list_vms().await.map_err(|s| s.to_string())?;
            let ok = vms.len() == n
                && vms.iter().all(|v| {
                    hosts.contains(&v.host) && v.observed_state == ObservedState::Running as i32
                });
            if !ok {
                return Ok(None);
            }
            let mut by_host = BTreeMap::new();
            for v in &vms {
                *by_host.entry(v.host.clone()).or_default() += 1;
            }
            Ok(Some(by_host))
        }
    })
    .await
}

#[derive(Debug)]
struct DrainTrial {
    total_ms: f64,
    recorded_ms: Vec<f64>,
    migrations: Vec<f64>,
    max_cluster: usize,
    max_from_host: usize,
    /// Per drained host, from the operations' recorded times: a migration's end to the
    /// start of the one that takes its slot (out of the same host, 2 at a time).
    handovers: Vec<f64>,
    /// Per drain: its start to its first migration's start.
    first: Vec<f64>,
    /// Per drain: its last migration's end to its own end.
    tail: Vec<f64>,
}

/// Hand-over gaps, start delays and tails of `drains`, from the recorded times of
/// `migrations` (see [`DrainTrial`]).
fn timeline(drains: &[Operation], migrations: &[&Operation]) -> [Vec<f64>; 3] {
    let (mut handovers, mut first, mut tail) = (Vec::new(), Vec::new(), Vec::new());
    for d in drains {
        let mine: Vec<&&Operation> = migrations.iter().filter(|m| m.src == d.host).collect();
        let mut starts: Vec<u64> = mine.iter().map(|m| m.started_at_ms).collect();
        let mut ends: Vec<u64> = mine.iter().filter_map(|m| m.finished_at_ms).collect();
        starts.sort_unstable();
        ends.sort_unstable();
        for (i, s) in starts.iter().enumerate().skip(2) {
            if let Some(e) = ends.get(i - 2) {
                handovers.push(s.saturating_sub(*e) as f64);
            }
        }
        if let Some(s) = starts.first() {
            first.push(s.saturating_sub(d.started_at_ms) as f64);
        }
        if let (Some(e), Some(end)) = (ends.last(), d.finished_at_ms) {
            tail.push(end.saturating_sub(*e) as f64);
        }
    }
    [handovers, first, tail]
}

async fn bench_drain(
    args: &DrainArgs,
    keep_logs: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    let &DrainArgs {
        hosts: n_hosts,
        drained,
        vms,
        memory_mib,
        trials,
        poll_ms,
        cpu_overcommit,
    } = args;
    let poll = Duration::from_millis(poll_ms);
    ensure!(
        drained >= 1 && drained < n_hosts,
        "need at least one drained host and one to drain onto"
    );
    eprintln!("starting {n_hosts} libvirt hosts and the cluster");
    let rig = Rig::start(n_hosts).await?;
    let _logs = KeepLogs {
        rig: &rig,
        to: keep_logs,
    };
    let mut c = client(&rig)?;
    let slots = slots_per_host(&rig, &mut c, memory_mib, cpu_overcommit).await?;
    let sources: Vec<String> = (1..=drained).map(|i| format!("h{i}")).collect();
    let targets: Vec<String> = (drained + 1..=n_hosts).map(|i| format!("h{i}")).collect();
    if vms > drained * slots || vms > targets.len() * slots {
        bail!(
            "{vms} VMs do not fit: {slots} per host, {drained} drained host(s), {} to drain \
             onto",
            targets.len()
        );
    }
    // The targets in maintenance while the VMs are created, so every VM lands on a source.
    to_maintenance(&mut c, &targets).await?;
    for i in 1..=vms {
        let name = format!("d{i:02}");
        rig.json(&[
            "vm",
            "create",
            &name,
            "--vcpus",
            "1",
            "--memory-mib",
            &memory_mib.to_string(),
        ])
        .await?;
    }
    let mut results = Vec::new();
    println!(
        "| trial | VMs on the drained hosts | drain, client ms | drain ops recorded ms | per VM ms | migrations | migration p50 ms | migration max ms | most migrations at once (cluster / out of one host) | slots busy | hand-over p50 / max ms | drain start → first migration ms | last migration → drain end ms |"
    );
    println!("|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|");
    // Migrations the default limits allow at once: 2 out of each drained host, 8 in all.
    let limit = (2 * drained).min(8);
    for trial in 1..=trials {
        if trial > 1 {
            // Back onto the sources: they take the VMs, the targets go to maintenance.
            for h in &sources {
                activate_host(&mut c, h).await?;
            }
            to_maintenance(&mut c, &targets).await?;
        }
        let placed = running_on(&c, vms, &sources).await?;
        for h in &targets {
            activate_host(&mut c, h).await?;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let t = drain_once(&mut c, &sources, &targets, vms, poll).await?;
        let distribution = placed
            .iter()
            .map(|(h, n)| format!("{h}: {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        // How much of the time the allowed migration slots were in use.
        let busy = t.migrations.iter().sum::<f64>() / (limit as f64 * t.total_ms);
        println!(
            "| {trial} | {distribution} | {:.0} | {} | {:.0} | {} | {:.0} | {:.0} | {} / {} | {:.0} % | {:.0} / {:.0} | {:.0} | {:.0} |",
            t.total_ms,
            t.recorded_ms
                .iter()
                .map(|r| format!("{r:.0}"))
                .collect::<Vec<_>>()
                .join(", "),
            t.total_ms / vms as f64,
            t.migrations.len(),
            pct(&t.migrations, 50.0),
            max(&t.migrations),
            t.max_cluster,
            t.max_from_host,
            busy * 100.0,
            pct(&t.handovers, 50.0),
            max(&t.handovers),
            pct(&t.first, 50.0),
            pct(&t.tail, 50.0),
        );
        results.push(t);
    }
    let totals: Vec<f64> = results.iter().map(|t| t.total_ms).collect();
    let all_migrations: Vec<f64> = results
        .iter()
        .flat_map(|t| t.migrations.iter().copied())
        .collect();
    println!(
        "\n{vms} VMs drained off {} onto {} ({trials} trials): drain median {:.0} ms (min {:.0}, \
         max {:.0}), {:.0} ms per VM; one migration p50 {:.0} ms, p90 {:.0} ms (n={}); at most \
         {} migrations at once in the cluster, {} out of one host (limits 8 and 2)",
        sources.join(","),
        targets.join(","),
        pct(&totals, 50.0),
        min(&totals),
        max(&totals),
        pct(&totals, 50.0) / vms as f64,
        pct(&all_migrations, 50.0),
        pct(&all_migrations, 90.0),
        all_migrations.len(),
        results.iter().map(|t| t.max_cluster).max().unwrap_or(0),
        results.iter().map(|t| t.max_from_host).max().unwrap_or(0),
    );
    let all = |f: fn(&DrainTrial) -> &Vec<f64>| -> Vec<f64> {
        results.iter().flat_map(|t| f(t).iter().copied()).collect()
    };
    let (handovers, first, tail) = (all(|t| &t.handovers), all(|t| &t.first), all(|t| &t.tail));
    println!(
        "hand-over (a migration's end → the next one out of that host starts) p50 {:.0} ms, \
         max {:.0} ms (n={}); drain start → first migration p50 {:.0} ms; last migration end → \
         drain end p50 {:.0} ms",
        pct(&handovers, 50.0),
        max(&handovers),
        handovers.len(),
        pct(&first, 50.0),
        pct(&tail, 50.0),
    );
    Ok(())
}

async fn drain_once(
    c: &mut LeaderClient,
    sources: &[String],
    targets: &[String],
    vms: usize,
    poll: Duration,
) -> anyhow::Result<DrainTrial> {
    let before = list_ops(c, false).await?;
    let last_id = before.iter().map(|o| o.id).max().unwrap_or(0);
    let start = Instant::now();
    let mut ids = Vec::new();
    for h in sources {
        ids.push(drain_host(c, h).await?.id);
    }
    let mut open: BTreeSet<u64> = ids.iter().copied().collect();
    let (mut max_cluster, mut max_from_host) = (0, 0);
    let mut ended = Vec::new();
    while !open.is_empty() {
        for id in open.clone() {
            let op = get_op(c, id).await?;
            if op.state != "running" {
                ensure!(op.state == "succeeded", "drain failed: {op:?}");
                open.remove(&id);
                ended.push(op);
            }
        }
        if open.is_empty() {
            break;
        }
        let running = list_ops(c, true).await?;
        let mut from: BTreeMap<&str, usize> = BTreeMap::new();
        for o in running.iter().filter(|o| o.kind == "migrate") {
            *from.entry(o.src.as_str()).or_default() += 1;
        }
        max_cluster = max_cluster.max(from.values().sum());
        max_from_host = max_from_host.max(from.values().copied().max().unwrap_or(0));
        ensure!(
            start.elapsed() < Duration::from_secs(600),
            "drains still running after 10 minutes"
        );
        tokio::time::sleep(poll).await;
    }
    let total_ms = ms(start.elapsed());
    let after = list_ops(c, false).await?;
    let migrations: Vec<&Operation> = after
        .iter()
        .filter(|o| o.id > last_id && o.kind == "migrate")
        .collect();
    for m in &migrations {
        ensure!(m.state == "succeeded", "a drain migration failed: {m:?}");
    }
    ensure!(
        migrations.len() == vms,
        "{} migrations for {vms} VMs",
        migrations.len()
    );
    running_on(c, vms, targets).await?;
    let [handovers, first, tail] = timeline(&ended, &migrations);
    Ok(DrainTrial {
        handovers,
        first,
        tail,
        total_ms,
        recorded_ms: ended.iter().filter_map(recorded).collect(),
        migrations: migrations.iter().filter_map(|m| recorded(m)).collect(),
        max_cluster,
        max_from_host,
    })
}
