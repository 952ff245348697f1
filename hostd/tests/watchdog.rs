//! Layer 2 of self-fencing with real QEMU guests: `hostd-watchdog` destroys the HA guests
//! once the lease in the lease file lapses, with hostd gone (as if frozen) and the guests
//! still running in QEMU. Needs a libvirt daemon at `qemu:///system` (CI starts one).

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::hostd::{within, Hostd, Leader};
use drover_chaos_tests::system_libvirt::{self, Leftovers, QEMU_SYSTEM as URI};
use drover_hostd::lease_file;
use drover_proto::agent::v1::{Fence, StartVmRequest};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use virt::connect::Connect;

/// Whether the domain `name` is active, read straight from libvirt.
fn active(name: &str) -> Result<bool, String> {
    let conn = Connect::open(Some(URI)).map_err(|e| e.to_string())?;
    let dom = conn
        .lookup_domain_by_name(name)
        .map_err(|e| e.to_string())?;
    dom.is_active().map_err(|e| e.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchdog_fences_ha_guests_when_hostd_is_gone() {
    if !common::prerequisite(system_libvirt::available()) {
        return;
    }
    let pid = std::process::id();
    let ha = format!("wd-ha-{pid}");
    let plain = format!("wd-plain-{pid}");
    let _leftovers = Leftovers {
        domains: vec![ha.clone(), plain.clone()],
        pools: Vec::new(),
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let data_dir = dir.path().join("data");

    eprintln!("phase: hostd on {URI} with 3 s leases starts an HA and a plain guest");
    let mut hostd = Hostd::start_with(
        "wd",
        URI.into(),
        tempfile::tempdir().unwrap(),
        data_dir.clone(),
    )
    .await;
    let leader = Leader::open(&mut hostd.client, 1, Duration::from_secs(3)).await;
    leader.wait_held(true).await;
    for (name, is_ha) in [(&ha, true), (&plain, false)] {
        hostd
            .client
            .start_vm(StartVmRequest {
                name: name.clone(),
                vcpus: 1,
                memory_mib: 64,
                fence: Some(Fence {
                    term: 1,
                    generation: 1,
                }),
                ha: is_ha,
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("start {name}: {e:?}"));
    }
    assert_eq!(active(&ha), Ok(true));

    eprintln!("phase: the watchdog runs beside hostd");
    let mut watchdog = Command::new(env!("CARGO_BIN_EXE_hostd-watchdog"))
        .args(["--libvirt-uri", URI, "--data-dir"])
        .arg(&data_dir)
        .args(["--interval-ms", "100"])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start hostd-watchdog");
    let stdout = watchdog.stdout.take().expect("stdout");
    let line = within("the watchdog to start", async {
        BufReader::new(stdout).lines().next_line().await
    })
    .await
    .expect("read")
    .expect("a line");
    assert!(line.starts_with("watching "), "{line}");

    eprintln!("phase: hostd goes away (no renewals, no fence timer); the guests keep running");
    drop(leader);
    hostd.shutdown().await;
    let record = lease_file::read(&lease_file::path_in(&data_dir))
        .expect("lease file")
        .expect("a lease was recorded");
    let left = record
        .remaining()
        .expect("the lease still holds at this point");
    let expiry = Instant::now() + left;
    assert_eq!(active(&ha), Ok(true), "hostd's exit must not stop guests");

    eprintln!("phase: the watchdog destroys the HA guest once the lease lapses");
    within("the HA guest to be fenced", async {
        while active(&ha) != Ok(false) {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let fenced = Instant::now();
    assert!(
        fenced >= expiry - Duration::from_millis(60),
        "fenced {:?} before the lease ended",
        expiry - fenced
    );
    eprintln!("fenced {:?} after the lease ended", fenced - expiry);
    assert_eq!(active(&plain), Ok(true), "non-HA guests are left running");
    watchdog.kill().await.expect("kill watchdog");
}

/// Layer 3: with `--device`, every healthy round writes to the device, and a clean stop
/// writes the magic `V` that disarms a Linux watchdog. A regular file stands in for
/// `/dev/watchdog` here: the bytes written are the whole protocol.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchdog_pets_the_device_and_disarms_it_on_a_clean_stop() {
    if !common::prerequisite(common::libvirt_test_driver()) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let device = dir.path().join("watchdog");
    std::fs::write(&device, b"").expect("device file");
    let mut watchdog = Command::new(env!("CARGO_BIN_EXE_hostd-watchdog"))
        .args(["--libvirt-uri", "test:///default", "--data-dir"])
        .arg(dir.path())
        .args(["--interval-ms", "50", "--device"])
        .arg(&device)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start hostd-watchdog");
    let stdout = watchdog.stdout.take().expect("stdout");
    within("the watchdog to start", async {
        BufReader::new(stdout).lines().next_line().await
    })
    .await
    .expect("read")
    .expect("a line");

    within("the device to be petted", async {
        while std::fs::read(&device).map_or(0, |b| b.len()) < 3 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let pid = nix::unistd::Pid::from_raw(watchdog.id().expect("pid") as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("SIGTERM");
    let status = within("the watchdog to stop", watchdog.wait())
        .await
        .expect("wait");
    assert!(status.success(), "{status:?}");
    let written = std::fs::read(&device).expect("device file");
    assert!(
        written[..written.len() - 1].iter().all(|b| *b == 0),
        "{written:?}"
    );
    assert_eq!(written.last(), Some(&b'V'), "magic close on a clean stop");
}
