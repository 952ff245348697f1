//! Real live migration between two libvirt hosts of [`LibvirtHosts`] on this machine: there
//! and back, and a migration to a host whose libvirtd is down, which must fail and leave the
//! guest running where it was. Checks libvirt-level state only, never the guest's health.

use std::path::Path;
use std::time::Instant;

use drover_chaos_tests::libvirt_hosts::{LibvirtHost, LibvirtHosts};
use drover_chaos_tests::require;
use drover_hostd::hypervisor::domain_type::{self, DomainTypeChoice};

const GUEST: &str = "mig-guest";

/// A diskless guest: SeaBIOS finds nothing to boot and idles, which is all a migration
/// needs. No `<cpu>` element (nested KVM aborts on host-model). KVM or TCG by hostd's own
/// rule (whether QEMU's user may open /dev/kvm), so the rig and hostd never disagree.
fn guest_xml() -> String {
    let decision = domain_type::probe("qemu:///system", DomainTypeChoice::Auto);
    eprintln!(
        "guest type {}: {}",
        decision.domain_type.as_str(),
        decision.reason
    );
    let kind = decision.domain_type.as_str();
    format!(
        "<domain type='{kind}'>
  <name>{GUEST}</name>
  <memory unit='MiB'>64</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type></os>
  <devices>
    <controller type='usb' model='none'/>
    <serial type='pty'/>
    <console type='pty'/>
    <memballoon model='none'/>
  </devices>
</domain>
"
    )
}

fn define_and_start(host: &LibvirtHost, dir: &Path) -> anyhow::Result<()> {
    let xml = dir.join("guest.xml");
    std::fs::write(&xml, guest_xml())?;
    host.virsh(&["define", &xml.display().to_string()])?;
    host.virsh(&["start", GUEST])?;
    Ok(())
}

/// Peer-to-peer live migration, as an agent would run it; timed.
fn migrate(from: &LibvirtHost, to: &LibvirtHost) -> anyhow::Result<()> {
    let start = Instant::now();
    let result = from.virsh(&[
        "migrate",
        "--live",
        "--p2p",
        "--persistent",
        "--undefinesource",
        GUEST,
        &to.tcp_uri(),
    ]);
    eprintln!(
        "migrate {} -> {}: {:?} ({})",
        from.name,
        to.name,
        start.elapsed(),
        if result.is_ok() { "ok" } else { "failed" }
    );
    result.map(drop)
}

/// Active and inactive domains.
fn defined_domains(host: &LibvirtHost) -> anyhow::Result<Vec<String>> {
    Ok(host
        .virsh(&["list", "--all", "--name"])?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect())
}

/// The guest runs on `on` (persistently defined there) and is unknown to `not_on`.
fn assert_guest_on(on: &LibvirtHost, not_on: &LibvirtHost) -> anyhow::Result<()> {
    assert_eq!(on.running_domains()?, [GUEST], "active on {}", on.name);
    assert_eq!(
        on.virsh(&["dominfo", GUEST])?
            .lines()
            .find(|l| l.starts_with("Persistent:"))
            .map(|l| l.split_whitespace().last() == Some("yes")),
        Some(true),
        "persistent on {}",
        on.name
    );
    assert_eq!(
        defined_domains(not_on)?,
        Vec::<String>::new(),
        "nothing left on {}",
        not_on.name
    );
    Ok(())
}

#[test]
fn live_migration_there_and_back() -> anyhow::Result<()> {
    if !require::prerequisite(LibvirtHosts::available()) {
        return Ok(());
    }
    // Declared first, so it is removed after the hosts are torn down.
    let dir = tempfile::tempdir()?;
    let start = Instant::now();
    let hosts = LibvirtHosts::start(dir.path(), 2)?;
    eprintln!(
        "2 hosts up in {:?} (with any wait for another test's hosts)",
        start.elapsed()
    );
    let (h1, h2) = (hosts.host(0), hosts.host(1));

    define_and_start(h1, dir.path())?;
    assert_guest_on(h1, h2)?;

    migrate(h1, h2)?;
    assert_guest_on(h2, h1)?;

    migrate(h2, h1)?;
    assert_guest_on(h1, h2)?;

    let teardown = Instant::now();
    drop(hosts);
    eprintln!("torn down in {:?}", teardown.elapsed());
    Ok(())
}

#[test]
fn migration_to_a_host_whose_libvirtd_is_down_fails_and_the_guest_stays() -> anyhow::Result<()> {
    if !require::prerequisite(LibvirtHosts::available()) {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let mut hosts = LibvirtHosts::start(dir.path(), 2)?;
    define_and_start(hosts.host(0), dir.path())?;

    hosts.host_mut(1).stop_libvirtd()?;
    let err = migrate(hosts.host(0), hosts.host(1))
        .expect_err("a migration to a host without libvirtd must fail");
    eprintln!("as expected: {err:#}");
    assert_eq!(hosts.host(0).running_domains()?, [GUEST]);
    assert_eq!(
        hosts.host(0).virsh(&["domstate", GUEST])?.trim(),
        "running",
        "the guest is neither paused nor stopped by the failed attempt"
    );

    // Back up, the same host takes the guest.
    hosts.host_mut(1).start_libvirtd()?;
    migrate(hosts.host(0), hosts.host(1))?;
    assert_guest_on(hosts.host(1), hosts.host(0))?;
    Ok(())
}
