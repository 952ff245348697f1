//! NIC hot-plug on a running domain: `virDomainAttachDeviceFlags` and
//! `virDomainDetachDeviceFlags`, on the live domain and (when it is persistent) on its
//! definition where that is not yet as wanted. They disagree only while a guest has not
//! released an unplugged NIC (the definition lost it; the next start is from the cluster's
//! state anyway). Both are idempotent by MAC: a repeat finds
//! the work done. An unplug is the guest's to complete (ACPI hot-plug); it counts only
//! once the live domain has no NIC with that MAC any more.

use std::time::{Duration, Instant};

use virt::domain::Domain;
use virt::sys;

use crate::error::HostdError;
use crate::network::VmNic;

/// How long an unplug waits for the guest to let go of the device (libvirt itself waits
/// up to 5 s before it returns).
pub(super) const UNPLUG_WAIT: Duration = Duration::from_secs(15);
const UNPLUG_POLL: Duration = Duration::from_millis(200);

/// Whether the domain's XML has a NIC with `mac` (libvirt writes MACs lower case).
fn has_mac(xml: &str, mac: &str) -> bool {
    xml.contains(&format!("<mac address='{mac}'/>"))
}

/// The `<interface>` element with `mac` in a domain's XML, as libvirt wrote it: what
/// `virDomainDetachDeviceFlags` wants (it parses a whole device, then finds it by MAC).
fn interface_with_mac(xml: &str, mac: &str) -> Option<String> {
    let wanted = format!("<mac address='{mac}'/>");
    let mut rest = xml;
    while let Some(start) = rest.find("<interface ") {
        let len = rest[start..].find("</interface>")? + "</interface>".len();
        let element = &rest[start..start + len];
        if element.contains(&wanted) {
            return Some(element.to_string());
        }
        rest = &rest[start + len..];
    }
    None
}

/// The definitions a change to the NIC with `mac` applies to: the live domain, and the
/// persistent one too where it is persistent and `wanted` (has the MAC or not) is not
/// yet so there — a retried unplug, say, whose config went the first time.
fn flags(dom: &Domain, mac: &str, wanted: bool) -> Result<u32, HostdError> {
    let persistent = dom
        .is_persistent()
        .map_err(HostdError::libvirt("is_persistent"))?;
    let mut flags = sys::VIR_DOMAIN_AFFECT_LIVE;
    if persistent {
        let config = dom
            .xml_desc(sys::VIR_DOMAIN_XML_INACTIVE)
            .map_err(HostdError::libvirt("xml_desc"))?;
        if has_mac(&config, mac) != wanted {
            flags |= sys::VIR_DOMAIN_AFFECT_CONFIG;
        }
    }
    Ok(flags)
}

fn live_xml(dom: &Domain) -> Result<String, HostdError> {
    dom.xml_desc(0).map_err(HostdError::libvirt("xml_desc"))
}

/// Plugs `nic` into the running `dom` unless it has it already.
pub(super) fn plug(dom: &Domain, nic: &VmNic) -> Result<(), HostdError> {
    if has_mac(&live_xml(dom)?, &nic.mac) {
        return Ok(());
    }
    dom.attach_device_flags(&nic.interface_xml(), flags(dom, &nic.mac, true)?)
        .map_err(HostdError::libvirt("attach_device_flags"))
}

/// Unplugs the NIC with `mac` from the running `dom` and waits until the guest released
/// it; `false`: it had none.
pub(super) fn unplug(dom: &Domain, vm: &str, mac: &str) -> Result<bool, HostdError> {
    let Some(xml) = interface_with_mac(&live_xml(dom)?, mac) else {
        return Ok(false);
    };
    dom.detach_device_flags(&xml, flags(dom, mac, false)?)
        .map_err(HostdError::libvirt("detach_device_flags"))?;
    let deadline = Instant::now() + UNPLUG_WAIT;
    loop {
        if !has_mac(&live_xml(dom)?, mac) {
            return Ok(true);
        }
        if Instant::now() >= deadline {
            return Err(HostdError::NicNotReleased {
                vm: vm.to_string(),
                mac: mac.to_string(),
                waited: UNPLUG_WAIT,
            });
        }
        // A blocking thread's bounded wait for the guest, as libvirt's own.
        std::thread::sleep(UNPLUG_POLL);
    }
}

/// `element` (an `<interface>` libvirt wrote) with its `<filterref>` replaced by `filter`
/// (what `VmNic::interface_xml` puts there; empty: none). Everything else stays as the
/// live domain has it (target, alias, PCI address), which an update must not change.
fn with_filter(element: &str, filter: &str) -> String {
    let mut out = element.to_string();
    if let Some(start) = out.find("<filterref ") {
        let end = match out[start..].find("</filterref>") {
            Some(close) => start + close + "</filterref>".len(),
            None => start + out[start..].find("/>").map_or(0, |e| e + 2),
        };
        out.replace_range(start..end, "");
    }
    if let Some(close) = out.rfind("</interface>") {
        out.insert_str(close, filter);
    }
    out
}

/// The `<filterref>` part of `nic`'s interface XML (empty: none).
fn filter_of(nic: &VmNic) -> String {
    let xml = nic.interface_xml();
    match (xml.find("<filterref "), xml.rfind("</filterref>")) {
        (Some(start), Some(end)) => xml[start..end + "</filterref>".len()].to_string(),
        _ => String::new(),
    }
}

/// Gives each of `nics` the running `dom` has its filter as `nic` says.
pub(super) fn update_filters(dom: &Domain, nics: &[VmNic]) -> Result<(), HostdError> {
    for nic in nics {
        let Some(element) = interface_with_mac(&live_xml(dom)?, &nic.mac) else {
            continue;
        };
        let updated = with_filter(&element, &filter_of(nic));
        if updated == element {
            continue;
        }
        // Both where both have it (an update of a definition without it fails).
        let mut both = sys::VIR_DOMAIN_AFFECT_LIVE;
        if flags(dom, &nic.mac, false)? & sys::VIR_DOMAIN_AFFECT_CONFIG != 0 {
            both |= sys::VIR_DOMAIN_AFFECT_CONFIG;
        }
        dom.update_device_flags(&updated, both)
            .map_err(HostdError::libvirt("update_device_flags"))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nic_is_found_by_its_mac_as_libvirt_writes_it() {
        let xml = "<interface type='network'>\n  <mac address='02:00:00:00:00:01'/>\n</interface>";
        assert!(has_mac(xml, "02:00:00:00:00:01"));
        assert!(!has_mac(xml, "02:00:00:00:00:02"));
    }

    #[test]
    fn a_filter_update_replaces_only_the_filterref() {
        let live = "<interface type='network'>\n  <mac address='02:00:00:00:00:01'/>\n  \
                    <filterref filter='clean-traffic'>\n    <parameter name='IP' value='10.0.0.5'/>\n  \
                    </filterref>\n  <address type='pci' slot='0x03'/>\n</interface>";
        let new =
            "<filterref filter='drover-sg'><parameter name='IP' value='10.0.0.5'/></filterref>";
        let updated = with_filter(live, new);
        assert!(!updated.contains("clean-traffic"), "{updated}");
        assert!(updated.contains(new), "{updated}");
        assert!(
            updated.contains("<address type='pci' slot='0x03'/>"),
            "{updated}"
        );
        assert!(updated.ends_with("</interface>"), "{updated}");
        let bare = with_filter(live, "");
        assert!(!bare.contains("filterref"), "{bare}");
    }

    #[test]
    fn the_interface_to_unplug_is_the_one_with_the_mac() {
        let xml = "<devices>\n<interface type='network'>\n  <mac address='02:00:00:00:00:01'/>\n  \
                   <source network='drover-a'/>\n</interface>\n<interface type='network'>\n  \
                   <mac address='02:00:00:00:00:02'/>\n  <source network='drover-b'/>\n\
                   </interface>\n</devices>";
        let second = interface_with_mac(xml, "02:00:00:00:00:02").unwrap();
        assert!(second.starts_with("<interface type='network'>"), "{second}");
        assert!(second.ends_with("</interface>"), "{second}");
        assert!(
            second.contains("drover-b") && !second.contains("drover-a"),
            "{second}"
        );
        assert_eq!(interface_with_mac(xml, "02:00:00:00:00:03"), None);
    }
}
