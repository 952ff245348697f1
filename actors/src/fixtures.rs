//! Test-only builders of hosts, VMs and states, shared by the decision modules' unit tests.

use drover_raft::model::{
    AdminState, Capacity, ClusterState, DesiredState, Host, HostHealth, ObservedState, Vm, VmSpec,
};

/// An up, active, armed host with this capacity, reachable for migrations.
pub fn host(name: &str, vcpus: u32, memory_mib: u64) -> Host {
    Host {
        health: HostHealth::Up,
        capacity: Capacity { vcpus, memory_mib },
        fencing_armed: true,
        admin: AdminState::Active,
        migration_uri: format!("qemu+tcp://{name}/system"),
        ..Host::new(name, "127.0.0.1:1")
    }
}

/// A VM that should run and runs, on `host` (placed once: generation 1).
pub fn vm(name: &str, host: Option<&str>, vcpus: u32, memory_mib: u64) -> Vm {
    Vm {
        observed: ObservedState::Running,
        host: host.map(String::from),
        generation: 1,
        ..Vm::new(name, VmSpec { vcpus, memory_mib }, DesiredState::Running)
    }
}

pub fn state(hosts: Vec<Host>, vms: Vec<Vm>) -> ClusterState {
    ClusterState {
        hosts: hosts.into_iter().map(|h| (h.name.clone(), h)).collect(),
        vms: vms.into_iter().map(|v| (v.name.clone(), v)).collect(),
        ..Default::default()
    }
}

/// A `dir` pool at `/srv/<name>` that every host includes, active with a terabyte free on
/// `active_on`.
pub fn pool(name: &str, shared: bool, active_on: &[&str]) -> drover_raft::model::Pool {
    use drover_raft::model::{Pool, PoolHosts, PoolKind, PoolOnHost, PoolSpec};
    let active = PoolOnHost::Active {
        capacity_bytes: 1 << 40,
        available_bytes: 1 << 40,
    };
    Pool {
        name: name.into(),
        spec: PoolSpec {
            kind: PoolKind::Dir {
                path: format!("/srv/{name}"),
            },
            shared,
            hosts: PoolHosts::All,
        },
        on_hosts: active_on
            .iter()
            .map(|h| (h.to_string(), active.clone()))
            .collect(),
    }
}

/// A ready qcow2 image `name` (1 GiB virtual) in `pool`, received by `host`, no copies.
pub fn image(name: &str, pool: &str, host: &str) -> drover_raft::model::Image {
    use drover_raft::model::{Image, ImageFormat, ImageState};
    Image {
        name: name.into(),
        pool: pool.into(),
        volume: format!("image-{name}-1"),
        host: host.into(),
        state: ImageState::Ready {
            format: ImageFormat::Qcow2,
            virtual_bytes: 1 << 30,
            file_bytes: 1 << 28,
            sha256: "ab".repeat(32),
        },
        copies: Default::default(),
    }
}

/// A 1 GiB boot disk of VM `vm` in `pool`, a linked clone of `image` (see [`image`]).
pub fn clone_disk(
    vm: &str,
    pool: &str,
    image: &drover_raft::model::Image,
) -> drover_raft::model::Disk {
    use drover_raft::model::{Disk, DiskBacking, ImageFormat};
    Disk {
        backing: Some(DiskBacking {
            image: image.name.clone(),
            pool: image.pool.clone(),
            volume: image.volume.clone(),
            format: ImageFormat::Qcow2,
        }),
        ..Disk::empty(pool, format!("{vm}-1-disk0.qcow2"), 1 << 30)
    }
}
