//! Fence layers that survive libvirt (issue 9, point 6), on real libvirt hosts: a libvirtd
//! restart under a running HA VM is ridden out (hostd reconnects, renews its lease again,
//! and keeps the VM where it is), and a watchdog whose libvirtd is gone when the lease lapses
//! stops petting its device, then fences once libvirtd is back.

use std::path::Path;
use std::time::Duration;

use anyhow::Context as _;
use drover_chaos_tests::libvirt_hosts::LibvirtHosts;
use drover_chaos_tests::multihost::Rig;
use drover_chaos_tests::process::binary;
use drover_chaos_tests::{require, wait_until, ChildProcess, Sampler};
use drover_hostd::clock::BootInstant;
use drover_hostd::hypervisor::domain_type::{self, DomainTypeChoice};
use drover_hostd::hypervisor::libvirt::LibvirtHypervisor;
use drover_hostd::hypervisor::{Hypervisor, VmSpec};
use drover_hostd::lease_file::{self, LeaseRecord};

/// The lease's expiry in hostd's lease file (boot-clock nanoseconds), if any.
fn lease_expiry(data_dir: &Path) -> Option<u64> {
    lease_file::read(&lease_file::path_in(data_dir))
        .ok()
        .flatten()
        .and_then(|r| r.expires_boot_ns)
}

fn log_says(log: &Path, line: &str) -> bool {
    std::fs::read_to_string(log).is_ok_and(|text| text.contains(line))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostd_rides_out_a_libvirtd_restart_and_keeps_its_ha_vm() -> anyhow::Result<()> {
    if !require::prerequisite(LibvirtHosts::available()) {
        return Ok(());
    }
    let mut rig = Rig::start(2).await?;
    // Long enough that the restart (a second or two, more on a loaded machine) is ridden out
    // on the lease in hand: this test is about reconnecting, not racing the ttl.
    let out = rig
        .cluster
        .cli(&["ha", "lease", "--ttl-ms", "10000", "--margin-ms", "1000"])
        .await?;
    anyhow::ensure!(out.success, "ha lease: {out:?}");
    rig.json(&[
        "vm",
        "create",
        "keep",
        "--vcpus",
        "1",
        "--memory-mib",
        "64",
        "--ha",
    ])
    .await?;
    let placed = rig.running(&["keep"]).await?;
    let host = placed["keep"].clone();
    let gen0 = rig.vm("keep").await?["generation"].as_u64();
    let data_dir = rig.cluster.agent(&host)?.data_dir.clone();
    let log = rig.cluster.dir.path().join(format!("hostd-{host}.log"));
    let sampler = Sampler::start_running(&rig.uris()).await?;
    let idx = rig
        .lv
        .hosts()
        .iter()
        .position(|h| h.name == host)
        .context("the VM's libvirt host")?;

    eprintln!("phase: {host}'s libvirtd dies; hostd stops renewing (it cannot fence)");
    tokio::task::block_in_place(|| rig.lv.host_mut(idx).stop_libvirtd())?;
    wait_until("hostd notices", Duration::from_secs(10), || async {
        Ok(log_says(&log, "this host cannot fence").then_some(()))
    })
    .await?;
    let frozen = lease_expiry(&data_dir).context("a lease was held")?;
    // Its heartbeats fail too (it cannot list its guests): the leader marks it suspect
    // after two missed beats. By then a renewing hostd would have moved its expiry.
    wait_until("host suspect", Duration::from_secs(20), || async {
        let h = rig.cluster.cli_json(&["host", "get", &host]).await?;
        Ok((h["health"] != "up").then_some(()))
    })
    .await?;
    assert_eq!(
        lease_expiry(&data_dir),
        Some(frozen),
        "the lease was renewed while this host could not fence"
    );
    eprintln!("phase: libvirtd is back; hostd reconnects and renews");
    tokio::task::block_in_place(|| rig.lv.host_mut(idx).start_libvirtd())?;
    wait_until(
        "a renewal after the restart",
        Duration::from_secs(10),
        || async { Ok((lease_expiry(&data_dir) > Some(frozen)).then_some(())) },
    )
    .await?;
    // hostd sees its guests again through the new connection.
    let domains = wait_until(
        "hostd lists its domains",
        Duration::from_secs(10),
        || async { Ok(rig.cluster.domains(&host).await.ok()) },
    )
    .await?;
    assert!(
        domains.iter().any(|d| d.name == "keep"),
        "keep is still on {host}: {domains:?}"
    );
    wait_until("host up", Duration::from_secs(20), || async {
        let h = rig.cluster.cli_json(&["host", "get", &host]).await?;
        Ok((h["health"] == "up").then_some(()))
    })
    .await?;
    let vm = rig.vm("keep").await?;
    assert_eq!(vm["host"], host.as_str(), "never moved: {vm}");
    assert_eq!(vm["generation"].as_u64(), gen0, "never restarted: {vm}");
    assert_eq!(vm["observed_state"], "running", "{vm}");

    let samples = sampler.finish().await?;
    if let Some((s, vm)) = samples.twice() {
        panic!("{vm} ran on two hosts at once: {:?}", s.active);
    }
    assert!(
        samples.first_active_elsewhere("keep", &host).is_none(),
        "keep never ran anywhere but {host}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watchdog_without_libvirt_at_the_lapse_stops_petting_then_fences_when_it_is_back(
) -> anyhow::Result<()> {
    if !require::prerequisite(LibvirtHosts::available()) {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let lv_dir = dir.path().join("lv");
    let mut lv = tokio::task::spawn_blocking(move || LibvirtHosts::start(&lv_dir, 1)).await??;
    let uri = lv.host(0).tcp_uri();
    let name = format!("wd-lv-{}", std::process::id());
    let kind = domain_type::probe("qemu:///system", DomainTypeChoice::Auto).domain_type;
    let (open_uri, spec) = (
        uri.clone(),
        VmSpec {
            name: name.clone(),
            vcpus: 1,
            memory_mib: 64,
            generation: 1,
            term: 1,
            ha: true,
            ..Default::default()
        },
    );
    tokio::task::spawn_blocking(move || {
        LibvirtHypervisor::open(&open_uri, kind)?.define_and_start(&spec)
    })
    .await??;

    // A lease that holds for a while yet, as hostd would have written it.
    let data_dir = dir.path().join("data");
    std::fs::create_dir_all(&data_dir)?;
    let lease_ms = 6000;
    let record = LeaseRecord {
        expires_boot_ns: Some((BootInstant::now() + Duration::from_millis(lease_ms)).as_nanos()),
        term: 1,
        boot_id: lease_file::boot_id(),
        disarmed: false,
    };
    lease_file::write(&lease_file::path_in(&data_dir), &record)?;
    // A plain file stands in for /dev/watchdog (this kernel has none): every pet grows it.
    let device = dir.path().join("device");
    std::fs::write(&device, b"")?;
    let pets = || std::fs::metadata(&device).map_or(0, |m| m.len());
    let log = dir.path().join("watchdog.log");
    let args: Vec<String> = [
        "--libvirt-uri",
        &uri,
        "--data-dir",
        &data_dir.display().to_string(),
        "--interval-ms",
        "100",
        "--device",
        &device.display().to_string(),
    ]
    .map(String::from)
    .to_vec();
    let (_watchdog, _) = ChildProcess::spawn_until(
        "watchdog",
        &binary("hostd-watchdog"),
        &args,
        &log,
        "watching ",
    )
    .await?;

    eprintln!("phase: libvirtd dies while the lease holds: the device is still petted");
    tokio::task::block_in_place(|| lv.host_mut(0).stop_libvirtd())?;
    let mark = pets();
    wait_until(
        "a pet with libvirtd gone",
        Duration::from_secs(5),
        || async { Ok((pets() > mark).then_some(())) },
    )
    .await?;
    assert!(
        record.remaining().is_some(),
        "the lease still held at that pet (the restart was too slow for this test)"
    );

    eprintln!("phase: the lease lapses with libvirtd gone: no more pets");
    wait_until(
        "the watchdog gives up",
        Duration::from_secs(lease_ms / 1000 + 10),
        || async { Ok(log_says(&log, "Watchdog cannot fence").then_some(())) },
    )
    .await?;
    let stopped_at = pets();
    // A negative can only be watched for a while: ten rounds of the watchdog's loop.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(
        pets(),
        stopped_at,
        "the device was petted while no fence was possible"
    );

    eprintln!("phase: libvirtd is back: the watchdog reconnects, fences, and pets again");
    tokio::task::block_in_place(|| lv.host_mut(0).start_libvirtd())?;
    wait_until("the HA guest fenced", Duration::from_secs(20), || async {
        let running = lv.host(0).running_domains().map_err(|e| e.to_string())?;
        Ok((!running.contains(&name)).then_some(()))
    })
    .await?;
    wait_until("petting again", Duration::from_secs(5), || async {
        Ok((pets() > stopped_at).then_some(()))
    })
    .await?;
    let _ = lv.host(0).virsh(&["undefine", &name]);
    Ok(())
}
