//! `apply` for images: begin an import, finish it with what the host detected, delete
//! (refused while a disk is a clone of it), and forget once the host deleted the volume.
//! Kept apart from `apply.rs`, which calls in here from one arm per command.

use crate::command::{ApplyError, ApplyResult, ImageImported, Reply};
use crate::model::{
    image_volume_name, validate_name, ClusterState, HostHealth, Image, ImageCopy, ImageState,
    PoolOnHost,
};

/// Longest checksum kept: SHA-256 in hex.
const SHA256_HEX_LEN: usize = 64;

impl ClusterState {
    pub(crate) fn begin_image_import(
        &mut self,
        name: &str,
        pool: &str,
        host: &str,
        term: u64,
    ) -> ApplyResult {
        validate_name(name).map_err(|reason| ApplyError::InvalidName {
            what: "image".into(),
            reason,
        })?;
        if self.images.contains_key(name) {
            return Err(ApplyError::ImageExists(name.to_string()));
        }
        let p = self
            .pools
            .get(pool)
            .ok_or_else(|| ApplyError::UnknownPool(pool.to_string()))?;
        let h = self
            .hosts
            .get(host)
            .ok_or_else(|| ApplyError::UnknownHost(host.to_string()))?;
        // The import streams into this host's pool right after this commits.
        if h.health != HostHealth::Up
            || !matches!(p.on_hosts.get(host), Some(PoolOnHost::Active { .. }))
        {
            return Err(ApplyError::PoolNotActive {
                pool: pool.to_string(),
                host: host.to_string(),
            });
        }
        self.image_uids += 1;
        let image = Image {
            name: name.to_string(),
            pool: pool.to_string(),
            volume: image_volume_name(name, (self.ha.restores << 40) | self.image_uids),
            host: host.to_string(),
            state: ImageState::Importing { term },
            copies: Default::default(),
        };
        self.images.insert(name.to_string(), image.clone());
        Ok(Reply::Image(image))
    }

    pub(crate) fn finish_image_import(&mut self, done: &ImageImported) -> ApplyResult {
        let image = self
            .images
            .get_mut(&done.name)
            .ok_or_else(|| ApplyError::UnknownImage(done.name.clone()))?;
        // Only the import that began it: a deleted and re-begun image has another volume.
        if image.volume != done.volume || !matches!(image.state, ImageState::Importing { .. }) {
            return Err(ApplyError::ImageNotImporting(done.name.clone()));
        }
        let hex = done.sha256.len() == SHA256_HEX_LEN
            && done
                .sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !hex || done.virtual_bytes == 0 {
            return Err(ApplyError::InvalidReport(format!(
                "image {:?}: checksum {:?}, virtual size {}",
                done.name, done.sha256, done.virtual_bytes
            )));
        }
        image.state = ImageState::Ready {
            format: done.format,
            virtual_bytes: done.virtual_bytes,
            file_bytes: done.file_bytes,
            sha256: done.sha256.clone(),
        };
        Ok(Reply::Image(image.clone()))
    }

    pub(crate) fn delete_image(&mut self, name: &str, volume: Option<&str>) -> ApplyResult {
        // Another incarnation of the name (or none): not the image this was meant for.
        if let Some(v) = volume {
            if self.images.get(name).is_none_or(|i| i.volume != v) {
                return Ok(Reply::Nothing);
            }
        }
        let users: Vec<&str> = self
            .vms
            .values()
            .filter(|vm| {
                vm.disks
                    .iter()
                    .any(|d| d.backing.as_ref().is_some_and(|b| b.image == name))
            })
            .map(|vm| vm.name.as_str())
            .collect();
        if !users.is_empty() {
            return Err(ApplyError::ImageInUse {
                image: name.to_string(),
                vms: users.join(", "),
            });
        }
        let image = self
            .images
            .get_mut(name)
            .ok_or_else(|| ApplyError::UnknownImage(name.to_string()))?;
        image.state = ImageState::Deleting;
        Ok(Reply::Image(image.clone()))
    }

    pub(crate) fn image_removed(&mut self, name: &str, volume: &str) -> ApplyResult {
        match self.images.get(name) {
            // Copies on other hosts go first: forgotten now, they would never be deleted.
            Some(i) if !i.copies.is_empty() => Ok(Reply::Nothing),
            Some(i) if i.volume == volume && i.state == ImageState::Deleting => {
                self.images.remove(name);
                Ok(Reply::Nothing)
            }
            // Removed already (a retry), or a later image of that name: nothing to do.
            _ => Ok(Reply::Nothing),
        }
    }
}

impl ClusterState {
    pub(crate) fn begin_image_copy(&mut self, name: &str, host: &str, term: u64) -> ApplyResult {
        let image = self
            .images
            .get(name)
            .ok_or_else(|| ApplyError::UnknownImage(name.to_string()))?;
        image
            .ready()
            .ok_or_else(|| ApplyError::ImageNotReady(name.to_string()))?;
        let needless = |why: &str| ApplyError::ImageCopyNeedless {
            image: name.to_string(),
            host: host.to_string(),
            why: why.to_string(),
        };
        if !self.is_local_pool(&image.pool) {
            return Err(needless("its pool is shared"));
        }
        if image.ready_on(host) {
            return Err(needless("it is there"));
        }
        if image.copies.contains_key(host) {
            return Err(ApplyError::ImageCopyUnderWay {
                image: name.to_string(),
                host: host.to_string(),
            });
        }
        let pool_there = self
            .pools
            .get(&image.pool)
            .and_then(|p| p.on_hosts.get(host));
        for h in [host, image.host.as_str()] {
            let up = self
                .hosts
                .get(h)
                .is_some_and(|h| h.health == HostHealth::Up);
            if !up || (h == host && !matches!(pool_there, Some(PoolOnHost::Active { .. }))) {
                return Err(ApplyError::PoolNotActive {
                    pool: image.pool.clone(),
                    host: h.to_string(),
                });
            }
        }
        let Some(image) = self.images.get_mut(name) else {
            return Err(ApplyError::UnknownImage(name.to_string()));
        };
        image
            .copies
            .insert(host.to_string(), ImageCopy::Copying { term });
        Ok(Reply::Image(image.clone()))
    }

    pub(crate) fn finish_image_copy(
        &mut self,
        name: &str,
        volume: &str,
        host: &str,
        ok: bool,
    ) -> ApplyResult {
        let image = match self.images.get_mut(name) {
            Some(i) if i.volume == volume => i,
            // Another incarnation of the name, or none: nothing of this copy is left here.
            _ => return Ok(Reply::Nothing),
        };
        if !matches!(image.copies.get(host), Some(ImageCopy::Copying { .. })) {
            return Ok(Reply::Image(image.clone()));
        }
        // A copy finishing for an image being deleted: its host deletes it like the rest.
        if ok {
            image.copies.insert(host.to_string(), ImageCopy::Ready);
        } else {
            image.copies.remove(host);
        }
        Ok(Reply::Image(image.clone()))
    }

    pub(crate) fn image_copy_removed(
        &mut self,
        name: &str,
        volume: &str,
        host: &str,
    ) -> ApplyResult {
        if let Some(image) = self.images.get_mut(name).filter(|i| i.volume == volume) {
            image.copies.remove(host);
        }
        Ok(Reply::Nothing)
    }
}

#[cfg(test)]
mod tests {
    use crate::command::Command;
    use crate::model::{DiskSpec, Host, ImageFormat, Pool, VmOptions, VmSpec};

    use super::*;

    const GIB: u64 = 1 << 30;

    fn state() -> ClusterState {
        let mut s = ClusterState::default();
        for (name, shared) in [("local", false), ("nfs", true)] {
            s.pools
                .insert(name.into(), Pool::for_tests(name, shared, &["h1", "h2"]));
        }
        for host in ["h1", "h2"] {
            let mut h = Host::new(host, "127.0.0.1:1");
            h.health = HostHealth::Up;
            h.capacity.vcpus = 8;
            h.capacity.memory_mib = 8192;
            s.hosts.insert(host.into(), h);
        }
        s
    }

    fn begin(s: &mut ClusterState, name: &str, pool: &str) -> ApplyResult {
        s.apply(&Command::BeginImageImport {
            name: name.into(),
            pool: pool.into(),
            host: "h1".into(),
            term: 3,
        })
        .0
    }

    fn finish(s: &mut ClusterState, name: &str, volume: &str) -> ApplyResult {
        s.apply(&Command::FinishImageImport(ImageImported {
            name: name.into(),
            volume: volume.into(),
            format: ImageFormat::Qcow2,
            virtual_bytes: 2 * GIB,
            file_bytes: 300 << 20,
            sha256: "ab".repeat(32),
        }))
        .0
    }

    /// A ready image `name` in `pool`.
    fn import(s: &mut ClusterState, name: &str, pool: &str) -> Image {
        let Ok(Reply::Image(i)) = begin(s, name, pool) else {
            panic!("begin failed");
        };
        let Ok(Reply::Image(i)) = finish(s, name, &i.volume) else {
            panic!("finish failed");
        };
        i
    }

    fn create_vm(
        s: &mut ClusterState,
        name: &str,
        image: &str,
        pool: &str,
        size: u64,
        ha: bool,
    ) -> ApplyResult {
        s.apply(&Command::CreateVm {
            name: name.into(),
            spec: VmSpec {
                vcpus: 1,
                memory_mib: 64,
            },
            start: false,
            options: VmOptions {
                ha,
                image: Some(image.into()),
                disks: vec![DiskSpec {
                    pool: pool.into(),
                    size_bytes: size,
                }],
                ..Default::default()
            },
        })
        .0
    }

    #[test]
    fn an_import_begins_on_an_up_host_with_the_pool_and_finishes_once() {
        let mut s = state();
        let Ok(Reply::Image(i)) = begin(&mut s, "deb", "nfs") else {
            panic!("begin failed");
        };
        assert_eq!(i.state, ImageState::Importing { term: 3 });
        assert_eq!(
            begin(&mut s, "deb", "nfs"),
            Err(ApplyError::ImageExists("deb".into()))
        );
        assert_eq!(
            begin(&mut s, "x", "nope"),
            Err(ApplyError::UnknownPool("nope".into()))
        );
        s.hosts.get_mut("h1").expect("h1").health = HostHealth::Suspect;
        assert!(matches!(
            begin(&mut s, "y", "nfs"),
            Err(ApplyError::PoolNotActive { .. })
        ));
        // Another import's volume, or a second finish, changes nothing.
        assert!(finish(&mut s, "deb", "image-deb-99").is_err());
        let Ok(Reply::Image(done)) = finish(&mut s, "deb", &i.volume) else {
            panic!("finish failed");
        };
        assert_eq!(done.ready(), Some((ImageFormat::Qcow2, 2 * GIB)));
        assert_eq!(
            finish(&mut s, "deb", &i.volume),
            Err(ApplyError::ImageNotImporting("deb".into()))
        );
    }

    #[test]
    fn a_boot_disk_is_a_clone_of_a_ready_image_at_least_its_size() {
        let mut s = state();
        let image = import(&mut s, "deb", "nfs");
        let Ok(Reply::Vm(vm)) = create_vm(&mut s, "web", "deb", "local", 4 * GIB, false) else {
            panic!("create failed");
        };
        let backing = vm.disks[0]
            .backing
            .as_ref()
            .expect("boot disk has a backing");
        assert_eq!(backing.volume, image.volume);
        assert_eq!(backing.pool, "nfs");
        assert_eq!(vm.pools().collect::<Vec<_>>(), ["local", "nfs"]);
        assert!(matches!(
            create_vm(&mut s, "small", "deb", "local", GIB, false),
            Err(ApplyError::InvalidDisk(_))
        ));
        assert_eq!(
            create_vm(&mut s, "x", "nope", "local", 4 * GIB, false),
            Err(ApplyError::UnknownImage("nope".into()))
        );
        begin(&mut s, "half", "nfs").expect("begin");
        assert_eq!(
            create_vm(&mut s, "y", "half", "local", 4 * GIB, false),
            Err(ApplyError::ImageNotReady("half".into()))
        );
        assert!(s.vms.get("small").is_none() && s.vms.get("y").is_none());
    }

    #[test]
    fn an_ha_vm_needs_its_image_on_a_shared_pool_too() {
        let mut s = state();
        import(&mut s, "deb", "local");
        assert_eq!(
            create_vm(&mut s, "web", "deb", "nfs", 4 * GIB, true),
            Err(ApplyError::HaNeedsSharedPool {
                vm: "web".into(),
                pool: "local".into()
            })
        );
    }

    /// An image in a pool its hosts do not share is on one host only: a clone of it runs
    /// there or nowhere, and is never kept past its VM (its base could go).
    /// A clone of an unshared image goes where the image is or can be copied from its
    /// host; with that host down, nowhere else. It is never kept past its VM.
    #[test]
    fn a_clone_of_an_unshared_image_goes_where_a_copy_can_be_made_and_is_never_kept() {
        let mut s = state();
        import(&mut s, "deb", "local");
        create_vm(&mut s, "web", "deb", "local", 4 * GIB, false).expect("create");
        let place = |s: &mut ClusterState, host: &str| {
            s.apply(&Command::PlaceVm {
                name: "web".into(),
                host: host.into(),
                expected_generation: 0,
            })
            .0
        };
        s.hosts.get_mut("h1").expect("h1").health = HostHealth::Dead;
        let e = place(&mut s, "h2").expect_err("placed with no source to copy from");
        assert!(e.to_string().contains("its host h1 is not up"), "{e}");
        s.hosts.get_mut("h1").expect("h1").health = HostHealth::Up;
        place(&mut s, "h2").expect("placed where a copy can be made");
        assert_eq!(
            s.image_to_copy(&s.vms["web"], "h2")
                .map(|i| i.name.as_str()),
            Some("deb")
        );
        assert!(s.image_to_copy(&s.vms["web"], "h1").is_none(), "h1 has it");
        let keep = Command::DeleteVm {
            name: "web".into(),
            keep_disks: true,
        };
        let e = s.apply(&keep).0.expect_err("kept a clone");
        assert!(e.to_string().contains("clone of image"), "{e}");
        assert_eq!(s.vms["web"].desired, crate::model::DesiredState::Stopped);
    }

    fn copy(s: &mut ClusterState, image: &str, host: &str, term: u64) -> ApplyResult {
        s.apply(&Command::BeginImageCopy {
            name: image.into(),
            host: host.into(),
            term,
        })
        .0
    }

    fn copied(s: &mut ClusterState, image: &str, host: &str, ok: bool) -> ApplyResult {
        let volume = s.images[image].volume.clone();
        s.apply(&Command::FinishImageCopy {
            name: image.into(),
            volume,
            host: host.into(),
            ok,
        })
        .0
    }

    /// A copy is made once per host, only of an unshared image, only from an up host into
    /// an active pool; it is ready when it arrived whole, forgotten when it did not.
    #[test]
    fn an_image_is_copied_once_per_host_and_ready_only_when_whole() {
        let mut s = state();
        import(&mut s, "deb", "local");
        import(&mut s, "shared", "nfs");
        assert!(matches!(
            copy(&mut s, "shared", "h2", 3),
            Err(ApplyError::ImageCopyNeedless { .. })
        ));
        assert!(matches!(
            copy(&mut s, "deb", "h1", 3),
            Err(ApplyError::ImageCopyNeedless { .. })
        ));
        s.hosts.get_mut("h1").expect("h1").health = HostHealth::Suspect;
        assert!(matches!(
            copy(&mut s, "deb", "h2", 3),
            Err(ApplyError::PoolNotActive { host, .. }) if host == "h1"
        ));
        s.hosts.get_mut("h1").expect("h1").health = HostHealth::Up;
        copy(&mut s, "deb", "h2", 3).expect("copy begins");
        assert!(matches!(
            copy(&mut s, "deb", "h2", 3),
            Err(ApplyError::ImageCopyUnderWay { .. })
        ));
        assert!(!s.images["deb"].ready_on("h2"), "not while copying");
        copied(&mut s, "deb", "h2", false).expect("failed copy recorded");
        assert!(
            s.images["deb"].copies.is_empty(),
            "a failed copy is forgotten"
        );
        copy(&mut s, "deb", "h2", 4).expect("copy begins again");
        copied(&mut s, "deb", "h2", true).expect("copy recorded");
        assert!(s.images["deb"].ready_on("h2"));
    }

    /// An image is forgotten only after every copy is deleted; a removed host's copies go
    /// with it.
    #[test]
    fn an_image_with_copies_is_forgotten_only_after_them() {
        let mut s = state();
        let image = import(&mut s, "deb", "local");
        copy(&mut s, "deb", "h2", 3).expect("copy begins");
        copied(&mut s, "deb", "h2", true).expect("copy recorded");
        s.apply(&Command::DeleteImage {
            name: "deb".into(),
            volume: None,
        })
        .0
        .expect("delete");
        let removed = Command::ImageRemoved {
            name: "deb".into(),
            volume: image.volume.clone(),
        };
        s.apply(&removed).0.expect("removed");
        assert!(s.images.contains_key("deb"), "forgotten with a copy on h2");
        s.apply(&Command::ImageCopyRemoved {
            name: "deb".into(),
            volume: image.volume.clone(),
            host: "h2".into(),
        })
        .0
        .expect("copy removed");
        s.apply(&removed).0.expect("removed");
        assert!(!s.images.contains_key("deb"));
        let mut s = state();
        import(&mut s, "deb", "local");
        copy(&mut s, "deb", "h2", 3).expect("copy begins");
        s.apply(&Command::RemoveHost { name: "h2".into() })
            .0
            .expect("h2 removed");
        assert!(s.images["deb"].copies.is_empty());
    }

    /// A host holding an image no other host sees cannot be forgotten; one whose images
    /// are on a shared pool can (another host of the pool looks after them).
    #[test]
    fn a_host_holding_an_unshared_image_is_not_removed() {
        let mut s = state();
        import(&mut s, "deb", "local");
        let remove = Command::RemoveHost { name: "h1".into() };
        let e = s.apply(&remove).0.expect_err("removed with its image");
        assert!(e.to_string().contains("holds images deb"), "{e}");
        let mut shared = state();
        import(&mut shared, "deb", "nfs");
        shared.apply(&remove).0.expect("removed");
    }

    #[test]
    fn an_image_in_use_is_not_deleted_and_a_deleted_one_is_forgotten_after_its_volume() {
        let mut s = state();
        let image = import(&mut s, "deb", "nfs");
        create_vm(&mut s, "web", "deb", "nfs", 4 * GIB, false).expect("create");
        assert_eq!(
            s.apply(&Command::DeleteImage {
                name: "deb".into(),
                volume: None
            })
            .0,
            Err(ApplyError::ImageInUse {
                image: "deb".into(),
                vms: "web".into()
            })
        );
        assert_eq!(
            s.apply(&Command::DeletePool { name: "nfs".into() }).0,
            Err(ApplyError::PoolInUse {
                pool: "nfs".into(),
                vms: "web".into()
            })
        );
        s.vms.remove("web");
        assert_eq!(
            s.apply(&Command::DeletePool { name: "nfs".into() }).0,
            Err(ApplyError::PoolHoldsImages {
                pool: "nfs".into(),
                images: "deb".into()
            })
        );
        // An abandon meant for another incarnation of the name changes nothing.
        s.apply(&Command::DeleteImage {
            name: "deb".into(),
            volume: Some("image-deb-0".into()),
        })
        .0
        .expect("a no-op");
        assert!(s.images["deb"].ready().is_some());
        s.apply(&Command::DeleteImage {
            name: "deb".into(),
            volume: None,
        })
        .0
        .expect("delete");
        assert_eq!(s.images["deb"].state, ImageState::Deleting);
        // A new VM cannot take an image being deleted.
        assert_eq!(
            create_vm(&mut s, "web2", "deb", "nfs", 4 * GIB, false),
            Err(ApplyError::ImageNotReady("deb".into()))
        );
        // Only the removal of its own volume forgets it.
        s.apply(&Command::ImageRemoved {
            name: "deb".into(),
            volume: "other".into(),
        })
        .0
        .expect("a stale removal is a no-op");
        assert!(s.images.contains_key("deb"));
        s.apply(&Command::ImageRemoved {
            name: "deb".into(),
            volume: image.volume.clone(),
        })
        .0
        .expect("removed");
        assert!(s.images.is_empty());
        // Imported again: another volume.
        let again = import(&mut s, "deb", "nfs");
        assert_ne!(again.volume, image.volume);
    }
}
