//! Live migration on libvirt: peer-to-peer `virDomainMigrateToURI3`, its job statistics,
//! and aborting it. Split from `libvirt.rs` because it is the one place that reaches a
//! second libvirt (the destination's: to create the volumes of local disks before they are
//! copied, and for the completed job's statistics).
//!
//! Local disks (in pools each host has its own files of) go with the memory: libvirt's
//! non-shared storage migration mirrors them over NBD into volumes created here first on
//! the destination (same pool, name and size; a clone as an overlay on the same image,
//! which a shared pool holds, so only the overlay is copied: `NON_SHARED_INC`). Only
//! the disks named in `migrate_disks` are copied; shared ones stay where both hosts see
//! them. After a failure the volumes made on the destination are deleted here; after
//! success hostd deletes the source's copies once it has reported the migration done
//! (the VM's data lives on the destination then), and a migration back waits for them to
//! be gone.

use virt::connect::Connect;
use virt::domain::{Domain, MigrateParameters};
use virt::sys;

use super::{domain_xml, libvirt_pool};
use super::{JobStats, MigrationRequest, VmDisk};
use crate::error::HostdError;

/// Runs the migration of `dom` (a running managed domain) and blocks until it ends, its
/// local disks (if any) copied; their source copies are left to the caller.
pub(super) fn migrate(dom: &Domain, req: &MigrationRequest) -> Result<JobStats, HostdError> {
    if req.copy_disks.is_empty() {
        return migrate_memory(dom, req, &[], None);
    }
    let dest = Connect::open(Some(&req.dest_uri)).map_err(|source| HostdError::Connect {
        uri: req.dest_uri.clone(),
        source,
    })?;
    let created = prepare_destination(&dest, req)?;
    let targets: Vec<String> = req
        .copy_disks
        .iter()
        .map(|&i| domain_xml::disk_target(i))
        .collect();
    match migrate_memory(dom, req, &targets, Some(&dest)) {
        // The source's copies are stale now; the caller deletes them after reporting the
        // migration done (`MigrationRequest::source_copies`): the guest runs there already.
        Ok(stats) => Ok(stats),
        // Only while the guest still runs here: a migration reported failed after the
        // switch-over may have left it running there, on these very volumes.
        Err(e) if dom.is_active().unwrap_or(false) => {
            for disk in &created {
                if let Err(e) = libvirt_pool::delete_volume(&dest, disk) {
                    tracing::warn!(vm = %req.name, volume = %disk.volume, error = %e, "cannot delete a volume made for a failed migration");
                }
            }
            Err(e)
        }
        Err(e) => {
            tracing::warn!(vm = %req.name, "migration failed and the guest no longer runs here: the destination's volumes are kept");
            Err(e)
        }
    }
}

/// Creates on the destination the volumes of the disks `req` copies (and the seed, when
/// it is in a local pool); returns those it created, for the cleanup of a failure. A disk
/// volume there already is refused (VolumeExists, naming it); a seed there is the same
/// seed (read only, same name and contents) and is kept.
fn prepare_destination(dest: &Connect, req: &MigrationRequest) -> Result<Vec<VmDisk>, HostdError> {
    let mut created = Vec::new();
    let result = (|| {
        for disk in req.copied_disks().cloned() {
            // Never copy into a volume that is there already: a leftover of a migration
            // that died half-way, or — a pool declared local that is in fact shared — the
            // very file the guest runs on, which the source deletes after the copy. The
            // stale copy of the migration that just brought the VM here may still be
            // being deleted (after that one was reported done): it gets a moment to go.
            if !volume_gone_within(dest, &disk, STALE_COPY_GRACE)? {
                return Err(HostdError::VolumeExists {
                    pool: disk.pool.clone(),
                    volume: disk.volume.clone(),
                });
            }
            created.push(disk.clone());
            libvirt_pool::ensure_copy_target(dest, &disk)?;
        }
        if let (Some(seed), Some(disk)) = (&req.seed, req.local_seed()) {
            // As for disks: the last migration's copy may still be being deleted there;
            // one that stays is the same seed, and is kept.
            if volume_gone_within(dest, &disk, STALE_COPY_GRACE)? {
                created.push(disk.clone());
            }
            libvirt_pool::ensure_seed(dest, &disk.pool, seed)?;
        }
        Ok(())
    })();
    match result {
        Ok(()) => Ok(created),
        Err(e) => {
            for disk in &created {
                let _ = libvirt_pool::delete_volume(dest, disk);
            }
            Err(e)
        }
    }
}

/// How long a migration waits for the destination's copy of a disk to go away, which the
/// previous migration of the VM in the other direction deletes after reporting done.
/// Deleting a 1 GiB file took ~0.2 s; a genuine leftover waits this long to be refused.
const STALE_COPY_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// Whether `disk`'s volume is absent on `conn`, or goes within `grace`.
fn volume_gone_within(
    conn: &Connect,
    disk: &VmDisk,
    grace: std::time::Duration,
) -> Result<bool, HostdError> {
    let deadline = std::time::Instant::now() + grace;
    loop {
        if !libvirt_pool::volume_exists(conn, disk)? {
            return Ok(true);
        }
        if std::time::Instant::now() >= deadline {
            return Ok(false);
        }
        // A blocking thread of hostd's (libvirt calls run on spawn_blocking).
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The migration call itself; `copy` names the guest disks to mirror; `dest`, a
/// connection to the destination already open (for the completed job's statistics).
fn migrate_memory(
    dom: &Domain,
    req: &MigrationRequest,
    copy: &[String],
    dest: Option<&Connect>,
) -> Result<JobStats, HostdError> {
    let live = dom
        .xml_desc(sys::VIR_DOMAIN_XML_MIGRATABLE)
        .map_err(HostdError::libvirt("xml_desc"))?;
    let inactive = dom
        .xml_desc(sys::VIR_DOMAIN_XML_MIGRATABLE | sys::VIR_DOMAIN_XML_INACTIVE)
        .map_err(HostdError::libvirt("xml_desc"))?;
    let rewrite = |xml: &str| {
        domain_xml::with_marker(xml, req.new_generation, req.term).ok_or_else(|| {
            HostdError::InvalidArgument(format!("domain {} lost its drover marker", req.name))
        })
    };
    // Set before the job starts; QEMU keeps it as a migration parameter. Failing to set it
    // is not worth refusing the migration over, but the log must say so.
    if let Err(e) = dom.migrate_set_max_downtime(req.max_downtime_ms, 0) {
        tracing::warn!(vm = %req.name, error = %e.message(), "could not set max downtime");
    }
    let params = MigrateParameters {
        dest_xml: Some(rewrite(&live)?),
        persist_xml: Some(rewrite(&inactive)?),
        bandwidth: (req.bandwidth_mibps > 0).then_some(req.bandwidth_mibps),
        migrate_disks: copy.to_vec(),
        ..Default::default()
    };
    let mut flags = sys::VIR_MIGRATE_LIVE
        | sys::VIR_MIGRATE_PEER2PEER
        | sys::VIR_MIGRATE_PERSIST_DEST
        | sys::VIR_MIGRATE_UNDEFINE_SOURCE;
    if req.auto_converge {
        flags |= sys::VIR_MIGRATE_AUTO_CONVERGE;
    }
    if !copy.is_empty() {
        // A clone's image is on the destination already (a shared pool, or a copy made
        // before): only each disk's top layer moves (INC). Disks without a base are copied
        // whole (the same bytes; measured a little faster than INC by bench_migration).
        let clones = req.copied_disks().any(|d| d.backing.is_some());
        flags |= if clones {
            sys::VIR_MIGRATE_NON_SHARED_INC
        } else {
            sys::VIR_MIGRATE_NON_SHARED_DISK
        };
    }
    dom.migrate_to_uri3(Some(&req.dest_uri), params, flags)
        .map_err(HostdError::libvirt("migrate_to_uri3"))?;
    // The source domain is gone now; the destination keeps the completed job's numbers.
    Ok(completed_at_destination(dest, &req.dest_uri, &req.name).unwrap_or_default())
}

/// The destination's statistics of the incoming migration it just completed; `None` when
/// they cannot be read (the migration itself succeeded either way). Over `dest`, or a
/// connection opened for it.
fn completed_at_destination(
    dest: Option<&Connect>,
    dest_uri: &str,
    name: &str,
) -> Option<JobStats> {
    // Dropping an own connection closes it.
    let own;
    let conn = match dest {
        Some(c) => c,
        None => {
            own = Connect::open(Some(dest_uri)).ok()?;
            &own
        }
    };
    let dom = conn.lookup_domain_by_name(name).ok()?;
    raw_job_stats(&dom, sys::VIR_DOMAIN_JOB_STATS_COMPLETED)
        .ok()
        .filter(|s| s.r#type != sys::VIR_DOMAIN_JOB_NONE as i32)
        .map(convert)
}

/// The running job of `dom`, `None` when there is none.
pub(super) fn job_stats(dom: &Domain) -> Result<Option<JobStats>, HostdError> {
    let stats = raw_job_stats(dom, 0)?;
    if stats.r#type == sys::VIR_DOMAIN_JOB_NONE as i32 {
        return Ok(None);
    }
    // While the job runs, libvirt's "downtime" is the expected one, not a measurement.
    Ok(Some(JobStats {
        downtime_ms: None,
        ..convert(stats)
    }))
}

/// Aborts `dom`'s running job.
pub(super) fn abort_job(dom: &Domain) -> Result<bool, HostdError> {
    if job_stats(dom)?.is_none() {
        return Ok(false);
    }
    // SAFETY: `dom` is a live `virDomainPtr` owned by `Domain` for the whole call;
    // virDomainAbortJob only reads it. The `virt` crate has no wrapper for this call.
    #[allow(unsafe_code)]
    let rc = unsafe { sys::virDomainAbortJob(dom.as_ptr()) };
    if rc < 0 {
        return Err(HostdError::libvirt("abort_job")(
            virt::error::Error::last_error(),
        ));
    }
    Ok(true)
}

/// `virDomainGetJobStats`. The `virt` crate's `Domain::job_stats` builds a `Vec` from the
/// parameter array libvirt returns, which is NULL when the domain has no job: undefined
/// behaviour (a debug build aborts the process). This copies the parameters out and frees
/// libvirt's array with libvirt's own function.
#[allow(unsafe_code)]
fn raw_job_stats(dom: &Domain, flags: u32) -> Result<virt::domain::JobStats, HostdError> {
    let mut kind: std::os::raw::c_int = 0;
    let mut params: sys::virTypedParameterPtr = std::ptr::null_mut();
    let mut count: std::os::raw::c_int = 0;
    // SAFETY: `dom` holds a live virDomainPtr for the whole call; the out-pointers point to
    // locals that live past it.
    let rc = unsafe {
        sys::virDomainGetJobStats(dom.as_ptr(), &mut kind, &mut params, &mut count, flags)
    };
    if rc < 0 {
        return Err(HostdError::libvirt("get_job_stats")(
            virt::error::Error::last_error(),
        ));
    }
    let copied: Vec<sys::virTypedParameter> = if params.is_null() || count <= 0 {
        Vec::new()
    } else {
        // SAFETY: libvirt returned `count` initialized parameters at `params`; they are
        // plain data (strings stay owned by libvirt until the free below, and the
        // conversion copies them).
        unsafe { std::slice::from_raw_parts(params, count as usize) }.to_vec()
    };
    let stats = virt::domain::JobStats::from((kind, copied));
    if !params.is_null() {
        // SAFETY: `params`/`count` are exactly what virDomainGetJobStats allocated.
        unsafe { sys::virTypedParamsFree(params, count) };
    }
    Ok(stats)
}

fn convert(s: virt::domain::JobStats) -> JobStats {
    let page = s.mem_page_size.unwrap_or(4096);
    // The data counters must cover a copied disk too: libvirt reports the disk mirror in
    // the disk_* counters, and whether its data_* counters include them has varied; the
    // larger of the two readings is right either way.
    let with_disk = |data: Option<u64>, mem: Option<u64>, disk: Option<u64>| {
        data.unwrap_or(0)
            .max(mem.unwrap_or(0).saturating_add(disk.unwrap_or(0)))
    };
    JobStats {
        data_total: with_disk(s.data_total, s.mem_total, s.disk_total),
        data_processed: with_disk(s.data_processed, s.mem_processed, s.disk_processed),
        data_remaining: with_disk(s.data_remaining, s.mem_remaining, s.disk_remaining),
        // libvirt reports dirtied pages per second.
        dirty_rate: s.mem_dirty_rate.unwrap_or(0).saturating_mul(page),
        iteration: s.mem_iteration.unwrap_or(0),
        elapsed_ms: s.time_elapsed.unwrap_or(0),
        downtime_ms: s.downtime,
    }
}
