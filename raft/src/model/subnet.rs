//! A network's IPv4 subnets: the prefix, the ranges addresses are handed out from, the
//! gateway and DNS servers guests are told of, and addresses kept out of the pool. Pure
//! address arithmetic; who holds an address is the network's (`Network::addresses`).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use super::{AddressHolder, NetworkError};

/// Longest prefix accepted: a /30 still has two host addresses.
pub const MAX_PREFIX: u8 = 30;
/// Shortest: a /8 is already 16 M addresses.
pub const MIN_PREFIX: u8 = 8;
/// Ranges (and reservations) per subnet, DNS servers per subnet.
pub const MAX_RANGES: usize = 32;
pub const MAX_DNS: usize = 4;

/// An inclusive range of addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AddrRange {
    pub first: Ipv4Addr,
    pub last: Ipv4Addr,
}

impl AddrRange {
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        self.first <= ip && ip <= self.last
    }

    fn overlaps(&self, other: &AddrRange) -> bool {
        self.first <= other.last && other.first <= self.last
    }
}

impl std::fmt::Display for AddrRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.first, self.last)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Subnet {
    /// The network address (host bits zero) and the prefix length.
    pub address: Ipv4Addr,
    pub prefix: u8,
    /// Where NIC addresses come from.
    pub ranges: Vec<AddrRange>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Ipv4Addr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<Ipv4Addr>,
    /// Addresses never handed out, nor given to a NIC that asks for one (routers,
    /// appliances outside drover's care).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reserved: Vec<AddrRange>,
    /// Where DHCP answers from on this subnet: every host carrying the network has this
    /// address on its bridge and serves the cluster's addresses (static entries only) from
    /// it. `None`: no DHCP (cloud-init's static config still gives guests their address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dhcp_server: Option<Ipv4Addr>,
}

impl Subnet {
    fn mask(&self) -> u32 {
        u32::MAX
            .checked_shl(32 - u32::from(self.prefix))
            .unwrap_or(0)
    }

    /// `10.10.0.0/24`.
    pub fn cidr(&self) -> String {
        format!("{}/{}", self.address, self.prefix)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.address)
    }

    fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.address) | !self.mask())
    }

    /// Whether two subnets share an address.
    pub fn overlaps(&self, other: &Subnet) -> bool {
        self.contains(other.address) || other.contains(self.address)
    }

    pub fn in_ranges(&self, ip: Ipv4Addr) -> bool {
        self.ranges.iter().any(|r| r.contains(ip))
    }

    /// Kept out of the pool: a reservation, the gateway, a DNS server, the DHCP server.
    pub fn is_reserved(&self, ip: Ipv4Addr) -> bool {
        self.reserved.iter().any(|r| r.contains(ip))
            || self.gateway == Some(ip)
            || self.dns.contains(&ip)
            || self.dhcp_server == Some(ip)
    }

    /// Checks the subnet on its own: a network address with its host bits zero, ranges
    /// inside it that miss its network and broadcast addresses and each other, a gateway
    /// and reservations inside it.
    pub fn validate(&self) -> Result<(), NetworkError> {
        let cidr = self.cidr();
        let bad = |reason: String| NetworkError::Subnet {
            cidr: cidr.clone(),
            reason,
        };
        if !(MIN_PREFIX..=MAX_PREFIX).contains(&self.prefix) {
            return Err(bad(format!(
                "the prefix must be /{MIN_PREFIX} to /{MAX_PREFIX}"
            )));
        }
        let base = Ipv4Addr::from(u32::from(self.address) & self.mask());
        if base != self.address {
            return Err(bad(format!(
                "host bits are set: the subnet is {base}/{}",
                self.prefix
            )));
        }
        if self.ranges.is_empty() {
            return Err(bad("no address range".into()));
        }
        if self.ranges.len() > MAX_RANGES || self.reserved.len() > MAX_RANGES {
            return Err(bad(format!("at most {MAX_RANGES} ranges and reservations")));
        }
        if self.dns.len() > MAX_DNS {
            return Err(bad(format!("at most {MAX_DNS} DNS servers")));
        }
        let usable =
            |ip: Ipv4Addr| self.contains(ip) && ip != self.address && ip != self.broadcast();
        for (i, r) in self.ranges.iter().enumerate() {
            if r.first > r.last {
                return Err(bad(format!("range {r} ends before it starts")));
            }
            if !usable(r.first) || !usable(r.last) {
                return Err(bad(format!(
                    "range {r} is not inside its host addresses ({}-{})",
                    Ipv4Addr::from(u32::from(self.address) + 1),
                    Ipv4Addr::from(u32::from(self.broadcast()) - 1)
                )));
            }
            if let Some(other) = self.ranges[..i].iter().find(|o| o.overlaps(r)) {
                return Err(bad(format!("ranges {other} and {r} overlap")));
            }
        }
        for r in &self.reserved {
            if r.first > r.last || !self.contains(r.first) || !self.contains(r.last) {
                return Err(bad(format!("reservation {r} is not inside the subnet")));
            }
        }
        if let Some(gw) = self.gateway {
            if !usable(gw) {
                return Err(bad(format!("gateway {gw} is not a host address of it")));
            }
        }
        if let Some(server) = self.dhcp_server {
            if !usable(server) {
                return Err(bad(format!(
                    "DHCP server {server} is not a host address of it"
                )));
            }
        }
        Ok(())
    }

    /// The last address of the reservation `ip` is in, if it is in one.
    fn reserved_until(&self, ip: u32) -> Option<u32> {
        self.reserved
            .iter()
            .filter(|r| r.contains(Ipv4Addr::from(ip)))
            .map(|r| u32::from(r.last))
            .max()
    }

    /// The lowest address of the ranges that is neither held nor reserved.
    pub fn first_free(&self, held: &BTreeMap<Ipv4Addr, AddressHolder>) -> Option<Ipv4Addr> {
        let mut ranges = self.ranges.clone();
        ranges.sort();
        for r in ranges {
            let mut candidate = u32::from(r.first);
            let last = u32::from(r.last);
            // Held addresses come in order: skip past each one that is the candidate, so
            // a range is walked once however full it is.
            let mut taken = held.range(r.first..=r.last).map(|(ip, _)| u32::from(*ip));
            let mut next_taken = taken.next();
            while candidate <= last {
                // A reservation is skipped whole: a /8 with a large one must not cost a
                // step per address on every node.
                if let Some(end) = self.reserved_until(candidate) {
                    candidate = end.saturating_add(1);
                    while next_taken.is_some_and(|t| t < candidate) {
                        next_taken = taken.next();
                    }
                    continue;
                }
                if next_taken == Some(candidate) {
                    next_taken = taken.next();
                } else if !self.is_reserved(Ipv4Addr::from(candidate)) {
                    return Some(Ipv4Addr::from(candidate));
                }
                candidate += 1;
            }
        }
        None
    }
}

/// Reads an address as the operator may write it relative to a subnet: a full address,
/// or `.N` (`.M.N`, …) for the subnet's address with its last octets replaced (`.10` in
/// 10.10.0.0/24 is 10.10.0.10).
pub fn parse_relative(subnet: Ipv4Addr, text: &str) -> Result<Ipv4Addr, String> {
    let Some(tail) = text.strip_prefix('.') else {
        return text
            .parse()
            .map_err(|_| format!("{text:?} is not an IPv4 address"));
    };
    let parts: Vec<&str> = tail.split('.').collect();
    if parts.len() > 3 {
        return Err(format!("{text:?} has more than three octets after the dot"));
    }
    let mut octets = subnet.octets();
    let start = 4 - parts.len();
    for (i, part) in parts.iter().enumerate() {
        octets[start + i] = part
            .parse()
            .map_err(|_| format!("{text:?}: {part:?} is not an octet (0-255)"))?;
    }
    Ok(Ipv4Addr::from(octets))
}

/// Reads `A-B` (or one address) relative to `subnet`, as [`parse_relative`] does.
pub fn parse_range(subnet: Ipv4Addr, text: &str) -> Result<AddrRange, String> {
    let (first, last) = text.split_once('-').unwrap_or((text, text));
    Ok(AddrRange {
        first: parse_relative(subnet, first.trim())?,
        last: parse_relative(subnet, last.trim())?,
    })
}

/// Reads `10.10.0.0/24`.
pub fn parse_cidr(text: &str) -> Result<(Ipv4Addr, u8), String> {
    let (addr, prefix) = text
        .split_once('/')
        .ok_or_else(|| format!("{text:?} is not a subnet like 10.10.0.0/24"))?;
    let addr = addr
        .parse()
        .map_err(|_| format!("{addr:?} is not an IPv4 address"))?;
    let prefix = prefix
        .parse()
        .map_err(|_| format!("{prefix:?} is not a prefix length"))?;
    Ok((addr, prefix))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> Ipv4Addr {
        s.parse().unwrap()
    }

    fn subnet(cidr: &str, ranges: &[&str]) -> Subnet {
        let (address, prefix) = parse_cidr(cidr).unwrap();
        Subnet {
            address,
            prefix,
            ranges: ranges
                .iter()
                .map(|r| parse_range(address, r).unwrap())
                .collect(),
            gateway: None,
            dns: vec![],
            reserved: vec![],
            dhcp_server: None,
        }
    }

    #[test]
    fn relative_addresses_replace_the_last_octets() {
        let base = ip("10.10.0.0");
        assert_eq!(parse_relative(base, ".10"), Ok(ip("10.10.0.10")));
        assert_eq!(parse_relative(base, ".1.10"), Ok(ip("10.10.1.10")));
        assert_eq!(parse_relative(base, "192.168.1.1"), Ok(ip("192.168.1.1")));
        assert!(parse_relative(base, ".256").unwrap_err().contains("octet"));
        assert!(parse_relative(base, "x")
            .unwrap_err()
            .contains("not an IPv4"));
        assert_eq!(
            parse_range(base, ".10-.200"),
            Ok(AddrRange {
                first: ip("10.10.0.10"),
                last: ip("10.10.0.200")
            })
        );
    }

    #[test]
    fn a_subnet_must_be_well_formed() {
        subnet("10.10.0.0/24", &[".10-.200"]).validate().unwrap();
        let cases = [
            (
                subnet("10.10.0.5/24", &[".10-.20"]),
                "the subnet is 10.10.0.0/24",
            ),
            (subnet("10.10.0.0/31", &[".0-.1"]), "prefix"),
            (subnet("10.10.0.0/24", &[]), "no address range"),
            (subnet("10.10.0.0/24", &[".20-.10"]), "ends before"),
            (subnet("10.10.0.0/24", &[".0-.10"]), "not inside its host"),
            (subnet("10.10.0.0/24", &[".10-.255"]), "not inside its host"),
            (
                subnet("10.10.0.0/24", &["10.10.1.1-10.10.1.9"]),
                "not inside",
            ),
            (subnet("10.10.0.0/24", &[".10-.20", ".15-.30"]), "overlap"),
        ];
        for (s, says) in cases {
            let e = s.validate().unwrap_err().to_string();
            assert!(e.contains(says), "{e} does not say {says}");
        }
        let mut gw = subnet("10.10.0.0/24", &[".10-.20"]);
        gw.gateway = Some(ip("10.10.1.1"));
        assert!(gw.validate().unwrap_err().to_string().contains("gateway"));
    }

    /// The address after a reservation of all but one of a /8's, held addresses inside
    /// the reservation notwithstanding.
    #[test]
    fn the_address_after_a_large_reservation_is_found() {
        let mut s = subnet("10.0.0.0/8", &["10.0.0.1-10.255.255.254"]);
        s.reserved = vec![parse_range(s.address, "10.0.0.1-10.255.255.253").unwrap()];
        let mut held = BTreeMap::new();
        held.insert(
            ip("10.0.0.5"),
            AddressHolder {
                vm: "a".into(),
                mac: "02:00:00:00:00:01".into(),
            },
        );
        assert_eq!(s.first_free(&held), Some(ip("10.255.255.254")));
    }

    #[test]
    fn the_first_free_address_skips_holders_reservations_and_the_gateway() {
        let mut s = subnet("10.10.0.0/24", &[".20-.22", ".10-.12"]);
        s.gateway = Some(ip("10.10.0.10"));
        s.dhcp_server = Some(ip("10.10.0.22"));
        s.reserved = vec![parse_range(s.address, ".11").unwrap()];
        let mut held = BTreeMap::new();
        let holder = AddressHolder {
            vm: "a".into(),
            mac: "02:00:00:00:00:01".into(),
        };
        assert_eq!(s.first_free(&held), Some(ip("10.10.0.12")));
        held.insert(ip("10.10.0.12"), holder.clone());
        assert_eq!(s.first_free(&held), Some(ip("10.10.0.20")));
        held.insert(ip("10.10.0.20"), holder.clone());
        // .22 is the DHCP server's.
        assert_eq!(s.first_free(&held), Some(ip("10.10.0.21")));
        held.insert(ip("10.10.0.21"), holder);
        assert_eq!(s.first_free(&held), None);
    }
}
