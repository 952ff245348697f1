//! `bench_network`: time from creating a VM with a NIC to the guest answering on its
//! address (issue 13), drover against what an operator types instead, on one real libvirt
//! host in a network namespace of its own (`Rig::start_in_netns`: the pings go to
//! addresses inside a namespace this bench made), same run, rounds interleaved.
//!
//! - drover: `drover vm create NAME --image guest --pool shared --nic bench` on a VXLAN
//!   network with a subnet and DHCP (the guest has no seed: it asks DHCP, and hostd's
//!   libvirt network answers with the address the cluster allocated), from the command's
//!   start;
//! - virsh/virt-install: a libvirt network with DHCP defined once (like drover's network,
//!   not timed), then per VM what an operator types: `virsh net-update … add
//!   ip-dhcp-host` for the VM's MAC and address, `qemu-img create -b` of a linked clone of
//!   the same image file, and `virt-install --import --network network=…,mac=…`, from
//!   the first command's start.
//!
//! Both end when the guest answers a ping from the host's namespace (`ping -c 1 -i 0.1`,
//! retried until it gets a reply: the same observer for both). Both bridges' ARP
//! retransmit time is 100 ms (from 1 s), so that the observer's resolution does not round
//! both up to the second.
//!
//! `cargo build --release --bins && target/release/bench_network --rounds 10` (root,
//! libvirt, virt-install, iputils-ping; the drover binaries are found next to this one,
//! or in `$DROVER_BIN_DIR`).

use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use clap::Parser;
use drover_chaos_tests::bench_kit::{linked_clone, ms, run, stats};
use drover_chaos_tests::libvirt_hosts::LibvirtHost;
use drover_chaos_tests::multihost::Rig;
use drover_chaos_tests::{guest, guest_shell, netns, system_libvirt};

#[derive(Parser, Debug)]
#[command(about = "vm create --nic → the guest answering: drover vs virsh + virt-install")]
struct Args {
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    /// Keep a VM on each network throughout (drover's `keep` on its network, the
    /// baseline's `keep-b` on its): every round's network is already wired on the host,
    /// as on a host that runs other VMs of it. Without it, drover wires the network for
    /// each round's VM and takes it away after (no VM of it left on the host).
    #[arg(long)]
    warm: bool,
    /// Give the baseline's NIC libvirt's clean-traffic filter, as drover gives every NIC
    /// (anti-spoofing): libvirt instantiating it takes ~1.4 s of a domain's start here.
    #[arg(long)]
    baseline_filter: bool,
}

/// Both guests' memory, as `guest::create_args` gives drover's.
const MEMORY_MIB: &str = "128";

/// The baseline's libvirt network: isolated, its own bridge and subnet, DHCP from
/// libvirt's dnsmasq (static host entries added per VM).
const BASELINE_NET: &str = "benchnet";
const BASELINE_BRIDGE: &str = "benchbr0";
/// drover's network `bench`, VNI 300: its bridge on the host.
const BENCH_VNI: u32 = 300;
const BENCH_BRIDGE: &str = "drvb300";
const BASELINE_XML: &str = "<network><name>benchnet</name>\
    <bridge name='benchbr0' stp='off'/>\
    <ip address='10.79.0.1' netmask='255.255.255.0'><dhcp/></ip></network>";

/// Runs `program args` in the host's network namespace.
fn in_host(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let ns = netns::host_ns(1);
    let mut all = vec!["netns", "exec", &ns, program];
    all.extend_from_slice(args);
    run("ip", &all)
}

/// Pings `ip` from the host's namespace until it answers (two minutes at most); returns
/// when it did. `bridge` is the network's bridge there: its ARP retransmit time is set to
/// 100 ms once it exists (a namespace has no default for new devices to inherit).
async fn answering(ip: &str, bridge: &str) -> anyhow::Result<Instant> {
    let end = Instant::now() + Duration::from_secs(120);
    let retrans = format!("net.ipv4.neigh.{bridge}.retrans_time_ms=100");
    loop {
        let _ = in_host("sysctl", &["-qw", &retrans]);
        // One reply ends it; until then a probe every 100 ms, for 2 s (then the sysctl
        // again: the bridge may have appeared). It fails at once while the network has no
        // route here yet.
        if in_host("ping", &["-q", "-c", "1", "-i", "0.1", "-w", "2", ip]).is_ok() {
            return Ok(Instant::now());
        }
        ensure!(Instant::now() < end, "{ip} not answering after 120 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let image = guest::image().map_err(anyhow::Error::msg)?;
    let rig = Rig::start_in_netns(1, &["--domain-type", "qemu"], None).await?;
    let pool_dir = system_libvirt::pool_dir("drover-bench-network")?;
    let path = pool_dir.path().to_str().context("utf-8 path")?;
    rig.json(&[
        "pool", "create", "shared", "--path", path, "--shared", "--wait", "30s",
    ])
    .await?;
    let img = rig.import_image("guest", &image, "shared").await?;
    let base = pool_dir
        .path()
        .join(img["volume"].as_str().context("volume")?);
    guest_shell::overlay(&rig.cluster, "bench", BENCH_VNI, ".10-.200", true).await?;
    let host = rig.lv.host(0);
    let xml = pool_dir.path().join("benchnet.xml");
    std::fs::write(&xml, BASELINE_XML)?;
    host.virsh(&["net-define", xml.to_str().context("utf-8")?])?;
    host.virsh(&["net-start", BASELINE_NET])?;

    if args.warm {
        let keep = guest::create_args("keep", "shared", &["--nic", "bench"]);
        rig.json(&keep).await?;
        let round = args.rounds;
        baseline_create(
            host,
            &base,
            pool_dir.path(),
            "keep-b",
            round,
            args.baseline_filter,
        )?;
        answering(&baseline_ip(round), BASELINE_BRIDGE).await?;
        let vm = rig.json(&["vm", "get", "keep"]).await?;
        let ip = vm["nics"][0]["ip"].as_str().context("keep's address")?;
        answering(ip, BENCH_BRIDGE).await?;
    }
    let mut drover = Vec::new();
    let mut baseline = Vec::new();
    for round in 0..args.rounds {
        let (d_name, v_name) = (format!("bd-{round}"), format!("bv-{round}"));
        let mut order = [true, false];
        if round % 2 == 1 {
            order.reverse();
        }
        for is_drover in order {
            if is_drover {
                let t0 = Instant::now();
                let extra = ["--nic", "bench"];
                let vm = rig
                    .json(&guest::create_args(&d_name, "shared", &extra))
                    .await?;
                let ip = vm["nics"][0]["ip"].as_str().context("the NIC's address")?;
                drover.push(ms(answering(ip, BENCH_BRIDGE).await? - t0));
            } else {
                let t0 = Instant::now();
                baseline_create(
                    host,
                    &base,
                    pool_dir.path(),
                    &v_name,
                    round,
                    args.baseline_filter,
                )?;
                baseline.push(ms(
                    answering(&baseline_ip(round), BASELINE_BRIDGE).await? - t0
                ));
            }
        }
        eprintln!(
            "round {round}: drover {:.0} ms, virsh + virt-install {:.0} ms",
            drover[round], baseline[round]
        );
        // Clean up before the next round, so each starts on an idle host.
        rig.json(&["vm", "delete", &d_name]).await?;
        let _ = host.virsh(&["destroy", &v_name]);
        let _ = host.virsh(&["undefine", &v_name]);
        let _ = host.virsh(&[
            "net-update",
            BASELINE_NET,
            "delete",
            "ip-dhcp-host",
            &dhcp_host(round),
            "--live",
        ]);
        let _ = std::fs::remove_file(pool_dir.path().join(format!("{v_name}.qcow2")));
        drover_chaos_tests::wait_until("the drover VM gone", Duration::from_secs(60), || async {
            Ok(rig
                .json(&["vm", "get", &d_name])
                .await
                .is_err()
                .then_some(()))
        })
        .await?;
    }
    let _ = host.virsh(&["net-destroy", BASELINE_NET]);
    let _ = host.virsh(&["net-undefine", BASELINE_NET]);
    let (dp50, dmean, dmax) = stats(drover);
    let (vp50, vmean, vmax) = stats(baseline);
    let network = if args.warm { "wired" } else { "cold" };
    let filter = if args.baseline_filter {
        "with clean-traffic"
    } else {
        "without a filter"
    };
    println!("network on the host: {network}; the baseline's NIC {filter}");
    println!("| tool | rounds | p50 ms | mean ms | max ms |");
    println!("|---|--:|--:|--:|--:|");
    println!(
        "| drover vm create --nic (VXLAN network, DHCP) | {} | {dp50:.0} | {dmean:.0} | {dmax:.0} |",
        args.rounds
    );
    println!(
        "| virsh net-update + qemu-img + virt-install --network | {} | {vp50:.0} | {vmean:.0} | {vmax:.0} |",
        args.rounds
    );
    println!("drover / virsh + virt-install (p50): {:.2}", dp50 / vp50);
    Ok(())
}

fn baseline_ip(round: usize) -> String {
    format!("10.79.0.{}", 10 + round % 200)
}

fn baseline_mac(round: usize) -> String {
    format!("52:54:00:79:00:{:02x}", round % 200)
}

fn dhcp_host(round: usize) -> String {
    format!(
        "<host mac='{}' ip='{}'/>",
        baseline_mac(round),
        baseline_ip(round)
    )
}

/// What an operator types for a VM on a libvirt network with a fixed address: a DHCP
/// entry, a linked clone of the image, and virt-install.
fn baseline_create(
    host: &LibvirtHost,
    base: &std::path::Path,
    dir: &std::path::Path,
    name: &str,
    round: usize,
    filter: bool,
) -> anyhow::Result<()> {
    host.virsh(&[
        "net-update",
        BASELINE_NET,
        "add",
        "ip-dhcp-host",
        &dhcp_host(round),
        "--live",
    ])?;
    let disk = dir.join(format!("{name}.qcow2"));
    linked_clone(base, &disk)?;
    let disk = disk.to_str().context("utf-8")?;
    let disk_arg = format!("path={disk},format=qcow2,bus=virtio,cache=none");
    let mut net_arg = format!(
        "network={BASELINE_NET},mac={},model=virtio",
        baseline_mac(round)
    );
    if filter {
        net_arg += ",filterref.filter=clean-traffic";
    }
    run(
        "virt-install",
        &[
            "--connect",
            &host.local_uri(),
            "--name",
            name,
            "--memory",
            MEMORY_MIB,
            "--vcpus",
            "1",
            "--import",
            "--disk",
            &disk_arg,
            "--osinfo",
            "detect=on,require=off",
            "--virt-type",
            "qemu",
            "--graphics",
            "none",
            "--network",
            &net_arg,
            "--noautoconsole",
        ],
    )?;
    Ok(())
}
