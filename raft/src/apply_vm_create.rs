//! `apply` for `CreateVm`: every check on a new VM, its disks included, then the VM as the
//! state keeps it. Kept apart from `apply.rs`, which calls in here from its one arm.

use crate::command::{ApplyError, ApplyResult, Reply};
use crate::model::{
    validate_labels, validate_name, volume_name, CloudInitError, ClusterState, DesiredState, Disk,
    DiskBacking, Vm, VmOptions, VmSpec, MAX_DISKS,
};

impl ClusterState {
    pub(crate) fn create_vm(
        &mut self,
        name: &str,
        spec: &VmSpec,
        start: bool,
        options: &VmOptions,
    ) -> ApplyResult {
        validate_name(name).map_err(|reason| ApplyError::InvalidName {
            what: "VM".into(),
            reason,
        })?;
        spec.validate().map_err(ApplyError::InvalidSpec)?;
        validate_labels(&options.require_labels).map_err(ApplyError::InvalidLabels)?;
        if let Some(group) = &options.anti_affinity {
            validate_name(group).map_err(|reason| ApplyError::InvalidName {
                what: "anti-affinity group".into(),
                reason,
            })?;
        }
        if self.vms.contains_key(name) {
            return Err(ApplyError::VmExists(name.to_string()));
        }
        if options.disks.len() > MAX_DISKS {
            return Err(ApplyError::InvalidDisk(format!(
                "{} disks; a VM has at most {MAX_DISKS}",
                options.disks.len()
            )));
        }
        for d in &options.disks {
            d.validate().map_err(ApplyError::InvalidDisk)?;
            let pool = self
                .pools
                .get(&d.pool)
                .ok_or_else(|| ApplyError::UnknownPool(d.pool.clone()))?;
            // Restarted on another host after a host loss, an HA VM must find its disks
            // there: only a pool all its hosts share can promise that.
            if options.ha && !pool.spec.shared {
                return Err(ApplyError::HaNeedsSharedPool {
                    vm: name.to_string(),
                    pool: d.pool.clone(),
                });
            }
        }
        if let Some(c) = &options.cloud_init {
            c.validate()?;
            if options.disks.is_empty() {
                return Err(CloudInitError::NoDisk.into());
            }
        }
        self.check_space(options.disks.iter())?;
        let backing = match &options.image {
            Some(image) => Some(self.backing_for(name, image, options)?),
            None => None,
        };
        // Last: every other check passed, so the addresses are not taken in vain.
        let nics = self.allocate_nics(name, 0, &options.nics)?;
        let desired = if start {
            DesiredState::Running
        } else {
            DesiredState::Stopped
        };
        self.vm_uids += 1;
        // A restore from backup rolls the counter back while volumes of VMs created after
        // the backup may survive in shared pools: the restore count, bumped by every
        // restore, keeps a later uid (and so its volume names) from meeting theirs.
        let uid = (self.ha.restores << 40) | self.vm_uids;
        let disks = options
            .disks
            .iter()
            .enumerate()
            .map(|(i, d)| Disk {
                // The boot disk is the image's clone.
                backing: if i == 0 { backing.clone() } else { None },
                ..Disk::empty(&d.pool, volume_name(name, uid, i), d.size_bytes)
            })
            .collect();
        let vm = Vm {
            ha: options.ha,
            ha_priority: options.ha_priority,
            require_labels: options.require_labels.clone(),
            anti_affinity: options.anti_affinity.clone(),
            uid,
            disks_made: options.disks.len() as u32,
            disks,
            cloud_init: options.cloud_init.clone(),
            nics,
            ..Vm::new(name, *spec, desired)
        };
        self.vms.insert(name.to_string(), vm.clone());
        Ok(Reply::Vm(vm))
    }

    /// Refuses disks that no host of their pool has room for, by the hosts' last reports:
    /// a VM that could never be placed is bad input, not a pending VM. (The scheduler,
    /// which also keeps headroom, judges each host at placement.)
    pub(crate) fn check_space<'a>(
        &self,
        disks: impl Iterator<Item = &'a crate::model::DiskSpec>,
    ) -> Result<(), ApplyError> {
        let mut need = std::collections::BTreeMap::<&str, u64>::new();
        for d in disks {
            *need.entry(d.pool.as_str()).or_default() += d.size_bytes;
        }
        for (pool, need) in need {
            let Some(free) = self.pools.get(pool).and_then(|p| p.most_free()) else {
                continue;
            };
            if need > free {
                return Err(ApplyError::NoSpace {
                    pool: pool.to_string(),
                    need,
                    free,
                });
            }
        }
        Ok(())
    }

    /// What VM `vm`'s boot disk is a clone of: `image`, which must be ready, fit in the
    /// boot disk, and (for an HA VM) be on a shared pool, since every host the VM may
    /// restart on reads it.
    fn backing_for(
        &self,
        vm: &str,
        image: &str,
        options: &VmOptions,
    ) -> Result<DiskBacking, ApplyError> {
        let i = self
            .images
            .get(image)
            .ok_or_else(|| ApplyError::UnknownImage(image.to_string()))?;
        let (format, virtual_bytes) = i
            .ready()
            .ok_or_else(|| ApplyError::ImageNotReady(image.to_string()))?;
        let boot = options.disks.first().ok_or_else(|| {
            ApplyError::InvalidDisk(format!(
                "image {image:?} needs a boot disk to clone it onto (a disk size and a pool)"
            ))
        })?;
        if boot.size_bytes < virtual_bytes {
            return Err(ApplyError::InvalidDisk(format!(
                "the boot disk ({} bytes) is smaller than image {image:?} ({virtual_bytes} bytes)",
                boot.size_bytes
            )));
        }
        let shared = self.pools.get(&i.pool).is_some_and(|p| p.spec.shared);
        if options.ha && !shared {
            return Err(ApplyError::HaNeedsSharedPool {
                vm: vm.to_string(),
                pool: i.pool.clone(),
            });
        }
        Ok(DiskBacking {
            image: image.to_string(),
            pool: i.pool.clone(),
            volume: i.volume.clone(),
            format,
        })
    }
}

#[cfg(test)]
mod tests {
    use crate::command::Command;
    use crate::model::{
        DiskSpec, Host, HostHealth, Pool, PoolHosts, PoolKind, PoolOnHost, PoolSpec, MAX_DISK_BYTES,
    };

    use super::*;

    fn pool(name: &str, shared: bool) -> Pool {
        Pool {
            name: name.into(),
            spec: PoolSpec {
                kind: PoolKind::Dir {
                    path: format!("/srv/{name}"),
                },
                shared,
                hosts: PoolHosts::All,
            },
            on_hosts: Default::default(),
        }
    }

    /// An up host with room for anything these tests create.
    fn add_host(s: &mut ClusterState, name: &str) {
        let mut h = Host::new(name, "127.0.0.1:1");
        h.health = HostHealth::Up;
        h.capacity.vcpus = 8;
        h.capacity.memory_mib = 8192;
        h.migration_uri = "qemu+tcp://127.0.0.1/system".into();
        s.hosts.insert(name.into(), h);
    }

    /// `pool` reported active on `host`, with a terabyte free.
    fn set_up(s: &mut ClusterState, pool: &str, host: &str) {
        let active = PoolOnHost::Active {
            capacity_bytes: 1 << 40,
            available_bytes: 1 << 40,
        };
        s.pools
            .get_mut(pool)
            .expect("pool")
            .on_hosts
            .insert(host.into(), active);
    }

    fn state() -> ClusterState {
        let mut s = ClusterState::default();
        for p in [pool("local", false), pool("nfs", true)] {
            s.pools.insert(p.name.clone(), p);
        }
        s
    }

    fn disk_specs(disks: &[(&str, u64)]) -> Vec<DiskSpec> {
        disks
            .iter()
            .map(|(pool, size_bytes)| DiskSpec {
                pool: pool.to_string(),
                size_bytes: *size_bytes,
            })
            .collect()
    }

    fn create_with(s: &mut ClusterState, name: &str, options: VmOptions) -> ApplyResult {
        s.apply(&Command::CreateVm {
            name: name.into(),
            spec: VmSpec {
                vcpus: 1,
                memory_mib: 64,
            },
            start: false,
            options,
        })
        .0
    }

    fn create(s: &mut ClusterState, name: &str, ha: bool, disks: &[(&str, u64)]) -> ApplyResult {
        let options = VmOptions {
            ha,
            disks: disk_specs(disks),
            ..Default::default()
        };
        create_with(s, name, options)
    }

    #[test]
    fn disks_get_volumes_named_for_the_vms_incarnation() {
        let mut s = state();
        let Ok(Reply::Vm(vm)) = create(
            &mut s,
            "web",
            false,
            &[("local", 1 << 30), ("nfs", 2 << 30)],
        ) else {
            panic!("create failed");
        };
        let volumes: Vec<&str> = vm.disks.iter().map(|d| d.volume.as_str()).collect();
        assert_eq!(volumes, ["web-1-disk0.qcow2", "web-1-disk1.qcow2"]);
        assert_eq!(vm.disks[1].size_bytes, 2 << 30);
        // Deleted and created again under the same name: other volumes.
        s.vms.remove("web");
        let Ok(Reply::Vm(again)) = create(&mut s, "web", false, &[("local", 1 << 30)]) else {
            panic!("create failed");
        };
        assert_eq!(again.disks[0].volume, "web-2-disk0.qcow2");
    }

    /// After a restore from an older backup, the counter is where the backup left it;
    /// a VM created then must not get the volume name of one created after the backup.
    #[test]
    fn uids_after_a_restore_never_repeat_those_before_it() {
        let mut s = state();
        let backup = s.clone();
        let Ok(Reply::Vm(before)) = create(&mut s, "web", false, &[("nfs", 1 << 30)]) else {
            panic!("create failed");
        };
        let mut restored = backup;
        restored.ha.restores += 1;
        let Ok(Reply::Vm(after)) = create(&mut restored, "web", false, &[("nfs", 1 << 30)]) else {
            panic!("create failed");
        };
        assert_ne!(before.disks[0].volume, after.disks[0].volume);
    }

    #[test]
    fn bad_disks_are_refused_and_change_nothing() {
        let mut s = state();
        let before = s.clone();
        let many: Vec<(&str, u64)> = vec![("local", 1 << 20); MAX_DISKS + 1];
        for (ha, disks, says) in [
            (false, vec![("ghost", 1 << 30)], "Pool \"ghost\" not found"),
            (false, vec![("local", 1)], "outside"),
            (false, vec![("local", MAX_DISK_BYTES + 1)], "outside"),
            (false, many, "at most 16"),
            (
                true,
                vec![("nfs", 1 << 30), ("local", 1 << 30)],
                "must be on shared pools",
            ),
        ] {
            let e = create(&mut s, "x", ha, &disks).expect_err(says);
            assert!(e.to_string().contains(says), "{e}");
        }
        assert_eq!(s, before);
        // An HA VM on shared pools only is fine.
        assert!(create(&mut s, "x", true, &[("nfs", 1 << 30)]).is_ok());
    }

    #[test]
    fn a_pool_holding_disks_cannot_be_deleted() {
        let mut s = state();
        create(&mut s, "web", false, &[("local", 1 << 30)]).unwrap();
        let e = s
            .apply(&Command::DeletePool {
                name: "local".into(),
            })
            .0
            .unwrap_err();
        assert_eq!(
            e,
            ApplyError::PoolInUse {
                pool: "local".into(),
                vms: "web".into()
            }
        );
        assert!(s
            .apply(&Command::DeletePool { name: "nfs".into() })
            .0
            .is_ok());
    }

    /// A live migration copies local disks, so it needs their pool set up on the
    /// destination (where the volume is created first), nothing more.
    #[test]
    fn a_vm_with_a_local_disk_is_live_migrated_only_where_its_pool_is() {
        let mut s = state();
        for name in ["h1", "h2"] {
            add_host(&mut s, name);
        }
        set_up(&mut s, "local", "h1");
        create(&mut s, "web", false, &[("local", 1 << 30)]).unwrap();
        let vm = s.vms.get_mut("web").unwrap();
        vm.host = Some("h1".into());
        vm.desired = DesiredState::Running;
        vm.observed = crate::model::ObservedState::Running;
        let migrate = |s: &mut ClusterState| {
            s.apply(&Command::StartMigration {
                vm: "web".into(),
                expected_generation: 0,
                dst: "h2".into(),
                policy: Default::default(),
                at_ms: 0,
                limits: None,
            })
            .0
        };
        let e = migrate(&mut s).unwrap_err();
        assert!(
            matches!(&e, ApplyError::NoRoom { reason, .. } if reason.contains("storage pool local")),
            "{e}"
        );
        set_up(&mut s, "local", "h2");
        assert!(matches!(migrate(&mut s), Ok(Reply::Operation(_))));
        assert!(s.vms["web"].migration.is_some());
    }

    /// Placed once, a VM with a local disk never gets another host by placement: there it
    /// would boot an empty volume (a cold move after a fence, a drain). Seen failing before
    /// `PlaceVm` checked it: the VM moved to h2.
    #[test]
    fn a_placed_vm_with_a_local_disk_is_never_placed_elsewhere() {
        let mut s = state();
        for name in ["h1", "h2"] {
            add_host(&mut s, name);
            set_up(&mut s, "local", name);
        }
        create(&mut s, "web", false, &[("local", 1 << 30)]).unwrap();
        let place = |s: &mut ClusterState, host: &str, generation: u64| {
            s.apply(&Command::PlaceVm {
                name: "web".into(),
                host: host.into(),
                expected_generation: generation,
            })
            .0
        };
        place(&mut s, "h1", 0).unwrap();
        // Its host is declared dead by an operator: nothing can run there any more, and a
        // disk-less VM could be moved now; this one cannot.
        s.hosts.get_mut("h1").unwrap().health = HostHealth::Dead;
        s.vms.get_mut("web").unwrap().observed = crate::model::ObservedState::ShutOff;
        let e = place(&mut s, "h2", 1).unwrap_err();
        assert!(matches!(e, ApplyError::LocalDisk { .. }), "{e}");
        assert_eq!(s.vms["web"].host.as_deref(), Some("h1"));
    }

    /// Once a VM has run, its volumes exist: the next start must not create them again.
    #[test]
    fn a_vm_that_came_up_has_its_volumes() {
        let mut s = state();
        add_host(&mut s, "h1");
        set_up(&mut s, "nfs", "h1");
        create(&mut s, "web", false, &[("nfs", 1 << 30)]).unwrap();
        assert!(!s.vms["web"].volumes_created);
        for cmd in [
            Command::PlaceVm {
                name: "web".into(),
                host: "h1".into(),
                expected_generation: 0,
            },
            Command::VmObserved {
                name: "web".into(),
                generation: 1,
                observed: crate::model::ObservedState::Running,
                reason: String::new(),
                listed_after: 0,
            },
        ] {
            s.apply(&cmd).0.unwrap();
        }
        assert!(s.vms["web"].volumes_created);
    }

    /// Deleting a VM that lost its host after it ran: its volumes exist, so it stays (for
    /// a host of the pool to delete them) unless they are to be kept; one that never ran
    /// goes at once.
    #[test]
    fn an_unplaced_vm_with_volumes_is_deleted_only_after_them() {
        let mut s = state();
        for name in ["ran", "kept", "never"] {
            create(&mut s, name, true, &[("nfs", 1 << 30)]).unwrap();
        }
        for name in ["ran", "kept"] {
            s.vms.get_mut(name).unwrap().volumes_created = true;
        }
        let delete = |s: &mut ClusterState, name: &str, keep_disks: bool| {
            s.apply(&Command::DeleteVm {
                name: name.into(),
                keep_disks,
            })
            .0
            .unwrap()
        };
        assert!(matches!(delete(&mut s, "ran", false), Reply::Vm(_)));
        assert_eq!(s.vms["ran"].desired, DesiredState::Deleted);
        assert!(matches!(
            delete(&mut s, "kept", true),
            Reply::VmRemoved { .. }
        ));
        assert!(matches!(
            delete(&mut s, "never", false),
            Reply::VmRemoved { .. }
        ));
        assert_eq!(s.vms.keys().collect::<Vec<_>>(), ["ran"]);
    }

    /// Disks no host of their pool has room for are refused at create, with the figures;
    /// a pool no host has reported yet is not judged.
    #[test]
    fn disks_larger_than_any_hosts_free_space_are_refused() {
        let mut s = state();
        add_host(&mut s, "h1");
        set_up(&mut s, "local", "h1");
        let tib = 1u64 << 40;
        assert_eq!(
            create(
                &mut s,
                "big",
                false,
                &[("local", tib / 2), ("local", tib / 2 + 1)]
            ),
            Err(ApplyError::NoSpace {
                pool: "local".into(),
                need: tib + 1,
                free: tib
            })
        );
        assert!(s.vms.is_empty());
        create(&mut s, "fits", false, &[("local", tib)]).expect("fits");
        create(&mut s, "unknown", false, &[("nfs", 2 * tib)]).expect("nfs not reported");
    }

    #[test]
    fn a_vm_is_placed_only_where_its_pools_are_set_up() {
        let mut s = state();
        add_host(&mut s, "h1");
        create(&mut s, "web", false, &[("local", 1 << 30)]).unwrap();
        let place = |s: &mut ClusterState| {
            s.apply(&Command::PlaceVm {
                name: "web".into(),
                host: "h1".into(),
                expected_generation: 0,
            })
            .0
        };
        let e = place(&mut s).unwrap_err();
        assert!(
            e.to_string()
                .contains("storage pool local is not set up there"),
            "{e}"
        );
        set_up(&mut s, "local", "h1");
        assert!(place(&mut s).is_ok());
    }

    fn create_with_seed(
        s: &mut ClusterState,
        name: &str,
        disks: &[(&str, u64)],
        hostname: &str,
    ) -> ApplyResult {
        let options = VmOptions {
            disks: disk_specs(disks),
            cloud_init: Some(crate::model::CloudInit {
                hostname: hostname.into(),
                user_data: Some("#cloud-config\n".into()),
                ssh_keys: vec![],
            }),
            ..Default::default()
        };
        create_with(s, name, options)
    }

    #[test]
    fn cloud_init_needs_a_disk_and_valid_settings_and_changes_nothing_when_refused() {
        let mut s = state();
        let before = s.clone();
        assert_eq!(
            create_with_seed(&mut s, "web", &[], "web"),
            Err(ApplyError::InvalidCloudInit(CloudInitError::NoDisk))
        );
        assert!(matches!(
            create_with_seed(&mut s, "web", &[("local", 1 << 30)], "web_1"),
            Err(ApplyError::InvalidCloudInit(
                CloudInitError::Hostname { .. }
            ))
        ));
        assert_eq!(s, before, "a refused create leaves the state as it was");
        let Ok(Reply::Vm(vm)) = create_with_seed(&mut s, "web", &[("local", 1 << 30)], "web")
        else {
            panic!("create failed");
        };
        assert_eq!(
            vm.seed_volume(),
            Some(("local", format!("web-{}-cidata.iso", vm.uid)))
        );
        assert_eq!(
            vm.cloud_init.as_ref().map(|c| c.hostname.as_str()),
            Some("web")
        );
        // Its seed goes with the boot disk: that disk stays while the VM has a seed.
        let e = s
            .apply(&Command::RemoveDisk {
                name: "web".into(),
                index: 0,
            })
            .0
            .unwrap_err();
        assert!(e.to_string().contains("cloud-init seed"), "{e}");
        assert_eq!(s.vms["web"].disks.len(), 1);
    }
}
