//! A started guest's taps on overlay bridges, pinned in the bridge's forwarding table.
//!
//! Why: a VM restarted here by a failover was, until then, reached through this host's
//! VXLAN link, and the overlay bridge keeps that learned entry (for minutes) until the
//! guest happens to send something. Frames for it would go into the tunnel, to the dead
//! host. A live migration needs none of this (QEMU announces the guest's MACs when it
//! resumes, and the bridge learns them at once); a fresh start announces nothing. So once
//! a domain runs, hostd replaces the entry for each NIC's MAC with a static one on its
//! tap, which goes with the tap when the domain stops.
//! Blocking (iproute2): called from `spawn_blocking` like every libvirt call.

use super::vxlan::run;
use super::OVERLAY_BRIDGE;
use crate::error::HostdError;

/// One of a domain's NICs as libvirt started it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tap {
    pub mac: String,
    pub bridge: String,
    pub dev: String,
}

/// The taps in a running domain's XML: each `<interface>` with a MAC, a source bridge
/// and a target device. A small scanner: it reads XML libvirt formatted.
pub fn taps_in(xml: &str) -> Vec<Tap> {
    xml.split("<interface ")
        .skip(1)
        .filter_map(|rest| {
            let body = &rest[..rest.find("</interface>")?];
            Some(Tap {
                mac: attribute(body, "<mac ", "address")?,
                bridge: attribute(body, "<source ", "bridge")?,
                dev: attribute(body, "<target ", "dev")?,
            })
        })
        .collect()
}

/// The value of `name` in the first element starting with `element` in `xml`.
fn attribute(xml: &str, element: &str, name: &str) -> Option<String> {
    let start = xml.find(element)?;
    let tag = &xml[start..start + xml[start..].find('>')?];
    let at = tag.find(&format!(" {name}="))? + name.len() + 2;
    let quote = tag[at..]
        .chars()
        .next()
        .filter(|q| matches!(q, '\'' | '"'))?;
    let value = &tag[at + 1..];
    Some(value[..value.find(quote)?].to_string())
}

/// Pins each tap on an overlay bridge (see the module's documentation); others are left
/// to their bridge's learning.
pub fn pin(taps: &[Tap]) -> Result<(), HostdError> {
    for tap in taps.iter().filter(|t| t.bridge.starts_with(OVERLAY_BRIDGE)) {
        // Both came from libvirt's XML; checked anyway, as they become arguments.
        drover_proto::ifname::validate_ifname(&tap.dev)
            .map_err(|why| HostdError::InvalidArgument(format!("tap {:?}: {why}", tap.dev)))?;
        if !is_mac(&tap.mac) {
            return Err(HostdError::InvalidArgument(format!("MAC {:?}", tap.mac)));
        }
        run(
            "bridge",
            &[
                "fdb", "replace", &tap.mac, "dev", &tap.dev, "master", "static",
            ],
        )?;
    }
    Ok(())
}

/// Six colon-separated pairs of hex digits.
pub(super) fn is_mac(text: &str) -> bool {
    let parts: Vec<&str> = text.split(':').collect();
    parts.len() == 6
        && parts
            .iter()
            .all(|p| p.len() == 2 && p.chars().all(|c| c.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taps_are_read_from_libvirts_xml() {
        let xml = "<domain><devices>\
            <interface type='network'>\n  <mac address='02:00:00:00:00:01'/>\n  \
            <source network='drover-ov1' portid='x' bridge='drvb100'/>\n  \
            <target dev='vnet3'/>\n  <model type='virtio'/>\n</interface>\
            <interface type=\"network\"><mac address=\"02:00:00:00:00:02\"/>\
            <source network=\"drover-lan\" bridge=\"br0\"/><target dev=\"vnet4\"/></interface>\
            <interface type='network'><mac address='02:00:00:00:00:03'/>\
            <source network='drover-x'/></interface>\
            </devices></domain>";
        assert_eq!(
            taps_in(xml),
            [
                Tap {
                    mac: "02:00:00:00:00:01".into(),
                    bridge: "drvb100".into(),
                    dev: "vnet3".into()
                },
                Tap {
                    mac: "02:00:00:00:00:02".into(),
                    bridge: "br0".into(),
                    dev: "vnet4".into()
                },
            ]
        );
    }

    #[test]
    fn macs_are_checked() {
        assert!(is_mac("02:00:0a:ff:00:01"));
        assert!(!is_mac("02:00:0a:ff:00"));
        assert!(!is_mac("02:00:0a:ff:00:0g"));
        assert!(!is_mac("02:00:0a:ff:00:01 dev x"));
    }
}
