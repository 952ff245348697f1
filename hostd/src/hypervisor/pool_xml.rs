//! The libvirt XML of drover's storage pools and volumes: built from the cluster's pool or
//! disk, and read back for the one thing hostd compares (a pool's target path).

/// libvirt pool names hostd owns start with this: the name is the only ownership mark a
/// storage pool can carry (pools have no metadata element), and it keeps an operator's
/// own pools out of drover's reports.
pub const POOL_PREFIX: &str = "drover-";

/// The libvirt name of the cluster's pool `name`.
pub fn libvirt_name(name: &str) -> String {
    format!("{POOL_PREFIX}{name}")
}

/// The cluster's name of a libvirt pool hostd owns; `None` for others.
pub fn cluster_name(libvirt_name: &str) -> Option<&str> {
    libvirt_name
        .strip_prefix(POOL_PREFIX)
        .filter(|n| !n.is_empty())
}

/// A `dir` pool at `path`. Both come validated (names: `[A-Za-z0-9._-]`; paths: no quotes,
/// `<`, `>` or `&`), so nothing needs escaping.
pub fn dir_pool(name: &str, path: &str) -> String {
    format!(
        "<pool type='dir'>\n  <name>{}</name>\n  <target>\n    <path>{path}</path>\n  </target>\n</pool>\n",
        libvirt_name(name)
    )
}

/// A thin volume of `disk`'s size and format; with `backing` (a path and its format), a
/// qcow2 overlay on that file. Names and formats come validated (see `service`), and
/// paths are libvirt's own for volumes of validated names, so nothing needs escaping.
pub fn volume(disk: &super::VmDisk, backing: Option<(&str, &str)>) -> String {
    let backing = backing.map_or(String::new(), |(path, format)| {
        format!("  <backingStore>\n    <path>{path}</path>\n    <format type='{format}'/>\n  </backingStore>\n")
    });
    format!(
        "<volume>\n  <name>{}</name>\n  <capacity unit='bytes'>{}</capacity>\n  <allocation>0</allocation>\n  <target>\n    <format type='{}'/>\n  </target>\n{backing}</volume>\n",
        disk.volume, disk.size_bytes, disk.format
    )
}

/// The `<target><path>` of a pool's XML as libvirt formats it.
pub fn target_path(xml: &str) -> Option<&str> {
    let target = &xml[xml.find("<target>")? + "<target>".len()..];
    let path = &target[target.find("<path>")? + "<path>".len()..];
    Some(path[..path.find("</path>")?].trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dir_pool_round_trips_its_path_and_name() {
        let xml = dir_pool("fast", "/srv/fast");
        assert!(xml.contains("<name>drover-fast</name>"));
        assert_eq!(target_path(&xml), Some("/srv/fast"));
        assert_eq!(cluster_name("drover-fast"), Some("fast"));
        assert_eq!(cluster_name("default"), None);
        assert_eq!(cluster_name("drover-"), None);
    }

    #[test]
    fn a_clone_names_its_backing_file_and_format() {
        let disk = crate::hypervisor::VmDisk {
            pool: "p".into(),
            volume: "web-1-disk0.qcow2".into(),
            size_bytes: 1 << 30,
            format: "qcow2".into(),
            backing: None,
            create: false,
        };
        let plain = volume(&disk, None);
        assert!(!plain.contains("backingStore"));
        let clone = volume(&disk, Some(("/srv/img/image-deb-1", "raw")));
        assert!(clone.contains(
            "<backingStore>\n    <path>/srv/img/image-deb-1</path>\n    <format type='raw'/>"
        ));
        assert!(clone.contains("<format type='qcow2'/>\n  </target>"));
    }

    #[test]
    fn the_target_path_is_read_from_libvirts_formatting() {
        // As `virsh pool-dumpxml` prints a dir pool: a <source/> and <permissions> around.
        let xml = "<pool type='dir'>\n  <name>drover-a</name>\n  <uuid>x</uuid>\n  \
                   <capacity unit='bytes'>1</capacity>\n  <source>\n  </source>\n  <target>\n    \
                   <path>/srv/a</path>\n    <permissions>\n      <mode>0755</mode>\n    \
                   </permissions>\n  </target>\n</pool>\n";
        assert_eq!(target_path(xml), Some("/srv/a"));
        assert_eq!(target_path("<pool/>"), None);
    }
}
