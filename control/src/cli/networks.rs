//! `drover net create|list|get|delete|ips`, `drover net subnet add|remove`, and the NIC
//! arguments of `drover vm create --nic` and `drover vm nic add|remove`.

use drover_proto::v1 as pb;
use serde_json::{json, Value};

use super::commands::{client, json, read, Printed, Target};
use super::output::{table, Format};
use super::{NetCmd, NicCmd, ReadOpts, SubnetCmd};
use crate::client::{NetworkOp, NicOp};

/// `NET` or `NET,ip=ADDRESS`, as `--nic` and `vm nic add` take it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NicArg {
    pub network: String,
    pub ip: Option<String>,
}

impl From<NicArg> for pb::NicSpec {
    fn from(n: NicArg) -> Self {
        pb::NicSpec {
            network: n.network,
            ip: n.ip.unwrap_or_default(),
        }
    }
}

pub fn parse_nic(text: &str) -> Result<NicArg, String> {
    let mut parts = text.split(',');
    let network = parts.next().unwrap_or_default().trim().to_string();
    if network.is_empty() {
        return Err(format!(
            "{text:?}: the network is missing (NET[,ip=ADDRESS])"
        ));
    }
    let mut ip = None;
    for part in parts {
        match part.split_once('=') {
            Some(("ip", value)) if ip.is_none() => ip = Some(value.trim().to_string()),
            _ => {
                return Err(format!(
                    "{text:?}: unknown or repeated option {part:?} (NET[,ip=ADDRESS])"
                ))
            }
        }
    }
    Ok(NicArg { network, ip })
}

pub fn nic_op(cmd: NicCmd) -> NicOp {
    match cmd {
        NicCmd::Add { vm, nic } => NicOp::Add(pb::AddNicRequest {
            vm,
            nic: Some(nic.into()),
        }),
        NicCmd::Remove { vm, mac } => NicOp::Remove(pb::RemoveNicRequest { vm, mac }),
    }
}

fn kind_text(n: &pb::Network) -> String {
    match n.r#type.as_str() {
        "bridge" => format!("bridge {}", n.bridge),
        "vxlan" => format!("vxlan {}", n.vni),
        "vlan" => format!("vlan {} on {}", n.vlan_tag, n.parent),
        other => other.to_string(),
    }
}

fn network_json(n: &pb::Network) -> Value {
    json!({
        "name": n.name,
        "type": n.r#type,
        "bridge": (!n.bridge.is_empty()).then_some(&n.bridge),
        "vni": (n.vni != 0).then_some(n.vni),
        "vlan_tag": (n.vlan_tag != 0).then_some(n.vlan_tag),
        "parent": (!n.parent.is_empty()).then_some(&n.parent),
        "mtu": (n.mtu != 0).then_some(n.mtu),
        "subnets": n.subnets.iter().map(|s| json!({
            "cidr": s.cidr,
            "ranges": s.ranges,
            "gateway": (!s.gateway.is_empty()).then_some(&s.gateway),
            "dns": s.dns,
            "reserved": s.reserved,
            "dhcp_server": (!s.dhcp_server.is_empty()).then_some(&s.dhcp_server),
        })).collect::<Vec<_>>(),
        "addresses": n.addresses.iter().map(|a| json!({
            "ip": a.ip, "vm": a.vm, "mac": a.mac,
        })).collect::<Vec<_>>(),
    })
}

fn network_rows(networks: &[pb::Network]) -> String {
    table(
        &["NAME", "KIND", "MTU", "SUBNETS", "ADDRESSES HELD"],
        networks
            .iter()
            .map(|n| {
                let subnets: Vec<&str> = n.subnets.iter().map(|s| s.cidr.as_str()).collect();
                vec![
                    n.name.clone(),
                    kind_text(n),
                    if n.mtu == 0 {
                        "-".into()
                    } else {
                        n.mtu.to_string()
                    },
                    if subnets.is_empty() {
                        "-".into()
                    } else {
                        subnets.join(",")
                    },
                    n.addresses.len().to_string(),
                ]
            })
            .collect(),
    )
}

fn network_text(n: &pb::Network) -> String {
    let mut out = network_rows(std::slice::from_ref(n));
    for s in &n.subnets {
        out.push_str(&format!(
            "\nsubnet {}: ranges {}",
            s.cidr,
            s.ranges.join(",")
        ));
        if !s.gateway.is_empty() {
            out.push_str(&format!(", gateway {}", s.gateway));
        }
        if !s.dns.is_empty() {
            out.push_str(&format!(", dns {}", s.dns.join(",")));
        }
        if !s.reserved.is_empty() {
            out.push_str(&format!(", reserved {}", s.reserved.join(",")));
        }
        if !s.dhcp_server.is_empty() {
            out.push_str(&format!(", DHCP from {}", s.dhcp_server));
        }
    }
    out
}

fn show(format: Format, n: &pb::Network) -> anyhow::Result<String> {
    match format {
        Format::Json => json(&network_json(n)),
        Format::Table => Ok(network_text(n)),
    }
}

fn ips(format: Format, n: &pb::Network) -> anyhow::Result<String> {
    match format {
        Format::Json => json(&network_json(n)["addresses"]),
        Format::Table => Ok(table(
            &["IP", "VM", "MAC"],
            n.addresses
                .iter()
                .map(|a| vec![a.ip.clone(), a.vm.clone(), a.mac.clone()])
                .collect(),
        )),
    }
}

/// The request `net create` makes; the options of other kinds are refused, not ignored.
fn create_request(cmd: NetCmd) -> anyhow::Result<pb::CreateNetworkRequest> {
    let NetCmd::Create {
        name,
        r#type,
        bridge,
        vni,
        tag,
        parent,
        mtu,
    } = cmd
    else {
        anyhow::bail!("not a create");
    };
    let stray = match r#type.as_str() {
        "bridge" => vni.map(|_| "--vni").or(tag.map(|_| "--tag")),
        "vxlan" => bridge.as_ref().map(|_| "--bridge").or(tag.map(|_| "--tag")),
        "vlan" => bridge.as_ref().map(|_| "--bridge").or(vni.map(|_| "--vni")),
        _ => None,
    };
    if let Some(option) = stray {
        anyhow::bail!("{option} does not apply to a {type} network", type = r#type);
    }
    let need = |what: &str, present: bool| {
        if present {
            Ok(())
        } else {
            Err(anyhow::anyhow!("a {type} network needs {what}", type = r#type))
        }
    };
    match r#type.as_str() {
        "bridge" => need("--bridge", bridge.is_some())?,
        "vxlan" => need("--vni", vni.is_some())?,
        "vlan" => need("--tag and --parent", tag.is_some() && parent.is_some())?,
        _ => {}
    }
    Ok(pb::CreateNetworkRequest {
        name,
        r#type,
        bridge: bridge.unwrap_or_default(),
        vni: vni.unwrap_or_default(),
        vlan_tag: tag.unwrap_or_default(),
        parent: parent.unwrap_or_default(),
        mtu: mtu.unwrap_or_default(),
    })
}

/// Runs a `drover net …` command.
pub async fn net(target: &Target, format: Format, cmd: NetCmd) -> anyhow::Result<Printed> {
    let c = client(target)?;
    let network = match cmd {
        NetCmd::Create { .. } => {
            c.network_op(NetworkOp::Create(create_request(cmd)?))
                .await?
        }
        NetCmd::List {
            read: ReadOpts { stale },
        } => {
            return read(c.networks(stale).await?, stale, |networks| {
                Ok(match format {
                    Format::Json => json(&networks.iter().map(network_json).collect())?,
                    Format::Table => network_rows(networks),
                })
            })
        }
        NetCmd::Get {
            name,
            read: ReadOpts { stale },
        } => return read(c.network(&name, stale).await?, stale, |n| show(format, n)),
        NetCmd::Ips {
            name,
            read: ReadOpts { stale },
        } => return read(c.network(&name, stale).await?, stale, |n| ips(format, n)),
        NetCmd::Delete { name } => {
            c.delete_network(&name).await?;
            return Ok(match format {
                Format::Json => json(&json!({ "deleted": name }))?,
                Format::Table => format!("deleted network {name}"),
            }
            .into());
        }
        NetCmd::Subnet(SubnetCmd::Add {
            network,
            cidr,
            ranges,
            gateway,
            dns,
            reserved,
            dhcp_server,
        }) => {
            let subnet = pb::Subnet {
                cidr,
                ranges,
                gateway: gateway.unwrap_or_default(),
                dns,
                reserved,
                dhcp_server: dhcp_server.unwrap_or_default(),
            };
            let req = pb::AddSubnetRequest {
                network,
                subnet: Some(subnet),
            };
            c.network_op(NetworkOp::AddSubnet(req)).await?
        }
        NetCmd::Subnet(SubnetCmd::Remove { network, cidr }) => {
            let req = pb::RemoveSubnetRequest { network, cidr };
            c.network_op(NetworkOp::RemoveSubnet(req)).await?
        }
    };
    Ok(show(format, &network)?.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nic_is_a_network_and_maybe_an_address() {
        assert_eq!(
            parse_nic("blue"),
            Ok(NicArg {
                network: "blue".into(),
                ip: None
            })
        );
        assert_eq!(
            parse_nic("blue,ip=10.0.0.5"),
            Ok(NicArg {
                network: "blue".into(),
                ip: Some("10.0.0.5".into())
            })
        );
        assert!(parse_nic(",ip=1.2.3.4")
            .unwrap_err()
            .contains("network is missing"));
        assert!(parse_nic("blue,mac=x").unwrap_err().contains("unknown"));
        assert!(parse_nic("blue,ip=1,ip=2")
            .unwrap_err()
            .contains("repeated"));
    }

    #[test]
    fn options_of_another_kind_are_refused() {
        let create = |r#type: &str, vni: Option<u32>, bridge: Option<&str>| NetCmd::Create {
            name: "n".into(),
            r#type: r#type.into(),
            bridge: bridge.map(String::from),
            vni,
            tag: None,
            parent: None,
            mtu: None,
        };
        let e = create_request(create("bridge", Some(5), Some("br0"))).unwrap_err();
        assert!(e.to_string().contains("--vni does not apply"), "{e}");
        let e = create_request(create("vxlan", None, None)).unwrap_err();
        assert!(e.to_string().contains("needs --vni"), "{e}");
        assert_eq!(
            create_request(create("vxlan", Some(5), None)).unwrap().vni,
            5
        );
    }
}
