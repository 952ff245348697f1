//! Images: the disk contents VMs boot from. An image is one volume in a storage pool,
//! imported once (the file streamed through the leader to a host of the pool, its format
//! detected and checked there) and read only from then on: a VM's boot disk is a qcow2
//! overlay on it (a linked clone), so the image stays while any disk is built on it.
//!
//! An image in a pool its hosts do not share is on the host that received it; another host
//! gets a copy in the same pool (same path, same volume name) the first time a VM cloned
//! from it is to start or arrive there ([`ImageCopy`]), as Cloudpods and VMmanager cache
//! images on their hosts. A shared pool holds one copy for all.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a volume's bytes are, as `qemu-img info` detected them at import.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ImageFormat {
    Qcow2,
    Raw,
}

impl ImageFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageFormat::Qcow2 => "qcow2",
            ImageFormat::Raw => "raw",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "qcow2" => Some(ImageFormat::Qcow2),
            "raw" => Some(ImageFormat::Raw),
            _ => None,
        }
    }
}

/// Where an image is in its life. Every state but `Ready` ends in the volume's deletion
/// by the leader (see `drover_actors::host::images`), so a volume is never left behind
/// by an import that did not finish.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ImageState {
    /// The leader of `term` streams the file to the image's host. A later leader knows
    /// that import is over (its stream died with the old leader) and abandons it.
    Importing { term: u64 },
    Ready {
        format: ImageFormat,
        /// The disk size the image boots as; a boot disk is at least this big.
        virtual_bytes: u64,
        /// The file's size as imported.
        file_bytes: u64,
        /// Of the file as imported, lowercase hex.
        sha256: String,
    },
    /// Being removed: the host deletes the volume, then the image is forgotten.
    Deleting,
}

impl ImageState {
    pub fn as_str(&self) -> &'static str {
        match self {
            ImageState::Importing { .. } => "importing",
            ImageState::Ready { .. } => "ready",
            ImageState::Deleting => "deleting",
        }
    }
}

/// A copy of an unshared image on a host other than the one that received it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ImageCopy {
    /// The leader of `term` streams it from the image's host. One of an earlier term died
    /// with its leader: that host deletes what arrived, and the copy starts over.
    Copying {
        term: u64,
    },
    Ready,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    pub name: String,
    pub pool: String,
    /// The volume in `pool` ([`image_volume_name`]).
    pub volume: String,
    /// The host that received the file: the one that holds it when `pool` is local, the
    /// one that deletes it.
    pub host: String,
    pub state: ImageState,
    /// Copies on other hosts, by host (only for an unshared pool), each the same volume
    /// name in the same pool there.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub copies: BTreeMap<String, ImageCopy>,
}

impl Image {
    /// Whether `host` has this image's volume to read: the host that received it, or a
    /// ready copy. (In a shared pool every host of the pool does: see
    /// `ClusterState::image_to_copy`.)
    pub fn ready_on(&self, host: &str) -> bool {
        host == self.host || self.copies.get(host) == Some(&ImageCopy::Ready)
    }

    /// Its format and virtual size, once ready.
    pub fn ready(&self) -> Option<(ImageFormat, u64)> {
        match &self.state {
            ImageState::Ready {
                format,
                virtual_bytes,
                ..
            } => Some((*format, *virtual_bytes)),
            _ => None,
        }
    }
}

/// An image's volume name: its name and a cluster-unique number, so that an image
/// deleted and imported again never meets the old volume (a delete still under way).
pub fn image_volume_name(name: &str, uid: u64) -> String {
    format!("image-{name}-{uid}")
}

/// What a boot disk is a linked clone of: the image's volume, read only, as the overlay's
/// qcow2 backing file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskBacking {
    pub image: String,
    pub pool: String,
    pub volume: String,
    pub format: ImageFormat,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_round_trip_and_volumes_are_unique() {
        for f in [ImageFormat::Qcow2, ImageFormat::Raw] {
            assert_eq!(ImageFormat::parse(f.as_str()), Some(f));
        }
        assert_eq!(ImageFormat::parse("vmdk"), None);
        assert_ne!(image_volume_name("deb", 1), image_volume_name("deb", 2));
    }
}
