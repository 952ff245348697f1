//! A VM's disks and cloud-init seed as hostd's requests carry them (StartVm, UndefineVm,
//! MigrateVm): one conversion for every actor that sends them.

use drover_proto::agent::v1::{CloudInitSeed, VmDisk, VolumeRef};
use drover_raft::model::{instance_id, Disk, Vm};

/// `vm`'s disks as hostd takes them, the boot disk first.
pub fn vm_disks(vm: &Vm) -> Vec<VmDisk> {
    vm.disks.iter().map(vm_disk).collect()
}

/// The volumes deleting `vm` deletes: its disks' and those of disks removed from it whose
/// volumes are not deleted yet; none of its disks' when it is deleted with `--keep-disks`.
/// Its cloud-init seed goes with its disks (kept with them, too: it is the VM's identity
/// to the guest).
pub(crate) fn doomed_disks(vm: &Vm) -> Vec<VmDisk> {
    let dropped = vm.dropped_disks.iter().map(vm_disk);
    if vm.keep_disks {
        dropped.collect()
    } else {
        let seed = vm.seed_volume().map(|(pool, volume)| VmDisk {
            pool: pool.to_string(),
            volume,
            format: "raw".into(),
            ..Default::default()
        });
        vm.disks
            .iter()
            .map(vm_disk)
            .chain(dropped)
            .chain(seed)
            .collect()
    }
}

/// The NoCloud seed hostd attaches to `vm`, if it has cloud-init settings and a disk.
pub(crate) fn seed(vm: &Vm) -> Option<CloudInitSeed> {
    let c = vm.cloud_init.as_ref()?;
    let (_, volume) = vm.seed_volume()?;
    Some(CloudInitSeed {
        volume,
        instance_id: instance_id(&vm.name, vm.uid),
        hostname: c.hostname.clone(),
        user_data: c.user_data.clone().unwrap_or_default(),
        ssh_keys: c.ssh_keys.clone(),
    })
}

pub fn vm_disk(d: &Disk) -> VmDisk {
    VmDisk {
        pool: d.pool.clone(),
        volume: d.volume.clone(),
        size_bytes: d.size_bytes,
        format: d.format.as_str().into(),
        backing: d.backing.as_ref().map(|b| VolumeRef {
            pool: b.pool.clone(),
            volume: b.volume.clone(),
            format: b.format.as_str().into(),
        }),
        create: d.new_volume,
    }
}
