//! What a hostd reports is input like any other (issue 9, point 13): a broken or hostile
//! agent must not put a billion-core host into the scheduler's view, a URI that is not one
//! into the replicated state, or a domain name drover could never have created into the
//! stale-copy rules. [`screen`] drops what fails the same checks `apply` makes, before the
//! actor acts on the heartbeat.

use drover_proto::agent::v1::{Heartbeat, HostInfo};
use drover_raft::model::{validate_libvirt_uri, validate_name, Capacity, HostNetworking};

/// How much of a refused name goes into a log line.
const QUOTE_CHARS: usize = 80;

/// Removes from `beat` what must not be believed: domains whose names drover could not have
/// given (they are neither reported nor ever destroyed), and the host's description
/// (capacity, migration URI) if any of it is out of bounds. Returns what was dropped and
/// why, for the log.
pub(crate) fn screen(beat: &mut Heartbeat) -> Vec<String> {
    let mut problems = Vec::new();
    beat.domains.retain(|d| match validate_name(&d.name) {
        Ok(()) => true,
        Err(reason) => {
            let quoted: String = d.name.chars().take(QUOTE_CHARS).collect();
            problems.push(format!("domain {quoted:?} ignored: {reason}"));
            false
        }
    });
    if let Some(host) = &beat.host {
        let capacity = Capacity {
            vcpus: host.vcpus,
            memory_mib: host.memory_mib,
        };
        let uri = &host.migration_uri;
        let refused = capacity.validate().err().or_else(|| {
            (!uri.is_empty())
                .then(|| validate_libvirt_uri(uri).err())
                .flatten()
                .map(|reason| format!("migration URI: {reason}"))
        });
        if let Some(reason) = refused {
            problems.push(format!("host description ignored: {reason}"));
            beat.host = None;
        }
    }
    problems
}

/// The host's networking as `host` reports it, checked as `apply` checks it.
pub(crate) fn networking(host: &HostInfo) -> Result<HostNetworking, String> {
    let underlay = match host.vtep_address.as_str() {
        "" => None,
        text => Some(
            text.parse()
                .map_err(|_| format!("underlay address {text:?} is not an IPv4 address"))?,
        ),
    };
    let networking = HostNetworking {
        underlay,
        links: host.links.iter().cloned().collect(),
        vlan_links: host.vlan_links,
    };
    networking.validate()?;
    Ok(networking)
}

#[cfg(test)]
mod tests {
    use super::*;
    use drover_proto::agent::v1::{Domain, HostInfo};

    fn beat(names: &[&str], vcpus: u32, uri: &str) -> Heartbeat {
        Heartbeat {
            host: Some(HostInfo {
                vcpus,
                memory_mib: 4096,
                migration_uri: uri.into(),
                ..Default::default()
            }),
            domains: names
                .iter()
                .map(|n| Domain {
                    name: n.to_string(),
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn a_sound_report_passes_whole() {
        let mut b = beat(&["web-1", "db"], 8, "qemu+tcp://10.0.0.5/system");
        assert!(screen(&mut b).is_empty());
        assert_eq!(b.domains.len(), 2);
        assert!(b.host.is_some());
    }

    #[test]
    fn bad_names_and_bad_descriptions_are_dropped_with_reasons() {
        let long = "x".repeat(500);
        let mut b = beat(&["ok", "a b", &long], 8, "qemu+tcp://10.0.0.5/system");
        let problems = screen(&mut b);
        assert_eq!(b.domains.len(), 1, "{problems:?}");
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems.iter().all(|p| p.len() < 300),
            "quoted, not copied whole"
        );

        let mut huge = beat(&["ok"], u32::MAX, "qemu+tcp://h/system");
        assert_eq!(screen(&mut huge).len(), 1);
        assert!(huge.host.is_none());
        assert_eq!(huge.domains.len(), 1, "the domains still count");

        let mut spaced = beat(&[], 8, "qemu+tcp://h /system");
        assert!(screen(&mut spaced)[0].contains("migration URI"));
        assert!(spaced.host.is_none());
    }
}
