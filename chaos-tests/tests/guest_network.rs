//! NICs on real guests, one host: 3 controllers and hostd on the system libvirt (TCG), two
//! VXLAN networks sharing one subnet's address space, three test guests. hostd wires each
//! overlay (a libvirt network and a VXLAN link) before the guests start; three guests take
//! their address from their cloud-init seed, a fourth, without a seed, from the overlay's
//! DHCP (libvirt's dnsmasq, static entries only, with the subnet's gateway and DNS server).
//! The guests on one overlay reach each
//! other; the one on the other overlay reaches none of them (nor they it), though its
//! address is in the same subnet. A guest that sends from an address or a MAC that is not
//! its own is cut off by libvirt's clean-traffic filter. The DHCP guest's address, once it
//! is deleted, goes by DHCP to a new guest with another MAC. A running guest's NIC is
//! unplugged (its address released only then) and one on the other overlay plugged in. A
//! security group lets into a guest only what its rules allow, and a change to its rules
//! or to the guest's groups reaches the running guest at once. (Overlays between hosts need hosts
//! in network namespaces of their own: the multi-host rig does not have them yet.)

use anyhow::Context as _;
use drover_chaos_tests::console::Session;
use drover_chaos_tests::guest_shell::{assert_ping, overlay, run, WAIT};
use drover_chaos_tests::qemu_host::QemuHost;
use drover_chaos_tests::system_libvirt::{self, NetworkLeftovers};
use drover_chaos_tests::{guest, require};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guests_on_one_overlay_reach_each_other_and_nothing_else() -> anyhow::Result<()> {
    if !require::prerequisite(system_libvirt::available()) {
        return Ok(());
    }
    let Some(image) = guest::image_or_skip() else {
        return Ok(());
    };
    let pid = std::process::id();
    // Distinct per run, so that a concurrent run on the machine has its own overlays.
    let vni = (pid % 4_000_000) * 2 + 1;
    let (n1, n2) = (format!("n1-{pid}"), format!("n2-{pid}"));
    let (a, b, c) = (
        format!("na-{pid}"),
        format!("nb-{pid}"),
        format!("nc-{pid}"),
    );
    let d = format!("nd-{pid}");
    let e = format!("ne-{pid}");
    // Dropped after the cluster (declared first): hostd does not wire them again then.
    let _networks = NetworkLeftovers {
        networks: vec![n1.clone(), n2.clone()],
        links: vec![format!("drvx{vni}"), format!("drvx{}", vni + 1)],
    };
    let q = QemuHost::start("net", false, &[&a, &b, &c, &d, &e]).await?;
    let cluster = &q.cluster;
    q.import("guest", &image).await?;
    // DHCP on the first only (see `guest_shell::overlay`).
    overlay(cluster, &n1, vni, ".10-.20", true).await?;
    overlay(cluster, &n2, vni + 1, ".30-.40", false).await?;

    eprintln!("phase: three guests, two on {n1} and one on {n2}, each with its seed's address");
    for (vm, net) in [(&a, &n1), (&b, &n1), (&c, &n2)] {
        let extra = ["--nic", net.as_str(), "--hostname", vm.as_str()];
        let out = cluster
            .cli(&guest::create_args(vm, &q.pool, &extra))
            .await?;
        anyhow::ensure!(out.success, "vm create {vm}: {}", out.stderr);
    }
    // No --hostname: no seed, so no cloud-init; its address comes from DHCP.
    let out = cluster
        .cli(&guest::create_args(&d, &q.pool, &["--nic", &n1]))
        .await?;
    anyhow::ensure!(out.success, "vm create {d}: {}", out.stderr);
    for vm in [&a, &b, &c, &d] {
        cluster.wait_vm_state(vm, "running", WAIT).await?;
    }
    let mut sa = Session::open(cluster, &a, &[]).await?;
    // The address is configured before the shell starts; `ip` shows it once it is up.
    run(&mut sa, "ip -4 -o addr show dev eth0", "inet 10.77.0.10/24").await?;
    let mut sc = Session::open(cluster, &c, &[]).await?;
    run(&mut sc, "ip -4 -o addr show dev eth0", "inet 10.77.0.30/24").await?;

    let mut sd = Session::open(cluster, &d, &[]).await?;
    run(&mut sd, "ip -4 -o addr show dev eth0", "inet 10.77.0.12/24").await?;
    // DHCP told it the subnet's gateway and DNS server too (dnsmasq options).
    run(&mut sd, "ip route show default", "default via 10.77.0.1").await?;
    run(&mut sd, "cat /etc/resolv.conf", "nameserver 10.77.0.53").await?;

    eprintln!("phase: guests on one overlay reach each other; the other overlay is apart");
    assert_ping(&mut sa, "ab", "10.77.0.11", true).await?;
    assert_ping(&mut sa, "ad", "10.77.0.12", true).await?;
    assert_ping(&mut sa, "ac", "10.77.0.30", false).await?;
    assert_ping(&mut sc, "ca", "10.77.0.10", false).await?;

    eprintln!("phase: the address of a deleted DHCP guest goes to a new one by DHCP");
    // The network stays wired (a, b use it): dnsmasq still holds d's lease on the address
    // unless hostd released it with the host entry.
    drop(sd);
    let out = cluster.cli(&["vm", "delete", &d]).await?;
    anyhow::ensure!(out.success, "vm delete {d}: {}", out.stderr);
    drover_chaos_tests::wait_until(&format!("{d} gone"), WAIT, || async {
        let out = cluster
            .cli(&["vm", "get", &d])
            .await
            .map_err(|e| e.to_string())?;
        Ok((!out.success).then_some(()))
    })
    .await?;
    let nic = format!("{n1},ip=10.77.0.12");
    let out = cluster
        .cli(&guest::create_args(&e, &q.pool, &["--nic", &nic]))
        .await?;
    anyhow::ensure!(out.success, "vm create {e}: {}", out.stderr);
    cluster.wait_vm_state(&e, "running", WAIT).await?;
    let mut se = Session::open(cluster, &e, &[]).await?;
    run(&mut se, "ip -4 -o addr show dev eth0", "inet 10.77.0.12/24").await?;
    assert_ping(&mut sa, "ae", "10.77.0.12", true).await?;

    eprintln!("phase: hot-plug: {c} leaves {n2} for {n1} while it runs, and reaches {a}");
    let old = cluster
        .cli_json(&["vm", "get", &c])
        .await
        .map_err(anyhow::Error::msg)?;
    let old_mac = old["nics"][0]["mac"]
        .as_str()
        .context("c's MAC")?
        .to_string();
    let out = cluster.cli(&["vm", "nic", "remove", &c, &old_mac]).await?;
    anyhow::ensure!(out.success, "nic remove: {}", out.stderr);
    // Answered only once the guest let go of the device.
    run(
        &mut sc,
        "[ -e /sys/class/net/eth0 ] && echo ETH0-$((2+2)) || echo GONE-$((2+2))",
        "GONE-4",
    )
    .await?;
    let held = cluster
        .cli_json(&["net", "ips", &n2])
        .await
        .map_err(anyhow::Error::msg)?;
    assert_eq!(
        held,
        serde_json::json!([]),
        "c's address on {n2} is released"
    );
    let vm = cluster
        .cli_json(&["vm", "nic", "add", &c, &n1])
        .await
        .map_err(anyhow::Error::msg)?;
    let nic = &vm["nics"][0];
    let (mac, ip) = (
        nic["mac"].as_str().context("MAC")?,
        nic["ip"].as_str().context("IP")?,
    );
    // The new device, found by its MAC, asks the overlay's DHCP for its address.
    run(
        &mut sc,
        &format!(
            "n=$(grep -l {mac} /sys/class/net/*/address | cut -d/ -f5); ip link set \"$n\" up; \
             udhcpc -i \"$n\" -n -q -t 5 -T 1 -s /bin/udhcpc.script"
        ),
        &format!(" {ip} router"),
    )
    .await?;
    assert_ping(&mut sc, "hotplugged", "10.77.0.10", true).await?;

    eprintln!("phase: a security group lets into {a} only what it allows, and changes at once");
    let ok = |args: Vec<String>| async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cluster.cli_json(&args).await.map_err(anyhow::Error::msg)
    };
    let args = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    ok(args(&[
        "sg",
        "put",
        "pingers",
        "--allow",
        "icmp,from=10.77.0.12/32",
    ]))
    .await?;
    let vm = ok(args(&["vm", "sg", &a, "pingers"])).await?;
    assert_eq!(
        vm["security_groups"],
        serde_json::json!(["pingers"]),
        "{vm}"
    );
    assert_ping(&mut se, "fromallowed", "10.77.0.10", true).await?;
    assert_ping(&mut sc, "fromother", "10.77.0.10", false).await?;
    // What it sends, and the replies, still go.
    assert_ping(&mut sa, "outgoing", "10.77.0.11", true).await?;
    let out = cluster.cli(&["sg", "delete", "pingers"]).await?;
    assert!(
        !out.success && out.stderr.contains("in use by VMs"),
        "{}",
        out.stderr
    );
    ok(args(&["sg", "put", "pingers", "--allow", "icmp"])).await?;
    assert_ping(&mut sc, "widened", "10.77.0.10", true).await?;
    ok(args(&["sg", "put", "pingers"])).await?;
    assert_ping(&mut se, "closed", "10.77.0.10", false).await?;
    ok(args(&["vm", "sg", &a])).await?;
    assert_ping(&mut se, "left", "10.77.0.10", true).await?;
    ok(args(&["sg", "delete", "pingers"])).await?;

    eprintln!("phase: a guest sending from another address or MAC is cut off");
    run(
        &mut sa,
        "ip addr add 10.77.0.19/24 dev eth0; echo ADDED-$((1+1))",
        "ADDED-2",
    )
    .await?;
    assert_ping(&mut sa, "spoofip", "-I 10.77.0.19 10.77.0.11", false).await?;
    // From its own address it still talks: the filter, not the network, stopped it.
    assert_ping(&mut sa, "ownip", "-I 10.77.0.10 10.77.0.11", true).await?;
    // A gratuitous ARP tells the peer the new MAC: without the filter, its replies would
    // reach the guest.
    run(
        &mut sa,
        "ip addr del 10.77.0.19/24 dev eth0; ip link set eth0 address 02:de:ad:00:00:01; \
         arping -U -c 2 -I eth0 10.77.0.10 >/dev/null 2>&1; echo MAC-$((2+2))",
        "MAC-4",
    )
    .await?;
    assert_ping(&mut sa, "spoofmac", "10.77.0.11", false).await?;
    Ok(())
}
