//! What the side-by-side benchmarks share: running a tool as an operator would (and the
//! linked clone an operator makes of an image), and the summary of a series of times.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{ensure, Context as _};

/// Runs `program args`; its stdout, or an error with its stderr.
pub fn run(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    ensure!(
        out.status.success(),
        "{program} {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `d` in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// (p50, mean, max) of `v` (nearest rank; not empty).
pub fn stats(mut v: Vec<f64>) -> (f64, f64, f64) {
    v.sort_by(f64::total_cmp);
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    (v[v.len() / 2], mean, v[v.len() - 1])
}

/// A qcow2 linked clone of `base` at `disk`, as an operator would make one.
pub fn linked_clone(base: &Path, disk: &Path) -> anyhow::Result<()> {
    let (base, disk) = (
        base.to_str().context("utf-8")?,
        disk.to_str().context("utf-8")?,
    );
    run(
        "qemu-img",
        &[
            "create", "-q", "-f", "qcow2", "-b", base, "-F", "qcow2", disk,
        ],
    )
    .map(drop)
}
