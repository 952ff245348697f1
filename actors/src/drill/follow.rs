//! A running drill's decisions, pure: [`observe`] brings the report up to date with the
//! state (the host declared dead, how it was fenced, where each VM restarted, the host
//! back), and [`next`] says what the drill does now: isolate the host, wait, lift the
//! isolation, or finish with a verdict. The `DrillActor` carries them out.

use drover_raft::model::{
    ClusterState, DrillMode, DrillPhase, DrillReport, EventKind, HostHealth, ObservedState,
    OpState, Operation, Verdict,
};

/// How long a restored host may take to be trusted again before the drill fails.
pub const RESTORE_TIMEOUT_MS: u64 = 120_000;

/// What the drill does next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Next {
    /// Cut the host off as the drill's mode says (phase `Starting`).
    CutOff,
    Wait,
    /// Lift the isolation, for this reason.
    Restore(String),
    Finish {
        state: OpState,
        message: String,
        verdict: Verdict,
    },
}

/// The drill's host and its limits, as the operation records them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DrillOp {
    pub host: String,
    pub mode: DrillMode,
    pub max_duration_ms: u64,
    pub cancel_requested: bool,
    pub started_at_ms: u64,
    /// Something in the cluster that makes going on unsafe (see [`trouble`]).
    pub trouble: Option<String>,
}

impl DrillOp {
    pub fn of(op: &Operation) -> Option<DrillOp> {
        match &op.kind {
            drover_raft::model::OpKind::Drill {
                host,
                mode,
                max_duration_ms,
            } => Some(DrillOp {
                host: host.clone(),
                mode: *mode,
                max_duration_ms: *max_duration_ms,
                cancel_requested: op.cancel_requested,
                started_at_ms: op.started_at_ms,
                trouble: None,
            }),
            _ => None,
        }
    }
}

/// Why the drill must give its host back now, whatever else: HA was disarmed (the host,
/// getting no grant, still fences its HA guests, but nothing restarts them), or another
/// host became suspect or dead (a real failure on top of the drill).
pub fn trouble(host: &str, state: &ClusterState) -> Option<String> {
    if state.ha.disarmed {
        return Some("HA was disarmed during the drill".into());
    }
    state
        .hosts
        .values()
        .find(|h| h.name != host && matches!(h.health, HostHealth::Suspect | HostHealth::Dead))
        .map(|h| {
            format!(
                "host {} became {} during the drill",
                h.name,
                h.health.as_str()
            )
        })
}

/// The report with what the state shows at `now_ms`.
pub fn observe(
    report: &DrillReport,
    op: &DrillOp,
    state: &ClusterState,
    now_ms: u64,
) -> DrillReport {
    let mut r = report.clone();
    let host = state.hosts.get(&op.host);
    let isolated = r.isolated_at_ms.is_some();
    if isolated && r.dead_at_ms.is_none() {
        if let Some(h) = host.filter(|h| h.health == HostHealth::Dead) {
            r.dead_at_ms = Some(now_ms);
            r.dead_reason = h.dead_reason.map(|d| d.as_str().to_string());
        }
    }
    // Back: up again, and — when it was declared dead — trusted again, which the host
    // actor records (`host-back`) once the host runs nothing stale and no HA guest.
    let trusted = r.dead_at_ms.is_none()
        || state.events.entries.iter().any(|e| {
            e.kind == EventKind::HostBack
                && e.at_ms >= op.started_at_ms
                && e.host.as_deref() == Some(op.host.as_str())
        });
    if r.phase == DrillPhase::Restoring
        && r.back_at_ms.is_none()
        && trusted
        && host.is_some_and(|h| h.health == HostHealth::Up)
    {
        r.back_at_ms = Some(now_ms);
    }
    // Fence path: what the cluster recorded about stopping the host's guests.
    r.fence_path = state
        .events
        .entries
        .iter()
        .filter(|e| e.at_ms >= op.started_at_ms && e.host.as_deref() == Some(op.host.as_str()))
        .filter(|e| {
            matches!(
                e.kind,
                EventKind::HostDead | EventKind::SelfFenced | EventKind::FenceAgentFailed
            )
        })
        .map(|e| {
            let after = r
                .isolated_at_ms
                .map(|t| format!("+{} ms ", e.at_ms.saturating_sub(t)))
                .unwrap_or_default();
            format!("{after}{}: {}", e.kind.as_str(), e.message)
        })
        .collect();
    for (name, entry) in r.vms.iter_mut() {
        let Some(vm) = state.vms.get(name) else {
            entry.down_reason = Some("deleted during the drill".into());
            continue;
        };
        if entry.running_at_ms.is_none()
            && isolated
            && vm.observed == ObservedState::Running
            && vm.host.as_deref().is_some_and(|h| h != op.host)
        {
            entry.restarted_on = vm.host.clone();
            entry.running_at_ms = Some(now_ms);
            entry.down_reason = None;
        }
        if entry.running_at_ms.is_none() {
            entry.down_reason = Some(if !vm.ha {
                "not HA: it waits for its host to come back".into()
            } else if !vm.reason.is_empty() {
                vm.reason.clone()
            } else if r.dead_at_ms.is_none() {
                "its host is not declared dead yet".into()
            } else {
                format!("not running elsewhere yet ({})", vm.observed.as_str())
            });
        }
    }
    r
}

/// Whether every HA VM of the host runs elsewhere.
fn failover_complete(r: &DrillReport) -> bool {
    r.dead_at_ms.is_some()
        && r.vms
            .values()
            .filter(|v| v.ha)
            .all(|v| v.running_at_ms.is_some())
}

/// What to do now. `inherited`: this leader did not isolate the host itself (it took over
/// a drill a previous leader ran), so it has not sampled the failover and ends the drill
/// (the actor marks the report `interrupted`, which fails the verdict).
pub fn next(r: &DrillReport, op: &DrillOp, inherited: bool, now_ms: u64) -> Next {
    match r.phase {
        DrillPhase::Starting if op.cancel_requested => Next::Finish {
            state: OpState::Cancelled,
            message: "cancelled before the host was isolated".into(),
            verdict: Verdict::Failed(vec!["cancelled".into()]),
        },
        DrillPhase::Starting => Next::CutOff,
        DrillPhase::Failover => {
            let deadline = r.isolated_at_ms.unwrap_or(op.started_at_ms) + op.max_duration_ms;
            if now_ms >= deadline + RESTORE_TIMEOUT_MS {
                // The host's agent never answered the call that gives it back.
                let why = match op.mode {
                    DrillMode::Isolate => format!("hostd on {} does not answer", op.host),
                    DrillMode::StopAgent => format!(
                        "hostd on {} did not come back after the drill stopped it (does \
                         its service manager restart it?)",
                        op.host
                    ),
                };
                Next::Finish {
                    state: OpState::Failed,
                    message: format!("failed: {why}"),
                    verdict: Verdict::Failed(vec![why]),
                }
            } else if op.cancel_requested {
                Next::Restore("cancelled by an operator".into())
            } else if let Some(trouble) = &op.trouble {
                Next::Restore(trouble.clone())
            } else if inherited {
                Next::Restore("the leader changed during the drill".into())
            } else if failover_complete(r) {
                Next::Restore("every HA VM runs elsewhere".into())
            } else if now_ms >= deadline {
                Next::Restore(format!(
                    "the longest isolation ({} s) is over",
                    op.max_duration_ms / 1000
                ))
            } else {
                Next::Wait
            }
        }
        DrillPhase::Restoring => {
            let restored = r.restored_at_ms.unwrap_or(now_ms);
            if r.back_at_ms.is_some() || now_ms >= restored + RESTORE_TIMEOUT_MS {
                let verdict = verdict(r, op);
                let state = if op.cancel_requested {
                    OpState::Cancelled
                } else if verdict == Verdict::Passed {
                    OpState::Succeeded
                } else {
                    OpState::Failed
                };
                let message = match &verdict {
                    Verdict::Passed => summary(r),
                    Verdict::Failed(why) => format!("failed: {}", why.join("; ")),
                };
                Next::Finish {
                    state,
                    message,
                    verdict,
                }
            } else {
                Next::Wait
            }
        }
        DrillPhase::Done => Next::Wait,
    }
}

/// Passed only when nothing ran twice, the host was declared dead, every HA VM ran
/// elsewhere, and the host came back.
pub fn verdict(r: &DrillReport, op: &DrillOp) -> Verdict {
    let mut why = Vec::new();
    if op.cancel_requested {
        why.push("cancelled by an operator".to_string());
    }
    if r.interrupted {
        why.push("interrupted by a leader change (its samples were lost)".to_string());
    }
    for v in &r.violations {
        why.push(format!("ran twice: {v}"));
    }
    if r.samples == 0 {
        why.push("no never-twice sample was taken".into());
    }
    if r.dead_at_ms.is_none() {
        why.push(format!("host {} was never declared dead", op.host));
    }
    for (name, v) in r.vms.iter().filter(|(_, v)| v.ha) {
        if v.running_at_ms.is_none() {
            let reason = v.down_reason.as_deref().unwrap_or("not running elsewhere");
            why.push(format!("HA VM {name} did not restart: {reason}"));
        }
    }
    if r.back_at_ms.is_none() {
        why.push(format!(
            "host {} was not trusted again within {} s of the isolation's end",
            op.host,
            RESTORE_TIMEOUT_MS / 1000
        ));
    }
    if why.is_empty() {
        Verdict::Passed
    } else {
        Verdict::Failed(why)
    }
}

fn summary(r: &DrillReport) -> String {
    let ha = r.vms.values().filter(|v| v.ha).count();
    let slowest = r
        .vms
        .values()
        .filter_map(|v| Some(v.running_at_ms?.saturating_sub(r.isolated_at_ms?)))
        .max();
    format!(
        "passed: detected in {} ms, {ha} HA VMs restarted (slowest {} ms), {} samples, never twice",
        r.detection_ms().unwrap_or(0),
        slowest.unwrap_or(0),
        r.samples
    )
}

#[cfg(test)]
mod tests {
    use drover_raft::model::{DeadReason, DrillVm, Vm};

    use super::*;
    use crate::fixtures;

    fn op() -> DrillOp {
        DrillOp {
            host: "h1".into(),
            mode: DrillMode::Isolate,
            max_duration_ms: 60_000,
            cancel_requested: false,
            started_at_ms: 1_000,
            trouble: None,
        }
    }

    fn state() -> ClusterState {
        let ha = Vm {
            ha: true,
            ..fixtures::vm("web", Some("h1"), 1, 512)
        };
        fixtures::state(
            vec![fixtures::host("h1", 4, 4096), fixtures::host("h2", 4, 4096)],
            vec![ha, fixtures::vm("batch", Some("h1"), 1, 512)],
        )
    }

    fn report() -> DrillReport {
        let mut r = DrillReport::default();
        r.vms.insert(
            "web".into(),
            DrillVm {
                ha: true,
                ..Default::default()
            },
        );
        r.vms.insert("batch".into(), DrillVm::default());
        r
    }

    /// The whole drill, phase by phase, as the actor would drive it.
    #[test]
    fn a_drill_isolates_follows_the_failover_restores_and_passes() {
        let mut s = state();
        let mut r = report();
        assert_eq!(next(&r, &op(), false, 1_000), Next::CutOff);
        r.phase = DrillPhase::Failover;
        r.isolated_at_ms = Some(2_000);
        r.samples = 5;
        r = observe(&r, &op(), &s, 3_000);
        assert_eq!(next(&r, &op(), false, 3_000), Next::Wait);
        assert!(r.vms["web"]
            .down_reason
            .as_deref()
            .unwrap()
            .contains("not declared dead"));

        let h1 = s.hosts.get_mut("h1").unwrap();
        h1.health = HostHealth::Dead;
        h1.dead_reason = Some(DeadReason::LeaseLapsed);
        r = observe(&r, &op(), &s, 9_000);
        assert_eq!(r.detection_ms(), Some(7_000));
        assert_eq!(r.dead_reason.as_deref(), Some("lease"));
        assert_eq!(
            next(&r, &op(), false, 9_000),
            Next::Wait,
            "web not restarted yet"
        );

        let web = s.vms.get_mut("web").unwrap();
        web.host = Some("h2".into());
        web.observed = ObservedState::Running;
        r = observe(&r, &op(), &s, 10_500);
        assert_eq!(r.vms["web"].restarted_on.as_deref(), Some("h2"));
        assert_eq!(r.restart_ms("web"), Some(8_500));
        assert!(r.vms["batch"]
            .down_reason
            .as_deref()
            .unwrap()
            .contains("not HA"));
        assert!(matches!(next(&r, &op(), false, 10_500), Next::Restore(_)));

        r.phase = DrillPhase::Restoring;
        r.restored_at_ms = Some(11_000);
        assert_eq!(
            next(&r, &op(), false, 12_000),
            Next::Wait,
            "host not back yet"
        );
        s.hosts.get_mut("h1").unwrap().health = HostHealth::Up;
        r = observe(&r, &op(), &s, 13_000);
        assert_eq!(r.back_at_ms, None, "up, but not yet trusted again");
        s.events.push(drover_raft::model::Event {
            seq: 0,
            at_ms: 13_500,
            kind: EventKind::HostBack,
            host: Some("h1".into()),
            vm: None,
            message: "trusted again".into(),
        });
        r = observe(&r, &op(), &s, 14_000);
        assert_eq!(r.back_at_ms, Some(14_000));
        match next(&r, &op(), false, 14_000) {
            Next::Finish { state, verdict, .. } => {
                assert_eq!(state, OpState::Succeeded);
                assert_eq!(verdict, Verdict::Passed);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_double_run_or_a_vm_left_down_fails_the_verdict() {
        let mut r = report();
        r.phase = DrillPhase::Restoring;
        r.isolated_at_ms = Some(2_000);
        r.dead_at_ms = Some(8_000);
        r.back_at_ms = Some(20_000);
        r.samples = 10;
        r.violations = vec!["web ran on h1 before and after h2 listed it running".into()];
        let Verdict::Failed(why) = verdict(&r, &op()) else {
            panic!("a violation must fail the drill");
        };
        assert!(why.iter().any(|w| w.contains("ran twice")), "{why:?}");
        assert!(
            why.iter().any(|w| w.contains("HA VM web did not restart")),
            "{why:?}"
        );
        // A drill a new leader took over fails even when everything else went right.
        let mut clean = r.clone();
        clean.violations.clear();
        clean.vms.get_mut("web").unwrap().running_at_ms = Some(9_000);
        clean.vms.get_mut("batch").unwrap().ha = false;
        assert_eq!(verdict(&clean, &op()), Verdict::Passed);
        clean.interrupted = true;
        assert!(
            matches!(verdict(&clean, &op()), Verdict::Failed(w) if w[0].contains("leader change"))
        );
    }

    #[test]
    fn time_up_cancel_and_a_new_leader_all_restore_the_host() {
        let mut r = report();
        r.phase = DrillPhase::Failover;
        r.isolated_at_ms = Some(2_000);
        assert!(matches!(next(&r, &op(), false, 62_000), Next::Restore(w) if w.contains("over")));
        let cancelled = DrillOp {
            cancel_requested: true,
            ..op()
        };
        assert!(
            matches!(next(&r, &cancelled, false, 3_000), Next::Restore(w) if w.contains("cancelled"))
        );
        assert!(matches!(next(&r, &op(), true, 3_000), Next::Restore(w) if w.contains("leader")));
        let mut s = state();
        s.ha.disarmed = true;
        let troubled = DrillOp {
            trouble: trouble("h1", &s),
            ..op()
        };
        assert!(
            matches!(next(&r, &troubled, false, 3_000), Next::Restore(w) if w.contains("disarmed"))
        );
        // A host that never comes back fails the drill once the restore timeout is over.
        r.phase = DrillPhase::Restoring;
        r.restored_at_ms = Some(5_000);
        match next(&r, &op(), false, 5_000 + RESTORE_TIMEOUT_MS) {
            Next::Finish { state, verdict, .. } => {
                assert_eq!(state, OpState::Failed);
                assert!(
                    matches!(verdict, Verdict::Failed(w) if w.iter().any(|w| w.contains("not trusted again")))
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_stopped_agent_that_never_comes_back_fails_the_drill() {
        let mut r = report();
        r.phase = DrillPhase::Failover;
        r.isolated_at_ms = Some(2_000);
        let stop = DrillOp {
            mode: DrillMode::StopAgent,
            ..op()
        };
        let deadline = 2_000 + stop.max_duration_ms;
        // Until then, the actor keeps trying to give the host back.
        assert!(matches!(next(&r, &stop, false, deadline), Next::Restore(_)));
        match next(&r, &stop, false, deadline + RESTORE_TIMEOUT_MS) {
            Next::Finish { state, verdict, .. } => {
                assert_eq!(state, OpState::Failed);
                assert!(
                    matches!(&verdict, Verdict::Failed(w) if w.iter().any(|w| w.contains("service manager"))),
                    "{verdict:?}"
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
