//! The domain XML hostd writes (with a disk, a seed and a filtered NIC) and the network
//! XML it defines validate against libvirt's own schemas, with `virt-xml-validate`
//! (skipped, saying why, where that tool is missing).

mod common;

use std::process::Command;

use drover_hostd::hypervisor::domain_xml::{build, DomainType};
use drover_hostd::hypervisor::VmSpec;

fn validator() -> Result<(), String> {
    Command::new("virt-xml-validate")
        .arg("--help")
        .output()
        .map(|_| ())
        .map_err(|_| "virt-xml-validate is not installed (package libvirt-clients)".to_string())
}

/// Writes `xml` to `path` and asserts libvirt's `schema` accepts it.
fn assert_valid(path: &std::path::Path, xml: &str, schema: &str) {
    std::fs::write(path, xml).expect("write xml");
    let out = Command::new("virt-xml-validate")
        .arg(path)
        .arg(schema)
        .output()
        .expect("run virt-xml-validate");
    assert!(
        out.status.success(),
        "{schema} XML does not validate: {}{}\n{xml}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
}

#[test]
fn every_domain_type_validates_against_libvirts_schema() {
    if !common::prerequisite(validator()) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let spec = VmSpec {
        name: "web & <db>".into(),
        vcpus: 2,
        memory_mib: 256,
        generation: 9,
        term: 4,
        ha: true,
        disks: vec![drover_hostd::hypervisor::VmDisk {
            pool: "fast".into(),
            volume: "web-9-disk0.qcow2".into(),
            size_bytes: 1 << 30,
            format: "qcow2".into(),
            backing: None,
            create: false,
        }],
        create_volumes: true,
        seed: None,
        nics: vec![
            drover_hostd::network::VmNic {
                network: "blue".into(),
                mac: "02:00:00:00:00:01".into(),
                ip: Some("10.10.0.10".parse().expect("ip")),
                prefix: 24,
                gateway: None,
                dns: vec![],
                mtu: Some(1450),
                firewall: None,
            },
            // In a security group: the filter's parameters, lists included.
            drover_hostd::network::VmNic {
                network: "blue".into(),
                mac: "02:00:00:00:00:02".into(),
                ip: Some("10.10.0.11".parse().expect("ip")),
                prefix: 24,
                gateway: None,
                dns: vec![],
                mtu: None,
                firewall: Some(vec![drover_hostd::network::firewall::AllowRule {
                    proto: drover_hostd::network::firewall::Proto::Tcp,
                    ports: (22, 22),
                    from: ("10.0.0.0".parse().expect("ip"), 8),
                }]),
            },
        ],
    };
    for (domain_type, uuid) in [
        (DomainType::Test, None),
        (DomainType::Kvm, None),
        (
            DomainType::Qemu,
            Some("82fc4a8e-b11b-41b9-9567-f98da6b05d1f"),
        ),
    ] {
        let xml = build(
            &spec,
            domain_type,
            uuid,
            &["/srv/fast/web-9-disk0.qcow2".to_string()],
            Some("/srv/fast/web-9-cidata.iso"),
        );
        let path = dir.path().join(format!("{}.xml", domain_type.as_str()));
        assert_valid(&path, &xml, "domain");
    }
}

#[test]
fn every_network_kind_validates_against_libvirts_schema() {
    use drover_hostd::network::{NetworkKind, NetworkWiring};
    if !common::prerequisite(validator()) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let kinds = [
        NetworkKind::Bridge {
            bridge: "br0".into(),
        },
        NetworkKind::Vxlan {
            vni: 7,
            local: None,
            peers: vec![],
        },
    ];
    for (i, kind) in kinds.into_iter().enumerate() {
        let wiring = NetworkWiring {
            name: "blue".into(),
            kind,
            mtu: Some(1450).filter(|_| i == 1),
            dhcp: (i == 1).then(|| drover_hostd::network::Dhcp {
                server: "10.10.0.2".parse().expect("ip"),
                prefix: 24,
                hosts: vec![drover_hostd::network::DhcpHost {
                    mac: "02:00:00:00:00:01".into(),
                    ip: "10.10.0.10".parse().expect("ip"),
                }],
                // Passed to dnsmasq in libvirt's namespace, which the schema knows.
                gateway: Some("10.10.0.1".parse().expect("ip")),
                dns: vec!["10.10.0.53".parse().expect("ip")],
            }),
        };
        let xml = wiring.libvirt_xml().expect("xml");
        let path = dir.path().join(format!("net{i}.xml"));
        assert_valid(&path, &xml, "network");
    }
}

#[test]
fn the_security_group_filter_validates_against_libvirts_schema() {
    if !common::prerequisite(validator()) {
        return;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    assert_valid(
        &dir.path().join("sg.xml"),
        &drover_hostd::network::firewall::filter_xml(),
        "nwfilter",
    );
}
