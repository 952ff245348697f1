//! The chaos run's checkers over what the clients saw and the final state, pure (each
//! proven below on a planted violation): no acknowledged write lost, nothing nobody asked
//! for, liveness once healed. Never twice is the libvirt sampler's ([`crate::Samples`]);
//! the register's linearizability is [`super::linearizable`].

use std::collections::{BTreeMap, BTreeSet};

use super::history::{Op, Outcome};

/// What the final state says about one VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Final {
    pub desired: String,
    pub observed: String,
    pub ha: bool,
}

/// Acknowledged creates must exist unless a delete was attempted; acknowledged deletes
/// must be gone (or going); a VM no create could have made must not exist; and the last
/// acknowledged of a VM's create (which starts it), start and stop must be its desired
/// state, unless a later one of those has an unknown outcome (the lifecycle client is
/// sequential, so "later" is the history's order).
pub fn lost_writes(ops: &[Op], vms: &BTreeMap<String, Final>) -> Vec<String> {
    let mut problems = Vec::new();
    let mut by_vm: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for o in ops.iter().filter(|o| o.kind != "write" && o.kind != "read") {
        by_vm.entry(o.vm.as_str()).or_default().push(o);
    }
    let happened = |o: &&&Op| !matches!(o.outcome, Some(Outcome::Fail(_)));
    for (vm, ops) in &by_vm {
        let created = ops
            .iter()
            .any(|o| o.kind == "create" && o.outcome == Some(Outcome::Ok));
        let maybe_created = ops.iter().filter(happened).any(|o| o.kind == "create");
        let delete_tried = ops.iter().filter(happened).any(|o| o.kind == "delete");
        let deleted = ops
            .iter()
            .any(|o| o.kind == "delete" && o.outcome == Some(Outcome::Ok));
        let present = vms.get(*vm).filter(|f| f.desired != "deleted");
        if created && !delete_tried && present.is_none() {
            problems.push(format!("VM {vm}: its create was acknowledged, it is gone"));
        }
        if deleted && present.is_some() {
            problems.push(format!(
                "VM {vm}: its delete was acknowledged, it is still there"
            ));
        }
        if !maybe_created && vms.contains_key(*vm) {
            problems.push(format!(
                "VM {vm}: exists, but every create of it was refused"
            ));
        }
        if let (Some(f), Some(want)) = (present, last_desired(ops)) {
            if f.desired != want {
                problems.push(format!(
                    "VM {vm}: its last acknowledged start or stop asked for {want}, it is {}",
                    f.desired
                ));
            }
        }
    }
    let known: BTreeSet<&str> = by_vm.keys().copied().collect();
    for vm in vms.keys().filter(|v| !known.contains(v.as_str())) {
        problems.push(format!("VM {vm}: exists, but no client created it"));
    }
    problems
}

/// The desired state the last acknowledged create, start or stop of one VM set; `None`
/// when a later one's outcome is unknown.
fn last_desired(ops: &[&Op]) -> Option<&'static str> {
    let mut want = None;
    for o in ops {
        let sets = match o.kind {
            "create" | "start" => "running",
            "stop" => "stopped",
            _ => continue,
        };
        match o.outcome {
            Some(Outcome::Ok) => want = Some(sets),
            Some(Outcome::Fail(_)) => {}
            Some(Outcome::Unknown(_)) | None => want = None,
        }
    }
    want
}

/// What keeps the healed cluster from being live: no leader, a VM that should run and
/// does not, an operation still running.
pub fn not_live(
    leader: Option<u64>,
    vms: &BTreeMap<String, Final>,
    running_ops: &[String],
) -> Vec<String> {
    let mut problems = Vec::new();
    if leader.is_none() {
        problems.push("no leader".to_string());
    }
    for (vm, f) in vms {
        if f.desired == "running" && f.observed != "running" {
            problems.push(format!("VM {vm} should run and is {}", f.observed));
        }
    }
    for op in running_ops {
        problems.push(format!("operation still running: {op}"));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(kind: &'static str, vm: &str, outcome: Outcome) -> Op {
        Op {
            client: 0,
            kind,
            vm: vm.into(),
            value: None,
            invoke_us: 0,
            complete_us: Some(1),
            outcome: Some(outcome),
        }
    }

    fn running(ha: bool) -> Final {
        Final {
            desired: "running".into(),
            observed: "running".into(),
            ha,
        }
    }

    #[test]
    fn a_lost_acknowledged_create_or_delete_is_caught() {
        let ops = vec![
            op("create", "a", Outcome::Ok),
            op("create", "b", Outcome::Ok),
            op("delete", "b", Outcome::Ok),
            op("create", "c", Outcome::Unknown("timeout".into())),
            op("create", "d", Outcome::Fail("no room".into())),
        ];
        // The planted violations: a is gone although acknowledged, b is back.
        let vms: BTreeMap<String, Final> = [("b".to_string(), running(true))].into_iter().collect();
        let p = lost_writes(&ops, &vms);
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].contains("VM a") && p[1].contains("VM b"), "{p:?}");
        // The truth: a exists, b is going, c may or may not exist, d must not.
        let mut ok: BTreeMap<String, Final> = [("a".to_string(), running(true))].into();
        ok.insert(
            "b".into(),
            Final {
                desired: "deleted".into(),
                ..running(true)
            },
        );
        assert!(lost_writes(&ops, &ok).is_empty());
        ok.insert("c".into(), running(true));
        assert!(lost_writes(&ops, &ok).is_empty());
        ok.insert("d".into(), running(true));
        ok.insert("ghost".into(), running(true));
        let p = lost_writes(&ops, &ok);
        assert_eq!(p.len(), 2, "{p:?}");
    }

    #[test]
    fn a_lost_acknowledged_stop_is_caught() {
        let ops = vec![
            op("create", "a", Outcome::Ok),
            op("stop", "a", Outcome::Ok),
            op("start", "a", Outcome::Fail("refused".into())),
        ];
        // The planted violation: the stop was acknowledged, yet a is meant to run.
        let vms: BTreeMap<String, Final> = [("a".to_string(), running(true))].into();
        let p = lost_writes(&ops, &vms);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("asked for stopped"), "{p:?}");
        let stopped: BTreeMap<String, Final> = [(
            "a".to_string(),
            Final {
                desired: "stopped".into(),
                observed: "shut off".into(),
                ha: true,
            },
        )]
        .into();
        assert!(lost_writes(&ops, &stopped).is_empty());
        // A later start whose answer never came: either state is fine.
        let mut unknown = ops.clone();
        unknown.push(op("start", "a", Outcome::Unknown("timeout".into())));
        assert!(lost_writes(&unknown, &vms).is_empty());
    }

    #[test]
    fn a_stuck_cluster_is_not_live() {
        let mut vms: BTreeMap<String, Final> = [("a".to_string(), running(true))].into();
        assert!(not_live(Some(1), &vms, &[]).is_empty());
        vms.insert(
            "b".into(),
            Final {
                observed: "unknown".into(),
                ..running(true)
            },
        );
        let p = not_live(None, &vms, &["migrate 4".into()]);
        assert_eq!(p.len(), 3, "{p:?}");
    }
}
