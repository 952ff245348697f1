//! `bench_images`: create → running for a VM booted from an image, drover against
//! `virt-install --import`, on the same host (the machine's `qemu:///system`, QEMU under
//! TCG: the test guest's kernel stalls under this machine kind's nested KVM), same run,
//! rounds interleaved.
//!
//! - drover: `drover vm create NAME --image guest --pool P` (three controllers on
//!   loopback, one hostd; the boot disk is a qcow2 linked clone hostd makes through
//!   libvirt), from the command's start;
//! - virt-install: what an operator types for the same result — `qemu-img create -b` of a
//!   linked clone of the same image file, then `virt-install --import` of it (virtio disk,
//!   `cache=none`, the same memory and vCPUs, no graphics, `--noautoconsole`), from the
//!   first command's start.
//!
//! Both are "running" when `virsh domstate` (polled every `--poll-ms`, the same observer
//! for both) says so. The guest image is the test guest (`scripts/guest-image.sh`).
//!
//! `cargo build --release --bins && target/release/bench_images --rounds 10` (root,
//! libvirt, virt-install; the drover binaries are found next to this one, or in
//! `$DROVER_BIN_DIR`).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context as _};
use clap::Parser;
use drover_chaos_tests::bench_kit::{linked_clone, ms, run, stats};
use drover_chaos_tests::system_libvirt::{self, Leftovers, QEMU_SYSTEM};
use drover_chaos_tests::{guest, wait_until, Cluster, ClusterSpec};

#[derive(Parser, Debug)]
#[command(about = "Create → running from an image: drover vs virt-install")]
struct Args {
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    #[arg(long, default_value_t = 128)]
    memory_mib: u64,
    /// How often `virsh domstate` is asked.
    #[arg(long, default_value_t = 20)]
    poll_ms: u64,
}

fn virsh(args: &[&str]) -> anyhow::Result<String> {
    let mut all = vec!["-c", QEMU_SYSTEM];
    all.extend_from_slice(args);
    run("virsh", &all)
}

/// Polls libvirt every `poll` until it says `domain` runs (two minutes at most); returns
/// when it first did.
async fn running(domain: &str, poll: Duration) -> anyhow::Result<Instant> {
    let end = Instant::now() + Duration::from_secs(120);
    loop {
        let state = virsh(&["domstate", domain]).unwrap_or_default();
        if state.trim() == "running" {
            return Ok(Instant::now());
        }
        ensure!(Instant::now() < end, "{domain} not running after 120 s");
        tokio::time::sleep(poll).await;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let poll = Duration::from_millis(args.poll_ms);
    let image = guest::image().map_err(anyhow::Error::msg)?;
    let mut cluster = Cluster::start(ClusterSpec {
        hosts: 0,
        hostd_args: vec!["--domain-type".into(), "qemu".into()],
        ..ClusterSpec::default()
    })
    .await?;
    cluster.add_agent("q1", QEMU_SYSTEM).await?;
    cluster.wait_hosts_up().await?;
    let pool_dir = system_libvirt::pool_dir("drover-bench-images")?;
    let path = pool_dir.path().to_str().context("utf-8 path")?;
    let out = cluster
        .cli(&[
            "pool", "create", "bench", "--path", path, "--shared", "--wait", "30s",
        ])
        .await?;
    ensure!(out.success, "pool create: {}", out.stderr);
    let img = cluster
        .cli_json(&[
            "image",
            "import",
            "guest",
            "--file",
            image.to_str().context("utf-8 path")?,
            "--pool",
            "bench",
        ])
        .await
        .map_err(anyhow::Error::msg)?;
    let base: PathBuf = pool_dir
        .path()
        .join(img["volume"].as_str().context("volume")?);
    let (vcpus, mem) = ("1".to_string(), args.memory_mib.to_string());
    let pid = std::process::id();
    let mut drover = Vec::new();
    let mut virt_install = Vec::new();
    for round in 0..args.rounds {
        let (d_name, v_name) = (format!("bd-{pid}-{round}"), format!("bv-{pid}-{round}"));
        let _leftovers = Leftovers {
            domains: vec![d_name.clone(), v_name.clone()],
            pools: Vec::new(),
        };
        let mut order = [true, false];
        if round % 2 == 1 {
            order.reverse();
        }
        for is_drover in order {
            if is_drover {
                let t0 = Instant::now();
                let out = cluster
                    .cli(&[
                        "vm",
                        "create",
                        &d_name,
                        "--vcpus",
                        &vcpus,
                        "--memory-mib",
                        &mem,
                        "--image",
                        "guest",
                        "--pool",
                        "bench",
                    ])
                    .await?;
                ensure!(out.success, "vm create: {}", out.stderr);
                drover.push(ms(running(&d_name, poll).await? - t0));
            } else {
                let disk = pool_dir.path().join(format!("{v_name}.qcow2"));
                let t0 = Instant::now();
                linked_clone(&base, &disk)?;
                let disk_arg =
                    format!("path={},format=qcow2,bus=virtio,cache=none", disk.display());
                run(
                    "virt-install",
                    &[
                        "--connect",
                        QEMU_SYSTEM,
                        "--name",
                        &v_name,
                        "--memory",
                        &mem,
                        "--vcpus",
                        &vcpus,
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
                        "none",
                        "--noautoconsole",
                    ],
                )?;
                virt_install.push(ms(running(&v_name, poll).await? - t0));
            }
        }
        eprintln!(
            "round {round}: drover {:.0} ms, virt-install {:.0} ms",
            drover[round], virt_install[round]
        );
        // Clean up before the next round, so each starts on an idle host.
        let out = cluster.cli(&["vm", "delete", &d_name]).await?;
        ensure!(out.success, "vm delete: {}", out.stderr);
        let _ = virsh(&["destroy", &v_name]);
        let _ = virsh(&["undefine", &v_name]);
        let _ = std::fs::remove_file(pool_dir.path().join(format!("{v_name}.qcow2")));
        wait_until("the drover VM gone", Duration::from_secs(60), || async {
            let gone = cluster
                .cli(&["vm", "get", &d_name])
                .await
                .map_err(|e| e.to_string())?;
            Ok((!gone.success).then_some(()))
        })
        .await
        .map_err(anyhow::Error::msg)?;
    }
    let (dp50, dmean, dmax) = stats(drover);
    let (vp50, vmean, vmax) = stats(virt_install);
    println!("| tool | rounds | p50 ms | mean ms | max ms |");
    println!("|---|--:|--:|--:|--:|");
    println!(
        "| drover vm create --image | {} | {dp50:.0} | {dmean:.0} | {dmax:.0} |",
        args.rounds
    );
    println!(
        "| qemu-img create -b + virt-install --import | {} | {vp50:.0} | {vmean:.0} | {vmax:.0} |",
        args.rounds
    );
    println!("drover / virt-install (p50): {:.2}", dp50 / vp50);
    Ok(())
}
