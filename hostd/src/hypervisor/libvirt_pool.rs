//! Storage pools on libvirt: define, start, report and undefine the `dir` pools hostd owns
//! (named `drover-<pool>`, see [`pool_xml`]). The directory is the operator's: hostd checks
//! it is there and writable, and never creates or deletes it.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::unistd::{access, AccessFlags};
use virt::connect::Connect;
use virt::error::ErrorNumber;
use virt::storage_pool::StoragePool;
use virt::storage_vol::StorageVol;
use virt::stream::Stream;
use virt::sys;

use super::pool_xml::{self, dir_pool, target_path};
use super::{ManagedPool, UploadChunks, VmDisk};
use crate::error::HostdError;
use crate::seed::Seed;

/// How often a pool's space is re-read from its filesystem. libvirt reports what it read
/// at its last refresh, and a refresh rescans every volume: once per heartbeat would be
/// wasteful, once every few seconds keeps the scheduler's view current enough.
const REFRESH_EVERY: Duration = Duration::from_secs(10);

/// When each pool was last refreshed.
#[derive(Default)]
pub(super) struct Refreshed(Mutex<BTreeMap<String, Instant>>);

impl Refreshed {
    /// Whether `name` is due for a refresh now; marks it refreshed if so.
    fn due(&self, name: &str) -> bool {
        let mut at = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match at.get(name) {
            Some(t) if now.duration_since(*t) < REFRESH_EVERY => false,
            _ => {
                at.insert(name.to_string(), now);
                true
            }
        }
    }

    fn forget(&self, name: &str) {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(name);
    }
}

fn is(err: &virt::error::Error, code: ErrorNumber) -> bool {
    err.code().is(code)
}

/// The path must be a directory this process may write to: a pool elsewhere would fail
/// later, at the first disk, with a less helpful message.
fn check_dir(path: &str) -> Result<(), HostdError> {
    let bad = |reason: String| HostdError::PoolPath {
        path: path.to_string(),
        reason,
    };
    let meta = std::fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => bad("does not exist".into()),
        _ => bad(e.to_string()),
    })?;
    if !meta.is_dir() {
        return Err(bad("is not a directory".into()));
    }
    access(Path::new(path), AccessFlags::W_OK | AccessFlags::X_OK)
        .map_err(|errno| bad(format!("is not writable ({})", errno.desc())))
}

fn lookup(conn: &Connect, name: &str) -> Result<Option<StoragePool>, HostdError> {
    match conn.lookup_storage_pool_by_name(&pool_xml::libvirt_name(name)) {
        Ok(pool) => Ok(Some(pool)),
        Err(e) if is(&e, ErrorNumber::NoStoragePool) => Ok(None),
        Err(e) => Err(HostdError::libvirt("lookup_storage_pool_by_name")(e)),
    }
}

fn path_of(pool: &StoragePool) -> Result<String, HostdError> {
    let xml = pool
        .xml_desc(0)
        .map_err(HostdError::libvirt("storage_pool_xml_desc"))?;
    Ok(target_path(&xml).unwrap_or_default().to_string())
}

fn stop_and_undefine(pool: &StoragePool) -> Result<(), HostdError> {
    if pool
        .is_active()
        .map_err(HostdError::libvirt("storage_pool_is_active"))?
    {
        pool.destroy()
            .map_err(HostdError::libvirt("storage_pool_destroy"))?;
    }
    pool.undefine()
        .map_err(HostdError::libvirt("storage_pool_undefine"))
}

fn describe(pool: &StoragePool, name: &str, path: String) -> Result<ManagedPool, HostdError> {
    let info = pool
        .info()
        .map_err(HostdError::libvirt("storage_pool_get_info"))?;
    Ok(ManagedPool {
        name: name.to_string(),
        path,
        active: info.state == virt::sys::VIR_STORAGE_POOL_RUNNING,
        capacity_bytes: info.capacity,
        available_bytes: info.available,
    })
}

pub(super) fn ensure(
    conn: &Connect,
    refreshed: &Refreshed,
    name: &str,
    path: &str,
) -> Result<ManagedPool, HostdError> {
    check_dir(path)?;
    let pool = match lookup(conn, name)? {
        Some(pool) if path_of(&pool)? == path => pool,
        existing => {
            // A pool of this name at another path: the cluster's pool was deleted and
            // declared again elsewhere. The old definition goes; its files stay.
            if let Some(old) = existing {
                stop_and_undefine(&old)?;
            }
            let pool = conn
                .define_storage_pool_xml(&dir_pool(name, path), 0)
                .map_err(HostdError::libvirt("storage_pool_define_xml"))?;
            pool.set_autostart(true)
                .map_err(HostdError::libvirt("storage_pool_set_autostart"))?;
            pool
        }
    };
    if pool
        .is_active()
        .map_err(HostdError::libvirt("storage_pool_is_active"))?
    {
        pool.refresh(0)
            .map_err(HostdError::libvirt("storage_pool_refresh"))?;
    } else {
        // Starting a dir pool reads its directory (and its space) afresh.
        pool.create(0)
            .map_err(HostdError::libvirt("storage_pool_create"))?;
    }
    refreshed.due(name);
    describe(&pool, name, path.to_string())
}

pub(super) fn remove(
    conn: &Connect,
    refreshed: &Refreshed,
    name: &str,
) -> Result<bool, HostdError> {
    refreshed.forget(name);
    match lookup(conn, name)? {
        Some(pool) => stop_and_undefine(&pool).map(|()| true),
        None => Ok(false),
    }
}

/// Every pool hostd owns, sorted by name; active ones refreshed when due.
pub(super) fn list(conn: &Connect, refreshed: &Refreshed) -> Result<Vec<ManagedPool>, HostdError> {
    let all = conn
        .list_all_storage_pools(0)
        .map_err(HostdError::libvirt("list_all_storage_pools"))?;
    let mut pools = Vec::new();
    for pool in all {
        let Ok(lv_name) = pool.name() else { continue };
        let Some(name) = pool_xml::cluster_name(&lv_name) else {
            continue;
        };
        // A pool undefined between the listing and these calls is skipped.
        let vanished = |e: &HostdError| matches!(e, HostdError::Libvirt { source, .. } if is(source, ErrorNumber::NoStoragePool));
        let active = pool.is_active().unwrap_or(false);
        if active && refreshed.due(name) {
            if let Err(e) = pool.refresh(0) {
                tracing::warn!(pool = name, error = %e, "cannot refresh storage pool");
            }
        }
        match path_of(&pool).and_then(|path| describe(&pool, name, path)) {
            Ok(p) => pools.push(p),
            Err(e) if vanished(&e) => {}
            Err(e) => return Err(e),
        }
    }
    pools.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(pools)
}

/// Pool `name`, which must be set up here.
fn pool_here(conn: &Connect, name: &str) -> Result<StoragePool, HostdError> {
    lookup(conn, name)?.ok_or_else(|| HostdError::PoolMissing {
        pool: name.to_string(),
    })
}

/// The pool a VM's disk lives in, which must be set up here.
fn disk_pool(conn: &Connect, disk: &VmDisk) -> Result<StoragePool, HostdError> {
    pool_here(conn, &disk.pool)
}

/// The path of volume `volume` of pool `pool`, which must both be here.
fn volume_path(conn: &Connect, pool: &str, volume: &str) -> Result<String, HostdError> {
    let p = pool_here(conn, pool)?;
    let mut found = p.lookup_storage_vol_by_name(volume);
    if matches!(&found, Err(e) if is(e, ErrorNumber::NoStorageVolume)) {
        // Another host may have written it into a shared pool since this one's listing.
        if let Err(e) = p.refresh(0) {
            tracing::warn!(pool, error = %e, "cannot refresh storage pool");
        }
        found = p.lookup_storage_vol_by_name(volume);
    }
    match found {
        Ok(vol) => vol
            .path()
            .map_err(HostdError::libvirt("storage_vol_get_path")),
        Err(e) if is(&e, ErrorNumber::NoStorageVolume) => Err(HostdError::VolumeMissing {
            pool: pool.to_string(),
            volume: volume.to_string(),
        }),
        Err(e) => Err(HostdError::libvirt("storage_vol_lookup_by_name")(e)),
    }
}

/// The path of `disk`'s volume, created (empty, thin) if it is not there yet and `create`
/// says the VM has never run; otherwise a missing volume is refused: the VM's data is not
/// here. A volume of that name is the VM's own: names carry its incarnation.
pub(super) fn ensure_volume(
    conn: &Connect,
    disk: &VmDisk,
    create: bool,
) -> Result<String, HostdError> {
    ensure_volume_with(conn, disk, create, 0)
}

/// A migration's destination volume for `disk`, created first: a disk without a base
/// image with its qcow2 metadata preallocated (as libvirt precreates one itself), so the
/// copy writes into allocated clusters; a clone as an overlay on its image (preallocating
/// an overlay would hide the image).
pub(super) fn ensure_copy_target(conn: &Connect, disk: &VmDisk) -> Result<String, HostdError> {
    let flags = if disk.backing.is_none() && disk.format == "qcow2" {
        sys::VIR_STORAGE_VOL_CREATE_PREALLOC_METADATA
    } else {
        0
    };
    ensure_volume_with(conn, disk, true, flags)
}

fn ensure_volume_with(
    conn: &Connect,
    disk: &VmDisk,
    create: bool,
    create_flags: u32,
) -> Result<String, HostdError> {
    let pool = disk_pool(conn, disk)?;
    // A file put there since the pool's last refresh (a shared filesystem mounted late)
    // must be found, not created over.
    if let Err(e) = pool.refresh(0) {
        tracing::warn!(pool = %disk.pool, error = %e, "cannot refresh storage pool");
    }
    let vol = match pool.lookup_storage_vol_by_name(&disk.volume) {
        Ok(vol) => vol,
        Err(e) if is(&e, ErrorNumber::NoStorageVolume) && !create => {
            return Err(HostdError::VolumeMissing {
                pool: disk.pool.clone(),
                volume: disk.volume.clone(),
            });
        }
        Err(e) if is(&e, ErrorNumber::NoStorageVolume) => {
            // A linked clone's base must be here: the image's pool set up on this host.
            let backing = match &disk.backing {
                Some(b) => Some((volume_path(conn, &b.pool, &b.volume)?, b.format.as_str())),
                None => None,
            };
            tracing::info!(pool = %disk.pool, volume = %disk.volume, bytes = disk.size_bytes, backing = ?backing, "creating volume");
            let xml = pool_xml::volume(disk, backing.as_ref().map(|(p, f)| (p.as_str(), *f)));
            StorageVol::create_xml(&pool, &xml, create_flags)
                .map_err(HostdError::libvirt("storage_vol_create_xml"))?
        }
        Err(e) => return Err(HostdError::libvirt("storage_vol_lookup_by_name")(e)),
    };
    // The cluster grew the disk while the VM was stopped: the volume follows, here, before
    // the domain opens it (qcow2 grows in place; the guest sees the new size at boot).
    let capacity = vol
        .info()
        .map_err(HostdError::libvirt("storage_vol_get_info"))?
        .capacity;
    if capacity < disk.size_bytes {
        tracing::info!(pool = %disk.pool, volume = %disk.volume, from = capacity, to = disk.size_bytes, "growing volume");
        vol.resize(disk.size_bytes, 0)
            .map_err(HostdError::libvirt("storage_vol_resize"))?;
    }
    vol.path()
        .map_err(HostdError::libvirt("storage_vol_get_path"))
}

/// The path of `seed`'s volume in pool `pool`, built and uploaded unless it is there: its
/// name carries the VM's incarnation and its settings never change, so one found (built
/// by an earlier start, here or on another host of a shared pool) is the same seed — but
/// for its network config, which follows the VM's NICs: a seed without the current one
/// (a NIC added or removed while the VM was stopped) is built again.
pub(super) fn ensure_seed(conn: &Connect, pool: &str, seed: &Seed) -> Result<String, HostdError> {
    let p = pool_here(conn, pool)?;
    if let Err(e) = p.refresh(0) {
        tracing::warn!(pool, error = %e, "cannot refresh storage pool");
    }
    if let Ok(vol) = p.lookup_storage_vol_by_name(&seed.volume) {
        if seed_is_current(conn, pool, seed) {
            return vol
                .path()
                .map_err(HostdError::libvirt("storage_vol_get_path"));
        }
        tracing::info!(pool, volume = %seed.volume, "cloud-init seed outdated (NICs changed); building it again");
        vol.delete(0)
            .map_err(HostdError::libvirt("storage_vol_delete"))?;
    }
    let iso = seed.build_iso()?;
    tracing::info!(pool, volume = %seed.volume, bytes = iso.len(), "creating cloud-init seed");
    let mut chunks = std::iter::once(Ok(iso.clone()));
    match upload(conn, pool, &seed.volume, iso.len() as u64, &mut chunks) {
        Err(HostdError::UploadUnsupported(why)) => {
            // The test driver keeps no data: an empty volume of the seed's size stands in,
            // and nothing boots on that driver to read it.
            tracing::warn!(pool, volume = %seed.volume, %why, "seed volume left empty");
            let disk = VmDisk {
                pool: pool.to_string(),
                volume: seed.volume.clone(),
                size_bytes: iso.len() as u64,
                format: "raw".into(),
                backing: None,
                create: true,
            };
            StorageVol::create_xml(&p, &pool_xml::volume(&disk, None), 0)
                .map_err(HostdError::libvirt("storage_vol_create_xml"))?
                .path()
                .map_err(HostdError::libvirt("storage_vol_get_path"))
        }
        other => other,
    }
}

/// Whether the seed volume in `pool` carries `seed`'s network config (the ISO holds
/// each file's bytes as they are). One that cannot be read (the test driver keeps no
/// data) is taken as current.
fn seed_is_current(conn: &Connect, pool: &str, seed: &Seed) -> bool {
    let Some(config) = &seed.network_config else {
        return true;
    };
    let mut bytes = Vec::new();
    let read = download(conn, pool, &seed.volume, &mut |chunk| {
        bytes.extend_from_slice(&chunk);
        true
    });
    match read {
        Ok(()) if bytes.iter().any(|b| *b != 0) => {
            bytes.windows(config.len()).any(|w| w == config.as_bytes())
        }
        _ => true,
    }
}

/// Whether `disk`'s volume is in its pool (which must be set up here).
pub(super) fn volume_exists(conn: &Connect, disk: &VmDisk) -> Result<bool, HostdError> {
    let pool = disk_pool(conn, disk)?;
    if let Err(e) = pool.refresh(0) {
        tracing::warn!(pool = %disk.pool, error = %e, "cannot refresh storage pool");
    }
    match pool.lookup_storage_vol_by_name(&disk.volume) {
        Ok(_) => Ok(true),
        Err(e) if is(&e, ErrorNumber::NoStorageVolume) => Ok(false),
        Err(e) => Err(HostdError::libvirt("storage_vol_lookup_by_name")(e)),
    }
}

/// Deletes `disk`'s volume; one already gone is fine. A pool not set up here is refused:
/// the volume may well exist, and a VM forgotten now would leave it behind for good.
pub(super) fn delete_volume(conn: &Connect, disk: &VmDisk) -> Result<(), HostdError> {
    let pool = disk_pool(conn, disk)?;
    match pool.lookup_storage_vol_by_name(&disk.volume) {
        Ok(vol) => {
            tracing::info!(pool = %disk.pool, volume = %disk.volume, "deleting volume");
            vol.delete(0)
                .map_err(HostdError::libvirt("storage_vol_delete"))
        }
        Err(e) if is(&e, ErrorNumber::NoStorageVolume) => Ok(()),
        Err(e) => Err(HostdError::libvirt("storage_vol_lookup_by_name")(e)),
    }
}

/// Deletes volume `volume` of pool `pool`; `false` when it was not there.
pub(super) fn delete_named(conn: &Connect, pool: &str, volume: &str) -> Result<bool, HostdError> {
    let p = pool_here(conn, pool)?;
    match p.lookup_storage_vol_by_name(volume) {
        Ok(vol) => {
            tracing::info!(pool, volume, "deleting volume");
            vol.delete(0)
                .map_err(HostdError::libvirt("storage_vol_delete"))?;
            Ok(true)
        }
        Err(e) if is(&e, ErrorNumber::NoStorageVolume) => Ok(false),
        Err(e) => Err(HostdError::libvirt("storage_vol_lookup_by_name")(e)),
    }
}

/// Streams volume `volume` of `pool` to `out`, whole, with libvirt's volume download;
/// stops when `out` returns false (the stream is aborted then).
pub(super) fn download(
    conn: &Connect,
    pool: &str,
    volume: &str,
    out: &mut dyn FnMut(Vec<u8>) -> bool,
) -> Result<(), HostdError> {
    let p = pool_here(conn, pool)?;
    let vol = match p.lookup_storage_vol_by_name(volume) {
        Ok(v) => v,
        Err(e) if is(&e, ErrorNumber::NoStorageVolume) => {
            return Err(HostdError::VolumeMissing {
                pool: pool.to_string(),
                volume: volume.to_string(),
            })
        }
        Err(e) => return Err(HostdError::libvirt("storage_vol_lookup_by_name")(e)),
    };
    let stream = Stream::new(conn, 0).map_err(HostdError::libvirt("stream_new"))?;
    // Length 0: to the end of the volume.
    vol.download(&stream, 0, 0, 0)
        .map_err(HostdError::libvirt("storage_vol_download"))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match stream.recv(&mut buf) {
            Ok(0) => break,
            Ok(n) if n > 0 => {
                if !out(buf[..n as usize].to_vec()) {
                    let _ = stream.abort();
                    return Ok(());
                }
            }
            Ok(_) => {
                let _ = stream.abort();
                return Err(HostdError::InvalidArgument(
                    "the volume download would block on a blocking stream".into(),
                ));
            }
            Err(e) => {
                let _ = stream.abort();
                return Err(HostdError::libvirt("stream_recv")(e));
            }
        }
    }
    stream
        .finish()
        .map_err(HostdError::libvirt("stream_finish"))
}

/// Creates `volume` in `pool` and streams `size_bytes` bytes of `data` into it with
/// libvirt's volume upload; the volume is deleted again if anything fails.
pub(super) fn upload(
    conn: &Connect,
    pool: &str,
    volume: &str,
    size_bytes: u64,
    data: UploadChunks<'_>,
) -> Result<String, HostdError> {
    let p = pool_here(conn, pool)?;
    if let Err(e) = p.refresh(0) {
        tracing::warn!(pool, error = %e, "cannot refresh storage pool");
    }
    if p.lookup_storage_vol_by_name(volume).is_ok() {
        return Err(HostdError::VolumeExists {
            pool: pool.to_string(),
            volume: volume.to_string(),
        });
    }
    let disk = VmDisk {
        pool: pool.to_string(),
        volume: volume.to_string(),
        size_bytes,
        format: "raw".into(),
        backing: None,
        create: true,
    };
    let vol = StorageVol::create_xml(&p, &pool_xml::volume(&disk, None), 0)
        .map_err(HostdError::libvirt("storage_vol_create_xml"))?;
    let result = fill(conn, &vol, size_bytes, data).and_then(|()| {
        vol.path()
            .map_err(HostdError::libvirt("storage_vol_get_path"))
    });
    if result.is_err() {
        if let Err(e) = vol.delete(0) {
            tracing::warn!(pool, volume, error = %e, "cannot delete a failed upload's volume");
        }
    }
    result
}

fn fill(
    conn: &Connect,
    vol: &StorageVol,
    size_bytes: u64,
    data: UploadChunks<'_>,
) -> Result<(), HostdError> {
    let stream = Stream::new(conn, 0).map_err(HostdError::libvirt("stream_new"))?;
    if let Err(e) = vol.upload(&stream, 0, size_bytes, 0) {
        // The test driver, for one, cannot store data.
        let _ = stream.abort();
        return Err(if is(&e, ErrorNumber::NoSupport) {
            HostdError::UploadUnsupported(e.message().to_string())
        } else {
            HostdError::libvirt("storage_vol_upload")(e)
        });
    }
    let mut sent = 0u64;
    for chunk in data {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                let _ = stream.abort();
                return Err(e);
            }
        };
        if sent + chunk.len() as u64 > size_bytes {
            let _ = stream.abort();
            return Err(HostdError::InvalidArgument(format!(
                "the file is larger than the {size_bytes} bytes announced"
            )));
        }
        let mut rest = chunk.as_slice();
        while !rest.is_empty() {
            match stream.send(rest) {
                Ok(n) if n > 0 => rest = &rest[n as usize..],
                Ok(_) => {
                    let _ = stream.abort();
                    return Err(HostdError::InvalidArgument(
                        "libvirt accepted no more bytes".into(),
                    ));
                }
                Err(e) => {
                    let _ = stream.abort();
                    return Err(HostdError::libvirt("stream_send")(e));
                }
            }
        }
        sent += chunk.len() as u64;
    }
    if sent != size_bytes {
        let _ = stream.abort();
        return Err(HostdError::InvalidArgument(format!(
            "the file ended after {sent} of the {size_bytes} bytes announced"
        )));
    }
    stream
        .finish()
        .map_err(HostdError::libvirt("stream_finish"))
}
