//! An overlay's VXLAN link, made with iproute2 (`ip`, `bridge`): libvirt creates the
//! overlay's bridge but has no VXLAN device. The link sends broadcast and unknown unicast
//! to every peer (head-end replication: one all-zero forwarding entry per peer, no
//! multicast needed in the underlay) and learns where guests' MACs are from what arrives.
//! Blocking: called from `spawn_blocking` like every libvirt call.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::process::Command;

use crate::error::HostdError;

/// IANA's VXLAN port.
pub const VXLAN_PORT: u16 = 4789;

/// The flooding entry's MAC: frames no learned entry claims go to every such entry.
const FLOOD_MAC: &str = "00:00:00:00:00:00";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanLink {
    pub name: String,
    pub vni: u32,
    /// This host's underlay address.
    pub local: Ipv4Addr,
    pub port: u16,
    /// The bridge it joins (libvirt's, of the overlay's network).
    pub bridge: String,
    pub mtu: Option<u32>,
    /// The other hosts' underlay addresses.
    pub peers: Vec<Ipv4Addr>,
}

/// Runs `program` (iproute2's, dnsmasq-utils'); its stdout, or why not.
pub(super) fn run(program: &'static str, args: &[&str]) -> Result<String, HostdError> {
    let out = Command::new(program)
        .args(args)
        .output()
        .map_err(|e| HostdError::Tool {
            program,
            reason: format!("{e} (Debian packages iproute2, dnsmasq-utils, iptables)"),
        })?;
    if !out.status.success() {
        return Err(HostdError::Tool {
            program,
            reason: format!(
                "`{program} {}` failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The peers of `dev`'s flooding entries in `bridge fdb show dev DEV` output.
fn flood_peers(fdb: &str) -> BTreeSet<Ipv4Addr> {
    fdb.lines()
        .filter(|l| l.starts_with(FLOOD_MAC))
        .filter_map(|l| {
            let mut words = l.split_whitespace();
            words.find(|w| *w == "dst")?;
            words.next()?.parse().ok()
        })
        .collect()
}

/// `ip -d link show` says the link is a VXLAN link with this VNI, local address and port.
fn matches(details: &str, link: &VxlanLink) -> bool {
    details.contains(&format!("vxlan id {} ", link.vni))
        && details.contains(&format!("local {} ", link.local))
        && details.contains(&format!("dstport {} ", link.port))
}

impl VxlanLink {
    /// Creates the link (or recreates one made differently), joins it to its bridge, and
    /// makes its flooding entries exactly the peers.
    pub fn ensure(&self) -> Result<(), HostdError> {
        match run("ip", &["-d", "link", "show", "dev", &self.name]) {
            Ok(details) if matches(&details, self) => {}
            Ok(_) => {
                tracing::info!(link = %self.name, "VXLAN link differs; recreating it");
                run("ip", &["link", "del", "dev", &self.name])?;
                self.create()?;
            }
            Err(_) => self.create()?,
        }
        let mut set = vec!["link", "set", "dev", &self.name, "master", &self.bridge];
        let mtu = self.mtu.map(|m| m.to_string());
        if let Some(mtu) = &mtu {
            set.extend(["mtu", mtu]);
        }
        set.push("up");
        run("ip", &set)?;
        let have = flood_peers(&run("bridge", &["fdb", "show", "dev", &self.name])?);
        let want: BTreeSet<Ipv4Addr> = self.peers.iter().copied().collect();
        for peer in want.difference(&have) {
            let dst = peer.to_string();
            run(
                "bridge",
                &["fdb", "append", FLOOD_MAC, "dev", &self.name, "dst", &dst],
            )?;
        }
        for gone in have.difference(&want) {
            let dst = gone.to_string();
            run(
                "bridge",
                &["fdb", "del", FLOOD_MAC, "dev", &self.name, "dst", &dst],
            )?;
        }
        Ok(())
    }

    fn create(&self) -> Result<(), HostdError> {
        let (vni, local, port) = (
            self.vni.to_string(),
            self.local.to_string(),
            self.port.to_string(),
        );
        tracing::info!(link = %self.name, vni = self.vni, %local, "creating VXLAN link");
        run(
            "ip",
            &[
                "link", "add", &self.name, "type", "vxlan", "id", &vni, "local", &local, "dstport",
                &port,
            ],
        )
        .map(drop)
    }

    /// Deletes link `name`; one already gone is fine.
    pub fn remove(name: &str) -> Result<(), HostdError> {
        if run("ip", &["link", "show", "dev", name]).is_err() {
            return Ok(());
        }
        run("ip", &["link", "del", "dev", name]).map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flooding_entries_are_read_from_bridge_fdb() {
        let fdb = "\
00:00:00:00:00:00 dst 10.99.0.2 self permanent
00:00:00:00:00:00 dst 10.99.0.3 self permanent
52:54:00:12:34:56 dst 10.99.0.2 self
33:33:00:00:00:01 master drvb7 permanent
";
        let peers: Vec<Ipv4Addr> = flood_peers(fdb).into_iter().collect();
        assert_eq!(
            peers,
            [Ipv4Addr::new(10, 99, 0, 2), Ipv4Addr::new(10, 99, 0, 3)]
        );
    }

    #[test]
    fn a_link_is_recognised_by_vni_local_address_and_port() {
        let link = VxlanLink {
            name: "drvx7".into(),
            vni: 7,
            local: Ipv4Addr::new(10, 99, 0, 1),
            port: VXLAN_PORT,
            bridge: "drvb7".into(),
            mtu: None,
            peers: vec![],
        };
        let details = "5: drvx7: <BROADCAST> mtu 1450\n    vxlan id 7 local 10.99.0.1 srcport 0 0 dstport 4789 ttl auto";
        assert!(matches(details, &link));
        let other = details.replace("local 10.99.0.1", "local 10.99.0.9");
        assert!(!matches(&other, &link));
    }
}
