//! Lease time survives a suspend: hostd and the watchdog count it on `CLOCK_BOOTTIME`, which
//! keeps running while the machine sleeps, not on `CLOCK_MONOTONIC`, which stops.
//!
//! A Linux time namespace stands in for the suspend: inside `unshare --time --boottime N`,
//! `CLOCK_BOOTTIME` reads N seconds later than outside while `CLOCK_MONOTONIC` reads the
//! same, which is what a process sees after resuming from an N-second suspend. hostd
//! records a lease with a minute left outside; a process inside (this test binary again)
//! must find it lapsed, both as hostd resuming it and as the watchdog judging the lease
//! file. Counted on `CLOCK_MONOTONIC`, it would still hold there. Needs root (time
//! namespaces, Linux >= 5.6).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use drover_hostd::lease_file;
use drover_hostd::self_fence::LeaseKeeper;
use drover_hostd::watchdog::{self, Verdict};

/// Set in the re-executed test: the data directory whose lease it should judge.
const PROBE_ENV: &str = "DROVER_LEASE_PROBE_DIR";
const TEST_NAME: &str = "a_lease_recorded_before_a_suspend_has_lapsed_after_it";
/// A suspend much longer than any lease.
const SUSPEND_SECS: &str = "100000";

fn time_namespaces() -> Result<(), String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Err("needs root for time namespaces (unshare --time)".into());
    }
    let ok = Command::new("unshare")
        .args(["--time", "--boottime", "1", "true"])
        .status()
        .map_err(|e| format!("cannot run unshare: {e}"))?;
    if !ok.success() {
        return Err("unshare --time fails here (time namespaces need Linux >= 5.6)".into());
    }
    Ok(())
}

/// Inside the namespace: how hostd and the watchdog see the lease in `dir`.
fn probe(dir: &Path) {
    let keeper = LeaseKeeper::open(dir).expect("open the lease keeper");
    let verdict = watchdog::verdict(&lease_file::read(&lease_file::path_in(dir)));
    println!("probe: hostd-holds={}", keeper.holds());
    println!(
        "probe: watchdog={}",
        match verdict {
            Verdict::Holds(_) => "holds",
            Verdict::Disarmed => "disarmed",
            Verdict::Lapsed(_) => "lapsed",
        }
    );
}

/// Runs `probe` on `dir` in a child process, after a simulated suspend of `suspend` seconds
/// (none: no time namespace); returns its `probe:` lines.
fn probe_after(dir: &Path, suspend: Option<&str>) -> Vec<String> {
    let me = std::env::current_exe().expect("current_exe");
    let mut cmd = match suspend {
        Some(secs) => {
            let mut c = Command::new("unshare");
            c.args(["--time", "--boottime", secs]).arg(me);
            c
        }
        None => Command::new(me),
    };
    let out = cmd
        .args(["--exact", TEST_NAME, "--nocapture"])
        .env(PROBE_ENV, dir)
        .output()
        .expect("run the probe");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "probe failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .filter(|l| l.starts_with("probe: "))
        .map(String::from)
        .collect()
}

#[test]
fn a_lease_recorded_before_a_suspend_has_lapsed_after_it() {
    if let Some(dir) = std::env::var_os(PROBE_ENV) {
        return probe(Path::new(&dir));
    }
    if !common::prerequisite(time_namespaces()) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");

    eprintln!("phase: hostd is granted a lease with a minute left, and records it");
    let keeper = LeaseKeeper::open(dir.path()).expect("open");
    keeper.request_sent(1);
    keeper
        .granted(1, 3, Duration::from_secs(60), false, 0)
        .expect("grant");
    assert!(keeper.holds());

    eprintln!("phase: without a suspend, another process finds it holding");
    let held = ["probe: hostd-holds=true", "probe: watchdog=holds"];
    assert_eq!(probe_after(dir.path(), None), held);

    eprintln!("phase: after a {SUSPEND_SECS} s suspend it has lapsed, for hostd and watchdog");
    let lapsed = ["probe: hostd-holds=false", "probe: watchdog=lapsed"];
    assert_eq!(probe_after(dir.path(), Some(SUSPEND_SECS)), lapsed);
}
