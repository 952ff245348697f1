//! The machine's own libvirt daemon (`qemu:///system`, real QEMU) as tests use it: whether
//! it answers, and a guard that removes what a test defined there whatever happens (the
//! daemon outlives every test, and a leftover domain or pool would meet the next run).

use std::process::Command;

pub const QEMU_SYSTEM: &str = "qemu:///system";

/// Holds the system daemon for one test cluster with pools at a time, while it lives: a
/// cluster's host actors remove the `drover-*` pools their cluster does not know (a pool
/// deleted, a host left out), so two test clusters on this one libvirt would undefine each
/// other's pools. (A real host serves one cluster.)
pub async fn exclusive() -> anyhow::Result<nix::fcntl::Flock<std::fs::File>> {
    tokio::task::spawn_blocking(|| {
        crate::machine_lock::lock(
            "/tmp/drover-system-libvirt.lock",
            "test cluster on the system libvirt",
        )
    })
    .await?
}

/// Whether the system daemon answers (`virsh version`), or why not.
pub fn available() -> Result<(), String> {
    let out = Command::new("virsh")
        .args(["-c", QEMU_SYSTEM, "version"])
        .output()
        .map_err(|e| format!("virsh not found: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "no libvirt daemon at {QEMU_SYSTEM} (scripts/libvirtd.sh starts one): {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// A fresh directory for a storage pool that QEMU's guests open disks in: under
/// `/var/tmp` (a real filesystem: `cache='none'` needs O_DIRECT, which tmpfs lacks) and
/// readable by QEMU's user (`libvirt-qemu`). Removed when dropped.
pub fn pool_dir(prefix: &str) -> std::io::Result<tempfile::TempDir> {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir_in("/var/tmp")?;
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755))?;
    Ok(dir)
}

/// Destroys and undefines these domains and drover pools (by the cluster's pool name) on
/// the system daemon when dropped; volumes' files stay with their directories.
#[derive(Debug, Default)]
pub struct Leftovers {
    pub domains: Vec<String>,
    pub pools: Vec<String>,
}

/// Networks a test had hostd wire on the system daemon (cluster names), and the VXLAN
/// links that went with them: removed on drop, like [`Leftovers`].
pub struct NetworkLeftovers {
    pub networks: Vec<String>,
    pub links: Vec<String>,
}

impl Drop for NetworkLeftovers {
    fn drop(&mut self) {
        for n in &self.networks {
            let name = format!("drover-{n}");
            for verb in ["net-destroy", "net-undefine"] {
                let _ = Command::new("virsh")
                    .args(["-c", QEMU_SYSTEM, verb, &name])
                    .output();
            }
        }
        for link in &self.links {
            let _ = Command::new("ip")
                .args(["link", "del", "dev", link])
                .output();
        }
    }
}

impl Drop for Leftovers {
    fn drop(&mut self) {
        let pools: Vec<String> = self.pools.iter().map(|p| format!("drover-{p}")).collect();
        let steps = self
            .domains
            .iter()
            .flat_map(|d| [("destroy", d), ("undefine", d)])
            .chain(
                pools
                    .iter()
                    .flat_map(|p| [("pool-destroy", p), ("pool-undefine", p)]),
            );
        for (verb, name) in steps {
            let _ = Command::new("virsh")
                .args(["-c", QEMU_SYSTEM, verb, name])
                .output();
        }
    }
}
