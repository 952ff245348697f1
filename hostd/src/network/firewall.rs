//! Security groups on a host: one libvirt nwfilter, `drover-sg`, the same on every host,
//! and each NIC's rules as that filter's parameters in the domain's interface XML. Because
//! the rules travel in the domain XML, a live migration carries them (the destination
//! needs only the filter, which hostd defines whenever it wires a network), and a change
//! reaches a running guest by updating its interface (`virDomainUpdateDeviceFlags`).
//!
//! The filter keeps `clean-traffic` (no spoofing), lets out whatever the guest sends and in
//! the replies to it (conntrack), DHCP answers, and new incoming TCP, UDP and ICMP only
//! where a rule allows them; everything else incoming is dropped. Pure (the XML), tested.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

/// The nwfilter's name.
pub const SG_FILTER: &str = "drover-sg";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
    Icmp,
}

/// New incoming `proto` traffic from `from` to ports `ports` (all: 1-65535; ICMP: none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowRule {
    pub proto: Proto,
    pub ports: (u16, u16),
    pub from: (Ipv4Addr, u8),
}

/// Each protocol's rules are a set of parallel lists (one iterator each); an empty list
/// would leave its variables undefined, which libvirt refuses, so it holds one entry no
/// packet matches: from 0.0.0.0/32, which no incoming packet comes from.
const NOTHING: AllowRule = AllowRule {
    proto: Proto::Tcp,
    ports: (1, 1),
    from: (Ipv4Addr::UNSPECIFIED, 32),
};

fn var(proto: Proto) -> &'static str {
    match proto {
        Proto::Tcp => "SG_TCP",
        Proto::Udp => "SG_UDP",
        Proto::Icmp => "SG_ICMP",
    }
}

/// The filter's XML (`virNWFilterDefineXML`).
pub fn filter_xml() -> String {
    let mut xml = String::new();
    let _ = writeln!(xml, "<filter name='{SG_FILTER}' chain='root'>");
    let _ = writeln!(xml, "  <filterref filter='clean-traffic'/>");
    let rule = |xml: &mut String, action: &str, direction: &str, priority: u32, body: &str| {
        let _ = writeln!(
            xml,
            "  <rule action='{action}' direction='{direction}' priority='{priority}'>\n    {body}\n  </rule>"
        );
    };
    rule(
        &mut xml,
        "accept",
        "out",
        100,
        "<all state='NEW,ESTABLISHED,RELATED'/>",
    );
    rule(
        &mut xml,
        "accept",
        "in",
        100,
        "<all state='ESTABLISHED,RELATED'/>",
    );
    // DHCP answers come from the server's port to the client's, often broadcast.
    rule(
        &mut xml,
        "accept",
        "in",
        110,
        "<udp srcportstart='67' dstportstart='68'/>",
    );
    for (proto, element, iterator) in [(Proto::Tcp, "tcp", 1), (Proto::Udp, "udp", 2)] {
        let v = var(proto);
        rule(
            &mut xml,
            "accept",
            "in",
            200,
            &format!(
                "<{element} srcipaddr='${v}_NET[@{iterator}]' srcipmask='${v}_MASK[@{iterator}]' \
                 dstportstart='${v}_LO[@{iterator}]' dstportend='${v}_HI[@{iterator}]' state='NEW'/>"
            ),
        );
    }
    let v = var(Proto::Icmp);
    rule(
        &mut xml,
        "accept",
        "in",
        200,
        &format!("<icmp srcipaddr='${v}_NET[@3]' srcipmask='${v}_MASK[@3]' state='NEW'/>"),
    );
    rule(&mut xml, "drop", "in", 900, "<all/>");
    let _ = writeln!(xml, "</filter>");
    xml
}

/// The `<filterref>` of a NIC with address `ip` whose guest takes in only what `rules`
/// allow. Without an address (a network without subnets) libvirt learns the guest's
/// (DHCP, ARP), and clean-traffic holds it to that.
pub fn filterref(ip: Option<Ipv4Addr>, rules: &[AllowRule]) -> String {
    let mut xml = String::new();
    let _ = writeln!(xml, "      <filterref filter='{SG_FILTER}'>");
    let param = |xml: &mut String, name: &str, value: &str| {
        let _ = writeln!(xml, "        <parameter name='{name}' value='{value}'/>");
    };
    if let Some(ip) = ip {
        param(&mut xml, "IP", &ip.to_string());
    }
    for proto in [Proto::Tcp, Proto::Udp, Proto::Icmp] {
        let mut of: Vec<&AllowRule> = rules.iter().filter(|r| r.proto == proto).collect();
        if of.is_empty() {
            of.push(&NOTHING);
        }
        let v = var(proto);
        for r in of {
            param(&mut xml, &format!("{v}_NET"), &r.from.0.to_string());
            param(&mut xml, &format!("{v}_MASK"), &r.from.1.to_string());
            if proto != Proto::Icmp {
                param(&mut xml, &format!("{v}_LO"), &r.ports.0.to_string());
                param(&mut xml, &format!("{v}_HI"), &r.ports.1.to_string());
            }
        }
    }
    let _ = writeln!(xml, "      </filterref>");
    xml
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_drops_what_no_rule_lets_in() {
        let xml = filter_xml();
        assert!(xml.contains("<filterref filter='clean-traffic'/>"), "{xml}");
        assert!(xml.contains("state='ESTABLISHED,RELATED'"), "{xml}");
        assert!(xml.contains("dstportstart='$SG_TCP_LO[@1]'"), "{xml}");
        assert!(xml.contains("srcipaddr='$SG_ICMP_NET[@3]'"), "{xml}");
        assert!(
            xml.contains("<rule action='drop' direction='in' priority='900'>"),
            "{xml}"
        );
    }

    #[test]
    fn rules_become_parallel_lists_and_an_empty_kind_matches_nothing() {
        let rules = [
            AllowRule {
                proto: Proto::Tcp,
                ports: (22, 22),
                from: (Ipv4Addr::new(10, 0, 0, 0), 8),
            },
            AllowRule {
                proto: Proto::Tcp,
                ports: (80, 81),
                from: (Ipv4Addr::UNSPECIFIED, 0),
            },
        ];
        let xml = filterref(Some(Ipv4Addr::new(10, 77, 0, 10)), &rules);
        assert!(
            xml.contains("<parameter name='IP' value='10.77.0.10'/>"),
            "{xml}"
        );
        let tcp_nets: Vec<&str> = xml.lines().filter(|l| l.contains("'SG_TCP_NET'")).collect();
        assert_eq!(tcp_nets.len(), 2, "{xml}");
        assert!(xml.contains("name='SG_TCP_HI' value='81'"), "{xml}");
        // No UDP or ICMP rule: one entry from 0.0.0.0/32, which nothing comes from.
        assert!(xml.contains("name='SG_UDP_NET' value='0.0.0.0'"), "{xml}");
        assert!(xml.contains("name='SG_ICMP_MASK' value='32'"), "{xml}");
        assert!(!xml.contains("SG_ICMP_LO"), "ICMP has no ports: {xml}");
        // No address known: libvirt learns it; the groups still hold.
        let xml = filterref(None, &rules);
        assert!(!xml.contains("name='IP'"), "{xml}");
        assert!(xml.contains("name='SG_TCP_LO' value='22'"), "{xml}");
    }
}
