//! The domain XML hostd writes, and the ownership marker it reads back. Pure string work, no
//! libvirt calls, so both directions are unit tested.
//!
//! The marker (`<drover:vm>` in the domain's `<metadata>`) is what makes a domain "managed":
//! hostd lists and touches only domains that carry it, so a host can run drover next to
//! domains someone else defined.

use std::fmt::Write as _;

use super::VmSpec;

/// Namespace of drover's metadata element. Versioned so the layout can change later.
pub const DROVER_NS: &str = "https://drover.dev/xmlns/vm/1";
/// Prefix used when writing the marker; libvirt requires one for custom metadata.
pub const DROVER_NS_PREFIX: &str = "drover";

/// The `type` attribute of `<domain>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DomainType {
    /// libvirt's mock driver (`test:///...`).
    Test,
    /// Hardware-accelerated QEMU.
    Kvm,
    /// QEMU with TCG, where QEMU cannot use /dev/kvm (see `domain_type`).
    Qemu,
}

impl DomainType {
    pub fn as_str(self) -> &'static str {
        match self {
            DomainType::Test => "test",
            DomainType::Kvm => "kvm",
            DomainType::Qemu => "qemu",
        }
    }
}

/// drover's ownership marker as read back from a domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    pub generation: u64,
    pub term: u64,
    /// Destroyed when the host's lease lapses (also by the separate watchdog process,
    /// which knows HA domains only by this flag).
    pub ha: bool,
}

/// Builds the XML that defines `spec`'s domain. `uuid` must be the existing domain's UUID
/// when redefining one, because libvirt refuses a definition that reuses a name under a
/// different UUID.
/// `disk_paths` are the volumes of `spec.disks`, in order (attached as `vda`, `vdb`, ...);
/// `seed` is the cloud-init seed's, attached read-only after them.
pub fn build(
    spec: &VmSpec,
    domain_type: DomainType,
    uuid: Option<&str>,
    disk_paths: &[String],
    seed: Option<&str>,
) -> String {
    let mut xml = String::with_capacity(768);
    // Writing into a String cannot fail; the results are ignored on purpose.
    let _ = writeln!(xml, "<domain type='{}'>", domain_type.as_str());
    let _ = writeln!(xml, "  <name>{}</name>", escape(&spec.name));
    if let Some(uuid) = uuid {
        let _ = writeln!(xml, "  <uuid>{}</uuid>", escape(uuid));
    }
    let _ = writeln!(xml, "  <metadata>");
    let _ = writeln!(
        xml,
        "    <{p}:vm xmlns:{p}=\"{DROVER_NS}\">",
        p = DROVER_NS_PREFIX
    );
    let _ = writeln!(
        xml,
        "      <{p}:generation>{}</{p}:generation>",
        spec.generation,
        p = DROVER_NS_PREFIX
    );
    let _ = writeln!(
        xml,
        "      <{p}:term>{}</{p}:term>",
        spec.term,
        p = DROVER_NS_PREFIX
    );
    let _ = writeln!(
        xml,
        "      <{p}:ha>{}</{p}:ha>",
        spec.ha,
        p = DROVER_NS_PREFIX
    );
    let _ = writeln!(xml, "    </{p}:vm>", p = DROVER_NS_PREFIX);
    let _ = writeln!(xml, "  </metadata>");
    let _ = writeln!(xml, "  <memory unit='MiB'>{}</memory>", spec.memory_mib);
    let _ = writeln!(xml, "  <vcpu>{}</vcpu>", spec.vcpus);
    // Leave the machine type and emulator to libvirt's defaults for the host; no <cpu>
    // element, because host-model/passthrough abort under nested KVM.
    let _ = writeln!(xml, "  <os>\n    <type arch='x86_64'>hvm</type>\n  </os>");
    // ACPI is what a graceful shutdown request is delivered through.
    let _ = writeln!(xml, "  <features>\n    <acpi/>\n    <apic/>\n  </features>");
    let _ = writeln!(xml, "  <on_poweroff>destroy</on_poweroff>");
    let _ = writeln!(xml, "  <on_reboot>restart</on_reboot>");
    let _ = writeln!(xml, "  <on_crash>destroy</on_crash>");
    let _ = writeln!(xml, "  <devices>");
    for (i, (disk, path)) in spec.disks.iter().zip(disk_paths).enumerate() {
        // virtio, and no host page cache: a guest's flush reaches the disk, and a VM
        // restarted on another host of a shared pool reads what this one wrote.
        let _ = writeln!(
            xml,
            "    <disk type='file' device='disk'>\n      <driver name='qemu' type='{}' cache='none'/>\n      <source file='{}'/>\n      <target dev='vd{}' bus='virtio'/>\n    </disk>",
            escape(&disk.format),
            escape(path),
            disk_letter(i)
        );
    }
    if let Some(path) = seed {
        // A virtio disk rather than a CD-ROM: it works on every machine type, and
        // cloud-init finds the `cidata` filesystem on any block device. Read-only, so
        // virtlockd leaves it unlocked for a VM on another host reading the same seed.
        let _ = writeln!(
            xml,
            "    <disk type='file' device='disk'>\n      <driver name='qemu' type='raw'/>\n      <source file='{}'/>\n      <target dev='vd{}' bus='virtio'/>\n      <readonly/>\n    </disk>",
            escape(path),
            disk_letter(spec.disks.len())
        );
    }
    for nic in &spec.nics {
        xml.push_str(&nic.interface_xml());
    }
    let _ = writeln!(xml, "    <console type='pty'/>\n  </devices>");
    xml.push_str("</domain>\n");
    xml
}

/// `xml` (a whole domain description) with its marker's generation and term replaced: the
/// destination definition of a migration, so that the copy there carries the generation
/// the VM has once the controller records the move. `None` when `xml` has no marker.
pub fn with_marker(xml: &str, generation: u64, term: u64) -> Option<String> {
    let ns_at = xml.find(DROVER_NS)?;
    let start = xml[..ns_at].rfind('<')?;
    let prefix = xml[start + 1..].split(':').next()?;
    let close = format!("</{prefix}:vm>");
    let end = start + xml[start..].find(&close)?;
    let mut element = xml[start..end].to_string();
    for (child, value) in [("generation", generation), ("term", term)] {
        let open_tag = format!("<{prefix}:{child}>");
        let close_tag = format!("</{prefix}:{child}>");
        let from = element.find(&open_tag)? + open_tag.len();
        let to = from + element[from..].find(&close_tag)?;
        element.replace_range(from..to, &value.to_string());
    }
    Some(format!("{}{element}{}", &xml[..start], &xml[end..]))
}

/// Reads the marker from what `virDomainGetMetadata(ELEMENT, DROVER_NS)` returns: our
/// element alone, which libvirt hands back without its namespace prefix.
pub fn parse_metadata_element(xml: &str) -> Option<Marker> {
    marker_in(xml)
}

/// Reads the marker from a whole domain XML description, for drivers without
/// `virDomainGetMetadata`. `None` when the domain carries no drover element.
pub fn parse_domain_xml(xml: &str) -> Option<Marker> {
    let ns_at = xml.find(DROVER_NS)?;
    // Start at the element that declares our namespace, so that children of other
    // metadata elements are never mistaken for ours.
    let element_at = xml[..ns_at].rfind('<')?;
    marker_in(&xml[element_at..])
}

fn marker_in(xml: &str) -> Option<Marker> {
    let generation = child_text(xml, "generation")?.parse().ok()?;
    // A marker without a term predates term recording; treat it as term 0.
    let term = match child_text(xml, "term") {
        Some(text) => text.parse().ok()?,
        None => 0,
    };
    // Absent in markers written before HA existed: not HA.
    let ha = child_text(xml, "ha") == Some("true");
    Some(Marker {
        generation,
        term,
        ha,
    })
}

/// Text of the first `<[prefix:]local>` element, stopping at the close of the `vm` element.
/// A deliberately small scanner: it only has to read XML that libvirt formatted from ours.
fn child_text<'a>(xml: &'a str, local: &str) -> Option<&'a str> {
    let mut rest = xml;
    while let Some(open) = rest.find('<') {
        let after = &rest[open + 1..];
        let close = after.find('>')?;
        let tag = &after[..close];
        let body = &after[close + 1..];
        if let Some(closing) = tag.strip_prefix('/') {
            if local_name(closing.trim()) == "vm" {
                return None;
            }
        } else if !tag.ends_with('/') {
            let qname = tag.split_whitespace().next().unwrap_or_default();
            if local_name(qname) == local {
                let text_end = body.find('<')?;
                return Some(body[..text_end].trim());
            }
        }
        rest = body;
    }
    None
}

fn local_name(qname: &str) -> &str {
    match qname.rfind(':') {
        Some(colon) => &qname[colon + 1..],
        None => qname,
    }
}

/// `a` for the first disk, `b` for the second, ... (at most 26: the cluster allows 16).
fn disk_letter(index: usize) -> char {
    (b'a' + (index % 26) as u8) as char
}

/// The guest device name of disk `index` (`vda`, `vdb`, ...), as `build` attaches it.
pub fn disk_target(index: usize) -> String {
    format!("vd{}", disk_letter(index))
}

/// Escapes text for use in element content and quoted attributes.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\'' => out.push_str("&apos;"),
            '"' => out.push_str("&quot;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str) -> VmSpec {
        VmSpec {
            name: name.to_string(),
            vcpus: 2,
            memory_mib: 256,
            generation: 7,
            term: 3,
            ha: true,
            ..Default::default()
        }
    }

    #[test]
    fn the_seed_is_a_read_only_disk_after_the_vms_own() {
        let mut s = spec("web");
        s.disks.push(crate::hypervisor::VmDisk {
            pool: "fast".into(),
            volume: "web-1-disk0.qcow2".into(),
            size_bytes: 1 << 30,
            format: "qcow2".into(),
            backing: None,
            create: false,
        });
        let paths = ["/srv/fast/web-1-disk0.qcow2".to_string()];
        let xml = build(
            &s,
            DomainType::Qemu,
            None,
            &paths,
            Some("/srv/fast/web-1-cidata.iso"),
        );
        let seed_at = xml.find("web-1-cidata.iso").expect("seed attached");
        let seed_disk = &xml[xml[..seed_at].rfind("<disk").unwrap()..];
        let seed_disk = &seed_disk[..seed_disk.find("</disk>").unwrap()];
        assert!(seed_disk.contains("type='raw'"), "{seed_disk}");
        assert!(seed_disk.contains("<readonly/>"), "{seed_disk}");
        assert!(seed_disk.contains("dev='vdb'"), "{seed_disk}");
        assert!(
            xml.find("web-1-disk0").unwrap() < seed_at,
            "after the VM's disks"
        );
        let none = build(&s, DomainType::Qemu, None, &paths, None);
        assert!(!none.contains("readonly"));
    }

    #[test]
    fn disks_are_virtio_without_host_cache_in_order() {
        let mut s = spec("web");
        for (i, pool) in ["fast", "bulk"].into_iter().enumerate() {
            s.disks.push(crate::hypervisor::VmDisk {
                pool: pool.into(),
                volume: format!("web-1-disk{i}.qcow2"),
                size_bytes: 1 << 30,
                format: "qcow2".into(),
                backing: None,
                create: false,
            });
        }
        let paths = [
            "/srv/fast/web-1-disk0.qcow2".to_string(),
            "/srv/bulk/web-1-disk1.qcow2".to_string(),
        ];
        let xml = build(&s, DomainType::Kvm, None, &paths, None);
        let first = xml.find("<target dev='vda' bus='virtio'/>").expect("vda");
        let second = xml.find("<target dev='vdb' bus='virtio'/>").expect("vdb");
        assert!(first < second);
        assert_eq!(xml.matches("cache='none'").count(), 2, "{xml}");
        assert!(
            xml.contains("<source file='/srv/fast/web-1-disk0.qcow2'/>"),
            "{xml}"
        );
        assert!(
            xml.contains("<driver name='qemu' type='qcow2' cache='none'/>"),
            "{xml}"
        );
    }

    #[test]
    fn contains_name_memory_vcpus_and_marker() {
        let xml = build(&spec("web-1"), DomainType::Test, None, &[], None);
        assert!(xml.starts_with("<domain type='test'>"), "{xml}");
        assert!(xml.contains("<name>web-1</name>"), "{xml}");
        assert!(xml.contains("<memory unit='MiB'>256</memory>"), "{xml}");
        assert!(xml.contains("<vcpu>2</vcpu>"), "{xml}");
        assert!(
            xml.contains(&format!("<drover:vm xmlns:drover=\"{DROVER_NS}\">")),
            "{xml}"
        );
        assert!(
            xml.contains("<drover:generation>7</drover:generation>"),
            "{xml}"
        );
        assert!(xml.contains("<drover:term>3</drover:term>"), "{xml}");
        assert!(!xml.contains("<uuid>"), "{xml}");
        assert!(!xml.contains("<cpu"), "nested KVM breaks on <cpu>: {xml}");
    }

    #[test]
    fn keeps_the_uuid_when_redefining() {
        let uuid = "82fc4a8e-b11b-41b9-9567-f98da6b05d1f";
        let xml = build(&spec("a"), DomainType::Kvm, Some(uuid), &[], None);
        assert!(xml.starts_with("<domain type='kvm'>"), "{xml}");
        assert!(xml.contains(&format!("<uuid>{uuid}</uuid>")), "{xml}");
    }

    #[test]
    fn escapes_names() {
        let xml = build(&spec("a&b<c>'d\""), DomainType::Qemu, None, &[], None);
        assert!(
            xml.contains("<name>a&amp;b&lt;c&gt;&apos;d&quot;</name>"),
            "{xml}"
        );
        assert!(!xml.contains("a&b"), "{xml}");
    }

    #[test]
    fn reads_the_marker_libvirt_returns_from_get_metadata() {
        // As libvirt 9 returns it: our element, prefix and namespace stripped.
        let xml = "<vm>\n  <generation>3</generation>\n  <term>7</term>\n</vm>\n";
        assert_eq!(
            parse_metadata_element(xml),
            Some(Marker {
                generation: 3,
                term: 7,
                ha: false,
            })
        );
    }

    #[test]
    fn reads_the_marker_back_from_what_it_built() {
        let xml = build(&spec("round-trip"), DomainType::Test, None, &[], None);
        assert_eq!(
            parse_domain_xml(&xml),
            Some(Marker {
                generation: 7,
                term: 3,
                ha: true,
            })
        );
    }

    #[test]
    fn rewrites_generation_and_term_for_a_migration() {
        let xml = build(&spec("web"), DomainType::Qemu, Some("u-1"), &[], None);
        let moved = with_marker(&xml, 8, 5).expect("has a marker");
        let marker = parse_domain_xml(&moved).unwrap();
        assert_eq!((marker.generation, marker.term, marker.ha), (8, 5, true));
        // Nothing else changes.
        assert_eq!(
            moved
                .replace("<drover:generation>8<", "<drover:generation>3<")
                .replace("<drover:term>5<", "<drover:term>2<"),
            xml.replace(
                &format!("<drover:generation>{}<", spec("web").generation),
                "<drover:generation>3<"
            )
            .replace(
                &format!("<drover:term>{}<", spec("web").term),
                "<drover:term>2<"
            )
        );
        assert_eq!(
            with_marker("<domain type='qemu'><name>x</name></domain>", 1, 1),
            None
        );
    }

    #[test]
    fn ignores_domains_without_the_marker() {
        let foreign = "<domain type='test'><name>test</name><metadata>\
            <other:vm xmlns:other=\"https://example.com/x\"><other:generation>9\
            </other:generation></other:vm></metadata></domain>";
        assert_eq!(parse_domain_xml(foreign), None);
        assert_eq!(parse_domain_xml("<domain><name>x</name></domain>"), None);
    }

    #[test]
    fn does_not_read_past_its_own_element() {
        let xml = format!(
            "<metadata><d:vm xmlns:d=\"{DROVER_NS}\"><d:term>1</d:term></d:vm>\
             <o:x xmlns:o=\"https://example.com/x\"><o:generation>5</o:generation></o:x>\
             </metadata>"
        );
        assert_eq!(parse_domain_xml(&xml), None);
    }

    #[test]
    fn rejects_a_garbled_generation() {
        assert_eq!(
            parse_metadata_element("<vm><generation>x</generation></vm>"),
            None
        );
    }
}
