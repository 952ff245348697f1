//! HA keeps the disk (issue 11, point 6), on two real libvirt hosts with a shared pool
//! (one directory every host's mount namespace sees at the same path: what an NFS mount
//! looks like to QEMU). An HA VM boots the test guest from a linked clone of an imported
//! image, and the guest writes a marker to its second disk. Then its host loses power:
//! SIGKILL of that host's hostd and of its QEMU. The VM must come back on the other host
//! with the same disks — the guest there finds the marker the first boot wrote — while the
//! never-twice sampler reads both hosts' libvirt throughout; afterwards `qemu-img check`
//! finds both volumes consistent. On the way, the disk lock layer: with libvirt's
//! `lock_manager = "lockd"`, the running VM's host's virtlockd holds its disks, a second
//! QEMU started by hand on the other host on the same disks is refused while the first
//! runs; and the dead host's locks (its virtlockd killed with it) do not keep the
//! failover from starting the VM.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use drover_chaos_tests::guest;
use drover_chaos_tests::libvirt_hosts::LibvirtHosts;
use drover_chaos_tests::multihost::Rig;
use drover_chaos_tests::{require, system_libvirt, wait_until, Sampler};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// The guest boots in about 4 s under TCG; a loaded CI machine may take several times that.
const BOOT: Duration = Duration::from_secs(90);

fn qemu_img_check(path: &Path) -> anyhow::Result<()> {
    let out = std::process::Command::new("qemu-img")
        .args(["check", "-U", "-f", "qcow2"])
        .arg(path)
        .output()?;
    anyhow::ensure!(
        out.status.success(),
        "qemu-img check {}: {}{}",
        path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// The files process `pid` has open.
fn open_files(pid: i32) -> anyhow::Result<Vec<std::path::PathBuf>> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))?
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .collect())
}

/// `xml` (a running domain's) as another VM on the same disks: its own name, no UUID, and
/// no drover marker (hostd must not take it for one of its own).
fn intruder_xml(xml: &str) -> String {
    let mut out = String::new();
    let mut skip = false;
    for line in xml.lines() {
        let t = line.trim();
        if t.starts_with("<metadata") {
            skip = !t.ends_with("</metadata>");
            continue;
        }
        if skip {
            skip = !t.starts_with("</metadata>");
            continue;
        }
        if t.starts_with("<uuid>") {
            continue;
        }
        if t.starts_with("<name>") {
            out.push_str("  <name>intruder</name>\n");
            continue;
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multihost_ha_vm_comes_back_with_its_disk_after_power_loss() -> anyhow::Result<()> {
    if !require::prerequisite(LibvirtHosts::available()) {
        return Ok(());
    }
    let Some(image) = guest::image_or_skip() else {
        return Ok(());
    };
    let mut rig = Rig::start_with(2, &["--domain-type", "qemu"]).await?;
    let shared = system_libvirt::pool_dir("drover-shared")?;
    eprintln!("phase: a shared pool, the guest image in it, an HA VM booting a clone of it");
    let vm = rig.shared_ha_guest("keeper", shared.path(), &image).await?;
    let volume = |i: usize| {
        shared
            .path()
            .join(vm["disks"][i]["volume"].as_str().unwrap_or("?"))
    };
    let (boot, data) = (volume(0), volume(1));
    let src = rig.running(&["keeper"]).await?["keeper"].clone();
    let first = guest::wait_marker(
        "the guest's first boot to write its marker",
        &data,
        BOOT,
        |m| m.first_boot.is_some(),
    )
    .await?;
    eprintln!("the guest on {src} wrote {first:?}");
    let sampler = Sampler::start_running(&rig.uris()).await?;
    let i = rig
        .lv
        .hosts()
        .iter()
        .position(|h| h.name == src)
        .context("source host")?;
    let other = rig.lv.host(1 - i);

    eprintln!(
        "phase: {src}'s virtlockd holds keeper's disks; a second QEMU on {} is refused",
        other.name
    );
    let xml = rig.lv.host(i).virsh(&["dumpxml", "keeper"])?;
    // The lease layer holds: h1's virtlockd has both disks open and locked.
    let lockd = rig.lv.host(i).virtlockd_pid().context("virtlockd")?;
    let held = open_files(lockd.as_raw())?;
    for disk in [&boot, &data] {
        assert!(
            held.contains(disk),
            "virtlockd holds no lock on {}: {held:?}",
            disk.display()
        );
    }
    let intruder = intruder_xml(&xml);
    let file = shared.path().join("intruder.xml");
    std::fs::write(&file, &intruder)?;
    let refused = other
        .virsh(&["create", file.to_str().context("utf-8 path")?])
        .expect_err("a second QEMU started on disks another host holds");
    // QEMU's own image lock answers first (libvirt takes lockd leases when it resumes the
    // paused QEMU, after QEMU opened its disks); with it off, virtlockd's lease would.
    let why = format!("{refused:#}");
    assert!(why.contains("lock"), "refused, but not by a lock: {why}");
    assert!(!other.running_domains()?.contains(&"intruder".to_string()));
    std::fs::remove_file(&file)?;

    eprintln!("phase: {src} loses power: its hostd, its QEMU and its virtlockd are killed");
    let pid_file = rig.lv.host(i).state_dir.join("run/qemu/keeper.pid");
    let qemu: i32 = std::fs::read_to_string(&pid_file)
        .with_context(|| format!("read {}", pid_file.display()))?
        .trim()
        .parse()?;
    rig.cluster.kill_agent(&src).await?;
    kill(Pid::from_raw(qemu), Signal::SIGKILL)?;
    // The dead host's disk locks die with the process that held them (fcntl locks): they
    // must not keep the VM from starting elsewhere.
    kill(lockd, Signal::SIGKILL)?;

    eprintln!("phase: the VM runs on the other host, and the guest there finds the marker");
    let moved = wait_until("keeper running elsewhere", BOOT, || async {
        let v = rig.cluster.cli_json(&["vm", "get", "keeper"]).await?;
        let elsewhere = v["observed_state"] == "running" && v["host"] != src.as_str();
        Ok(elsewhere.then_some(v))
    })
    .await?;
    eprintln!("keeper runs on {}", moved["host"]);
    let second = guest::wait_marker("the restarted guest to find the marker", &data, BOOT, |m| {
        m.boots.is_some()
    })
    .await?;
    assert_eq!(
        second.first_boot, first.first_boot,
        "the first boot's marker changed"
    );
    assert_eq!(second.boots, Some(2), "{second:?}");

    let samples = sampler.finish().await?;
    if let Some((s, vm)) = samples.twice() {
        panic!("{vm} ran on two hosts at once: {:?}", s.active);
    }

    eprintln!("phase: stopped, both volumes pass qemu-img check");
    let out = rig.cluster.cli(&["vm", "stop", "keeper"]).await?;
    anyhow::ensure!(out.success, "vm stop: {}", out.stderr);
    wait_until("keeper shut off", BOOT, || async {
        let v = rig.cluster.cli_json(&["vm", "get", "keeper"]).await?;
        Ok((v["observed_state"] == "shut off").then_some(()))
    })
    .await?;
    qemu_img_check(&boot)?;
    qemu_img_check(&data)?;
    Ok(())
}
