//! VXLAN overlays between hosts (issue 13, the first test it asks for), on two real libvirt
//! hosts each in a network namespace of its own, joined only by an underlay bridge
//! (`Rig::start_in_netns`): hostd makes each overlay's VXLAN link in its host's namespace,
//! flooding to the other host's underlay address, which it learned from the cluster (the
//! host reported it). Guests `a` and `d` on overlay `ov1`, kept on different hosts by an
//! anti-affinity group, get their addresses from the pool — `a` from its cloud-init seed,
//! `d` (no seed) by DHCP — and reach each other: the only path between the hosts'
//! namespaces is the tunnel. Guest `c`, on overlay `ov2` with an address in the same
//! subnet, shares a host with one of them and reaches neither, nor they it. Each guest on
//! `ov1` hears one DHCP server (its own host's; every host serves the overlay's address).

use std::process::Command;

use anyhow::Context as _;
use drover_chaos_tests::console::Session;
use drover_chaos_tests::guest_shell::{assert_ping, overlay, run};
use drover_chaos_tests::libvirt_hosts::LibvirtHosts;
use drover_chaos_tests::multihost::Rig;
use drover_chaos_tests::{guest, netns, require, system_libvirt};

/// The overlays' VNIs: the hosts' namespaces are this test's own, so no other test's
/// links can clash with them.
const VNI_1: u32 = 100;
const VNI_2: u32 = 101;

/// `bridge fdb show dev LINK` in host `number`'s namespace.
fn flood_entries(number: usize, link: &str) -> anyhow::Result<String> {
    let ns = netns::host_ns(number);
    let out = Command::new("bridge")
        .args(["-n", &ns, "fdb", "show", "dev", link])
        .output()
        .context("cannot run bridge (iproute2)")?;
    anyhow::ensure!(
        out.status.success(),
        "bridge -n {ns} fdb show dev {link}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multihost_overlays_connect_guests_across_hosts_and_keep_them_apart() -> anyhow::Result<()>
{
    if !require::prerequisite(LibvirtHosts::available()) {
        return Ok(());
    }
    let Some(image) = guest::image_or_skip() else {
        return Ok(());
    };
    let rig = Rig::start_in_netns(2, &["--domain-type", "qemu"], None).await?;
    for (i, h) in rig.lv.hosts().iter().enumerate() {
        let host = rig.json(&["host", "get", &h.name]).await?;
        let underlay = netns::underlay_ip(i + 1).to_string();
        assert_eq!(host["underlay"], underlay.as_str(), "{host}");
    }
    let shared = system_libvirt::pool_dir("drover-shared")?;
    rig.shared_guest_pool(shared.path(), &image).await?;
    overlay(&rig.cluster, "ov1", VNI_1, ".10-.20", true).await?;
    overlay(&rig.cluster, "ov2", VNI_2, ".30-.40", false).await?;

    eprintln!("phase: a (seed) and d (DHCP) on ov1 on different hosts, c on ov2");
    let group = ["--anti-affinity", "ov1"];
    let a = [&["--nic", "ov1", "--hostname", "a"][..], &group].concat();
    let d = [&["--nic", "ov1"][..], &group].concat();
    let c = ["--nic", "ov2", "--hostname", "c"];
    for (vm, extra) in [("a", &a[..]), ("d", &d[..]), ("c", &c[..])] {
        rig.json(&guest::create_args(vm, "shared", extra)).await?;
    }
    let hosts = rig.running(&["a", "d", "c"]).await?;
    assert_ne!(hosts["a"], hosts["d"], "anti-affinity: {hosts:?}");
    let ip = |v: &serde_json::Value| v["nics"][0]["ip"].as_str().map(String::from);
    let ip_a = ip(&rig.vm("a").await?).context("a's address")?;
    let ip_d = ip(&rig.vm("d").await?).context("d's address")?;
    let ip_c = ip(&rig.vm("c").await?).context("c's address")?;

    // Each host floods ov1's broadcasts to the other's underlay address.
    for (number, other) in [(1, 2), (2, 1)] {
        let fdb = flood_entries(number, &format!("drvx{VNI_1}"))?;
        let peer = format!("dst {}", netns::underlay_ip(other));
        assert!(fdb.contains(&peer), "h{number}: {fdb}");
    }

    let mut sa = Session::open(&rig.cluster, "a", &[]).await?;
    let mut sd = Session::open(&rig.cluster, "d", &[]).await?;
    let mut sc = Session::open(&rig.cluster, "c", &[]).await?;
    let shows = |ip: &str| format!("inet {ip}/24");
    run(&mut sa, "ip -4 -o addr show dev eth0", &shows(&ip_a)).await?;
    run(&mut sd, "ip -4 -o addr show dev eth0", &shows(&ip_d)).await?;
    run(&mut sc, "ip -4 -o addr show dev eth0", &shows(&ip_c)).await?;

    eprintln!("phase: a and d reach each other across the hosts; c reaches neither");
    assert_ping(&mut sa, "ad", &ip_d, true).await?;
    assert_ping(&mut sd, "da", &ip_a, true).await?;
    assert_ping(&mut sc, "ca", &ip_a, false).await?;
    assert_ping(&mut sc, "cd", &ip_d, false).await?;
    assert_ping(&mut sa, "ac", &ip_c, false).await?;

    eprintln!("phase: each guest hears one DHCP server, its own host's");
    // Every host's bridge has ov1's server address; without hostd's fence, ARP for it
    // crosses the tunnel and both bridges answer, each with its own MAC.
    let servers = "arping -c 4 -I eth0 10.77.0.2 2>/dev/null | grep -o '\\[[0-9a-fA-F:]*\\]' \
                   | sort -u | wc -l";
    for session in [&mut sa, &mut sd] {
        run(
            session,
            &format!("echo SERVERS-$({servers})"),
            "SERVERS-1\r",
        )
        .await?;
    }
    Ok(())
}
