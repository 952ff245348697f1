//! The security groups' nwfilter (`network::firewall`), defined through libvirt's
//! `virNWFilterDefineXML`, which the `virt` crate does not wrap. Defined once per hostd
//! process (a new hostd's filter replaces an older one's) and again whenever it is found
//! missing, before any domain or migration could name it.

use std::ffi::CString;
use std::sync::atomic::{AtomicBool, Ordering};

use virt::connect::Connect;
use virt::nwfilter::NWFilter;
use virt::sys;

use crate::error::HostdError;
use crate::network::firewall::{filter_xml, SG_FILTER};

static DEFINED: AtomicBool = AtomicBool::new(false);

/// The UUID of the filter libvirt has, if it has one.
#[allow(unsafe_code)]
fn existing_uuid(conn: &Connect) -> Option<String> {
    let name = CString::new(SG_FILTER).ok()?;
    // SAFETY: `conn` holds a live connection for the call; `name` outlives it.
    let ptr = unsafe { sys::virNWFilterLookupByName(conn.as_ptr(), name.as_ptr()) };
    if ptr.is_null() {
        return None;
    }
    // SAFETY: a filter pointer libvirt returned, freed once (by the wrapper's drop).
    let filter = unsafe { NWFilter::from_ptr(ptr) };
    filter.uuid_string().ok()
}

/// The filter's XML with `uuid`: libvirt redefines a filter only under its own UUID.
fn with_uuid(xml: &str, uuid: Option<&str>) -> String {
    match uuid {
        Some(uuid) => xml.replacen('\n', &format!("\n  <uuid>{uuid}</uuid>\n"), 1),
        None => xml.to_string(),
    }
}

/// Defines `drover-sg` unless this process has and it is still there.
#[allow(unsafe_code)]
pub(super) fn ensure(conn: &Connect) -> Result<(), HostdError> {
    let uuid = existing_uuid(conn);
    if DEFINED.load(Ordering::Relaxed) && uuid.is_some() {
        return Ok(());
    }
    let xml = CString::new(with_uuid(&filter_xml(), uuid.as_deref()))
        .map_err(|_| HostdError::InvalidArgument("the filter XML holds a NUL".into()))?;
    // SAFETY: `conn` holds a live connection for the call; `xml` outlives it.
    let ptr = unsafe { sys::virNWFilterDefineXML(conn.as_ptr(), xml.as_ptr()) };
    if ptr.is_null() {
        return Err(HostdError::libvirt("nwfilter_define_xml")(
            virt::error::Error::last_error(),
        ));
    }
    // SAFETY: as above.
    drop(unsafe { NWFilter::from_ptr(ptr) });
    tracing::info!(filter = SG_FILTER, "security group filter defined");
    DEFINED.store(true, Ordering::Relaxed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_redefinition_carries_the_filters_uuid() {
        let xml = with_uuid(&filter_xml(), Some("3194f725-eef1-4e2e-b3da-4150bb27557d"));
        assert!(
            xml.starts_with(&format!(
                "<filter name='{SG_FILTER}' chain='root'>\n  <uuid>3194f725-eef1-4e2e-b3da-4150bb27557d</uuid>\n"
            )),
            "{xml}"
        );
        assert_eq!(with_uuid(&filter_xml(), None), filter_xml());
    }
}
