//! NIC hot-plug on a running domain: `virDomainAttachDeviceFlags` and
//! `virDomainDetachDeviceFlags`, both on the live domain and (when it is persistent) its
//! definition, so that the two never disagree. Both are idempotent by MAC: a repeat finds
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

fn flags(dom: &Domain) -> Result<u32, HostdError> {
    let persistent = dom
        .is_persistent()
        .map_err(HostdError::libvirt("is_persistent"))?;
    let mut flags = sys::VIR_DOMAIN_AFFECT_LIVE;
    if persistent {
        flags |= sys::VIR_DOMAIN_AFFECT_CONFIG;
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
    dom.attach_device_flags(&nic.interface_xml(), flags(dom)?)
        .map_err(HostdError::libvirt("attach_device_flags"))
}

/// Unplugs the NIC with `mac` from the running `dom` and waits until the guest released
/// it; `false`: it had none.
pub(super) fn unplug(dom: &Domain, vm: &str, mac: &str) -> Result<bool, HostdError> {
    let Some(xml) = interface_with_mac(&live_xml(dom)?, mac) else {
        return Ok(false);
    };
    dom.detach_device_flags(&xml, flags(dom)?)
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
