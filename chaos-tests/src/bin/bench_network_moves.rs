//! `bench_network_moves`: the network interruption a peer sees when a VM moves (issue
//! 13), on two real libvirt hosts each in a network namespace of its own
//! (`Rig::start_in_netns`), the guests on a VXLAN overlay between them.
//!
//! Guest `p` (shared pool, HA) pings guest `m` (local pool) every `--every-ms` from its
//! shell while drover live-migrates `m` to the other host (`vm migrate --to`, its disk
//! copied along), round after round, back and forth: half the rounds `m` leaves `p`'s
//! host, half it arrives there. The interruption is the longest gap in `p`'s replies.
//! Side by side, for the same migration: libvirt's own account of how long the guest was
//! paused ("downtime", from the completed job's statistics drover records), which no
//! network path can beat — what the network adds is the difference.
//!
//! With `--failover`, at the end `p`'s host loses power (hostd, `p`'s QEMU and virtlockd
//! killed) while `m` pings `p`: the interruption until `p` answers from the other host,
//! and when it was seen running there (lease expiry, fencing wait, restart, boot).
//!
//! `cargo build --release --bins && target/release/bench_network_moves --rounds 10
//! --failover` (root, libvirt; the drover binaries are found next to this one, or in
//! `$DROVER_BIN_DIR`).

use std::time::{Duration, Instant};

use anyhow::Context as _;
use clap::Parser;
use drover_chaos_tests::bench_kit::stats;
use drover_chaos_tests::console::Session;
use drover_chaos_tests::guest_shell::{self, assert_ping, interruption_ms, start_pinging};
use drover_chaos_tests::libvirt_hosts::LibvirtHosts;
use drover_chaos_tests::multihost::Rig;
use drover_chaos_tests::{guest, system_libvirt, wait_until};

#[derive(Parser, Debug)]
#[command(about = "Network interruption a peer sees during a live migration and a failover")]
struct Args {
    #[arg(long, default_value_t = 10)]
    rounds: u32,
    /// The peer's ping interval: the resolution of the measure.
    #[arg(long, default_value_t = 50)]
    every_ms: u64,
    /// End with a host's power loss under `p`.
    #[arg(long)]
    failover: bool,
}

const WAIT: Duration = guest_shell::WAIT;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let image = guest::image().map_err(anyhow::Error::msg)?;
    let local = system_libvirt::pool_dir("drover-local")?;
    let shared = system_libvirt::pool_dir("drover-shared")?;
    let mut rig = Rig::start_in_netns(2, &["--domain-type", "qemu"], Some(local.path())).await?;
    rig.shared_guest_pool(shared.path(), &image).await?;
    let path = LibvirtHosts::local_path(local.path());
    let path = path.to_str().context("utf-8 path")?;
    rig.json(&["pool", "create", "local", "--path", path, "--wait", "30s"])
        .await?;
    guest_shell::overlay(&rig.cluster, "lan", 200, ".10-.20", false).await?;
    let p = ["--nic", "lan", "--hostname", "p", "--ha"];
    let m = ["--nic", "lan", "--hostname", "m"];
    rig.json(&guest::create_args("p", "shared", &p)).await?;
    rig.json(&guest::create_args("m", "local", &m)).await?;
    rig.running(&["p", "m"]).await?;
    let ip = |v: &serde_json::Value| v["nics"][0]["ip"].as_str().map(String::from);
    let ip_m = ip(&rig.vm("m").await?).context("m's address")?;
    let ip_p = ip(&rig.vm("p").await?).context("p's address")?;
    let mut sp = Session::open(&rig.cluster, "p", &[]).await?;
    assert_ping(&mut sp, "warm", &ip_m, true).await?;

    let (mut lost, mut paused) = (Vec::new(), Vec::new());
    for round in 1..=args.rounds {
        let from = rig.vm("m").await?["host"]
            .as_str()
            .context("m's host")?
            .to_string();
        let to = if from == "h1" { "h2" } else { "h1" };
        start_pinging(&mut sp, &ip_m, round, args.every_ms).await?;
        let op = rig
            .json(&["vm", "migrate", "m", "--to", to, "--detach"])
            .await?;
        let id = op["id"].as_u64().context("operation id")?;
        let done = rig.op_end(id, WAIT).await?;
        anyhow::ensure!(done["state"] == "succeeded", "migration: {done}");
        // The pinging goes on until m has answered again.
        assert_ping(&mut sp, &format!("back{round}"), &ip_m, true).await?;
        let gap = interruption_ms(&mut sp, round, args.every_ms).await? as f64;
        let downtime = done["migration"]["downtime_ms"].as_f64();
        eprintln!(
            "round {round}: m {from} -> {to}: p lost m for {gap:.0} ms; libvirt's downtime {}",
            downtime.map_or("unknown".into(), |d| format!("{d:.0} ms"))
        );
        lost.push(gap);
        paused.extend(downtime);
    }
    let (lp50, lmean, lmax) = stats(lost);
    println!(
        "live migration, {} rounds, peer pinging every {} ms",
        args.rounds, args.every_ms
    );
    println!("| measure | p50 ms | mean ms | max ms |");
    println!("|---|--:|--:|--:|");
    println!("| interruption the peer saw | {lp50:.0} | {lmean:.0} | {lmax:.0} |");
    if !paused.is_empty() {
        let (dp50, dmean, dmax) = stats(paused);
        println!("| libvirt's downtime (guest paused) | {dp50:.0} | {dmean:.0} | {dmax:.0} |");
        println!(
            "peer's interruption / libvirt's downtime (p50): {:.2}",
            lp50 / dp50
        );
    }
    drop(sp);

    if args.failover {
        let mut sm = Session::open(&rig.cluster, "m", &[]).await?;
        assert_ping(&mut sm, "pwarm", &ip_p, true).await?;
        let host = rig.vm("p").await?["host"]
            .as_str()
            .context("p's host")?
            .to_string();
        let n = args.rounds + 1;
        start_pinging(&mut sm, &ip_p, n, args.every_ms).await?;
        let at = Instant::now();
        rig.power_loss(&host, "p").await?;
        wait_until("p running elsewhere", WAIT, || async {
            let v = rig.cluster.cli_json(&["vm", "get", "p"]).await?;
            let elsewhere = v["observed_state"] == "running" && v["host"] != host.as_str();
            Ok(elsewhere.then_some(()))
        })
        .await?;
        let restarted = at.elapsed().as_millis();
        assert_ping(&mut sm, "pback", &ip_p, true).await?;
        let gap = interruption_ms(&mut sm, n, args.every_ms).await?;
        println!(
            "HA failover (power loss of p's host): m lost p for {gap} ms; p was seen running \
             on the other host after {restarted} ms"
        );
    }
    Ok(())
}
