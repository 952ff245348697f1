//! `drover sg …`: security groups, and the parsing of their rules
//! (`PROTO[:PORT[-PORT]][,from=CIDR]`).

use drover_proto::v1 as pb;
use serde_json::{json, Value};

use super::commands::{client, json, read, Printed, Target};
use super::output::{table, Format};
use super::{ReadOpts, SgCmd};

/// `tcp:22`, `udp:5000-5100,from=10.0.0.0/8`, `icmp`, `icmp,from=10.1.0.0/16`.
pub fn parse_rule(text: &str) -> Result<pb::SecurityRule, String> {
    let mut parts = text.split(',');
    let head = parts.next().unwrap_or_default();
    let (proto, ports) = match head.split_once(':') {
        Some((proto, ports)) => (proto, Some(ports)),
        None => (head, None),
    };
    let mut rule = pb::SecurityRule {
        proto: proto.to_string(),
        ..Default::default()
    };
    if let Some(ports) = ports {
        let port = |p: &str| {
            p.parse::<u32>()
                .map_err(|_| format!("{text:?}: port {p:?} is not a number"))
        };
        let (lo, hi) = match ports.split_once('-') {
            Some((lo, hi)) => (port(lo)?, port(hi)?),
            None => (port(ports)?, port(ports)?),
        };
        rule.port_lo = lo;
        rule.port_hi = hi;
    }
    for part in parts {
        match part.split_once('=') {
            Some(("from", cidr)) => rule.from = cidr.to_string(),
            _ => return Err(format!("{text:?}: {part:?} is not from=CIDR")),
        }
    }
    Ok(rule)
}

fn describe(r: &pb::SecurityRule) -> String {
    let mut text = r.proto.clone();
    match (r.port_lo, r.port_hi) {
        (0, 0) => {}
        (lo, hi) if lo == hi => text.push_str(&format!(":{lo}")),
        (lo, hi) => text.push_str(&format!(":{lo}-{hi}")),
    }
    if !r.from.is_empty() {
        text.push_str(&format!(",from={}", r.from));
    }
    text
}

fn group_json(g: &pb::SecurityGroup) -> Value {
    json!({
        "name": g.name,
        "rules": g.rules.iter().map(describe).collect::<Vec<_>>(),
    })
}

fn show(format: Format, g: &pb::SecurityGroup) -> anyhow::Result<String> {
    Ok(match format {
        Format::Json => json(&group_json(g))?,
        Format::Table => table(&["NAME", "ALLOWS IN"], vec![row(g)]),
    })
}

fn row(g: &pb::SecurityGroup) -> Vec<String> {
    let rules: Vec<String> = g.rules.iter().map(describe).collect();
    vec![
        g.name.clone(),
        if rules.is_empty() {
            "(nothing new)".into()
        } else {
            rules.join(" ")
        },
    ]
}

/// Runs a `drover sg …` command.
pub async fn sg(target: &Target, format: Format, cmd: SgCmd) -> anyhow::Result<Printed> {
    let c = client(target)?;
    match cmd {
        SgCmd::Put { name, allow } => {
            let group = c
                .put_security_group(pb::PutSecurityGroupRequest { name, rules: allow })
                .await?;
            Ok(show(format, &group)?.into())
        }
        SgCmd::List {
            read: ReadOpts { stale },
        } => read(c.security_groups(stale).await?, stale, |groups| {
            Ok(match format {
                Format::Json => json(&groups.iter().map(group_json).collect())?,
                Format::Table => table(&["NAME", "ALLOWS IN"], groups.iter().map(row).collect()),
            })
        }),
        SgCmd::Delete { name } => {
            c.delete_security_group(&name).await?;
            Ok(match format {
                Format::Json => json(&json!({ "deleted": name }))?,
                Format::Table => format!("deleted security group {name}"),
            }
            .into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_as_written_and_read_back() {
        for text in [
            "tcp:22",
            "udp:5000-5100,from=10.0.0.0/8",
            "icmp",
            "icmp,from=10.1.0.0/16",
        ] {
            let rule = parse_rule(text).unwrap();
            assert_eq!(describe(&rule), text);
        }
        assert!(parse_rule("tcp:ssh").unwrap_err().contains("not a number"));
        assert!(parse_rule("tcp:22,to=1.2.3.4/32")
            .unwrap_err()
            .contains("not from=CIDR"));
    }
}
