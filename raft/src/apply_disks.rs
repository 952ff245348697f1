//! `apply` for a VM's disks after it was created: add, grow, remove, and record that the
//! host deleted removed disks' volumes. Adding and removing only while the VM's domain is
//! not active (no hot-plug): the change takes effect at the next start (hostd creates a
//! new volume) and a removed disk's volume is deleted by the VM's actor through its host.
//! Growing also while it runs: the API then has the host grow the running guest's disk
//! (`virDomainBlockResize`), and every start grows a volume smaller than the state says,
//! so a grow the host missed still happens.

use crate::command::{ApplyError, ApplyResult, Reply};
use crate::model::{volume_name, ClusterState, DesiredState, Disk, DiskSpec, Vm, MAX_DISKS};

/// Why `vm`'s disks cannot change now, if they cannot.
fn frozen(vm: &Vm) -> Result<(), ApplyError> {
    if vm.desired == DesiredState::Deleted {
        return Err(ApplyError::VmDeleting(vm.name.clone()));
    }
    if let Some(op) = vm.migration {
        return Err(ApplyError::VmMigrating {
            vm: vm.name.clone(),
            op,
        });
    }
    // Starting counts: a start in flight defines the domain with the disks it was sent.
    if vm.observed.is_active() || vm.observed == crate::model::ObservedState::Starting {
        return Err(ApplyError::DisksInUse(vm.name.clone()));
    }
    Ok(())
}

/// Why `vm`'s disks cannot grow now: only while a start is in flight (it defines the
/// domain with the sizes it was sent) or a migration copies them.
fn not_growable(vm: &Vm) -> Result<(), ApplyError> {
    match frozen(vm) {
        Err(ApplyError::DisksInUse(_)) if vm.observed.is_active() => Ok(()),
        other => other,
    }
}

impl ClusterState {
    fn disk_index(vm: &Vm, index: u32) -> Result<usize, ApplyError> {
        let i = index as usize;
        if i >= vm.disks.len() {
            return Err(ApplyError::InvalidDisk(format!(
                "VM {:?} has no disk {index} (it has {})",
                vm.name,
                vm.disks.len()
            )));
        }
        Ok(i)
    }

    pub(crate) fn add_disk(&mut self, name: &str, spec: &DiskSpec) -> ApplyResult {
        spec.validate().map_err(ApplyError::InvalidDisk)?;
        let vm = self
            .vms
            .get(name)
            .ok_or_else(|| ApplyError::UnknownVm(name.to_string()))?;
        frozen(vm)?;
        if vm.disks.len() >= MAX_DISKS {
            return Err(ApplyError::InvalidDisk(format!(
                "VM {name:?} has {MAX_DISKS} disks already, the most it may have"
            )));
        }
        let pool = self
            .pools
            .get(&spec.pool)
            .ok_or_else(|| ApplyError::UnknownPool(spec.pool.clone()))?;
        if vm.ha && !pool.spec.shared {
            return Err(ApplyError::HaNeedsSharedPool {
                vm: name.to_string(),
                pool: spec.pool.clone(),
            });
        }
        // A placed VM stays where it is: the new disk's pool must be there too.
        if let Some(host) = &vm.host {
            if pool.available_on(host).is_none() {
                return Err(ApplyError::PoolNotActive {
                    pool: spec.pool.clone(),
                    host: host.clone(),
                });
            }
        }
        self.check_space(std::iter::once(spec))?;
        let Some(vm) = self.vms.get_mut(name) else {
            return Err(ApplyError::UnknownVm(name.to_string()));
        };
        let seq = vm.disks_made.max(vm.disks.len() as u32);
        let disk = Disk {
            new_volume: vm.volumes_created,
            ..Disk::empty(
                &spec.pool,
                volume_name(name, vm.uid, seq as usize),
                spec.size_bytes,
            )
        };
        vm.disks_made = seq + 1;
        vm.disks.push(disk);
        Ok(Reply::Vm(vm.clone()))
    }

    pub(crate) fn resize_disk(&mut self, name: &str, index: u32, size_bytes: u64) -> ApplyResult {
        let vm = self
            .vms
            .get_mut(name)
            .ok_or_else(|| ApplyError::UnknownVm(name.to_string()))?;
        not_growable(vm)?;
        let i = Self::disk_index(vm, index)?;
        let disk = &mut vm.disks[i];
        DiskSpec {
            pool: disk.pool.clone(),
            size_bytes,
        }
        .validate()
        .map_err(ApplyError::InvalidDisk)?;
        // Shrinking would cut off whatever the guest keeps at the end of the disk.
        if size_bytes < disk.size_bytes {
            return Err(ApplyError::InvalidDisk(format!(
                "disk {index} of VM {name:?} is {} bytes; disks only grow",
                disk.size_bytes
            )));
        }
        disk.size_bytes = size_bytes;
        Ok(Reply::Vm(vm.clone()))
    }

    pub(crate) fn remove_disk(&mut self, name: &str, index: u32) -> ApplyResult {
        let vm = self
            .vms
            .get_mut(name)
            .ok_or_else(|| ApplyError::UnknownVm(name.to_string()))?;
        frozen(vm)?;
        // The cloud-init seed lives in the boot disk's pool, named for the VM: without
        // that disk it would be left behind and the VM would boot without its seed.
        if index == 0 && vm.cloud_init.is_some() {
            return Err(ApplyError::InvalidDisk(format!(
                "disk 0 of VM {name:?} is the boot disk its cloud-init seed goes with; it \
                 cannot be removed"
            )));
        }
        let i = Self::disk_index(vm, index)?;
        let disk = vm.disks.remove(i);
        // A volume exists only once the VM was placed (a start, even a failed one, may
        // have made it); deleting one that was never made is harmless.
        if vm.generation > 0 {
            vm.dropped_disks.push(disk);
        }
        Ok(Reply::Vm(vm.clone()))
    }

    pub(crate) fn disk_volumes_deleted(&mut self, name: &str, volumes: &[String]) -> ApplyResult {
        let vm = self
            .vms
            .get_mut(name)
            .ok_or_else(|| ApplyError::UnknownVm(name.to_string()))?;
        vm.dropped_disks.retain(|d| !volumes.contains(&d.volume));
        Ok(Reply::Vm(vm.clone()))
    }
}

#[cfg(test)]
mod tests {
    use crate::command::Command;
    use crate::model::{Host, HostHealth, ObservedState, Pool, VmOptions, VmSpec};

    use super::*;

    const GIB: u64 = 1 << 30;

    fn state() -> ClusterState {
        let mut s = ClusterState::default();
        for (name, shared) in [("local", false), ("nfs", true)] {
            s.pools
                .insert(name.into(), Pool::for_tests(name, shared, &["h1"]));
        }
        let mut h = Host::new("h1", "127.0.0.1:1");
        h.health = HostHealth::Up;
        s.hosts.insert("h1".into(), h);
        let create = Command::CreateVm {
            name: "web".into(),
            spec: VmSpec {
                vcpus: 1,
                memory_mib: 64,
            },
            start: false,
            options: VmOptions {
                disks: vec![DiskSpec {
                    pool: "local".into(),
                    size_bytes: GIB,
                }],
                ..Default::default()
            },
        };
        s.apply(&create).0.expect("create");
        s
    }

    fn apply(s: &mut ClusterState, cmd: Command) -> ApplyResult {
        s.apply(&cmd).0
    }

    fn add(pool: &str, size_bytes: u64) -> Command {
        Command::AddDisk {
            name: "web".into(),
            disk: DiskSpec {
                pool: pool.into(),
                size_bytes,
            },
        }
    }

    #[test]
    fn disks_are_added_and_removed_only_while_the_domain_is_not_active() {
        let mut s = state();
        for observed in [
            ObservedState::Running,
            ObservedState::Paused,
            ObservedState::Starting,
        ] {
            s.vms.get_mut("web").expect("web").observed = observed;
            let before = s.clone();
            for cmd in [
                add("local", GIB),
                Command::RemoveDisk {
                    name: "web".into(),
                    index: 0,
                },
            ] {
                assert_eq!(
                    apply(&mut s, cmd),
                    Err(ApplyError::DisksInUse("web".into())),
                    "{observed:?}"
                );
            }
            assert_eq!(s, before);
        }
    }

    /// Growing is online: allowed while the guest runs, not while a start is in flight
    /// (it defines the domain with the sizes it was sent) or a migration copies the disk.
    #[test]
    fn disks_grow_while_running_but_not_while_starting_or_migrating() {
        let grow = |size_bytes| Command::ResizeDisk {
            name: "web".into(),
            index: 0,
            size_bytes,
        };
        let mut s = state();
        s.vms.get_mut("web").expect("web").observed = ObservedState::Starting;
        assert_eq!(
            apply(&mut s, grow(2 * GIB)),
            Err(ApplyError::DisksInUse("web".into()))
        );
        for (observed, size) in [(ObservedState::Running, 2), (ObservedState::Paused, 3)] {
            s.vms.get_mut("web").expect("web").observed = observed;
            let Ok(Reply::Vm(vm)) = apply(&mut s, grow(size * GIB)) else {
                panic!("grow while {observed:?} refused");
            };
            assert_eq!(vm.disks[0].size_bytes, size * GIB);
        }
        s.vms.get_mut("web").expect("web").migration = Some(7);
        assert_eq!(
            apply(&mut s, grow(4 * GIB)),
            Err(ApplyError::VmMigrating {
                vm: "web".into(),
                op: 7
            })
        );
    }

    #[test]
    fn added_disks_get_fresh_volumes_made_at_the_next_start() {
        let mut s = state();
        let Ok(Reply::Vm(vm)) = apply(&mut s, add("nfs", GIB)) else {
            panic!("add failed");
        };
        assert!(
            !vm.disks[1].new_volume,
            "the VM never ran: every volume is new"
        );
        // It ran; then its second disk goes and a third comes.
        let vm = s.vms.get_mut("web").expect("web");
        vm.volumes_created = true;
        vm.generation = 2;
        let remove = Command::RemoveDisk {
            name: "web".into(),
            index: 1,
        };
        let Ok(Reply::Vm(vm)) = apply(&mut s, remove) else {
            panic!("remove failed");
        };
        assert_eq!(
            vm.dropped_disks.len(),
            1,
            "its volume exists: to be deleted"
        );
        let Ok(Reply::Vm(vm)) = apply(&mut s, add("nfs", GIB)) else {
            panic!("add failed");
        };
        // Never the name of the removed one, whose volume may still exist.
        assert_ne!(vm.disks[1].volume, vm.dropped_disks[0].volume);
        assert!(vm.disks[1].new_volume && !vm.disks[0].new_volume);
        let volumes = vec![vm.dropped_disks[0].volume.clone()];
        apply(
            &mut s,
            Command::DiskVolumesDeleted {
                name: "web".into(),
                volumes,
            },
        )
        .expect("deleted");
        assert!(s.vms["web"].dropped_disks.is_empty());
    }

    /// A VM that lost its host with a removed disk's volume still to delete is not
    /// forgotten when deleted, even with its own disks kept; and a keep, once asked, stays.
    #[test]
    fn dropped_volumes_keep_a_deleted_vm_until_they_are_gone() {
        let mut s = state();
        s.vms.get_mut("web").expect("web").generation = 3;
        apply(
            &mut s,
            Command::RemoveDisk {
                name: "web".into(),
                index: 0,
            },
        )
        .expect("remove");
        let delete = |keep_disks| Command::DeleteVm {
            name: "web".into(),
            keep_disks,
        };
        assert!(matches!(apply(&mut s, delete(true)), Ok(Reply::Vm(_))));
        assert!(matches!(apply(&mut s, delete(false)), Ok(Reply::Vm(_))));
        assert!(
            s.vms["web"].keep_disks,
            "a repeated delete took the keep back"
        );
    }

    #[test]
    fn disks_only_grow_and_bad_input_changes_nothing() {
        let mut s = state();
        let before = s.clone();
        let resize = |index, size_bytes| Command::ResizeDisk {
            name: "web".into(),
            index,
            size_bytes,
        };
        for cmd in [
            resize(0, GIB / 2),
            resize(3, 2 * GIB),
            add("nowhere", GIB),
            add("local", 1),
            Command::RemoveDisk {
                name: "web".into(),
                index: 9,
            },
        ] {
            assert!(apply(&mut s, cmd).is_err());
        }
        assert_eq!(s, before);
        apply(&mut s, resize(0, 2 * GIB)).expect("grow");
        assert_eq!(s.vms["web"].disks[0].size_bytes, 2 * GIB);
        // Placed on h1, where "nfs" is not set up after all: no disk there.
        s.vms.get_mut("web").expect("web").host = Some("h1".into());
        s.pools.get_mut("nfs").expect("nfs").on_hosts.clear();
        assert!(matches!(
            apply(&mut s, add("nfs", GIB)),
            Err(ApplyError::PoolNotActive { .. })
        ));
    }
}
