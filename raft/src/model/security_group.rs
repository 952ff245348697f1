//! Security groups: named allow-lists of incoming traffic. A VM in one or more groups
//! receives only what some rule of them allows (plus replies to what it sent itself, and
//! DHCP answers); a VM in none receives everything, as before groups existed. Pure: the
//! rules are checked here and enforced by hostd (libvirt nwfilter, `drover-sg`).

use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

/// Rules per group, and groups per VM: nwfilter instantiates one iptables rule per entry
/// on every interface, so both stay small.
pub const MAX_SG_RULES: usize = 64;
pub const MAX_VM_GROUPS: usize = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SgProto {
    Tcp,
    Udp,
    Icmp,
}

impl SgProto {
    pub fn as_str(self) -> &'static str {
        match self {
            SgProto::Tcp => "tcp",
            SgProto::Udp => "udp",
            SgProto::Icmp => "icmp",
        }
    }

    pub fn parse(text: &str) -> Option<SgProto> {
        match text {
            "tcp" => Some(SgProto::Tcp),
            "udp" => Some(SgProto::Udp),
            "icmp" => Some(SgProto::Icmp),
            _ => None,
        }
    }
}

/// Incoming `proto` traffic from `from` (an IPv4 network; `None`: anywhere) to ports
/// `ports` (TCP and UDP; `None`: all).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SgRule {
    pub proto: SgProto,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<(u16, u16)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from: Option<(Ipv4Addr, u8)>,
}

impl SgRule {
    pub fn validate(&self) -> Result<(), String> {
        if let Some((lo, hi)) = self.ports {
            if self.proto == SgProto::Icmp {
                return Err("ICMP has no ports".into());
            }
            if lo == 0 || lo > hi {
                return Err(format!(
                    "port range {lo}-{hi} is not within 1-65535, low first"
                ));
            }
        }
        if let Some((net, prefix)) = self.from {
            if prefix > 32 {
                return Err(format!("source {net}/{prefix}: the prefix is over 32"));
            }
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            if u32::from(net) & !mask != 0 {
                return Err(format!(
                    "source {net}/{prefix} has host bits set (the network is {}/{prefix})",
                    Ipv4Addr::from(u32::from(net) & mask)
                ));
            }
        }
        Ok(())
    }

    /// The ports as the wire carries them: `(0, 0)` for all.
    pub fn wire_ports(&self) -> (u32, u32) {
        self.ports
            .map_or((0, 0), |(lo, hi)| (u32::from(lo), u32::from(hi)))
    }

    /// The source as the wire carries it: a CIDR, empty for anywhere.
    pub fn wire_from(&self) -> String {
        self.from
            .map(|(net, prefix)| format!("{net}/{prefix}"))
            .unwrap_or_default()
    }

    /// `tcp:22`, `udp:5000-5100 from 10.0.0.0/8`, `icmp`.
    pub fn describe(&self) -> String {
        let mut text = self.proto.as_str().to_string();
        match self.ports {
            Some((lo, hi)) if lo == hi => text.push_str(&format!(":{lo}")),
            Some((lo, hi)) => text.push_str(&format!(":{lo}-{hi}")),
            None => {}
        }
        if let Some((net, prefix)) = self.from {
            text.push_str(&format!(" from {net}/{prefix}"));
        }
        text
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SecurityGroup {
    pub name: String,
    pub rules: Vec<SgRule>,
}

impl SecurityGroup {
    pub fn validate(&self) -> Result<(), String> {
        if self.rules.len() > MAX_SG_RULES {
            return Err(format!(
                "{} rules; a group holds at most {MAX_SG_RULES}",
                self.rules.len()
            ));
        }
        for rule in &self.rules {
            rule.validate()
                .map_err(|why| format!("rule {}: {why}", rule.describe()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(proto: SgProto, ports: Option<(u16, u16)>, from: Option<([u8; 4], u8)>) -> SgRule {
        SgRule {
            proto,
            ports,
            from: from.map(|(n, p)| (Ipv4Addr::from(n), p)),
        }
    }

    #[test]
    fn rules_are_checked_with_the_reason() {
        assert!(rule(SgProto::Tcp, Some((22, 22)), Some(([10, 0, 0, 0], 8)))
            .validate()
            .is_ok());
        assert!(rule(SgProto::Icmp, None, None).validate().is_ok());
        let bad = [
            (rule(SgProto::Icmp, Some((1, 1)), None), "no ports"),
            (rule(SgProto::Tcp, Some((0, 5)), None), "within 1-65535"),
            (rule(SgProto::Tcp, Some((90, 80)), None), "low first"),
            (
                rule(SgProto::Udp, None, Some(([10, 0, 0, 1], 8))),
                "host bits",
            ),
            (
                rule(SgProto::Udp, None, Some(([10, 0, 0, 0], 33))),
                "over 32",
            ),
        ];
        for (r, says) in bad {
            let e = r.validate().unwrap_err();
            assert!(e.contains(says), "{r:?}: {e}");
        }
        let many = SecurityGroup {
            name: "g".into(),
            rules: vec![rule(SgProto::Icmp, None, None); MAX_SG_RULES + 1],
        };
        assert!(many.validate().is_err());
    }

    #[test]
    fn rules_read_as_written() {
        assert_eq!(
            rule(SgProto::Tcp, Some((22, 22)), None).describe(),
            "tcp:22"
        );
        assert_eq!(
            rule(SgProto::Udp, Some((5000, 5100)), Some(([10, 0, 0, 0], 8))).describe(),
            "udp:5000-5100 from 10.0.0.0/8"
        );
    }
}
