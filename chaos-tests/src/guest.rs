//! The test guest (`scripts/guest-image.sh`: a Debian kernel and a busybox initramfs on a
//! syslinux-booted disk, built from Debian packages and cached per machine) and what it
//! leaves on its second disk, read from the volume's file while the guest runs.
//!
//! The guest boots in seconds under TCG but has been seen to stall under this machine
//! kind's nested KVM, so tests that boot it run hostd with `--domain-type qemu`.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Where the image is cached between runs.
pub const CACHE_DIR: &str = "/var/cache/drover-guest";

/// The image's path, built first if it is not cached; `Err` says why it cannot be.
pub fn image() -> Result<PathBuf, String> {
    built_by("guest-image.sh")
}

/// The Debian guest with real cloud-init (`scripts/debian-image.sh`: mmdebstrap from the
/// Debian mirror, cached per machine; the first build takes a minute or two). It boots in
/// about a minute under TCG, runs cloud-init's NoCloud datasource only, and has a root
/// shell on ttyS0.
pub fn debian_image() -> Result<PathBuf, String> {
    built_by("debian-image.sh")
}

/// `drover vm create NAME ...` for the test guest: 1 vCPU, 128 MiB, booting a clone of
/// image `guest` in `pool`, then `extra` flags.
pub fn create_args<'a>(name: &'a str, pool: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec![
        "vm",
        "create",
        name,
        "--vcpus",
        "1",
        "--memory-mib",
        "128",
        "--image",
        "guest",
        "--pool",
        pool,
    ];
    args.extend_from_slice(extra);
    args
}

/// Runs `scripts/<script>`, which prints the image's path on its last line.
fn built_by(script: &str) -> Result<PathBuf, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts")
        .join(script);
    let out = Command::new(&script)
        .arg(CACHE_DIR)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "the guest image cannot be built here: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let path = stdout.lines().last().unwrap_or_default().trim();
    Ok(PathBuf::from(path))
}

/// The image for a test that boots the guest; `None` when it cannot be built here (the
/// skip rule of [`crate::require`] applies: CI fails instead).
pub fn image_or_skip() -> Option<PathBuf> {
    or_skip(image())
}

/// [`debian_image`], or `None` under the skip rule, as [`image_or_skip`].
pub fn debian_image_or_skip() -> Option<PathBuf> {
    or_skip(debian_image())
}

fn or_skip(image: Result<PathBuf, String>) -> Option<PathBuf> {
    match image {
        Ok(path) => Some(path),
        Err(why) => {
            crate::require::prerequisite(Err(why));
            None
        }
    }
}

/// What the guest wrote on its second disk: the first boot's id, and how many boots found
/// it since (see `scripts/guest/init`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Marker {
    pub first_boot: Option<String>,
    /// The count in `DROVER-SEEN`, written by every boot after the first.
    pub boots: Option<u32>,
}

/// Waits, at most `within`, until the marker on the volume at `path` satisfies `ok`.
pub async fn wait_marker(
    what: &str,
    path: &Path,
    within: std::time::Duration,
    ok: impl Fn(&Marker) -> bool,
) -> anyhow::Result<Marker> {
    crate::wait_until(what, within, || async {
        let m = marker(path)?;
        if ok(&m) {
            Ok(Some(m))
        } else {
            Err(format!("not yet: {m:?}"))
        }
    })
    .await
}

/// Reads the marker from the qcow2 volume at `path` (read only, beside a running QEMU).
pub fn marker(path: &Path) -> Result<Marker, String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let copy = dir.path().join("sectors.raw");
    let out = Command::new("qemu-img")
        .args(["dd", "-U", "-f", "qcow2", "-O", "raw", "bs=512", "count=2"])
        .arg(format!("if={}", path.display()))
        .arg(format!("of={}", copy.display()))
        .output()
        .map_err(|e| format!("qemu-img: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "qemu-img dd {}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let sectors = std::fs::read(&copy).map_err(|e| e.to_string())?;
    Ok(parse_marker(&sectors))
}

/// The marker in the disk's first two sectors.
pub fn parse_marker(sectors: &[u8]) -> Marker {
    let line = |sector: usize, tag: &str| -> Option<String> {
        let bytes = sectors.get(sector * 512..(sector + 1) * 512)?;
        let text = String::from_utf8_lossy(bytes);
        let rest = text.strip_prefix(tag)?.strip_prefix(' ')?;
        Some(
            rest.split(['\n', '\0'])
                .next()
                .unwrap_or_default()
                .to_string(),
        )
    };
    Marker {
        first_boot: line(0, "DROVER-MARK"),
        boots: line(1, "DROVER-SEEN").and_then(|n| n.trim().parse().ok()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_what_the_init_script_writes() {
        let mut disk = vec![0u8; 1024];
        assert_eq!(parse_marker(&disk), Marker::default());
        disk[..17].copy_from_slice(b"DROVER-MARK abc-1");
        disk[17] = b'\n';
        assert_eq!(parse_marker(&disk).first_boot.as_deref(), Some("abc-1"));
        disk[512..526].copy_from_slice(b"DROVER-SEEN 3\n");
        assert_eq!(parse_marker(&disk).boots, Some(3));
    }
}
