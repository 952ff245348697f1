//! `drover vm console` end to end: 3 controllers with mutual TLS, one hostd on real QEMU
//! (TCG), the test guest booted from an image clone. The CLI, its stdin and stdout piped,
//! reaches the guest's shell through the leader and hostd: a command typed in comes back
//! evaluated. Ctrl-] detaches (the CLI exits 0); a second session takes the console over
//! from a first (which is told so); a viewer may not attach; a stopped VM has no console.

use std::time::Duration;

use anyhow::Context as _;
use drover_chaos_tests::console::Session;
use drover_chaos_tests::qemu_host::QemuHost;
use drover_chaos_tests::{guest, require, system_libvirt};

const WAIT: Duration = Duration::from_secs(90);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_reaches_the_guests_shell_through_the_cluster() -> anyhow::Result<()> {
    if !require::prerequisite(system_libvirt::available()) {
        return Ok(());
    }
    let Some(image) = guest::image_or_skip() else {
        return Ok(());
    };
    let vm = format!("con-{}", std::process::id());
    let q = QemuHost::start("con", true, &[&vm]).await?;
    let cluster = &q.cluster;
    q.import("guest", &image).await?;
    let out = cluster
        .cli(&[
            "vm",
            "create",
            &vm,
            "--vcpus",
            "1",
            "--memory-mib",
            "256",
            "--image",
            "guest",
            "--pool",
            &q.pool,
        ])
        .await?;
    anyhow::ensure!(out.success, "vm create: {}", out.stderr);
    cluster.wait_vm_state(&vm, "running", WAIT).await?;

    eprintln!("phase: a command typed into the console comes back evaluated by the guest");
    let mut first = Session::open(cluster, &vm, &[]).await?;
    // $((6*7)) is only 42 once a shell evaluated it: the echo of the typed line is not.
    first
        .expect("drover-42", b"echo drover-$((6*7))\r", WAIT)
        .await?;

    eprintln!("phase: a second session takes the console over; the first is told");
    let mut second = Session::open(cluster, &vm, &[]).await?;
    second
        .expect("drover-56", b"echo drover-$((7*8))\r", WAIT)
        .await?;
    anyhow::ensure!(first.exit().await?, "first session: {}", first.stderr());
    anyhow::ensure!(
        first.stderr().contains("The console closed"),
        "first session's stderr: {}",
        first.stderr()
    );

    eprintln!("phase: Ctrl-] detaches and the CLI exits 0");
    second.type_in(&[0x1d]).await?;
    anyhow::ensure!(second.exit().await?, "detach: {}", second.stderr());
    anyhow::ensure!(second.stderr().contains("Detached"), "{}", second.stderr());

    eprintln!("phase: a viewer may not attach");
    let viewer = cluster
        .user("watcher", "viewer")
        .await?
        .context("TLS cluster")?;
    let mut refused = Session::open(cluster, &vm, &viewer.flags()).await?;
    anyhow::ensure!(!refused.exit().await?, "a viewer attached");
    anyhow::ensure!(
        refused.stderr().to_lowercase().contains("permission"),
        "viewer: {}",
        refused.stderr()
    );

    eprintln!("phase: a stopped VM has no console, and says so");
    let out = cluster.cli(&["vm", "stop", &vm]).await?;
    anyhow::ensure!(out.success, "stop: {}", out.stderr);
    cluster.wait_vm_state(&vm, "shut off", WAIT).await?;
    let mut stopped = Session::open(cluster, &vm, &[]).await?;
    anyhow::ensure!(!stopped.exit().await?, "a stopped VM's console opened");
    anyhow::ensure!(
        stopped.stderr().contains("not running"),
        "stopped: {}",
        stopped.stderr()
    );
    let out = cluster.cli(&["vm", "delete", &vm]).await?;
    anyhow::ensure!(out.success, "delete: {}", out.stderr);
    Ok(())
}
