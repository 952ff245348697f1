//! `HostAgent`'s storage pool calls: admitted by the leader's term like every command,
//! checked again here (a controller of another version, or anyone holding a controller
//! certificate, is input like any other), then carried out on a blocking thread.

use drover_proto::agent::v1 as pb;
use drover_proto::identity::valid_name;
use drover_proto::pool_path::validate_pool_path;
use tonic::Status;
use tracing::info;

use super::AgentService;
use crate::error::HostdError;
use crate::hypervisor::{ManagedPool, VmDisk, VolumeRef};
use crate::seed::Seed;

pub(crate) fn pool_to_pb(p: ManagedPool) -> pb::PoolStatus {
    pb::PoolStatus {
        name: p.name,
        path: p.path,
        active: p.active,
        capacity_bytes: p.capacity_bytes,
        available_bytes: p.available_bytes,
    }
}

/// Pool names go into libvirt XML unescaped (see `pool_xml`): the cluster's strict rule.
fn validate_pool_name(name: &str) -> Result<(), HostdError> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(HostdError::InvalidArgument(format!(
            "pool name {name:?} must be 1-128 of A-Z a-z 0-9 . _ -"
        )))
    }
}

/// A VM's disks as the controller sent them, checked: their names and format go into
/// libvirt XML unescaped.
/// A start's cloud-init seed, its volume name checked like any other.
pub(crate) fn seed_from_pb(seed: pb::CloudInitSeed) -> Result<Seed, HostdError> {
    if !valid_name(&seed.volume) {
        return Err(HostdError::InvalidArgument(format!(
            "seed volume name {:?} must be 1-128 of A-Z a-z 0-9 . _ -",
            seed.volume
        )));
    }
    Ok(Seed {
        volume: seed.volume,
        instance_id: seed.instance_id,
        hostname: seed.hostname,
        user_data: seed.user_data,
        ssh_keys: seed.ssh_keys,
        // Set from the request's NICs (`service::networks`).
        network_config: None,
    })
}

/// Volumes to delete: only their pools and names matter (a VM's seed among them).
pub(crate) fn doomed_from_pb(disks: Vec<pb::VmDisk>) -> Result<Vec<VmDisk>, HostdError> {
    disks
        .into_iter()
        .map(|d| {
            check_volume_name(&d)?;
            Ok(VmDisk {
                pool: d.pool,
                volume: d.volume,
                size_bytes: d.size_bytes,
                format: d.format,
                backing: None,
                create: false,
            })
        })
        .collect()
}

fn check_volume_name(d: &pb::VmDisk) -> Result<(), HostdError> {
    validate_pool_name(&d.pool)?;
    if !valid_name(&d.volume) {
        return Err(HostdError::InvalidArgument(format!(
            "volume name {:?} must be 1-128 of A-Z a-z 0-9 . _ -",
            d.volume
        )));
    }
    Ok(())
}

pub(crate) fn disks_from_pb(disks: Vec<pb::VmDisk>) -> Result<Vec<VmDisk>, HostdError> {
    disks
        .into_iter()
        .map(|d| {
            check_volume_name(&d)?;
            if d.format != "qcow2" {
                return Err(HostdError::InvalidArgument(format!(
                    "disk format {:?} is not supported; supported: qcow2",
                    d.format
                )));
            }
            if d.size_bytes == 0 {
                return Err(HostdError::InvalidArgument(format!(
                    "volume {} has size 0",
                    d.volume
                )));
            }
            let backing = match d.backing {
                Some(b) => {
                    validate_pool_name(&b.pool)?;
                    if !valid_name(&b.volume) || !matches!(b.format.as_str(), "qcow2" | "raw") {
                        return Err(HostdError::InvalidArgument(format!(
                            "backing volume {:?} of format {:?}: names are 1-128 of A-Z a-z \
                             0-9 . _ -, formats qcow2 or raw",
                            b.volume, b.format
                        )));
                    }
                    Some(VolumeRef {
                        pool: b.pool,
                        volume: b.volume,
                        format: b.format,
                    })
                }
                None => None,
            };
            Ok(VmDisk {
                pool: d.pool,
                volume: d.volume,
                size_bytes: d.size_bytes,
                format: d.format,
                backing,
                create: d.create,
            })
        })
        .collect()
}

impl AgentService {
    /// Admits `term` for a pool command (there is no generation: pools have no placement).
    pub(super) async fn admit_pool_term(
        &self,
        op: &'static str,
        name: &str,
        term: u64,
    ) -> Result<(), Status> {
        self.fenced_term(
            op,
            name,
            Some(pb::Fence {
                term,
                generation: 0,
            }),
        )
        .await
        .map(drop)
    }

    pub(super) async fn ensure_pool_inner(
        &self,
        req: pb::EnsurePoolRequest,
    ) -> Result<pb::PoolStatus, Status> {
        let op = "EnsurePool";
        validate_pool_name(&req.name).map_err(self.failed(op, &req.name))?;
        if req.r#type != "dir" {
            return Err(self.failed(op, &req.name)(HostdError::InvalidArgument(
                format!(
                    "pool type {:?} is not supported here; supported: dir",
                    req.r#type
                ),
            )));
        }
        validate_pool_path(&req.path)
            .map_err(|e| self.failed(op, &req.name)(HostdError::InvalidArgument(e)))?;
        self.admit_pool_term(op, &req.name, req.term).await?;
        info!(host = %self.host(), pool = %req.name, path = %req.path, term = req.term, "EnsurePool");
        let (name, path) = (req.name.clone(), req.path.clone());
        let pool = self
            .shared
            .blocking(move |hv| hv.ensure_pool(&name, &path))
            .await
            .map_err(self.failed(op, &req.name))?;
        Ok(pool_to_pb(pool))
    }

    pub(super) async fn remove_pool_inner(
        &self,
        req: pb::RemovePoolRequest,
    ) -> Result<pb::RemovePoolResponse, Status> {
        let op = "RemovePool";
        validate_pool_name(&req.name).map_err(self.failed(op, &req.name))?;
        self.admit_pool_term(op, &req.name, req.term).await?;
        info!(host = %self.host(), pool = %req.name, term = req.term, "RemovePool");
        let name = req.name.clone();
        let existed = self
            .shared
            .blocking(move |hv| hv.remove_pool(&name))
            .await
            .map_err(self.failed(op, &req.name))?;
        Ok(pb::RemovePoolResponse { existed })
    }
}

impl AgentService {
    /// `GrowDisk`: a VM's disk grown to its new size, online when the guest runs.
    pub(super) async fn grow_disk_inner(
        &self,
        req: pb::GrowDiskRequest,
    ) -> Result<pb::GrowDiskResponse, Status> {
        let op = "GrowDisk";
        let name = req.name.clone();
        super::validate_name(&name).map_err(self.failed(op, &name))?;
        let disk = req
            .disk
            .ok_or_else(|| HostdError::InvalidArgument("the disk is missing".into()))
            .and_then(|d| disks_from_pb(vec![d]))
            .map_err(self.failed(op, &name))?
            .remove(0);
        let _guard = self.shared.lock_vm(&name).await;
        let fence = self.fenced(op, &name, req.fence).await?;
        info!(
            host = %self.host(), vm = %name, term = fence.term, generation = fence.generation,
            index = req.index, volume = %disk.volume, bytes = disk.size_bytes, "GrowDisk"
        );
        let index = req.index as usize;
        let vm = name.clone();
        let online = self
            .shared
            .blocking(move |hv| hv.grow_disk(&vm, index, &disk))
            .await
            .map_err(self.failed(op, &name))?;
        Ok(pb::GrowDiskResponse { online })
    }
}
