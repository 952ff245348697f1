//! Live migration on libvirt: peer-to-peer `virDomainMigrateToURI3`, its job statistics,
//! and aborting it. Split from `libvirt.rs` because it is the one place that reaches a
//! second libvirt (the destination's, for the completed job's statistics).

use virt::connect::Connect;
use virt::domain::{Domain, MigrateParameters};
use virt::sys;

use super::domain_xml;
use super::{JobStats, MigrationRequest};
use crate::error::HostdError;

/// Runs the migration of `dom` (a running managed domain) and blocks until it ends.
pub(super) fn migrate(dom: &Domain, req: &MigrationRequest) -> Result<JobStats, HostdError> {
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
        ..Default::default()
    };
    let mut flags = sys::VIR_MIGRATE_LIVE
        | sys::VIR_MIGRATE_PEER2PEER
        | sys::VIR_MIGRATE_PERSIST_DEST
        | sys::VIR_MIGRATE_UNDEFINE_SOURCE;
    if req.auto_converge {
        flags |= sys::VIR_MIGRATE_AUTO_CONVERGE;
    }
    dom.migrate_to_uri3(Some(&req.dest_uri), params, flags)
        .map_err(HostdError::libvirt("migrate_to_uri3"))?;
    // The source domain is gone now; the destination keeps the completed job's numbers.
    Ok(completed_at_destination(&req.dest_uri, &req.name).unwrap_or_default())
}

/// The destination's statistics of the incoming migration it just completed; `None` when
/// they cannot be read (the migration itself succeeded either way).
fn completed_at_destination(dest_uri: &str, name: &str) -> Option<JobStats> {
    // Dropping the connection closes it.
    let conn = Connect::open(Some(dest_uri)).ok()?;
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
    JobStats {
        data_total: s.data_total.unwrap_or(0),
        data_processed: s.data_processed.unwrap_or(0),
        data_remaining: s.data_remaining.unwrap_or(0),
        // libvirt reports dirtied pages per second.
        dirty_rate: s.mem_dirty_rate.unwrap_or(0).saturating_mul(page),
        iteration: s.mem_iteration.unwrap_or(0),
        elapsed_ms: s.time_elapsed.unwrap_or(0),
        downtime_ms: s.downtime,
    }
}
