//! `ClusterState::apply`: every command, every validation error, and determinism.

use drover_raft::model::{
    Capacity, ClusterState, DeadReason, DesiredState, HostHealth, ObservedState, VmSpec,
};
use drover_raft::{ApplyError, Command, Reply};
use proptest::prelude::*;

fn spec(vcpus: u32, memory_mib: u64) -> VmSpec {
    VmSpec { vcpus, memory_mib }
}

fn add_host(name: &str) -> Command {
    Command::AddHost {
        name: name.into(),
        address: "127.0.0.1:7001".into(),
        labels: Default::default(),
    }
}

/// A host that reported room for a few small VMs (placements need room).
fn host_with_room(s: &mut ClusterState, name: &str) {
    ok(s, add_host(name));
    ok(
        s,
        Command::HostObserved {
            name: name.into(),
            health: HostHealth::Unknown,
            capacity: Some(Capacity {
                vcpus: 8,
                memory_mib: 8192,
            }),
            fencing_armed: None,
            armed_epoch: 0,
            migration_uri: None,
        },
    );
}

fn create(name: &str) -> Command {
    Command::CreateVm {
        name: name.into(),
        spec: spec(1, 128),
        start: true,
        options: Default::default(),
    }
}

fn place(name: &str, host: &str, expected_generation: u64) -> Command {
    Command::PlaceVm {
        name: name.into(),
        host: host.into(),
        expected_generation,
    }
}

/// The leader's record of a heartbeat saying whether the host fences itself (under the
/// first HA epoch).
fn armed_report(host: &str, armed: bool) -> Command {
    armed_report_at(host, armed, 0)
}

/// The same, for a grant of HA epoch `armed_epoch`.
fn armed_report_at(host: &str, armed: bool, armed_epoch: u64) -> Command {
    Command::HostObserved {
        name: host.into(),
        health: HostHealth::Up,
        capacity: None,
        fencing_armed: Some(armed),
        armed_epoch,
        migration_uri: None,
    }
}

fn ok(state: &mut ClusterState, cmd: Command) -> Reply {
    let (result, _) = state.apply(&cmd);
    result.unwrap_or_else(|e| panic!("{cmd:?} refused: {e}"))
}

fn refused(state: &mut ClusterState, cmd: Command) -> ApplyError {
    let before = state.clone();
    let (result, _) = state.apply(&cmd);
    assert_eq!(
        *state, before,
        "a refused command must not change the state"
    );
    result.expect_err("command should be refused")
}

#[test]
fn add_host_and_observe_it() {
    let mut s = ClusterState::default();
    ok(&mut s, add_host("h1"));
    assert_eq!(s.hosts["h1"].health, HostHealth::Unknown);
    let cap = Capacity {
        vcpus: 8,
        memory_mib: 16384,
    };
    ok(
        &mut s,
        Command::HostObserved {
            name: "h1".into(),
            health: HostHealth::Up,
            capacity: Some(cap),
            fencing_armed: None,
            armed_epoch: 0,
            migration_uri: None,
        },
    );
    assert_eq!(s.hosts["h1"].health, HostHealth::Up);
    assert_eq!(s.hosts["h1"].capacity, cap);
    // An observation without capacity keeps the last known capacity.
    ok(
        &mut s,
        Command::HostObserved {
            name: "h1".into(),
            health: HostHealth::Suspect,
            capacity: None,
            fencing_armed: None,
            armed_epoch: 0,
            migration_uri: None,
        },
    );
    assert_eq!(s.hosts["h1"].capacity, cap);
}

#[test]
fn host_validation() {
    let mut s = ClusterState::default();
    ok(&mut s, add_host("h1"));
    assert_eq!(
        refused(&mut s, add_host("h1")),
        ApplyError::HostExists("h1".into())
    );
    assert!(matches!(
        refused(&mut s, add_host("bad name")),
        ApplyError::InvalidName { .. }
    ));
    for address in ["nohost", ":80", "h:0", "h:99999", "h:x", "a b:80", "x/y:80"] {
        let e = refused(
            &mut s,
            Command::AddHost {
                name: "h2".into(),
                address: address.into(),
                labels: Default::default(),
            },
        );
        assert!(
            matches!(e, ApplyError::InvalidAddress { .. }),
            "{address}: {e}"
        );
    }
    assert_eq!(
        refused(
            &mut s,
            Command::HostObserved {
                name: "nope".into(),
                health: HostHealth::Up,
                capacity: None,
                fencing_armed: None,
                armed_epoch: 0,
                migration_uri: None,
            }
        ),
        ApplyError::UnknownHost("nope".into())
    );
    // What a host reports is bounded like any input: the last guard refuses it too.
    let report = |capacity: Option<Capacity>, uri: Option<&str>| Command::HostObserved {
        name: "h1".into(),
        health: HostHealth::Up,
        capacity,
        fencing_armed: None,
        armed_epoch: 0,
        migration_uri: uri.map(String::from),
    };
    let huge = Capacity {
        vcpus: u32::MAX,
        memory_mib: 1,
    };
    assert!(matches!(
        refused(&mut s, report(Some(huge), None)),
        ApplyError::InvalidReport(_)
    ));
    assert!(matches!(
        refused(&mut s, report(None, Some("not a uri"))),
        ApplyError::InvalidReport(_)
    ));
    ok(&mut s, report(None, Some("qemu+tcp://10.0.0.5/system")));
    let mut labels = std::collections::BTreeMap::new();
    for i in 0..33 {
        labels.insert(format!("k{i}"), "v".to_string());
    }
    assert!(matches!(
        refused(
            &mut s,
            Command::AddHost {
                name: "h3".into(),
                address: "127.0.0.1:1".into(),
                labels,
            }
        ),
        ApplyError::InvalidLabels(_)
    ));
}

#[test]
fn create_vm_and_its_validation() {
    let mut s = ClusterState::default();
    let Reply::Vm(vm) = ok(&mut s, create("web")) else {
        panic!("expected a VM")
    };
    assert_eq!(vm.desired, DesiredState::Running);
    assert_eq!(vm.observed, ObservedState::Unknown);
    assert_eq!(vm.host, None);
    assert_eq!(vm.generation, 0);
    assert_eq!(
        refused(&mut s, create("web")),
        ApplyError::VmExists("web".into())
    );
    for bad in [
        spec(0, 128),
        spec(1, 0),
        spec(100_000, 128),
        spec(1, u64::MAX),
    ] {
        let e = refused(
            &mut s,
            Command::CreateVm {
                name: "x".into(),
                spec: bad,
                start: false,
                options: Default::default(),
            },
        );
        assert!(matches!(e, ApplyError::InvalidSpec(_)), "{bad:?}: {e}");
    }
    assert!(matches!(
        refused(&mut s, create("")),
        ApplyError::InvalidName { .. }
    ));
    let Reply::Vm(stopped) = ok(
        &mut s,
        Command::CreateVm {
            name: "db".into(),
            spec: spec(2, 256),
            start: false,
            options: Default::default(),
        },
    ) else {
        panic!()
    };
    assert_eq!(stopped.desired, DesiredState::Stopped);
}

#[test]
fn placement_bumps_generation_and_checks_it() {
    let mut s = ClusterState::default();
    host_with_room(&mut s, "h1");
    host_with_room(&mut s, "h2");
    ok(&mut s, create("web"));
    ok(&mut s, place("web", "h1", 0));
    assert_eq!(s.vms["web"].host.as_deref(), Some("h1"));
    assert_eq!(s.vms["web"].generation, 1);
    assert_eq!(
        refused(&mut s, place("web", "h2", 0)),
        ApplyError::StaleGeneration {
            vm: "web".into(),
            expected: 0,
            actual: 1
        }
    );
    assert_eq!(
        refused(&mut s, place("web", "h9", 1)),
        ApplyError::UnknownHost("h9".into())
    );
    assert_eq!(
        refused(&mut s, place("nope", "h1", 0)),
        ApplyError::UnknownVm("nope".into())
    );
    assert_eq!(s.allocated("h1"), (1, 128, 1));
    assert_eq!(s.allocated("h2"), (0, 0, 0));
}

#[test]
fn observations_apply_only_to_their_generation() {
    let mut s = ClusterState::default();
    host_with_room(&mut s, "h1");
    ok(&mut s, create("web"));
    ok(&mut s, place("web", "h1", 0));
    ok(
        &mut s,
        Command::VmObserved {
            name: "web".into(),
            generation: 1,
            observed: ObservedState::Running,
            reason: String::new(),
            listed_after: u64::MAX,
        },
    );
    assert_eq!(s.vms["web"].observed, ObservedState::Running);
    let e = refused(
        &mut s,
        Command::VmObserved {
            name: "web".into(),
            generation: 0,
            observed: ObservedState::ShutOff,
            reason: String::new(),
            listed_after: u64::MAX,
        },
    );
    assert!(matches!(e, ApplyError::StaleGeneration { .. }));
}

#[test]
fn desired_state_transitions_and_deletion() {
    let mut s = ClusterState::default();
    host_with_room(&mut s, "h1");
    ok(&mut s, create("web"));
    ok(&mut s, create("tmp"));
    let set = |name: &str, desired| Command::SetDesiredState {
        name: name.into(),
        desired,
    };
    ok(&mut s, set("web", DesiredState::Stopped));
    ok(&mut s, set("web", DesiredState::Running));
    // Unplaced: deletion is immediate.
    assert_eq!(
        ok(&mut s, set("tmp", DesiredState::Deleted)),
        Reply::VmRemoved { name: "tmp".into() }
    );
    assert!(!s.vms.contains_key("tmp"));
    // Placed: marked, removed once its host has undefined it.
    ok(&mut s, place("web", "h1", 0));
    assert_eq!(
        refused(
            &mut s,
            Command::RemoveVm {
                name: "web".into(),
                expected_generation: 1
            }
        ),
        ApplyError::VmNotDeleted("web".into())
    );
    ok(&mut s, set("web", DesiredState::Deleted));
    ok(&mut s, set("web", DesiredState::Deleted));
    assert_eq!(
        refused(&mut s, set("web", DesiredState::Running)),
        ApplyError::VmDeleting("web".into())
    );
    assert_eq!(
        refused(&mut s, place("web", "h1", 1)),
        ApplyError::VmDeleting("web".into())
    );
    ok(
        &mut s,
        Command::RemoveVm {
            name: "web".into(),
            expected_generation: 1,
        },
    );
    assert!(s.vms.is_empty());
    assert_eq!(
        refused(&mut s, set("web", DesiredState::Running)),
        ApplyError::UnknownVm("web".into())
    );
}

fn arb_command() -> impl Strategy<Value = Command> {
    let name = prop::sample::select(vec!["a", "b", "c", "bad name", ""]);
    let host = prop::sample::select(vec!["h1", "h2", "h3"]);
    let desired = prop::sample::select(vec![
        DesiredState::Running,
        DesiredState::Stopped,
        DesiredState::Deleted,
    ]);
    let observed = prop::sample::select(vec![
        ObservedState::Running,
        ObservedState::ShutOff,
        ObservedState::Missing,
    ]);
    prop_oneof![
        host.clone().prop_map(add_host),
        (name.clone(), 0u32..4, 0u64..512, any::<bool>()).prop_map(|(n, c, m, start)| {
            Command::CreateVm {
                name: n.into(),
                spec: spec(c, m),
                start,
                options: Default::default(),
            }
        }),
        (name.clone(), desired).prop_map(|(n, d)| Command::SetDesiredState {
            name: n.into(),
            desired: d
        }),
        (name.clone(), host.clone(), 0u64..3).prop_map(|(n, h, g)| place(n, h, g)),
        (name.clone(), 0u64..3, observed, 0u64..12).prop_map(|(n, g, o, l)| {
            Command::VmObserved {
                name: n.into(),
                generation: g,
                observed: o,
                reason: String::new(),
                listed_after: l,
            }
        }),
        (name.clone(), 0u64..3).prop_map(|(n, g)| Command::BeginStart {
            name: n.into(),
            expected_generation: g
        }),
        (name.clone(), 0u64..3).prop_map(|(n, g)| Command::RemoveVm {
            name: n.into(),
            expected_generation: g
        }),
        (name.clone(), 0u64..3).prop_map(|(n, g)| Command::FailoverVm {
            name: n.into(),
            expected_generation: g
        }),
        (host.clone(), any::<bool>()).prop_map(|(h, op)| Command::DeclareHostDead {
            name: h.into(),
            reason: if op {
                DeadReason::Operator
            } else {
                DeadReason::LeaseLapsed
            },
        }),
        (host.clone(), any::<bool>()).prop_map(|(h, armed)| Command::HostObserved {
            name: h.into(),
            health: HostHealth::Up,
            // Room for a few VMs, so that placements (and moves) happen.
            capacity: Some(Capacity {
                vcpus: 8,
                memory_mib: 1024,
            }),
            fencing_armed: Some(armed),
            armed_epoch: 0,
            migration_uri: None,
        }),
        any::<bool>().prop_map(|armed| Command::SetHaArmed { armed }),
        (name, 0u32..4, any::<bool>()).prop_map(|(n, c, start)| Command::CreateVm {
            name: n.into(),
            spec: spec(c.max(1), 64),
            start,
            options: drover_raft::model::VmOptions {
                ha: true,
                ha_priority: 1,
                ..Default::default()
            },
        }),
    ]
}

proptest! {
    /// Same log → same state and same results, whoever applies it.
    #[test]
    fn apply_is_deterministic(log in prop::collection::vec(arb_command(), 0..60)) {
        let mut a = ClusterState::default();
        let mut b = ClusterState::default();
        for cmd in &log {
            let before = a.clone();
            let (ra, _) = a.apply(cmd);
            let (rb, _) = b.apply(cmd);
            prop_assert_eq!(&ra, &rb);
            // Never twice: a placed VM got another host only when no copy could still
            // run on the old one (confirmed off there, or the host dead and the VM HA,
            // or the host confirmed off by an operator or fence agent).
            for (name, old) in &before.vms {
                let (Some(from), Some(new)) = (&old.host, a.vms.get(name)) else {
                    continue;
                };
                if new.host.as_ref() == Some(from) {
                    continue;
                }
                let host = &before.hosts[from];
                let fenced = host.health == HostHealth::Dead
                    && (old.ha || host.dead_reason != Some(DeadReason::LeaseLapsed));
                prop_assert!(
                    matches!(
                        old.observed,
                        ObservedState::ShutOff | ObservedState::Missing | ObservedState::Crashed
                    ) || fenced,
                    "{:?} moved {} off {} while {:?} there ({:?})",
                    cmd, name, from, old.observed, host.health
                );
            }
        }
        prop_assert_eq!(&a, &b);
        // Invariants that hold after any log.
        for vm in a.vms.values() {
            prop_assert!(vm.spec.validate().is_ok());
            if let Some(h) = &vm.host {
                prop_assert!(a.hosts.contains_key(h));
                prop_assert!(vm.generation >= 1);
            }
            // Only an HA VM ever leaves a host without an operator moving it.
            // (Checked per VM below; the HA switch is checked after the loop.)
            if vm.reason.starts_with("failed over") {
                prop_assert!(vm.ha);
            }
        }
        // Disarmed, no host counts as armed: no disarmed grant can reach an "armed" host.
        if a.ha.disarmed {
            prop_assert!(a.hosts.values().all(|h| !h.fencing_armed));
        }
    }
}

/// The HA commands: only `DeclareHostDead` kills a host, with its reason; `FailoverVm` moves
/// only HA VMs, only off dead hosts, and bumps the generation so the old copy is stale.
#[test]
fn death_and_failover() {
    let mut s = ClusterState::default();
    host_with_room(&mut s, "h1");
    ok(
        &mut s,
        Command::CreateVm {
            name: "ha".into(),
            spec: spec(1, 128),
            start: true,
            options: drover_raft::model::VmOptions {
                ha: true,
                ha_priority: 3,
                ..Default::default()
            },
        },
    );
    ok(&mut s, create("plain"));
    ok(&mut s, place("ha", "h1", 0));
    ok(&mut s, place("plain", "h1", 0));
    let lease_lapsed = Command::DeclareHostDead {
        name: "h1".into(),
        reason: DeadReason::LeaseLapsed,
    };
    assert_eq!(
        refused(&mut s, lease_lapsed.clone()),
        ApplyError::FencingNotArmed("h1".into()),
        "a host that never confirmed self-fencing is not dead by its lease"
    );
    ok(&mut s, armed_report("h1", true));
    let failover = |name: &str, g: u64| Command::FailoverVm {
        name: name.into(),
        expected_generation: g,
    };
    assert_eq!(
        refused(&mut s, failover("ha", 1)),
        ApplyError::HostNotDead {
            host: "h1".into(),
            health: "up".into()
        }
    );
    assert_eq!(
        refused(
            &mut s,
            Command::HostObserved {
                name: "h1".into(),
                health: HostHealth::Dead,
                capacity: None,
                fencing_armed: None,
                armed_epoch: 0,
                migration_uri: None,
            }
        ),
        ApplyError::DeadNeedsReason("h1".into())
    );
    ok(
        &mut s,
        Command::DeclareHostDead {
            name: "h1".into(),
            reason: DeadReason::LeaseLapsed,
        },
    );
    assert_eq!(s.hosts["h1"].health, HostHealth::Dead);
    assert_eq!(s.hosts["h1"].dead_reason, Some(DeadReason::LeaseLapsed));
    assert_eq!(
        refused(&mut s, failover("plain", 1)),
        ApplyError::VmNotHa("plain".into())
    );
    assert!(matches!(
        refused(&mut s, failover("ha", 0)),
        ApplyError::StaleGeneration { .. }
    ));
    ok(&mut s, failover("ha", 1));
    let vm = &s.vms["ha"];
    assert_eq!((vm.host.as_deref(), vm.generation), (None, 2));
    assert_eq!(vm.observed, ObservedState::Unknown);
    assert!(vm.reason.contains("h1"), "{}", vm.reason);
    assert_eq!(
        refused(&mut s, failover("ha", 2)),
        ApplyError::VmNotPlaced("ha".into())
    );
    // The host comes back: its health leaves Dead and the reason goes with it.
    ok(
        &mut s,
        Command::HostObserved {
            name: "h1".into(),
            health: HostHealth::Up,
            capacity: None,
            fencing_armed: None,
            armed_epoch: 0,
            migration_uri: None,
        },
    );
    assert_eq!(s.hosts["h1"].dead_reason, None);
}

/// `ha disarm` marks every host not armed in the same entry; reports of "armed" while
/// disarmed are ignored; after `ha arm` hosts count as armed only once they report it.
#[test]
fn disarm_and_arm() {
    let mut s = ClusterState::default();
    host_with_room(&mut s, "h1");
    let lease_lapsed = Command::DeclareHostDead {
        name: "h1".into(),
        reason: DeadReason::LeaseLapsed,
    };
    ok(&mut s, armed_report("h1", true));
    assert!(s.hosts["h1"].fencing_armed);
    ok(&mut s, Command::SetHaArmed { armed: false });
    assert!(s.ha.disarmed && !s.hosts["h1"].fencing_armed);
    ok(&mut s, armed_report("h1", true));
    assert!(
        !s.hosts["h1"].fencing_armed,
        "a stale armed report is ignored"
    );
    assert_eq!(
        refused(&mut s, lease_lapsed.clone()),
        ApplyError::FencingNotArmed("h1".into())
    );
    ok(&mut s, Command::SetHaArmed { armed: true });
    assert!(!s.ha.disarmed && !s.hosts["h1"].fencing_armed);
    let epoch = s.ha.epoch;
    ok(&mut s, armed_report_at("h1", true, epoch));
    ok(&mut s, lease_lapsed);
    // An operator fence needs no armed host.
    host_with_room(&mut s, "h2");
    ok(
        &mut s,
        Command::DeclareHostDead {
            name: "h2".into(),
            reason: DeadReason::Operator,
        },
    );
}

/// Issue 9, point 1: `apply` is the last guard of never-twice for cold moves. A placed VM
/// gets another host only if (a) its host confirmed it off at its current generation, (b)
/// its host is dead and it is HA, or (c) an operator (or fence agent) confirmed the host off.
#[test]
fn a_vm_that_may_still_run_is_never_placed_elsewhere() {
    let observe = |name: &str, generation, observed| Command::VmObserved {
        name: name.into(),
        generation,
        observed,
        reason: String::new(),
        listed_after: u64::MAX,
    };
    let health = |host: &str, health| Command::HostObserved {
        name: host.into(),
        health,
        capacity: None,
        fencing_armed: None,
        armed_epoch: 0,
        migration_uri: None,
    };
    let mut s = ClusterState::default();
    host_with_room(&mut s, "h1");
    host_with_room(&mut s, "h2");
    ok(&mut s, armed_report("h1", true));
    ok(&mut s, create("plain"));
    ok(&mut s, place("plain", "h1", 0));
    ok(&mut s, observe("plain", 1, ObservedState::Running));

    // Up, running: only a live migration may move it.
    let e = refused(&mut s, place("plain", "h2", 1));
    assert!(matches!(e, ApplyError::VmMayStillRun { .. }), "{e}");
    // Suspect (frozen hostd): it may still run there.
    ok(&mut s, health("h1", HostHealth::Suspect));
    let e = refused(&mut s, place("plain", "h2", 1));
    assert!(
        e.to_string()
            .contains("drover host fence h1 --yes-it-is-off"),
        "{e}"
    );
    // Dead by its lease: a non-HA VM is not fenced by a lapse, so it may still run.
    ok(
        &mut s,
        Command::DeclareHostDead {
            name: "h1".into(),
            reason: DeadReason::LeaseLapsed,
        },
    );
    assert!(matches!(
        refused(&mut s, place("plain", "h2", 1)),
        ApplyError::VmMayStillRun { .. }
    ));
    // An HA VM on that host was fenced by the lapse: it may move.
    let mut t = s.clone();
    t.vms.get_mut("plain").unwrap().ha = true;
    ok(&mut t, place("plain", "h2", 1));
    // An operator confirmed the host is off: it may move.
    ok(
        &mut s,
        Command::DeclareHostDead {
            name: "h1".into(),
            reason: DeadReason::Operator,
        },
    );
    ok(&mut s, place("plain", "h2", 1));
    assert_eq!(s.vms["plain"].host.as_deref(), Some("h2"));
}

/// Issue 9, point 1, the race: a cold move must not land while a start is in flight on the
/// old host. Every start moves the VM to a new generation first, and only a report of the
/// domain at that generation (or the start's answer) ends `Starting`.
#[test]
fn a_cold_move_cannot_race_a_start_in_flight() {
    let observe = |generation, observed| Command::VmObserved {
        name: "web".into(),
        generation,
        observed,
        reason: String::new(),
        listed_after: u64::MAX,
    };
    let mut s = ClusterState::default();
    host_with_room(&mut s, "h1");
    host_with_room(&mut s, "h2");
    ok(&mut s, create("web"));
    ok(&mut s, place("web", "h1", 0));
    ok(&mut s, observe(1, ObservedState::ShutOff));
    // The actor is about to send a start: generation 2, Starting.
    let Reply::Vm(vm) = ok(
        &mut s,
        Command::BeginStart {
            name: "web".into(),
            expected_generation: 1,
        },
    ) else {
        panic!()
    };
    assert_eq!((vm.generation, vm.observed), (2, ObservedState::Starting));
    // A drain that read "shut off" before the start: stale generation.
    assert!(matches!(
        refused(&mut s, place("web", "h2", 1)),
        ApplyError::StaleGeneration { .. }
    ));
    // One that read the new generation: the start may be in flight.
    assert!(matches!(
        refused(&mut s, place("web", "h2", 2)),
        ApplyError::VmMayStillRun { .. }
    ));
    // A heartbeat listing the domain at the old generation proves nothing.
    assert!(matches!(
        refused(&mut s, observe(1, ObservedState::ShutOff)),
        ApplyError::StaleGeneration { .. }
    ));
    // "Not listed" does not either: the start may not have arrived yet.
    assert_eq!(
        refused(&mut s, observe(2, ObservedState::Missing)),
        ApplyError::StartUnconfirmed("web".into())
    );
    // The domain reported shut off at the start's generation: the start was handled.
    ok(&mut s, observe(2, ObservedState::ShutOff));
    ok(&mut s, place("web", "h2", 2));
    // A start is only for a VM that should run.
    let mut s2 = ClusterState::default();
    host_with_room(&mut s2, "h1");
    ok(&mut s2, create("web"));
    ok(&mut s2, place("web", "h1", 0));
    ok(
        &mut s2,
        Command::SetDesiredState {
            name: "web".into(),
            desired: DesiredState::Stopped,
        },
    );
    assert!(matches!(
        refused(
            &mut s2,
            Command::BeginStart {
                name: "web".into(),
                expected_generation: 1
            }
        ),
        ApplyError::NotToStart { .. }
    ));
}

/// Issue 9, point 3: disarm, then a quick re-arm. A heartbeat built before the host applied
/// the disarmed grant (it still says "armed") is committed after the re-arm: it must not
/// count the host as armed, or the cluster would believe a host fences that does not.
#[test]
fn a_report_from_before_a_disarm_cannot_arm_a_host_after_a_rearm() {
    let report = |armed, epoch| armed_report_at("h1", armed, epoch);
    let mut s = ClusterState::default();
    host_with_room(&mut s, "h1");
    ok(&mut s, report(true, 0));
    assert!(s.hosts["h1"].fencing_armed);
    ok(&mut s, Command::SetHaArmed { armed: false });
    ok(&mut s, Command::SetHaArmed { armed: true });
    assert_eq!(s.ha.epoch, 2);
    // Built under epoch 0, before the host saw the disarmed grant of epoch 1.
    ok(&mut s, report(true, 0));
    assert!(
        !s.hosts["h1"].fencing_armed,
        "a stale report armed the host"
    );
    assert_eq!(
        refused(
            &mut s,
            Command::DeclareHostDead {
                name: "h1".into(),
                reason: DeadReason::LeaseLapsed,
            }
        ),
        ApplyError::FencingNotArmed("h1".into())
    );
    // The host applied the disarmed grant, then the armed one of the current epoch.
    ok(&mut s, report(false, 1));
    assert!(!s.hosts["h1"].fencing_armed);
    ok(&mut s, report(true, 2));
    assert!(s.hosts["h1"].fencing_armed);
}

/// Issue 9, point 9: `host remove` forgets only a host that runs nothing.
#[test]
fn a_host_is_removed_only_when_nothing_runs_there() {
    let mut s = ClusterState::default();
    host_with_room(&mut s, "h1");
    host_with_room(&mut s, "h2");
    ok(&mut s, create("web"));
    ok(&mut s, place("web", "h1", 0));
    let remove = |name: &str| Command::RemoveHost { name: name.into() };
    assert!(matches!(
        refused(&mut s, remove("h1")),
        ApplyError::HostNotEmpty { .. }
    ));
    assert_eq!(
        refused(&mut s, remove("h9")),
        ApplyError::UnknownHost("h9".into())
    );
    ok(
        &mut s,
        Command::StartDrain {
            host: "h2".into(),
            stop_when_blocked: false,
            at_ms: 0,
        },
    );
    assert!(matches!(
        refused(&mut s, remove("h2")),
        ApplyError::HostBusy { .. }
    ));
    ok(
        &mut s,
        Command::ActivateHost {
            name: "h2".into(),
            at_ms: 1,
        },
    );
    assert_eq!(
        ok(&mut s, remove("h2")),
        Reply::HostRemoved { name: "h2".into() }
    );
    assert!(!s.hosts.contains_key("h2"));
}

/// Issue 9, point 4: one replicated lease; a change keeps the previous one until the leader
/// has waited out its grants, and no second change overlaps it.
#[test]
fn lease_changes_settle_one_at_a_time() {
    use drover_raft::model::LeaseConfig;
    let set = |heartbeat_ms, ttl_ms, margin_ms| Command::SetLeaseConfig {
        config: LeaseConfig {
            heartbeat_ms,
            ttl_ms,
            margin_ms,
        },
    };
    let mut s = ClusterState::default();
    assert!(matches!(
        refused(&mut s, set(1000, 2000, 1000)),
        ApplyError::InvalidLease(_)
    ));
    assert!(matches!(
        refused(&mut s, set(1000, 5000, 0)),
        ApplyError::InvalidLease(_)
    ));
    // Bootstrap: nothing to wait out.
    ok(&mut s, set(1000, 20_000, 1000));
    assert_eq!(s.ha.previous_lease, None);
    // A shorter lease: the longer one is kept until it settles.
    ok(&mut s, set(1000, 5000, 1000));
    let previous = s.ha.previous_lease.expect("settling");
    assert_eq!(previous.ttl_ms, 20_000);
    assert_eq!(
        refused(&mut s, set(500, 3000, 500)),
        ApplyError::LeaseSettling { lapse_ms: 21_000 }
    );
    ok(&mut s, Command::LeaseSettled { previous });
    assert_eq!(s.ha.previous_lease, None);
    ok(&mut s, set(500, 3000, 500));
    assert_eq!(s.ha.lease.map(|l| l.ttl_ms), Some(3000));
}
