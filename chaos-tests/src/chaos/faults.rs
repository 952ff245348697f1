//! Injecting and healing the schedule's faults on the multi-host rig: signals to the
//! processes (by PID), iptables rules between their own loopback addresses, restarts.

use std::collections::BTreeMap;

use anyhow::Context as _;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::schedule::Fault;
use crate::cluster::{controller_ip, host_ip};
use crate::multihost::Rig;
use crate::partition::Partition;
use crate::ChildProcess;

/// What a heal undoes.
pub enum Active {
    Restart(Vec<u64>),
    /// The filler file to remove, and the controller to restart.
    Unfill(std::path::PathBuf, u64),
    Cont(Pid),
    Partition(Partition),
    Libvirtd(usize),
}

/// Each host's watchdog process, by host number.
pub type Watchdogs = BTreeMap<usize, ChildProcess>;

fn controller_pid(rig: &Rig, id: u64) -> anyhow::Result<Pid> {
    rig.cluster
        .controllers
        .iter()
        .find(|c| c.id == id)
        .and_then(|c| c.process.as_ref())
        .map(ChildProcess::pid)
        .with_context(|| format!("controller {id} is not running"))
}

fn stop(pid: Pid) -> anyhow::Result<Active> {
    kill(pid, Signal::SIGSTOP).context("SIGSTOP")?;
    Ok(Active::Cont(pid))
}

/// Injects `fault`; `leader` is the current leader (for the faults that target it).
/// Returns what to heal and the target in words.
pub async fn inject(
    rig: &mut Rig,
    watchdogs: &Watchdogs,
    fault: &Fault,
    leader: Option<u64>,
) -> anyhow::Result<(Active, String)> {
    let ids: Vec<u64> = rig.cluster.controllers.iter().map(|c| c.id).collect();
    let hosts = rig.lv.hosts().len();
    let host_ips: Vec<String> = (1..=hosts).map(host_ip).collect();
    let others = |me: u64| -> Vec<String> {
        ids.iter()
            .filter(|i| **i != me)
            .map(|i| controller_ip(*i))
            .collect()
    };
    let leader = || leader.context("no leader to target");
    Ok(match fault {
        Fault::KillController(id) => {
            rig.cluster.kill_controller(*id).await?;
            (Active::Restart(vec![*id]), format!("controller {id}"))
        }
        Fault::PauseController(id) => {
            (stop(controller_pid(rig, *id)?)?, format!("controller {id}"))
        }
        Fault::PauseHostd(n) => {
            let pid = rig
                .cluster
                .agent(&format!("h{n}"))?
                .process
                .as_ref()
                .map(ChildProcess::pid)
                .context("hostd not running")?;
            (stop(pid)?, format!("hostd h{n}"))
        }
        Fault::PauseWatchdog(n) => {
            let pid = watchdogs
                .get(n)
                .map(ChildProcess::pid)
                .context("no watchdog")?;
            (stop(pid)?, format!("watchdog h{n}"))
        }
        Fault::IsolateLeader => {
            let l = leader()?;
            let mut rest = others(l);
            rest.extend(host_ips.iter().cloned());
            let p = Partition::between(&[controller_ip(l)], &rest)?;
            (Active::Partition(p), format!("leader {l}"))
        }
        Fault::IsolateHost(n) => {
            let all: Vec<String> = ids.iter().map(|i| controller_ip(*i)).collect();
            let p = Partition::between(&[host_ip(*n)], &all)?;
            (Active::Partition(p), format!("host h{n}"))
        }
        Fault::IsolateFollower => {
            let l = leader()?;
            let f = *ids.iter().find(|i| **i != l).context("no follower")?;
            let mut rest = others(f);
            rest.extend(host_ips.iter().cloned());
            let p = Partition::between(&[controller_ip(f)], &rest)?;
            (Active::Partition(p), format!("follower {f}"))
        }
        Fault::OneWayFromLeader => {
            let l = leader()?;
            let f = *ids.iter().find(|i| **i != l).context("no follower")?;
            let p = Partition::one_way(&[controller_ip(l)], &[controller_ip(f)])?;
            (Active::Partition(p), format!("leader {l} -> {f}"))
        }
        Fault::Loss(percent) => {
            let all: Vec<String> = ids.iter().map(|i| controller_ip(*i)).collect();
            let p = Partition::lossy(&all, *percent)?;
            (
                Active::Partition(p),
                format!("{percent}% between controllers"),
            )
        }
        Fault::FullRestart => {
            for id in &ids {
                rig.cluster.kill_controller(*id).await?;
            }
            (Active::Restart(ids.clone()), "every controller".into())
        }
        Fault::DiskFull(id) => {
            let dir = rig
                .cluster
                .controllers
                .iter()
                .find(|c| c.id == *id)
                .map(|c| c.data_dir.clone())
                .context("no such controller")?;
            let filler = dir.join("chaos-filler");
            let written = tokio::task::block_in_place(|| fill(&filler))?;
            (
                Active::Unfill(filler, *id),
                format!(
                    "controller {id} ({} MiB written until ENOSPC)",
                    written >> 20
                ),
            )
        }
        Fault::LibvirtdRestart(n) => {
            let i = n - 1;
            tokio::task::block_in_place(|| rig.lv.host_mut(i).stop_libvirtd())?;
            (Active::Libvirtd(i), format!("libvirtd h{n}"))
        }
    })
}

/// Writes `path` until the filesystem is full; returns the bytes written.
fn fill(path: &std::path::Path) -> anyhow::Result<u64> {
    use std::io::Write as _;
    let mut f = std::fs::File::create(path)?;
    let chunk = vec![0u8; 1 << 20];
    let mut written = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(0) => return Ok(written),
            Ok(n) => written += n as u64,
            Err(e) if e.raw_os_error() == Some(nix::libc::ENOSPC) => return Ok(written),
            Err(e) => return Err(e.into()),
        }
    }
}

pub async fn heal(rig: &mut Rig, active: Active) -> anyhow::Result<()> {
    match active {
        Active::Restart(ids) => {
            for id in ids {
                rig.cluster.start_controller(id).await?;
            }
        }
        Active::Cont(pid) => kill(pid, Signal::SIGCONT).context("SIGCONT")?,
        Active::Unfill(filler, id) => {
            std::fs::remove_file(&filler).context("removing the filler")?;
            // However it took the full disk, the operator's remedy: space, then a restart.
            if rig
                .cluster
                .controllers
                .iter()
                .any(|c| c.id == id && c.process.is_some())
            {
                rig.cluster.kill_controller(id).await?;
            }
            rig.cluster.start_controller(id).await?;
        }
        Active::Partition(p) => p.heal()?,
        Active::Libvirtd(i) => tokio::task::block_in_place(|| rig.lv.host_mut(i).start_libvirtd())?,
    }
    Ok(())
}
