//! A VLAN network's 802.1Q link on its parent interface, made with iproute2: libvirt
//! creates the network's bridge (as for an overlay) but makes no VLAN device. The link is
//! made before the libvirt network, so that a host that cannot make it (a kernel without
//! 802.1Q, this machine kind's) is refused before anything is defined; it joins the
//! bridge once libvirt has made it.
//! Blocking: called from `spawn_blocking` like every libvirt call.

use super::vxlan::run;
use crate::error::HostdError;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VlanLink {
    pub name: String,
    /// The interface the tagged frames leave by (the cluster checked the host has it).
    pub parent: String,
    pub tag: u16,
    /// The bridge it joins (libvirt's, of the VLAN's network).
    pub bridge: String,
    pub mtu: Option<u32>,
}

/// `ip -d link show` says the link is an 802.1Q link with this tag on this parent
/// (`NAME@PARENT:` in its first line).
fn matches(details: &str, link: &VlanLink) -> bool {
    details.contains(&format!("{}@{}:", link.name, link.parent))
        && details.contains(&format!("vlan protocol 802.1Q id {} ", link.tag))
}

/// Whether this kernel makes 802.1Q links: tried on a thread in a network namespace of
/// its own (gone with the thread), so nothing on the host changes. `false` where hostd may
/// not make namespaces (not root): it could not make the links either. Blocking.
pub fn kernel_makes_vlans() -> bool {
    std::thread::spawn(|| {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).ok()?;
        run(
            "ip",
            &[
                "link", "add", "drvp0", "type", "veth", "peer", "name", "drvp1",
            ],
        )
        .ok()?;
        let vlan = [
            "link", "add", "link", "drvp0", "name", "drvp0.1", "type", "vlan", "id", "1",
        ];
        Some(run("ip", &vlan).is_ok())
    })
    .join()
    .ok()
    .flatten()
    .unwrap_or(false)
}

impl VlanLink {
    /// Creates the link; not yet on its bridge. A device of its name made otherwise is
    /// refused, never replaced: the name says tag and parent, so it is another VLAN's
    /// (parents whose names collide in the hash) or not hostd's at all.
    pub fn ensure_link(&self) -> Result<(), HostdError> {
        match run("ip", &["-d", "link", "show", "dev", &self.name]) {
            Ok(details) if matches(&details, self) => Ok(()),
            Ok(_) => Err(HostdError::InvalidArgument(format!(
                "device {} exists and is not VLAN {} on {}; not replacing it",
                self.name, self.tag, self.parent
            ))),
            Err(_) => self.create(),
        }
    }

    /// Joins the link to its bridge, with the network's MTU, and brings it up.
    pub fn attach(&self) -> Result<(), HostdError> {
        let mut set = vec!["link", "set", "dev", &self.name, "master", &self.bridge];
        let mtu = self.mtu.map(|m| m.to_string());
        if let Some(mtu) = &mtu {
            set.extend(["mtu", mtu]);
        }
        set.push("up");
        run("ip", &set).map(drop)
    }

    /// Deletes link `name`; one already gone is fine.
    pub fn remove(name: &str) -> Result<(), HostdError> {
        super::VxlanLink::remove(name)
    }

    fn create(&self) -> Result<(), HostdError> {
        let tag = self.tag.to_string();
        tracing::info!(link = %self.name, tag = self.tag, parent = %self.parent, "creating VLAN link");
        let made = run(
            "ip",
            &[
                "link",
                "add",
                "link",
                &self.parent,
                "name",
                &self.name,
                "type",
                "vlan",
                "id",
                &tag,
            ],
        );
        match made {
            Err(HostdError::Tool { program, reason }) if reason.contains("Unknown device type") => {
                Err(HostdError::Tool {
                    program,
                    reason: format!(
                        "{}: this host's kernel cannot make 802.1Q VLAN links (module \
                         8021q), so it cannot carry VLAN networks",
                        reason.trim_end_matches('.')
                    ),
                })
            }
            other => other.map(drop),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_is_recognised_by_parent_and_tag() {
        let link = VlanLink {
            name: "drvq5".into(),
            parent: "eth0".into(),
            tag: 5,
            bridge: "drvl5".into(),
            mtu: None,
        };
        let details =
            "7: drvq5@eth0: <BROADCAST,MULTICAST,UP> mtu 1500 qdisc noqueue master drvl5\n    \
                       link/ether 52:54:00:aa:bb:cc brd ff:ff:ff:ff:ff:ff promiscuity 1\n    \
                       vlan protocol 802.1Q id 5 <REORDER_HDR> addrgenmode eui64";
        assert!(matches(details, &link));
        assert!(!matches(&details.replace("@eth0", "@eth1"), &link));
        assert!(!matches(&details.replace("id 5 ", "id 50 "), &link));
    }
}
