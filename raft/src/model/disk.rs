//! A VM's disks: volumes in storage pools, owned by the VM in the replicated state. The
//! cluster decides each volume's pool, name, size and format; the VM's host creates it
//! through libvirt when it first starts the VM, and deletes it with the VM.

use serde::{Deserialize, Serialize};

/// Disks per VM: virtio disks are `vda`..`vdp` here.
pub const MAX_DISKS: usize = 16;
pub const MIN_DISK_BYTES: u64 = 1024 * 1024;
/// Catches unit typos (`--disk 20T` for `20G`) before a pool is filled.
pub const MAX_DISK_BYTES: u64 = 64 * 1024 * 1024 * 1024 * 1024;

/// What the operator asks for: a size in a pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskSpec {
    pub pool: String,
    pub size_bytes: u64,
}

impl DiskSpec {
    pub fn validate(&self) -> Result<(), String> {
        if !(MIN_DISK_BYTES..=MAX_DISK_BYTES).contains(&self.size_bytes) {
            return Err(format!(
                "disk size {} bytes is outside {MIN_DISK_BYTES}..={MAX_DISK_BYTES}",
                self.size_bytes
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum DiskFormat {
    /// Thin, and the format linked clones of images need.
    Qcow2,
}

impl DiskFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            DiskFormat::Qcow2 => "qcow2",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    pub pool: String,
    /// The volume's name in the pool ([`volume_name`]).
    pub volume: String,
    pub size_bytes: u64,
    pub format: DiskFormat,
    /// The image this disk is a linked clone of (the boot disk of a VM made from one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backing: Option<super::DiskBacking>,
    /// Added to a VM that had run already: its volume is still to be created at the
    /// next start, though the VM's others must not be (see `Vm::volumes_created`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub new_volume: bool,
}

impl Disk {
    /// A new empty thin qcow2 disk.
    pub fn empty(pool: &str, volume: String, size_bytes: u64) -> Self {
        Self {
            pool: pool.to_string(),
            volume,
            size_bytes,
            format: DiskFormat::Qcow2,
            backing: None,
            new_volume: false,
        }
    }
}

/// A disk's volume name: the VM's name and incarnation ([`super::Vm::uid`]), so that a VM
/// deleted and created again under the same name never finds the old one's volume.
pub fn volume_name(vm: &str, uid: u64, index: usize) -> String {
    format!("{vm}-{uid}-disk{index}.qcow2")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_bounded() {
        let d = |size_bytes| DiskSpec {
            pool: "p".into(),
            size_bytes,
        };
        assert!(d(MIN_DISK_BYTES).validate().is_ok());
        assert!(d(MAX_DISK_BYTES).validate().is_ok());
        assert!(d(MIN_DISK_BYTES - 1).validate().is_err());
        assert!(d(MAX_DISK_BYTES + 1).validate().is_err());
        assert_eq!(volume_name("web", 7, 0), "web-7-disk0.qcow2");
    }
}
