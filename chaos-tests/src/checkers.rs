//! Judging a cluster against what its clients saw: nothing acknowledged is missing,
//! nothing appears that no one asked for, and every member has applied the same log.
//! Also the Raft views the fault schedule needs (who leads now).

use std::collections::BTreeSet;
use std::time::Duration;

use drover_proto::v1::{Member, Vm};

use crate::client::LeaderClient;
use crate::wait::wait_until;
use crate::workload::History;

/// What a passing durability check counted.
#[derive(Debug, Clone, Copy)]
pub struct DurabilityReport {
    /// VMs in the state.
    pub listed: usize,
    /// Writes acknowledged to a client (all of them listed).
    pub acked: usize,
    /// Writes with unknown outcome that turned out committed.
    pub unknown_committed: usize,
    /// Writes with unknown outcome.
    pub unknown: usize,
}

/// Fails, naming a few offenders, when an acknowledged write is missing from `listed`,
/// when `listed` holds a VM no client ever tried to create, or when a write was refused.
pub fn check_durability(history: &History, listed: &[Vm]) -> Result<DurabilityReport, String> {
    let listed_names: BTreeSet<&str> = listed.iter().map(|v| v.name.as_str()).collect();
    let acked = history.acked_names();
    let attempted = history.attempted_names();
    let refused: Vec<String> = history
        .refused()
        .take(5)
        .map(|w| format!("{} ({:?})", w.name, w.outcome))
        .collect();
    if !refused.is_empty() {
        return Err(format!("writes refused: {refused:?}"));
    }
    let missing: Vec<&str> = acked.difference(&listed_names).copied().collect();
    if !missing.is_empty() {
        return Err(format!(
            "{} acknowledged VMs missing, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(10)]
        ));
    }
    let phantom: Vec<&str> = listed_names.difference(&attempted).copied().collect();
    if !phantom.is_empty() {
        return Err(format!(
            "{} VMs no client created, e.g. {:?}",
            phantom.len(),
            &phantom[..phantom.len().min(10)]
        ));
    }
    let unknown_committed = history
        .writes
        .iter()
        .filter(|w| !w.outcome.is_acked() && listed_names.contains(w.name.as_str()))
        .count();
    Ok(DurabilityReport {
        listed: listed_names.len(),
        acked: acked.len(),
        unknown_committed,
        unknown: history.unknown(),
    })
}

/// The leader every answering controller agrees on, once that controller also calls
/// itself leader; `None` while an election is open.
pub async fn current_leader(client: &mut LeaderClient) -> Result<Option<u64>, String> {
    let status = client.status().await.map_err(|s| s.to_string())?;
    let leading = status
        .members
        .iter()
        .any(|m| m.id == status.leader_id && m.role == "leader" && m.error.is_empty());
    Ok((status.leader_id != 0 && leading).then_some(status.leader_id))
}

/// Waits for a leader other than `not`.
pub async fn wait_for_leader(
    client: &mut LeaderClient,
    not: Option<u64>,
    timeout: Duration,
) -> anyhow::Result<u64> {
    let client = tokio::sync::Mutex::new(client);
    wait_until("a leader", timeout, || async {
        let leader = current_leader(*client.lock().await).await?;
        Ok(leader.filter(|l| Some(*l) != not))
    })
    .await
}

/// Waits until every member in `members` (`(id, address)`) answers for itself with the
/// same leader and the same `last_applied`; returns each member's own status. Only
/// meaningful while no writes are coming in, otherwise the members may never be level.
pub async fn wait_caught_up(
    client: &LeaderClient,
    members: &[(u64, String)],
    timeout: Duration,
) -> anyhow::Result<Vec<Member>> {
    let probe = || async {
        let mut seen = Vec::new();
        for (id, addr) in members {
            let m = client
                .local_status(addr)
                .await
                .map_err(|s| format!("controller {id}: {}", s.message()))?;
            seen.push(m);
        }
        let (leader, applied) = (seen[0].leader_id, seen[0].last_applied);
        let level = leader != 0
            && seen
                .iter()
                .all(|m| m.leader_id == leader && m.last_applied == applied);
        if level {
            Ok(Some(seen))
        } else {
            let view: Vec<_> = seen
                .iter()
                .map(|m| (m.id, m.leader_id, m.last_applied))
                .collect();
            Err(format!("(id, leader, last_applied): {view:?}"))
        }
    };
    wait_until("every member at the same applied index", timeout, probe).await
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::workload::{Outcome, WriteRecord};

    fn write(name: &str, outcome: Outcome) -> WriteRecord {
        let now = Instant::now();
        WriteRecord {
            name: name.into(),
            outcome,
            started: now,
            last_attempt_at: now,
            finished: now,
            attempts: 1,
        }
    }

    fn vms(names: &[&str]) -> Vec<Vm> {
        names
            .iter()
            .map(|n| Vm {
                name: n.to_string(),
                ..Default::default()
            })
            .collect()
    }

    fn history() -> History {
        History {
            writes: vec![
                write("a", Outcome::Acked),
                write("b", Outcome::AckedByRetry),
                write("c", Outcome::Unknown("timeout".into())),
            ],
        }
    }

    #[test]
    fn passes_when_acked_present_and_unknown_either_way() {
        let r = check_durability(&history(), &vms(&["a", "b"])).unwrap();
        assert_eq!(
            (r.acked, r.listed, r.unknown, r.unknown_committed),
            (2, 2, 1, 0)
        );
        let r = check_durability(&history(), &vms(&["a", "b", "c"])).unwrap();
        assert_eq!(r.unknown_committed, 1);
    }

    #[test]
    fn a_lost_acknowledged_write_fails() {
        let err = check_durability(&history(), &vms(&["a", "c"])).unwrap_err();
        assert!(err.contains("\"b\""), "{err}");
    }

    #[test]
    fn a_vm_no_one_created_fails() {
        let err = check_durability(&history(), &vms(&["a", "b", "zz"])).unwrap_err();
        assert!(err.contains("zz"), "{err}");
    }

    #[test]
    fn a_refused_write_fails() {
        let mut h = history();
        h.writes.push(write(
            "d",
            Outcome::Refused {
                code: tonic::Code::InvalidArgument,
                message: "bad".into(),
            },
        ));
        assert!(check_durability(&h, &vms(&["a", "b"])).is_err());
    }
}
