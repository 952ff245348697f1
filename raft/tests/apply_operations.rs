//! `apply` for operations: live migration (start, progress, finish, cancel) and drains
//! (maintenance), with labels and anti-affinity carried on hosts and VMs. Every refusal
//! leaves the state untouched; a proptest checks the invariants any log keeps.

use drover_raft::model::{
    AdminState, Capacity, ClusterState, DesiredState, DrillMode, DrillReport, HostHealth,
    LeaderDrillMeasure, LeaderDrillMode, MigrationPolicy, MigrationProgress, ObservedState, OpKind,
    OpState, Verdict, VmSpec,
};
use drover_raft::{ApplyError, Command, Reply};
use proptest::prelude::*;

fn ok(s: &mut ClusterState, cmd: Command) -> Reply {
    let (r, _) = s.apply(&cmd);
    r.unwrap_or_else(|e| panic!("{cmd:?} refused: {e}"))
}

fn refused(s: &mut ClusterState, cmd: Command) -> ApplyError {
    let before = s.clone();
    let (r, _) = s.apply(&cmd);
    assert_eq!(*s, before, "a refused command must not change the state");
    r.expect_err("should be refused")
}

fn host_up(s: &mut ClusterState, name: &str) {
    ok(
        s,
        Command::AddHost {
            name: name.into(),
            address: "127.0.0.1:7001".into(),
            labels: [("rack".to_string(), name.to_string())].into(),
        },
    );
    ok(
        s,
        Command::HostObserved {
            name: name.into(),
            health: HostHealth::Up,
            capacity: Some(Capacity {
                vcpus: 4,
                memory_mib: 4096,
            }),
            fencing_armed: Some(true),
            armed_epoch: 0,
            migration_uri: Some(format!("qemu+tcp://{name}:16509/system")),
        },
    );
}

/// A running VM placed on `host` at generation 1.
fn running_vm(s: &mut ClusterState, name: &str, host: &str) {
    ok(
        s,
        Command::CreateVm {
            name: name.into(),
            spec: VmSpec {
                vcpus: 1,
                memory_mib: 256,
            },
            start: true,
            options: drover_raft::model::VmOptions {
                ha: true,
                anti_affinity: Some("web".into()),
                ..Default::default()
            },
        },
    );
    ok(
        s,
        Command::PlaceVm {
            name: name.into(),
            host: host.into(),
            expected_generation: 0,
        },
    );
    ok(
        s,
        Command::VmObserved {
            name: name.into(),
            generation: 1,
            observed: ObservedState::Running,
            reason: String::new(),
            listed_after: u64::MAX,
        },
    );
}

/// A plain VM (not HA) of one vCPU, to be started once placed.
fn create(name: &str, memory_mib: u64, anti_affinity: Option<&str>) -> Command {
    Command::CreateVm {
        name: name.into(),
        spec: VmSpec {
            vcpus: 1,
            memory_mib,
        },
        start: true,
        options: drover_raft::model::VmOptions {
            anti_affinity: anti_affinity.map(String::from),
            ..Default::default()
        },
    }
}

fn migrate(vm: &str, generation: u64, dst: &str) -> Command {
    Command::StartMigration {
        vm: vm.into(),
        expected_generation: generation,
        dst: dst.into(),
        policy: MigrationPolicy::default(),
        at_ms: 10,
        limits: None,
    }
}

fn finish(op: u64, state: OpState) -> Command {
    Command::FinishMigration {
        op,
        state,
        message: "m".into(),
        progress: None,
        at_ms: 20,
    }
}

fn op_id(reply: Reply) -> u64 {
    match reply {
        Reply::Operation(op) => op.id,
        other => panic!("expected an operation, got {other:?}"),
    }
}

#[test]
fn labels_and_groups_are_validated_and_kept() {
    let mut s = ClusterState::default();
    host_up(&mut s, "h1");
    assert_eq!(s.hosts["h1"].labels["rack"], "h1");
    assert_eq!(s.hosts["h1"].migration_uri, "qemu+tcp://h1:16509/system");
    let bad = refused(
        &mut s,
        Command::AddHost {
            name: "h2".into(),
            address: "127.0.0.1:7002".into(),
            labels: [("ra ck".to_string(), "x".to_string())].into(),
        },
    );
    assert!(matches!(bad, ApplyError::InvalidLabels(_)), "{bad}");
    let bad = refused(
        &mut s,
        Command::CreateVm {
            name: "v".into(),
            spec: VmSpec {
                vcpus: 1,
                memory_mib: 1,
            },
            start: false,
            options: drover_raft::model::VmOptions {
                anti_affinity: Some("bad group".into()),
                ..Default::default()
            },
        },
    );
    assert!(bad.to_string().contains("anti-affinity group"), "{bad}");
}

#[test]
fn migration_completes_with_a_new_generation_or_stays_put() {
    let mut s = ClusterState::default();
    host_up(&mut s, "h1");
    host_up(&mut s, "h2");
    running_vm(&mut s, "a", "h1");

    // Refusals, each with its reason and no change.
    assert!(matches!(
        refused(&mut s, migrate("a", 1, "h1")),
        ApplyError::SameHost { .. }
    ));
    assert!(matches!(
        refused(&mut s, migrate("a", 0, "h2")),
        ApplyError::StaleGeneration { .. }
    ));
    assert!(matches!(
        refused(&mut s, migrate("a", 1, "nope")),
        ApplyError::UnknownHost(_)
    ));

    let op = op_id(ok(&mut s, migrate("a", 1, "h2")));
    assert_eq!(s.vms["a"].migration, Some(op));
    assert_eq!(s.migrating_to(&s.vms["a"]), Some("h2"));
    // Booked on both ends while it runs.
    assert_eq!(s.allocated("h2").1, 256);
    assert_eq!(s.allocated("h1").1, 256);
    // The VM is locked to the operation.
    assert!(matches!(
        refused(&mut s, migrate("a", 1, "h2")),
        ApplyError::VmMigrating { .. }
    ));
    assert!(matches!(
        refused(
            &mut s,
            Command::SetDesiredState {
                name: "a".into(),
                desired: DesiredState::Stopped
            }
        ),
        ApplyError::VmMigrating { .. }
    ));
    ok(
        &mut s,
        Command::MigrationProgress {
            op,
            progress: MigrationProgress {
                data_total: 100,
                data_processed: 40,
                ..Default::default()
            },
        },
    );
    ok(&mut s, finish(op, OpState::Succeeded));
    let vm = &s.vms["a"];
    assert_eq!(vm.host.as_deref(), Some("h2"));
    assert_eq!(vm.generation, 2);
    assert_eq!(vm.migration, None);
    assert_eq!(s.operations.ops[&op].state, OpState::Succeeded);
    assert_eq!(s.allocated("h1").1, 0);
    // Finishing twice is refused.
    assert!(matches!(
        refused(&mut s, finish(op, OpState::Failed)),
        ApplyError::OperationFinished { .. }
    ));

    // A failed one leaves the VM where it was, at its generation.
    let op = op_id(ok(&mut s, migrate("a", 2, "h1")));
    ok(&mut s, Command::CancelOperation { op });
    assert!(s.operations.ops[&op].cancel_requested);
    ok(&mut s, finish(op, OpState::Cancelled));
    let vm = &s.vms["a"];
    assert_eq!((vm.host.as_deref(), vm.generation), (Some("h2"), 2));
    assert_eq!(vm.migration, None);
    assert!(matches!(
        refused(&mut s, Command::CancelOperation { op }),
        ApplyError::OperationFinished { .. }
    ));
}

/// A migration's destination has the domain before the state places the VM there, so a
/// listing of that host made before the migration ended shows it missing. Recorded, that
/// "missing" would confirm the VM off and let a cold move start a second copy; `apply`
/// takes "missing" only from a listing made after the VM's placement. The same holds for
/// a start: a listing made before hostd ran it may arrive after the start's answer, so a
/// guest coming up counts as a placement too.
#[test]
fn a_listing_from_before_a_migration_ended_cannot_call_the_vm_missing() {
    let missing = |generation, listed_after| Command::VmObserved {
        name: "a".into(),
        generation,
        observed: ObservedState::Missing,
        reason: String::new(),
        listed_after,
    };
    let mut s = ClusterState::default();
    for h in ["h1", "h2", "h3"] {
        host_up(&mut s, h);
    }
    running_vm(&mut s, "a", "h1");
    // Placed, then seen running: both count.
    assert_eq!((s.placements, s.vms["a"].placed_at), (2, 2));
    // What a grant sent to h2 before the migration ended told it.
    let told_h2 = s.placements;
    let op = op_id(ok(&mut s, migrate("a", 1, "h2")));
    ok(&mut s, finish(op, OpState::Succeeded));
    assert_eq!((s.placements, s.vms["a"].placed_at), (3, 3));

    let e = refused(&mut s, missing(2, told_h2));
    assert!(matches!(e, ApplyError::StaleListing { .. }), "{e}");
    assert!(e.to_string().contains("placed at 3"), "{e}");
    // So the VM still counts as running on h2 and cannot be cold-moved.
    assert!(matches!(
        refused(
            &mut s,
            Command::PlaceVm {
                name: "a".into(),
                host: "h3".into(),
                expected_generation: 2,
            }
        ),
        ApplyError::VmMayStillRun { .. }
    ));
    // Other states are about the domain at this generation: no proof of age is needed.
    ok(
        &mut s,
        Command::VmObserved {
            name: "a".into(),
            generation: 2,
            observed: ObservedState::Paused,
            reason: String::new(),
            listed_after: 0,
        },
    );
    // A listing made after the placement does prove the domain gone.
    let now = s.placements;
    ok(&mut s, missing(2, now));
    assert_eq!(s.vms["a"].observed, ObservedState::Missing);
    ok(
        &mut s,
        Command::PlaceVm {
            name: "a".into(),
            host: "h3".into(),
            expected_generation: 2,
        },
    );
    // Every placement counts: the move, then a start.
    assert_eq!((s.placements, s.vms["a"].placed_at), (4, 4));
    ok(
        &mut s,
        Command::BeginStart {
            name: "a".into(),
            expected_generation: 3,
        },
    );
    assert_eq!((s.placements, s.vms["a"].placed_at), (5, 5));

    // The start is answered (running, recorded) before a heartbeat listed just before
    // hostd ran it arrives: that listing knew of the start (placement 5) but not of the
    // guest coming up, which counts too. Believed, it would confirm a running VM off.
    let listed_before_the_start_ran = s.placements;
    ok(
        &mut s,
        Command::VmObserved {
            name: "a".into(),
            generation: 4,
            observed: ObservedState::Running,
            reason: String::new(),
            listed_after: 0,
        },
    );
    assert_eq!((s.placements, s.vms["a"].placed_at), (6, 6));
    let e = refused(&mut s, missing(4, listed_before_the_start_ran));
    assert!(matches!(e, ApplyError::StaleListing { .. }), "{e}");
    assert!(matches!(
        refused(
            &mut s,
            Command::PlaceVm {
                name: "a".into(),
                host: "h1".into(),
                expected_generation: 4,
            }
        ),
        ApplyError::VmMayStillRun { .. }
    ));
    // Paused -> running is no news: the count stays.
    ok(
        &mut s,
        Command::VmObserved {
            name: "a".into(),
            generation: 4,
            observed: ObservedState::Paused,
            reason: String::new(),
            listed_after: 0,
        },
    );
    assert_eq!(s.placements, 6);
}

#[test]
fn migration_needs_a_running_vm_and_an_active_destination_with_a_uri() {
    let mut s = ClusterState::default();
    host_up(&mut s, "h1");
    host_up(&mut s, "h2");
    running_vm(&mut s, "a", "h1");
    ok(
        &mut s,
        Command::VmObserved {
            name: "a".into(),
            generation: 1,
            observed: ObservedState::ShutOff,
            reason: String::new(),
            listed_after: u64::MAX,
        },
    );
    assert!(matches!(
        refused(&mut s, migrate("a", 1, "h2")),
        ApplyError::VmNotRunning { .. }
    ));
    ok(
        &mut s,
        Command::VmObserved {
            name: "a".into(),
            generation: 1,
            observed: ObservedState::Running,
            reason: String::new(),
            listed_after: u64::MAX,
        },
    );
    ok(
        &mut s,
        Command::HostObserved {
            name: "h2".into(),
            health: HostHealth::Up,
            capacity: None,
            fencing_armed: None,
            armed_epoch: 0,
            migration_uri: Some(String::new()),
        },
    );
    assert!(matches!(
        refused(&mut s, migrate("a", 1, "h2")),
        ApplyError::NoMigrationUri { .. }
    ));
}

#[test]
fn drain_puts_an_empty_host_in_maintenance_and_activate_returns_it() {
    let mut s = ClusterState::default();
    host_up(&mut s, "h1");
    host_up(&mut s, "h2");
    running_vm(&mut s, "a", "h1");
    let drain = op_id(ok(
        &mut s,
        Command::StartDrain {
            host: "h1".into(),
            stop_when_blocked: false,
            at_ms: 1,
        },
    ));
    assert_eq!(s.hosts["h1"].admin, AdminState::Draining);
    assert!(matches!(
        refused(
            &mut s,
            Command::StartDrain {
                host: "h1".into(),
                stop_when_blocked: false,
                at_ms: 1
            }
        ),
        ApplyError::HostAlreadyDraining { .. }
    ));
    // A draining host takes no placements, and no migrations in.
    ok(&mut s, create("b", 64, None));
    assert!(matches!(
        refused(
            &mut s,
            Command::PlaceVm {
                name: "b".into(),
                host: "h1".into(),
                expected_generation: 0
            }
        ),
        ApplyError::HostNotActive { .. }
    ));
    // Not empty yet: success is refused.
    let not_empty = refused(
        &mut s,
        Command::FinishDrain {
            op: drain,
            state: OpState::Succeeded,
            message: String::new(),
            at_ms: 2,
        },
    );
    assert!(
        matches!(not_empty, ApplyError::HostNotEmpty { .. }),
        "{not_empty}"
    );
    let m = op_id(ok(&mut s, migrate("a", 1, "h2")));
    ok(&mut s, finish(m, OpState::Succeeded));
    ok(
        &mut s,
        Command::FinishDrain {
            op: drain,
            state: OpState::Succeeded,
            message: "empty".into(),
            at_ms: 3,
        },
    );
    assert_eq!(s.hosts["h1"].admin, AdminState::Maintenance);
    assert!(matches!(
        refused(&mut s, migrate("a", 2, "h1")),
        ApplyError::HostNotActive { .. }
    ));
    ok(
        &mut s,
        Command::ActivateHost {
            name: "h1".into(),
            at_ms: 4,
        },
    );
    assert_eq!(s.hosts["h1"].admin, AdminState::Active);

    // Activating a draining host cancels its drain.
    let drain = op_id(ok(
        &mut s,
        Command::StartDrain {
            host: "h2".into(),
            stop_when_blocked: true,
            at_ms: 5,
        },
    ));
    ok(
        &mut s,
        Command::ActivateHost {
            name: "h2".into(),
            at_ms: 6,
        },
    );
    assert_eq!(s.operations.ops[&drain].state, OpState::Cancelled);
    assert_eq!(s.hosts["h2"].admin, AdminState::Active);
}

#[test]
fn placements_never_overbook_or_break_anti_affinity() {
    let mut s = ClusterState::default();
    host_up(&mut s, "h1");
    host_up(&mut s, "h2");
    // "a" is in group web on h1.
    running_vm(&mut s, "a", "h1");
    ok(&mut s, create("b", 256, Some("web")));
    let err = refused(
        &mut s,
        Command::PlaceVm {
            name: "b".into(),
            host: "h1".into(),
            expected_generation: 0,
        },
    );
    assert!(err.to_string().contains("anti-affinity group web"), "{err}");
    ok(&mut s, create("huge", 4000, None));
    // h1 has 4096 MiB and "a" holds 256 of it.
    let err = refused(
        &mut s,
        Command::PlaceVm {
            name: "huge".into(),
            host: "h1".into(),
            expected_generation: 0,
        },
    );
    assert!(matches!(err, ApplyError::NoRoom { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("256 of 4096 MiB allocated, needs 4000"),
        "{err}"
    );
    ok(
        &mut s,
        Command::PlaceVm {
            name: "huge".into(),
            host: "h2".into(),
            expected_generation: 0,
        },
    );
    // Nor may a migration bring "a" (256 MiB, group web) to the full h2.
    let err = refused(&mut s, migrate("a", 1, "h2"));
    assert!(err.to_string().contains("MiB allocated"), "{err}");
}

#[test]
fn drain_migrations_respect_the_limits_at_commit() {
    let mut s = ClusterState::default();
    for h in ["h1", "h2", "h3"] {
        host_up(&mut s, h);
    }
    // Three plain (no group) running VMs: two on h1, one on h2.
    for (vm, host) in [("a", "h1"), ("b", "h1"), ("c", "h2")] {
        ok(&mut s, create(vm, 64, None));
        ok(
            &mut s,
            Command::PlaceVm {
                name: vm.into(),
                host: host.into(),
                expected_generation: 0,
            },
        );
        ok(
            &mut s,
            Command::VmObserved {
                name: vm.into(),
                generation: 1,
                observed: ObservedState::Running,
                reason: String::new(),
                listed_after: u64::MAX,
            },
        );
    }
    let limited = |vm: &str, dst: &str, limits: (u32, u32)| Command::StartMigration {
        vm: vm.into(),
        expected_generation: 1,
        dst: dst.into(),
        policy: MigrationPolicy::default(),
        at_ms: 10,
        limits: Some(limits),
    };
    op_id(ok(&mut s, limited("a", "h3", (1, 8))));
    // A second one out of h1 exceeds 1 per host; one out of h2 exceeds 1 in the cluster.
    let err = refused(&mut s, limited("b", "h3", (1, 8)));
    assert!(err.to_string().contains("out of h1"), "{err}");
    let err = refused(&mut s, limited("c", "h3", (8, 1)));
    assert!(err.to_string().contains("in the cluster"), "{err}");
    // Within the limits it goes, and an operator's migration has none.
    op_id(ok(&mut s, limited("c", "h3", (8, 2))));
    op_id(ok(&mut s, migrate("b", 1, "h2")));
}

#[test]
fn placement_policy_is_validated() {
    use drover_raft::model::{PlacementPolicy, Weigher};
    let mut s = ClusterState::default();
    let pack = PlacementPolicy {
        weigher: Weigher::Pack,
        ..Default::default()
    };
    ok(&mut s, Command::SetPlacementPolicy { policy: pack });
    assert_eq!(s.placement, pack);
    let bad = refused(
        &mut s,
        Command::SetPlacementPolicy {
            policy: PlacementPolicy {
                memory_overcommit_pct: 0,
                ..pack
            },
        },
    );
    assert!(matches!(bad, ApplyError::InvalidPlacement(_)), "{bad}");
}

fn drill(host: &str) -> Command {
    Command::StartDrill {
        host: host.into(),
        mode: DrillMode::Isolate,
        max_duration_ms: 60_000,
        at_ms: 10,
    }
}

/// A drill refuses a cluster that could not survive it, one drill at a time, and while it
/// runs nothing moves onto or off its host.
#[test]
fn drills_are_refused_unless_the_cluster_could_survive_them() {
    let mut s = ClusterState::default();
    for h in ["h1", "h2", "h3"] {
        host_up(&mut s, h);
    }
    running_vm(&mut s, "web", "h1");
    assert!(matches!(
        refused(&mut s, drill("h9")),
        ApplyError::UnknownHost(_)
    ));
    let short = Command::StartDrill {
        host: "h1".into(),
        mode: DrillMode::Isolate,
        max_duration_ms: 500,
        at_ms: 10,
    };
    assert!(matches!(
        refused(&mut s, short),
        ApplyError::InvalidDrill(_)
    ));

    ok(&mut s, Command::SetHaArmed { armed: false });
    assert_eq!(refused(&mut s, drill("h1")), ApplyError::DrillHaDisarmed);
    ok(&mut s, Command::SetHaArmed { armed: true });
    // Disarming cleared every host's "armed"; the hosts report it again.
    let epoch = s.ha.epoch;
    for h in ["h1", "h2", "h3"] {
        ok(
            &mut s,
            Command::HostObserved {
                name: h.into(),
                health: HostHealth::Up,
                capacity: None,
                fencing_armed: Some(true),
                armed_epoch: epoch,
                migration_uri: None,
            },
        );
    }

    let mut suspect = s.clone();
    ok(
        &mut suspect,
        Command::HostObserved {
            name: "h3".into(),
            health: HostHealth::Suspect,
            capacity: None,
            fencing_armed: None,
            armed_epoch: 0,
            migration_uri: None,
        },
    );
    assert!(matches!(
        refused(&mut suspect, drill("h1")),
        ApplyError::OtherHostDown { host, .. } if host == "h3"
    ));
    assert!(matches!(
        refused(&mut suspect, drill("h3")),
        ApplyError::HostNotUp { .. }
    ));

    let op = op_id(ok(&mut s, drill("h1")));
    match &s.operations.ops[&op].progress {
        drover_raft::model::Progress::Drill(r) => {
            assert!(r.vms["web"].ha, "the host's VMs are recorded at the start")
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        refused(&mut s, drill("h2")),
        ApplyError::DrillRunning { op: o, .. } if o == op
    ));
    assert!(matches!(
        refused(&mut s, migrate("web", 1, "h2")),
        ApplyError::HostBusy { host, .. } if host == "h1"
    ));
    assert!(matches!(
        refused(
            &mut s,
            Command::StartDrain {
                host: "h1".into(),
                stop_when_blocked: false,
                at_ms: 11
            }
        ),
        ApplyError::HostBusy { .. }
    ));
    // A finish must carry the verdict.
    let mut report = DrillReport::default();
    let unfinished = Command::FinishDrill {
        op,
        state: OpState::Succeeded,
        message: "done".into(),
        report: report.clone(),
        at_ms: 20,
    };
    assert!(matches!(
        refused(&mut s, unfinished),
        ApplyError::InvalidDrill(_)
    ));
    report.verdict = Some(Verdict::Passed);
    ok(
        &mut s,
        Command::FinishDrill {
            op,
            state: OpState::Succeeded,
            message: "passed".into(),
            report,
            at_ms: 20,
        },
    );
    assert_eq!(s.operations.ops[&op].state, OpState::Succeeded);
    // The next drill may start once the first has ended.
    ok(&mut s, drill("h2"));
}

fn leader_drill(leader: u64, observer: u64) -> Command {
    Command::StartLeaderDrill {
        mode: LeaderDrillMode::StepDown,
        leader,
        observer,
        max_duration_ms: 60_000,
        at_ms: 10,
    }
}

#[test]
fn a_leader_drill_records_its_probes_and_catches_a_lost_acknowledged_one() {
    let mut s = ClusterState::default();
    assert!(matches!(
        refused(&mut s, leader_drill(1, 1)),
        ApplyError::InvalidDrill(_)
    ));
    let op = op_id(ok(&mut s, leader_drill(1, 2)));
    assert!(matches!(
        refused(&mut s, leader_drill(2, 3)),
        ApplyError::DrillRunning { op: o, .. } if o == op
    ));
    // A host drill's commands do not apply to it.
    assert!(matches!(
        refused(
            &mut s,
            Command::DrillProgress {
                op,
                report: DrillReport::default()
            }
        ),
        ApplyError::InvalidDrill(_)
    ));
    for seq in [1, 2, 3, 3] {
        ok(&mut s, Command::DrillProbe { op, seq });
    }
    let mut lost = s.clone();
    // The observer saw 1..=4 acknowledged, but 4 never reached the state.
    let measure = |acked: Vec<u64>| LeaderDrillMeasure {
        new_leader: Some(2),
        sent: acked.len() as u64,
        acked,
        unavailable_ms: Some(400),
        time_to_leader_ms: Some(300),
        ..LeaderDrillMeasure::default()
    };
    ok(
        &mut lost,
        Command::FinishLeaderDrill {
            op,
            measure: measure(vec![1, 2, 3, 4]),
            at_ms: 30,
        },
    );
    let o = &lost.operations.ops[&op];
    assert_eq!(o.state, OpState::Failed, "{}", o.message);
    assert!(o.message.contains("not in the state"), "{}", o.message);
    ok(
        &mut s,
        Command::FinishLeaderDrill {
            op,
            measure: measure(vec![1, 2, 3]),
            at_ms: 30,
        },
    );
    let o = &s.operations.ops[&op];
    assert_eq!(o.state, OpState::Succeeded, "{}", o.message);
    match &o.progress {
        drover_raft::model::Progress::LeaderDrill(r) => {
            assert_eq!(r.applied_count, 3, "a repeated probe counts once");
            assert!(r.applied.is_empty());
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        refused(&mut s, Command::DrillProbe { op, seq: 9 }),
        ApplyError::OperationFinished { .. }
    ));
}

fn arb_command() -> impl Strategy<Value = Command> {
    let vm = prop::sample::select(vec!["a", "b"]);
    let host = prop::sample::select(vec!["h1", "h2", "h3"]);
    let state = prop::sample::select(vec![
        OpState::Succeeded,
        OpState::Failed,
        OpState::Cancelled,
    ]);
    prop_oneof![
        (vm.clone(), 0u64..4, host.clone()).prop_map(|(v, g, h)| migrate(v, g, h)),
        (1u64..6, state.clone()).prop_map(|(op, st)| finish(op, st)),
        (1u64..6).prop_map(|op| Command::CancelOperation { op }),
        (host.clone(), any::<bool>()).prop_map(|(h, stop)| Command::StartDrain {
            host: h.into(),
            stop_when_blocked: stop,
            at_ms: 1
        }),
        (1u64..6, state).prop_map(|(op, st)| Command::FinishDrain {
            op,
            state: st,
            message: String::new(),
            at_ms: 2
        }),
        host.clone().prop_map(|h| Command::ActivateHost {
            name: h.into(),
            at_ms: 3
        }),
        (vm.clone(), host, 0u64..4).prop_map(|(v, h, g)| Command::PlaceVm {
            name: v.into(),
            host: h.into(),
            expected_generation: g
        }),
        (vm, 0u64..4).prop_map(|(v, g)| Command::VmObserved {
            name: v.into(),
            generation: g,
            observed: ObservedState::Running,
            reason: String::new(),
            listed_after: u64::MAX,
        }),
    ]
}

proptest! {
    /// After any log: a VM's migration lock and its running operation agree; a host in
    /// maintenance runs nothing and receives nothing; applying is deterministic.
    #[test]
    fn operation_invariants(log in prop::collection::vec(arb_command(), 0..80)) {
        let mut s = ClusterState::default();
        for h in ["h1", "h2", "h3"] {
            host_up(&mut s, h);
        }
        running_vm(&mut s, "a", "h1");
        running_vm(&mut s, "b", "h2");
        let mut twin = s.clone();
        for cmd in &log {
            let (ra, _) = s.apply(cmd);
            let (rb, _) = twin.apply(cmd);
            prop_assert_eq!(ra, rb);
        }
        prop_assert_eq!(&s, &twin);
        for vm in s.vms.values() {
            if let Some(id) = vm.migration {
                let op = &s.operations.ops[&id];
                prop_assert_eq!(op.state, OpState::Running);
                let is_this_vm = matches!(&op.kind, OpKind::Migrate { vm: v, src, .. }
                    if *v == vm.name && vm.host.as_deref() == Some(src.as_str()));
                prop_assert!(is_this_vm, "{:?} locked by {:?}", vm, op);
            }
        }
        for op in s.operations.running() {
            if let OpKind::Migrate { vm, .. } = &op.kind {
                prop_assert_eq!(s.vms[vm].migration, Some(op.id));
            }
        }
        for h in s.hosts.values() {
            let (cpu, mem, _) = s.allocated(&h.name);
            prop_assert!(u64::from(cpu) <= u64::from(h.capacity.vcpus) * 4, "{} overbooked", h.name);
            prop_assert!(mem <= h.capacity.memory_mib, "{} overbooked", h.name);
        }
        for h in s.hosts.values().filter(|h| h.admin == AdminState::Maintenance) {
            prop_assert_eq!(s.allocated(&h.name).2, 0, "{} in maintenance hosts VMs", h.name);
        }
    }
}

#[test]
fn a_migration_drill_starts_legs_in_one_entry_each_and_ends_with_a_verdict() {
    let mut s = ClusterState::default();
    host_up(&mut s, "h1");
    host_up(&mut s, "h2");
    assert!(matches!(
        refused(
            &mut s,
            Command::StartMigrationDrill {
                vm: "nosuch".into(),
                at_ms: 1
            }
        ),
        ApplyError::UnknownVm(_)
    ));
    running_vm(&mut s, "web", "h1");
    let op = op_id(ok(
        &mut s,
        Command::StartMigrationDrill {
            vm: "web".into(),
            at_ms: 1,
        },
    ));
    assert!(matches!(
        refused(&mut s, leader_drill(1, 2)),
        ApplyError::DrillRunning { op: o, .. } if o == op
    ));
    assert!(matches!(
        refused(
            &mut s,
            Command::StartDrillLeg {
                op,
                dst: "h1".into(),
                at_ms: 2
            }
        ),
        ApplyError::SameHost { .. }
    ));
    let leg = op_id(ok(
        &mut s,
        Command::StartDrillLeg {
            op,
            dst: "h2".into(),
            at_ms: 2,
        },
    ));
    assert_eq!(
        s.vms["web"].migration,
        Some(leg),
        "the leg is a real migration"
    );
    match &s.operations.ops[&op].progress {
        drover_raft::model::Progress::MigrationDrill(r) => {
            assert_eq!(r.home, "h1");
            assert_eq!(r.legs.len(), 1);
            assert_eq!(r.legs[0].op, leg);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        refused(
            &mut s,
            Command::StartDrillLeg {
                op,
                dst: "h2".into(),
                at_ms: 3
            }
        ),
        ApplyError::InvalidDrill(w) if w.contains("still running")
    ));
    assert!(matches!(
        refused(
            &mut s,
            Command::FinishMigrationDrill {
                op,
                state: OpState::Failed,
                message: "x".into(),
                report: Default::default(),
                at_ms: 4
            }
        ),
        ApplyError::InvalidDrill(_)
    ));
}

#[test]
fn a_scheduled_drill_starts_only_when_due_and_is_recorded_in_its_schedule() {
    let mut s = ClusterState::default();
    for h in ["h1", "h2"] {
        host_up(&mut s, h);
    }
    let create = |name: &str, every_ms: u64, hosts: Vec<String>| Command::CreateDrillSchedule {
        name: name.into(),
        mode: DrillMode::Isolate,
        every_ms,
        hosts,
        window: None,
        at_ms: 1,
    };
    assert!(matches!(
        refused(&mut s, create("w", 60_000, vec![])),
        ApplyError::InvalidDrill(w) if w.contains("every hour")
    ));
    assert!(matches!(
        refused(&mut s, create("w", 3_600_000, vec!["nosuch".into()])),
        ApplyError::UnknownHost(_)
    ));
    assert!(matches!(
        refused(
            &mut s,
            create("w", 3_600_000, vec!["h1".into(), "h2".into(), "h1".into()])
        ),
        ApplyError::InvalidDrill(w) if w.contains("twice")
    ));
    ok(
        &mut s,
        create("w", 3_600_000, vec!["h2".into(), "h1".into()]),
    );
    assert!(matches!(
        refused(&mut s, create("w", 3_600_000, vec![])),
        ApplyError::ScheduleExists(_)
    ));
    let start = |host: &str, at_ms: u64| Command::StartScheduledDrill {
        schedule: "w".into(),
        host: host.into(),
        max_duration_ms: 60_000,
        at_ms,
    };
    assert!(matches!(
        refused(
            &mut s,
            Command::StartScheduledDrill {
                schedule: "w".into(),
                host: "h3".into(),
                max_duration_ms: 60_000,
                at_ms: 10,
            }
        ),
        ApplyError::ScheduleNotDue { .. }
    ));
    let op = op_id(ok(&mut s, start("h2", 10)));
    let w = &s.drill_schedules["w"];
    assert_eq!((w.started, w.last_started_ms), (1, Some(10)));
    assert_eq!(w.runs[0].op, op);
    // A second leader's cadence cannot start it again within the period.
    assert!(matches!(
        refused(&mut s, start("h1", 20)),
        ApplyError::ScheduleNotDue { .. }
    ));
    ok(&mut s, Command::DeleteDrillSchedule { name: "w".into() });
    assert!(matches!(
        refused(&mut s, Command::DeleteDrillSchedule { name: "w".into() }),
        ApplyError::UnknownSchedule(_)
    ));
}
