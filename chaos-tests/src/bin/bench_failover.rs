//! `bench_failover`: host loss → all of its HA VMs running elsewhere, on real processes
//! (3 controllers, 3 hostd on libvirt's test driver), default lease timings unless
//! overridden. Per trial: N HA VMs are placed on h1 alone (the other hosts join after), h1's
//! hostd is SIGKILLed, and the leader's view is polled every 20 ms to split the time into
//!
//! - detection: kill → h1 committed `suspect` (missed heartbeats),
//! - fencing wait: suspect → `dead` (last grant + ttl + margin: h1 has fenced itself),
//! - placement: dead → every VM placed on another host,
//! - start: placed → every VM observed running.
//!
//! With `--disks`, the hosts are real libvirt hosts instead (the multi-host rig, QEMU under
//! TCG), and every VM boots the test guest from a linked clone of an image in a shared pool
//! with a 16 MiB data disk there; h1's loss is a power loss (its hostd, every QEMU of it
//! and its virtlockd SIGKILLed), and "running" elsewhere means on the same disks.
//!
//! `cargo build --release --bins && cargo run --release -p drover-chaos-tests --bin
//! bench_failover -- --vms 10,50 --trials 5` (`--disks --vms 10 --trials 3`: root, libvirt)

use std::path::Path;
use std::time::{Duration, Instant};

use clap::Parser;
use drover_chaos_tests::client::{ClientConfig, LeaderClient};
use drover_chaos_tests::{wait_until, Cluster, ClusterSpec};
use drover_proto::v1::cluster_service_client::ClusterServiceClient;
use drover_proto::v1::{GetHaStatusRequest, HostHealth, ObservedState};

#[derive(Parser, Debug)]
#[command(about = "Host-loss failover time on real drover processes")]
struct Args {
    /// HA VMs on the failed host, one run of trials per count.
    #[arg(long, value_delimiter = ',', default_value = "10,50")]
    vms: Vec<usize>,
    #[arg(long, default_value_t = 5)]
    trials: usize,
    /// Extra `drover server` flags (e.g. lease timings).
    #[arg(long, allow_hyphen_values = true, value_delimiter = ' ')]
    controller_args: Vec<String>,
    /// VMs with disks on real libvirt hosts (see the module docs).
    #[arg(long)]
    disks: bool,
}

/// A test-driver host big enough for 50 one-vCPU VMs of 64 MiB (test:///default has 16
/// CPUs and 3 GiB). Each hostd opens its own private instance of it.
const NODE_XML: &str = "<node>
  <cpu><mhz>2000</mhz><model>x86_64</model><nodes>1</nodes><sockets>1</sockets>
    <cores>64</cores><threads>1</threads><active>64</active></cpu>
  <memory>67108864</memory>
</node>
";

#[derive(Debug, Default, Clone, Copy)]
struct Split {
    detection: Duration,
    fencing: Duration,
    placement: Duration,
    start: Duration,
}

impl Split {
    fn total(&self) -> Duration {
        self.detection + self.fencing + self.placement + self.start
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = tempfile::tempdir()?;
    let node = dir.path().join("node.xml");
    std::fs::write(&node, NODE_XML)?;
    println!(
        "| HA VMs | trial | detection | fencing wait | placement | start | total |\n|---|---|---|---|---|---|---|"
    );
    let mut summary = Vec::new();
    for &n in &args.vms {
        let mut splits = Vec::new();
        for trial in 1..=args.trials {
            let s = if args.disks {
                disks::trial_once(n, &args.controller_args).await?
            } else {
                trial_once(&node, n, &args.controller_args).await?
            };
            println!(
                "| {n} | {trial} | {} | {} | {} | {} | {} |",
                ms(s.detection),
                ms(s.fencing),
                ms(s.placement),
                ms(s.start),
                ms(s.total())
            );
            splits.push(s);
        }
        summary.push((n, splits));
    }
    println!("\n| HA VMs | total p50 | min | max | detection p50 | fencing p50 | placement p50 | start p50 |\n|---|---|---|---|---|---|---|---|");
    for (n, splits) in summary {
        let p50 = |f: fn(&Split) -> Duration| {
            let mut v: Vec<Duration> = splits.iter().map(f).collect();
            v.sort();
            v[v.len() / 2]
        };
        let totals: Vec<Duration> = splits.iter().map(Split::total).collect();
        println!(
            "| {n} | {} | {} | {} | {} | {} | {} | {} |",
            ms(p50(Split::total)),
            ms(*totals.iter().min().unwrap_or(&Duration::ZERO)),
            ms(*totals.iter().max().unwrap_or(&Duration::ZERO)),
            ms(p50(|s| s.detection)),
            ms(p50(|s| s.fencing)),
            ms(p50(|s| s.placement)),
            ms(p50(|s| s.start)),
        );
    }
    Ok(())
}

fn ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

async fn trial_once(node: &Path, n: usize, extra: &[String]) -> anyhow::Result<Split> {
    let uri = format!("test://{}", node.display());
    let mut cluster = Cluster::start(ClusterSpec {
        hosts: 1,
        libvirt_uri: uri.clone(),
        controller_args: extra.to_vec(),
        ..ClusterSpec::default()
    })
    .await?;
    let endpoints: Vec<String> = cluster.addrs();
    let mut client = LeaderClient::new(&endpoints, ClientConfig::default())?;
    place_on_h1(&client, n, Duration::from_secs(60), |req| {
        req.spec = Some(drover_proto::v1::VmSpec {
            vcpus: 1,
            memory_mib: 64,
        });
    })
    .await?;
    cluster.add_agent("h2", &uri).await?;
    cluster.add_agent("h3", &uri).await?;
    cluster.wait_hosts_up().await?;
    wait_armed(&client).await?;

    let killed = Instant::now();
    cluster.kill_agent("h1").await?;
    measure(&mut client, n, killed).await
}

/// Creates `n` HA VMs `ha-000`.. (each request as `shape` makes it) while h1 is the only
/// host, and waits until all run there.
async fn place_on_h1(
    client: &LeaderClient,
    n: usize,
    within: Duration,
    shape: impl Fn(&mut drover_proto::v1::CreateVmRequest),
) -> anyhow::Result<()> {
    let mut c = client.clone();
    for i in 0..n {
        let name = format!("ha-{i:03}");
        let mut req = drover_proto::v1::CreateVmRequest {
            name: name.clone(),
            start: true,
            ha: true,
            ..Default::default()
        };
        shape(&mut req);
        c.create_vm(req, &name)
            .await
            .result
            .map_err(|s| anyhow::anyhow!("create {name}: {s}"))?;
    }
    wait_until("VMs running on h1", within, || {
        let mut c = client.clone();
        async move {
            let vms = c.list_vms().await.map_err(|s| s.to_string())?;
            let all = vms.len() == n
                && vms
                    .iter()
                    .all(|v| v.host == "h1" && v.observed_state == ObservedState::Running as i32);
            Ok(all.then_some(()))
        }
    })
    .await?;
    Ok(())
}

/// Steady operation: every host holds a grant and has confirmed self-fencing armed (a host
/// that has not could never be declared dead by its lease).
async fn wait_armed(client: &LeaderClient) -> anyhow::Result<()> {
    wait_until("hosts armed", Duration::from_secs(30), || {
        let mut c = client.clone();
        async move {
            let status = c
                .call(|ch| async move {
                    ClusterServiceClient::new(ch)
                        .get_ha_status(GetHaStatusRequest { stale: false })
                        .await
                        .map(tonic::Response::into_inner)
                })
                .await
                .result
                .map_err(|s| s.to_string())?;
            Ok(status.hosts_not_armed.is_empty().then_some(()))
        }
    })
    .await
}

/// Polls the leader every 20 ms from `killed` until all `n` VMs run off h1; the split.
async fn measure(client: &mut LeaderClient, n: usize, killed: Instant) -> anyhow::Result<Split> {
    let running = |vms: &[drover_proto::v1::Vm], pred: &dyn Fn(&drover_proto::v1::Vm) -> bool| {
        vms.len() == n && vms.iter().all(pred)
    };
    let mut suspect = None;
    let mut dead = None;
    let mut placed = None;
    loop {
        anyhow::ensure!(
            killed.elapsed() < Duration::from_secs(120),
            "failover did not finish"
        );
        let hosts = client.list_hosts().await?;
        let h1 = hosts.iter().find(|h| h.name == "h1").map(|h| h.health);
        let now = Instant::now();
        if suspect.is_none() && h1 == Some(HostHealth::Suspect as i32) {
            suspect = Some(now);
        }
        if dead.is_none() && h1 == Some(HostHealth::Dead as i32) {
            dead = Some(now);
            suspect.get_or_insert(now);
        }
        let vms = client.list_vms().await?;
        if placed.is_none() && running(&vms, &|v| !v.host.is_empty() && v.host != "h1") {
            placed = Some(now);
        }
        if running(&vms, &|v| {
            v.host != "h1" && v.observed_state == ObservedState::Running as i32
        }) {
            let (s, d) = (suspect.unwrap_or(now), dead.unwrap_or(now));
            let p = placed.unwrap_or(now);
            return Ok(Split {
                detection: s - killed,
                fencing: d.saturating_duration_since(s),
                placement: p.saturating_duration_since(d),
                start: now.saturating_duration_since(p),
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `--disks` trial: VMs with disks on real libvirt hosts, and a power loss.
mod disks {
    use std::time::{Duration, Instant};

    use anyhow::Context as _;
    use drover_chaos_tests::client::{ClientConfig, LeaderClient};
    use drover_chaos_tests::libvirt_hosts::LibvirtHosts;
    use drover_chaos_tests::{guest, system_libvirt, wait_until, Cluster, ClusterSpec};
    use drover_proto::v1::DiskSpec;
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;

    use super::{measure, place_on_h1, wait_armed, Split};

    pub async fn trial_once(n: usize, extra: &[String]) -> anyhow::Result<Split> {
        let image = guest::image().map_err(anyhow::Error::msg)?;
        let dir = tempfile::tempdir()?;
        let state = dir.path().to_path_buf();
        let lv = tokio::task::spawn_blocking(move || LibvirtHosts::start(&state, 3)).await??;
        let mut cluster = Cluster::start(ClusterSpec {
            hosts: 0,
            controller_args: extra.to_vec(),
            hostd_args: vec!["--domain-type".into(), "qemu".into()],
            ..ClusterSpec::default()
        })
        .await?;
        cluster.add_agent("h1", &lv.host(0).tcp_uri()).await?;
        cluster.wait_hosts_up().await?;
        let shared = system_libvirt::pool_dir("drover-bench-failover")?;
        let path = shared.path().to_str().context("utf-8 path")?;
        let cli = |args: Vec<String>| {
            let cluster = &cluster;
            async move {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                cluster.cli_json(&args).await.map_err(anyhow::Error::msg)
            }
        };
        let owned = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        // One host of two vCPUs holds them all: overcommit as far as that needs.
        cli(owned(&["cluster", "placement", "--cpu-overcommit", "16"])).await?;
        cli(owned(&[
            "pool", "create", "shared", "--path", path, "--shared", "--wait", "30s",
        ]))
        .await?;
        let image = image.to_str().context("utf-8 path")?;
        cli(owned(&[
            "image", "import", "guest", "--file", image, "--pool", "shared",
        ]))
        .await?;
        let endpoints = cluster.addrs();
        let mut client = LeaderClient::new(&endpoints, ClientConfig::default())?;
        place_on_h1(&client, n, Duration::from_secs(120), |req| {
            req.spec = Some(drover_proto::v1::VmSpec {
                vcpus: 1,
                memory_mib: 96,
            });
            req.image = "guest".into();
            req.disks = [64 << 20, 16 << 20]
                .into_iter()
                .map(|size_bytes| DiskSpec {
                    pool: "shared".into(),
                    size_bytes,
                })
                .collect();
        })
        .await?;
        for i in [1, 2] {
            let h = lv.host(i);
            cluster.add_agent(&h.name, &h.tcp_uri()).await?;
        }
        cluster.wait_hosts_up().await?;
        wait_until(
            "the pool on every host",
            Duration::from_secs(60),
            || async {
                let pool = cluster.cli_json(&["pool", "get", "shared"]).await?;
                let hosts = pool["on_hosts"].as_array().cloned().unwrap_or_default();
                let all = hosts.len() == 3 && hosts.iter().all(|h| h["state"] == "active");
                Ok(all.then_some(()))
            },
        )
        .await?;
        wait_armed(&client).await?;

        // Power loss: h1's hostd, every QEMU of it, and its virtlockd.
        let qemus: Vec<i32> = std::fs::read_dir(lv.host(0).state_dir.join("run/qemu"))?
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "pid"))
            .filter_map(|e| std::fs::read_to_string(e.path()).ok())
            .filter_map(|p| p.trim().parse().ok())
            .collect();
        let lockd = lv.host(0).virtlockd_pid();
        let killed = Instant::now();
        cluster.kill_agent("h1").await?;
        for pid in qemus {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        if let Some(pid) = lockd {
            let _ = kill(pid, Signal::SIGKILL);
        }
        let split = measure(&mut client, n, killed).await?;
        drop(cluster);
        drop(lv);
        Ok(split)
    }
}
