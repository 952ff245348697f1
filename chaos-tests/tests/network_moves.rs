//! Moves keep the network (issue 13, point 5), on two real libvirt hosts, twice: on a
//! bridge network (both hosts' libvirt networks forward onto one Linux bridge this test
//! makes: the rig's hosts share a network namespace, so one bridge is one provider network
//! for both; it has no address and no uplink), and on a VXLAN overlay between hosts in
//! network namespaces of their own. Guest `b`, its disk local to its host, is live-migrated (the disk copied
//! along) while HA guest `a` pings it five times a second; then `a`'s host loses power
//! (hostd, QEMU and virtlockd killed) and `a`, its disk on the shared pool, fails over
//! while `b` pings it. Both times the moved guest keeps its MAC and address and its peer
//! reaches it again; the longest gap in the peer's replies is the interruption it saw.
//! (libvirt refuses to live-migrate a disk on a local filesystem that it is not told to
//! copy, and the rig's shared pool is a local directory bind-mounted into each host: so
//! the migrating guest has a local disk.)

use anyhow::Context as _;
use drover_chaos_tests::console::Session;
use drover_chaos_tests::guest_shell::{self, interruption_ms, start_pinging, PING_EVERY_MS};
use drover_chaos_tests::libvirt_hosts::LibvirtHosts;
use drover_chaos_tests::multihost::Rig;
use drover_chaos_tests::{guest, require, system_libvirt};

use guest_shell::WAIT;

/// How long a guest restarted by a failover may take to answer its peer once it runs.
const RESTARTED_TO_ANSWERING: std::time::Duration = std::time::Duration::from_secs(20);

/// A Linux bridge in this network namespace, deleted on drop.
struct TestBridge(String);

impl TestBridge {
    fn create(name: &str) -> anyhow::Result<TestBridge> {
        for args in [
            vec!["link", "add", name, "type", "bridge"],
            vec!["link", "set", name, "up"],
        ] {
            let out = std::process::Command::new("ip").args(&args).output()?;
            anyhow::ensure!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(TestBridge(name.to_string()))
    }
}

impl Drop for TestBridge {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", "dev", &self.0])
            .output();
    }
}

/// Asserts the guest behind `session` reaches `ip`; `n` makes the marker unique.
async fn reaches(session: &mut Session, ip: &str, n: u32) -> anyhow::Result<()> {
    guest_shell::assert_ping(session, &format!("reach{n}"), ip, true).await
}

fn other_host(host: &str) -> &'static str {
    if host == "h1" {
        "h2"
    } else {
        "h1"
    }
}

async fn migrate(rig: &Rig, vm: &str, to: &str) -> anyhow::Result<()> {
    // A destination briefly suspect on a loaded machine (a heartbeat late) is refused; an
    // operator would try again, and so does this test. Any other refusal fails it.
    let args = ["vm", "migrate", vm, "--to", to, "--detach"];
    let op = drover_chaos_tests::wait_until("the migration to be accepted", WAIT, || async {
        match rig.json(&args).await {
            Ok(op) => Ok(Some(Ok(op))),
            Err(e) if e.to_string().contains("it must be up") => Err(e.to_string()),
            Err(e) => Ok(Some(Err(e))),
        }
    })
    .await??;
    let id = op["id"].as_u64().context("operation id")?;
    let done = rig.op_end(id, WAIT).await?;
    anyhow::ensure!(done["state"] == "succeeded", "migration of {vm}: {done}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multihost_a_migration_and_a_failover_keep_mac_and_address() -> anyhow::Result<()> {
    if !require::prerequisite(LibvirtHosts::available()) {
        return Ok(());
    }
    let Some(image) = guest::image_or_skip() else {
        return Ok(());
    };
    let bridge = format!("drtb{}", std::process::id() % 100_000);
    let _bridge = TestBridge::create(&bridge)?;
    let local = system_libvirt::pool_dir("drover-local")?;
    let rig = Rig::start_with_local(2, &["--domain-type", "qemu"], Some(local.path())).await?;
    let shared = system_libvirt::pool_dir("drover-shared")?;
    pools(&rig, shared.path(), local.path(), &image).await?;
    rig.json(&[
        "net", "create", "lan", "--type", "bridge", "--bridge", &bridge,
    ])
    .await?;
    rig.json(&[
        "net",
        "subnet",
        "add",
        "lan",
        "10.88.0.0/24",
        "--range",
        ".10-.20",
    ])
    .await?;
    moves_keep_the_network(rig).await
}

/// The same over a VXLAN overlay, each host in a network namespace of its own: the moved
/// guest's peer reaches it through the tunnel to its new host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multihost_moves_over_an_overlay_keep_mac_and_address() -> anyhow::Result<()> {
    if !require::prerequisite(LibvirtHosts::available()) {
        return Ok(());
    }
    let Some(image) = guest::image_or_skip() else {
        return Ok(());
    };
    let local = system_libvirt::pool_dir("drover-local")?;
    let rig = Rig::start_in_netns(2, &["--domain-type", "qemu"], Some(local.path())).await?;
    let shared = system_libvirt::pool_dir("drover-shared")?;
    pools(&rig, shared.path(), local.path(), &image).await?;
    guest_shell::overlay(&rig.cluster, "lan", 200, ".10-.20", false).await?;
    moves_keep_the_network(rig).await
}

/// Pool `shared` with the guest image, and pool `local` (each host its own directory).
async fn pools(
    rig: &Rig,
    shared: &std::path::Path,
    local: &std::path::Path,
    image: &std::path::Path,
) -> anyhow::Result<()> {
    rig.shared_guest_pool(shared, image).await?;
    let path = LibvirtHosts::local_path(local);
    let path = path.to_str().context("utf-8 path")?;
    rig.json(&["pool", "create", "local", "--path", path, "--wait", "30s"])
        .await?;
    Ok(())
}

/// The phases on network `lan`: `b` migrates while `a` pings it, then `a`'s host loses
/// power while `b` pings it.
async fn moves_keep_the_network(mut rig: Rig) -> anyhow::Result<()> {
    eprintln!("phase: HA guest a (shared pool) and guest b (local pool) on network lan");
    for (vm, pool, ha) in [("a", "shared", true), ("b", "local", false)] {
        let mut args = guest::create_args(vm, pool, &["--nic", "lan", "--hostname", vm]);
        if ha {
            args.push("--ha");
        }
        rig.json(&args).await?;
    }
    let hosts = rig.running(&["a", "b"]).await?;
    let nic_of = |v: &serde_json::Value| v["nics"][0].clone();
    let (nic_a, nic_b) = (nic_of(&rig.vm("a").await?), nic_of(&rig.vm("b").await?));
    let ip_a = nic_a["ip"].as_str().context("a's address")?.to_string();
    let ip_b = nic_b["ip"].as_str().context("b's address")?.to_string();
    let mut sa = Session::open(&rig.cluster, "a", &[]).await?;
    reaches(&mut sa, &ip_b, 1).await?;

    let from = hosts["b"].clone();
    let to = other_host(&from);
    eprintln!("phase: b migrates {from} -> {to} while a pings it every {PING_EVERY_MS} ms");
    start_pinging(&mut sa, &ip_b, 1, PING_EVERY_MS).await?;
    migrate(&rig, "b", to).await?;
    let after = rig.vm("b").await?;
    assert_eq!(after["host"], to, "{after}");
    assert_eq!(
        nic_of(&after),
        nic_b,
        "the migration changed the NIC: {after}"
    );
    reaches(&mut sa, &ip_b, 2).await?;
    let lost = interruption_ms(&mut sa, 1, PING_EVERY_MS).await?;
    eprintln!("a live migration interrupted a's view of b for about {lost} ms");
    assert!(lost <= 5_000, "the peer lost b for {lost} ms");
    drop(sa);

    // b must survive a's host: on the other one.
    let a_host = hosts["a"].clone();
    if a_host == to {
        migrate(&rig, "b", &from).await?;
    }
    let mut sb = Session::open(&rig.cluster, "b", &[]).await?;
    reaches(&mut sb, &ip_a, 3).await?;
    eprintln!("phase: {a_host} loses power (hostd, a's QEMU, virtlockd); a fails over");
    start_pinging(&mut sb, &ip_a, 2, PING_EVERY_MS).await?;
    let lost_at = std::time::Instant::now();
    rig.power_loss(&a_host, "a").await?;
    let moved = drover_chaos_tests::wait_until("a running elsewhere", WAIT, || async {
        let v = rig.cluster.cli_json(&["vm", "get", "a"]).await?;
        let elsewhere = v["observed_state"] == "running" && v["host"] != a_host.as_str();
        Ok(elsewhere.then_some(v))
    })
    .await?;
    let restarted_after = lost_at.elapsed();
    assert_eq!(
        nic_of(&moved),
        nic_a,
        "the failover changed the NIC: {moved}"
    );
    reaches(&mut sb, &ip_a, 4).await?;
    let lost = interruption_ms(&mut sb, 2, PING_EVERY_MS).await?;
    eprintln!(
        "a host loss interrupted b's view of a for about {lost} ms (lease expiry, fencing \
         wait, restart and boot included); a was seen running again after {} ms",
        restarted_after.as_millis()
    );
    // Once restarted, a answers as soon as it has booted: not when b's host forgets that
    // a's MAC was behind the tunnel (minutes, were its tap not pinned; seen at ~42 s, the
    // restart at ~10 s). The margin is for a slow boot under TCG on a loaded machine.
    let bound = restarted_after + RESTARTED_TO_ANSWERING;
    assert!(
        u128::from(lost) <= bound.as_millis(),
        "b lost a for {lost} ms, more than the {} ms until a ran again plus {:?}",
        restarted_after.as_millis(),
        RESTARTED_TO_ANSWERING
    );
    Ok(())
}
