//! The domain XML hostd writes validates against libvirt's own schema, for every domain
//! type, with `virt-xml-validate` (skipped, saying why, where that tool is missing).

mod common;

use std::process::Command;

use drover_hostd::hypervisor::domain_xml::{build, DomainType};
use drover_hostd::hypervisor::VmSpec;

#[test]
fn every_domain_type_validates_against_libvirts_schema() {
    let installed = Command::new("virt-xml-validate")
        .arg("--help")
        .output()
        .map(|_| ())
        .map_err(|_| "virt-xml-validate is not installed (package libvirt-clients)".to_string());
    if !common::prerequisite(installed) {
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
        std::fs::write(&path, &xml).expect("write xml");
        let out = Command::new("virt-xml-validate")
            .arg(&path)
            .arg("domain")
            .output()
            .expect("run virt-xml-validate");
        assert!(
            out.status.success(),
            "{domain_type:?} XML does not validate: {}{}\n{xml}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
    }
}
