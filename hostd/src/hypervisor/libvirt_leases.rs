//! The DHCP leases libvirt's dnsmasq holds on a network (`virNetworkGetDHCPLeases`, which
//! the `virt` crate does not wrap): hostd releases those the cluster no longer gives
//! (`network::leases`).

use std::ffi::CStr;
use std::net::Ipv4Addr;

use virt::network::Network;
use virt::sys;

use crate::error::HostdError;

/// Every IPv4 lease on `network`, as (MAC, address).
#[allow(unsafe_code)]
pub(super) fn leases(network: &Network) -> Result<Vec<(String, Ipv4Addr)>, HostdError> {
    let mut array: *mut sys::virNetworkDHCPLeasePtr = std::ptr::null_mut();
    // SAFETY: `network` holds a live virNetworkPtr for the whole call; the out-pointer
    // points to a local that lives past it.
    let count =
        unsafe { sys::virNetworkGetDHCPLeases(network.as_ptr(), std::ptr::null(), &mut array, 0) };
    if count < 0 {
        return Err(HostdError::libvirt("network_get_dhcp_leases")(
            virt::error::Error::last_error(),
        ));
    }
    let mut found = Vec::new();
    for i in 0..count as usize {
        // SAFETY: libvirt returned `count` lease pointers at `array`, each valid until
        // freed below; their strings are NUL-terminated or NULL.
        let lease = unsafe { *array.add(i) };
        let text = |p: *mut std::os::raw::c_char| {
            (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
        };
        // SAFETY: as above.
        let (mac, ip) = unsafe { (text((*lease).mac), text((*lease).ipaddr)) };
        if let (Some(mac), Some(Ok(ip))) = (mac, ip.map(|ip| ip.parse::<Ipv4Addr>())) {
            found.push((mac, ip));
        }
        // SAFETY: each lease is freed once, with libvirt's own function.
        unsafe { sys::virNetworkDHCPLeaseFree(lease) };
    }
    if !array.is_null() {
        // SAFETY: the array itself was allocated by libvirt with malloc.
        unsafe { libc::free(array.cast()) };
    }
    Ok(found)
}
