//! An overlay's DHCP server kept to its host.
//!
//! Why: every host carrying an overlay with DHCP gives its bridge the server's address and
//! runs a dnsmasq on it (a guest may move to any of them). Without a fence, a guest's
//! DHCP broadcast and its ARP for the server cross the tunnel, and every host answers: the
//! answers are the same, but each host's bridge claims the server's address with its own
//! MAC. hostd keeps DHCP and the server's ARP off the VXLAN link with ebtables (the
//! bridge's frame filter), in a chain of its own per link, so that each guest hears its
//! own host only.
//! Blocking: called from `spawn_blocking` like every libvirt call.

use std::net::Ipv4Addr;

use super::vxlan::run;
use crate::error::HostdError;

/// The chain hostd owns for VXLAN link `link`.
fn chain(link: &str) -> String {
    format!("DROVER-{link}")
}

/// Where the chain is jumped to from: frames bridged out of or into the link, frames the
/// host sends out of it, frames it receives from it.
fn jumps(link: &str) -> [[String; 4]; 4] {
    let j = |builtin: &str, dir: &str| [builtin.into(), dir.into(), link.to_string(), chain(link)];
    [
        j("FORWARD", "-o"),
        j("FORWARD", "-i"),
        j("OUTPUT", "-o"),
        j("INPUT", "-i"),
    ]
}

/// The chain's rules: no DHCP either way, no ARP asking for or answering from `server`.
fn rules(server: Ipv4Addr) -> Vec<Vec<String>> {
    let server = server.to_string();
    let rule = |words: &[&str]| words.iter().map(|w| w.to_string()).collect::<Vec<_>>();
    vec![
        rule(&[
            "-p",
            "IPv4",
            "--ip-proto",
            "udp",
            "--ip-dport",
            "67",
            "-j",
            "DROP",
        ]),
        rule(&[
            "-p",
            "IPv4",
            "--ip-proto",
            "udp",
            "--ip-sport",
            "67",
            "-j",
            "DROP",
        ]),
        rule(&["-p", "ARP", "--arp-ip-dst", &server, "-j", "DROP"]),
        rule(&["-p", "ARP", "--arp-ip-src", &server, "-j", "DROP"]),
    ]
}

fn ebtables(args: &[&str]) -> Result<String, HostdError> {
    run("ebtables", args)
}

/// Fences DHCP served from `server` off link `link`; with `None` (no DHCP on the
/// overlay), removes any fence. Idempotent: the chain is rebuilt every time.
pub fn ensure(link: &str, server: Option<Ipv4Addr>) -> Result<(), HostdError> {
    let Some(server) = server else {
        return remove(link);
    };
    let chain = chain(link);
    if ebtables(&["-L", &chain]).is_err() {
        ebtables(&["-N", &chain, "-P", "RETURN"])?;
    }
    ebtables(&["-F", &chain])?;
    for rule in rules(server) {
        let mut args = vec!["-A", chain.as_str()];
        args.extend(rule.iter().map(String::as_str));
        ebtables(&args)?;
    }
    // One jump each: delete any, then append.
    delete_jumps(link);
    for [builtin, dir, link, target] in jumps(link) {
        ebtables(&["-A", &builtin, &dir, &link, "-j", &target])?;
    }
    Ok(())
}

/// Removes link `link`'s fence, if it has one.
pub fn remove(link: &str) -> Result<(), HostdError> {
    let chain = chain(link);
    if ebtables(&["-L", &chain]).is_err() {
        return Ok(());
    }
    delete_jumps(link);
    ebtables(&["-X", &chain]).map(drop)
}

/// Deletes the jumps to link `link`'s chain (none there is fine). Bounded: hostd adds one
/// of each, a few more can only be someone else's doing.
fn delete_jumps(link: &str) {
    const AT_MOST: usize = 8;
    for [builtin, dir, link, target] in jumps(link) {
        for _ in 0..AT_MOST {
            if ebtables(&["-D", &builtin, &dir, &link, "-j", &target]).is_err() {
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fence_names_the_link_and_the_server() {
        assert_eq!(chain("drvx100"), "DROVER-drvx100");
        // ebtables chain names are at most 31 bytes: the longest link name fits.
        assert!(chain("drvx16777215").len() <= 31);
        let r = rules(Ipv4Addr::new(10, 77, 0, 2));
        assert_eq!(r.len(), 4);
        assert!(r[2].contains(&"10.77.0.2".to_string()));
        assert_eq!(
            jumps("drvx100")[0],
            ["FORWARD", "-o", "drvx100", "DROVER-drvx100"]
        );
    }
}
