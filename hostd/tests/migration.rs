//! Live migration through hostd's `MigrateVm`, between two real libvirt hosts on this
//! machine (chaos-tests' `LibvirtHosts`: own mount namespace, address and daemons each):
//! there and back with progress, the new generation in the destination's marker and the
//! downtime reported; a destination whose libvirtd is down; a destination that dies
//! mid-migration; and an abort. Each failure must leave the guest running at the source.

mod common;

use std::time::Duration;

use common::hostd::{state, within, Hostd};
use drover_chaos_tests::libvirt_hosts::LibvirtHosts;
use drover_proto::agent::v1::{
    DomainState, Fence, GetHostInfoRequest, MigrateVmRequest, MigrationEvent, StartVmRequest, VmRef,
};
use tonic::{Code, Status, Streaming};

fn start_req(name: &str, memory_mib: u64) -> StartVmRequest {
    StartVmRequest {
        name: name.into(),
        vcpus: 1,
        memory_mib,
        fence: Some(Fence {
            term: 1,
            generation: 1,
        }),
        ha: true,
        ..Default::default()
    }
}

fn migrate_req(name: &str, generation: u64, dest_uri: String) -> MigrateVmRequest {
    MigrateVmRequest {
        name: name.into(),
        fence: Some(Fence {
            term: 1,
            generation,
        }),
        dest_uri,
        new_generation: generation + 1,
        max_downtime_ms: 300,
        bandwidth_mibps: 0,
        auto_converge: true,
        progress_timeout_ms: 60_000,
        ..Default::default()
    }
}

async fn hosts(dir: &std::path::Path) -> LibvirtHosts {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || LibvirtHosts::start(&dir, 2))
        .await
        .expect("join")
        .expect("start libvirt hosts")
}

async fn agent(name: &str, uri: String) -> Hostd {
    Hostd::start(name, uri, tempfile::tempdir().expect("tempdir")).await
}

/// Reads the stream to its end: every event, and the error it ended with, if any.
async fn drain(mut stream: Streaming<MigrationEvent>) -> (Vec<MigrationEvent>, Option<Status>) {
    let mut events = Vec::new();
    loop {
        match within("the migration stream", stream.message()).await {
            Ok(Some(ev)) => events.push(ev),
            Ok(None) => return (events, None),
            Err(status) => return (events, Some(status)),
        }
    }
}

/// `name`'s (state, generation) on this hostd, `None` when absent.
async fn domain(h: &mut Hostd, name: &str) -> Option<(DomainState, u64)> {
    h.list()
        .await
        .iter()
        .find(|d| d.name == name)
        .map(|d| (state(d), d.generation))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multihost_migrates_there_and_back() {
    if !common::prerequisite(LibvirtHosts::available()) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let lv = hosts(dir.path()).await;
    let (h1, h2) = (lv.host(0), lv.host(1));
    let mut a = agent("h1", h1.tcp_uri()).await;
    let mut b = agent("h2", h2.tcp_uri()).await;

    eprintln!("phase: hostd reports where peers reach its libvirt");
    let info = a
        .client
        .get_host_info(GetHostInfoRequest {})
        .await
        .expect("info")
        .into_inner();
    assert_eq!(info.migration_uri, h1.tcp_uri());

    eprintln!("phase: a guest starts on h1 and moves to h2");
    a.client
        .start_vm(start_req("mig", 64))
        .await
        .expect("start");
    let stream = a
        .client
        .migrate_vm(migrate_req("mig", 1, h2.tcp_uri()))
        .await
        .expect("MigrateVm")
        .into_inner();
    let (events, err) = drain(stream).await;
    assert!(err.is_none(), "{err:?}");
    let last = events.last().expect("at least the final event");
    assert!(last.done, "{events:?}");
    let stats = last.stats.expect("final stats");
    eprintln!("h1 -> h2: {stats:?}");
    assert!(stats.downtime_ms.is_some(), "downtime reported: {stats:?}");
    assert!(stats.data_total > 0, "{stats:?}");
    assert_eq!(domain(&mut b, "mig").await, Some((DomainState::Running, 2)));
    assert_eq!(domain(&mut a, "mig").await, None, "undefined at the source");
    let on_h1 = h1.running_domains().expect("virsh h1");
    let on_h2 = h2.running_domains().expect("virsh h2");
    assert!(!on_h1.contains(&"mig".to_string()) && on_h2.contains(&"mig".to_string()));

    eprintln!("phase: a stale generation is refused");
    let err = b
        .client
        .migrate_vm(migrate_req("mig", 1, h1.tcp_uri()))
        .await
        .expect_err("generation 1 is older than the domain's 2");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");

    eprintln!("phase: and back to h1");
    let stream = b
        .client
        .migrate_vm(migrate_req("mig", 2, h1.tcp_uri()))
        .await
        .expect("MigrateVm back")
        .into_inner();
    let (events, err) = drain(stream).await;
    assert!(
        err.is_none() && events.last().is_some_and(|e| e.done),
        "{err:?}"
    );
    assert_eq!(domain(&mut a, "mig").await, Some((DomainState::Running, 3)));
    assert_eq!(domain(&mut b, "mig").await, None);

    a.shutdown().await;
    b.shutdown().await;
    drop(lv);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multihost_failures_leave_the_guest_running_at_the_source() {
    if !common::prerequisite(LibvirtHosts::available()) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let mut lv = hosts(dir.path()).await;
    let (uri1, uri2) = (lv.host(0).tcp_uri(), lv.host(1).tcp_uri());
    let mut a = agent("h1", uri1).await;
    // A large, idle guest behind a 1 MiB/s cap: its zero pages still take seconds to
    // send, long enough to act while the migration runs.
    a.client
        .start_vm(start_req("slow", 2048))
        .await
        .expect("start");

    eprintln!("phase: abort while it runs");
    let mut req = migrate_req("slow", 1, uri2.clone());
    req.bandwidth_mibps = 1;
    let stream = under_way(&mut a, req.clone()).await;
    // A second caller attaches to the same migration instead of starting another.
    let attached = a
        .client
        .migrate_vm(req.clone())
        .await
        .expect("attach")
        .into_inner();
    let aborted = a
        .client
        .abort_migration(VmRef {
            name: "slow".into(),
            fence: Some(Fence {
                term: 1,
                generation: 1,
            }),
            stray: false,
            ..Default::default()
        })
        .await
        .expect("AbortMigration")
        .into_inner();
    assert!(aborted.aborted);
    let (_, err) = drain(stream).await;
    let err = err.expect("an aborted migration ends in an error");
    assert_eq!(err.code(), Code::Aborted, "{err:?}");
    assert!(err.message().starts_with("cancelled"), "{err:?}");
    let (_, err2) = drain(attached).await;
    assert_eq!(err2.map(|s| s.code()), Some(Code::Aborted));
    assert_eq!(
        domain(&mut a, "slow").await,
        Some((DomainState::Running, 1))
    );

    eprintln!("phase: the destination QEMU freezes; the progress timeout aborts");
    let mut stalling = req.clone();
    stalling.progress_timeout_ms = 2_000;
    let mut stream = under_way(&mut a, stalling).await;
    // libvirt writes the incoming QEMU's PID under the destination's run directory.
    let pid_file = lv.host(1).state_dir.join("run/qemu/slow.pid");
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .expect("incoming QEMU pid file")
        .trim()
        .parse()
        .expect("pid");
    let qemu = nix::unistd::Pid::from_raw(pid);
    nix::sys::signal::kill(qemu, nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP");
    // Socket buffers absorb a few more seconds of data; then the remaining data stops
    // shrinking. Once it has been flat for longer than the timeout, hostd has aborted:
    // thaw the QEMU so the destination can kill it (a stopped process ignores SIGTERM,
    // and libvirt waits 10 s before SIGKILL).
    let mut flat_since = (u64::MAX, std::time::Instant::now());
    let mut thawed = false;
    let mut tick = tokio::time::interval(Duration::from_millis(200));
    let err = within_long("the stalled migration to end", async {
        loop {
            tokio::select! {
                msg = stream.message() => match msg {
                    Ok(Some(ev)) => {
                        let remaining = ev.stats.map(|s| s.data_remaining).unwrap_or_default();
                        if remaining != flat_since.0 {
                            flat_since = (remaining, std::time::Instant::now());
                        }
                    }
                    Ok(None) => return None,
                    Err(status) => return Some(status),
                },
                // Flat (or silent) for longer than the timeout: hostd has aborted by now.
                _ = tick.tick() => {
                    if !thawed && flat_since.1.elapsed() > Duration::from_secs(4) {
                        let _ = nix::sys::signal::kill(qemu, nix::sys::signal::Signal::SIGCONT);
                        thawed = true;
                    }
                }
            }
        }
    })
    .await;
    let _ = nix::sys::signal::kill(qemu, nix::sys::signal::Signal::SIGCONT);
    let err = err.expect("a stalled migration is aborted");
    eprintln!("stalled: {err:?}");
    assert_eq!(err.code(), Code::Aborted, "{err:?}");
    assert!(err.message().contains("no progress for 2 s"), "{err:?}");
    wait_running(&mut a, "slow", 1).await;

    eprintln!("phase: the destination's libvirtd dies mid-migration");
    let stream = under_way(&mut a, req.clone()).await;
    let kill = {
        let host = lv.host_mut(1);
        tokio::task::block_in_place(|| host.stop_libvirtd())
    };
    kill.expect("stop h2's libvirtd");
    let (_, err) = drain(stream).await;
    let err = err.expect("fails");
    eprintln!("destination died: {err:?}");
    assert_eq!(err.code(), Code::Aborted, "{err:?}");
    assert!(
        !err.message().contains("unable to connect"),
        "it had connected: {err:?}"
    );
    wait_running(&mut a, "slow", 1).await;

    eprintln!("phase: the destination's libvirtd is down from the start");
    let (_, err) = drain(
        a.client
            .migrate_vm(req)
            .await
            .expect("MigrateVm")
            .into_inner(),
    )
    .await;
    let err = err.expect("fails");
    assert_eq!(err.code(), Code::Aborted, "{err:?}");
    assert!(err.message().contains("migrate_to_uri3"), "{err:?}");
    wait_running(&mut a, "slow", 1).await;

    a.shutdown().await;
    drop(lv);
}

/// Starts `req` on `h` and returns its stream once data moves (failing if it already ended).
async fn under_way(h: &mut Hostd, req: MigrateVmRequest) -> Streaming<MigrationEvent> {
    let mut stream = h
        .client
        .migrate_vm(req)
        .await
        .expect("MigrateVm")
        .into_inner();
    let ev = data_moving(&mut stream).await;
    assert!(!ev.done, "too fast to act on while it runs: {ev:?}");
    stream
}

/// Reads events until the job reports data sent: the migration is under way.
async fn data_moving(stream: &mut Streaming<MigrationEvent>) -> MigrationEvent {
    within("data to move", async {
        loop {
            let ev = stream.message().await.expect("stream").expect("an event");
            if ev.done || ev.stats.is_some_and(|s| s.data_processed > 0) {
                return ev;
            }
        }
    })
    .await
}

async fn within_long<F: std::future::Future>(what: &str, f: F) -> F::Output {
    match tokio::time::timeout(Duration::from_secs(60), f).await {
        Ok(v) => v,
        Err(_) => panic!("timed out after 60 s waiting for {what}"),
    }
}

/// libvirt resumes the source guest after a failed migration; wait for it.
async fn wait_running(h: &mut Hostd, name: &str, generation: u64) {
    within("the guest to run at the source", async {
        loop {
            if domain(h, name).await == Some((DomainState::Running, generation)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
}
