//! The drill's never-twice check over one sampling round: every host's *running* domains,
//! asked host by host, twice in the same order. Asked one after the other, a live
//! migration's handover can show a VM running on its source and then on its destination,
//! which proves nothing. A VM counts as running on two hosts only when one host listed it
//! running *before and after* another host did — the one pattern no handover or failover
//! can produce (a source never runs the copy again after a handover; a fenced host never
//! runs it again after a failover).

/// One host's answer in a round: its name and the VMs it listed running.
pub type Listing = (String, Vec<String>);

/// A VM seen running on two hosts at once: (vm, the host that bracketed, the other).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Double {
    pub vm: String,
    pub host: String,
    pub other: String,
}

impl std::fmt::Display for Double {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ran on {} before and after {} listed it running",
            self.vm, self.host, self.other
        )
    }
}

/// Every VM the round's listings (in the order they were taken) prove ran twice.
pub fn doubles(round: &[Listing]) -> Vec<Double> {
    let mut vms: Vec<&str> = round
        .iter()
        .flat_map(|(_, running)| running.iter().map(String::as_str))
        .collect();
    vms.sort_unstable();
    vms.dedup();
    let mut out = Vec::new();
    for vm in vms {
        // The hosts that listed `vm` running, in order.
        let seen: Vec<&str> = round
            .iter()
            .filter(|(_, running)| running.iter().any(|r| r == vm))
            .map(|(host, _)| host.as_str())
            .collect();
        let bracket = (0..seen.len()).find_map(|i| {
            (i + 1..seen.len()).find_map(|j| {
                (j + 1..seen.len())
                    .find(|&k| seen[k] == seen[i] && seen[j] != seen[i])
                    .map(|_| (seen[i], seen[j]))
            })
        });
        if let Some((host, other)) = bracket {
            out.push(Double {
                vm: vm.to_string(),
                host: host.to_string(),
                other: other.to_string(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(host: &str, vms: &[&str]) -> Listing {
        (host.into(), vms.iter().map(|v| v.to_string()).collect())
    }

    #[test]
    fn a_vm_running_on_two_hosts_is_caught() {
        // The planted violation: h1 still runs web while h2 runs it too.
        let round = [
            l("h1", &["web"]),
            l("h2", &["web", "db"]),
            l("h1", &["web"]),
            l("h2", &["web", "db"]),
        ];
        let found = doubles(&round);
        assert_eq!(
            found,
            [Double {
                vm: "web".into(),
                host: "h1".into(),
                other: "h2".into()
            }]
        );
        assert!(found[0].to_string().contains("web ran on h1"));
    }

    #[test]
    fn a_handover_or_failover_is_not_a_double() {
        // Migration: running on h1, then on h2 after the handover, never on h1 again.
        let handover = [
            l("h1", &["web"]),
            l("h2", &["web"]),
            l("h1", &[]),
            l("h2", &["web"]),
        ];
        assert_eq!(doubles(&handover), []);
        // A host that did not answer is left out of the round, not counted empty.
        let failover = [l("h2", &["db"]), l("h3", &[]), l("h2", &["db"])];
        assert_eq!(doubles(&failover), []);
    }
}
