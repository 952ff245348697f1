//! One step of a drain, decided over the replicated state. Pure: the drain actor commits
//! what it returns and asks again on the next change or tick.
//!
//! Each step places every VM still on the host as one batch (so two VMs never count on the
//! same free room), starts live migrations for running VMs within the parallelism limits
//! (outbound per host, cluster-wide), moves VMs that are not running by placement alone,
//! and reports the VMs that can go nowhere with each host's reason.

use std::collections::BTreeMap;

use drover_raft::model::{
    ClusterState, DesiredState, DrainProgress, HostHealth, ObservedState, OpKind, OpState,
    Operation, Progress, Vm,
};

use crate::scheduler::batch::place_batch;
use crate::scheduler::{host_views, request_for, Policy};

/// Parallelism of live migrations, as oVirt and Proxmox bound them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainLimits {
    /// Migrations running out of one host at once.
    pub per_host: usize,
    /// Migrations running in the whole cluster at once.
    pub cluster: usize,
}

impl Default for DrainLimits {
    fn default() -> Self {
        Self {
            per_host: 2,
            cluster: 8,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// End the drain.
    Finish { state: OpState, message: String },
    Act {
        /// Live-migrate (VM, expected generation, destination).
        migrate: Vec<(String, u64, String)>,
        /// Re-place a VM that is not running (VM, expected generation, destination).
        cold: Vec<(String, u64, String)>,
        /// Committed when it differs from the operation's.
        progress: DrainProgress,
    },
}

/// The next step of drain `op`.
pub fn step(op: &Operation, state: &ClusterState, policy: &Policy, limits: DrainLimits) -> Step {
    let OpKind::Drain {
        host,
        stop_when_blocked,
    } = &op.kind
    else {
        return Step::Finish {
            state: OpState::Failed,
            message: "not a drain".into(),
        };
    };
    if op.cancel_requested {
        return Step::Finish {
            state: OpState::Cancelled,
            message: "cancelled by an operator".into(),
        };
    }
    if !state.hosts.contains_key(host) {
        return Step::Finish {
            state: OpState::Failed,
            message: format!("host {host} was removed"),
        };
    }
    let migrating = |only_from: Option<&str>| {
        state
            .operations
            .running()
            .filter(|o| match &o.kind {
                OpKind::Migrate { src, .. } => only_from.is_none_or(|h| h == src),
                OpKind::Drain { .. }
                | OpKind::Drill { .. }
                | OpKind::LeaderDrill { .. }
                | OpKind::MigrationDrill { .. } => false,
            })
            .count()
    };
    let from_host = migrating(Some(host));
    let in_cluster = migrating(None);
    let on_host: Vec<_> = state
        .vms
        .values()
        .filter(|vm| vm.host.as_deref() == Some(host.as_str()))
        .collect();
    if on_host.is_empty() && from_host == 0 {
        return Step::Finish {
            state: OpState::Succeeded,
            message: format!("{host} is empty and in maintenance"),
        };
    }
    let previous_total = match &op.progress {
        Progress::Drain(p) => p.total,
        _ => 0,
    };
    let mut progress = DrainProgress {
        total: previous_total.max(on_host.len() as u32),
        remaining: on_host.iter().map(|vm| vm.name.clone()).collect(),
        blocked: BTreeMap::new(),
    };
    let source_up = state
        .hosts
        .get(host)
        .is_some_and(|h| h.health == HostHealth::Up);
    // Live-migrated (running on a host that answers), or moved cold — which `apply` allows
    // only when no copy can still run on the host. The rest wait, with the reason and what
    // unblocks them (a drain never moves a VM its host may still run by itself).
    let live = |vm: &Vm| {
        source_up && vm.desired == DesiredState::Running && vm.observed == ObservedState::Running
    };
    let mut movable = Vec::new();
    for vm in on_host.iter().filter(|vm| vm.migration.is_none()) {
        // A local disk moves only with a live migration, which copies it.
        if let (Some(pool), false) = (state.local_disk_pool(vm), live(vm)) {
            progress.blocked.insert(
                vm.name.clone(),
                format!(
                    "its disk is in pool {pool}, local to this host: it moves only running \
                     (a live migration copies the disk); start it, or delete it"
                ),
            );
            continue;
        }
        match state.may_leave_host(vm) {
            Err(why) if !live(vm) => {
                progress.blocked.insert(vm.name.clone(), why.to_string());
            }
            _ => movable.push(vm),
        }
    }
    let reqs: Vec<_> = movable
        .iter()
        .map(|vm| request_for(vm, Some(host), state))
        .collect();
    let placed = place_batch(&reqs, &host_views(state), policy);
    let mut slots = limits
        .per_host
        .saturating_sub(from_host)
        .min(limits.cluster.saturating_sub(in_cluster));
    let (mut migrate, mut cold) = (Vec::new(), Vec::new());
    for (vm, placement) in movable.iter().zip(placed) {
        let dst = match placement {
            Ok(dst) => dst,
            Err(refusal) => {
                progress
                    .blocked
                    .insert(vm.name.clone(), refusal.to_string());
                continue;
            }
        };
        if !live(vm) {
            cold.push((vm.name.clone(), vm.generation, dst));
            continue;
        }
        let uri = state.hosts.get(&dst).map(|h| h.migration_uri.as_str());
        if uri.unwrap_or("").is_empty() {
            progress.blocked.insert(
                vm.name.clone(),
                format!("{dst} cannot take live migrations (its hostd reports no migration URI)"),
            );
            continue;
        }
        if slots > 0 {
            slots -= 1;
            migrate.push((vm.name.clone(), vm.generation, dst));
        }
    }
    if *stop_when_blocked && !progress.blocked.is_empty() {
        let why: Vec<String> = progress
            .blocked
            .iter()
            .map(|(vm, why)| format!("{vm}: {why}"))
            .collect();
        return Step::Finish {
            state: OpState::Failed,
            message: format!("stopped: VMs that cannot move: {}", why.join("; ")),
        };
    }
    Step::Act {
        migrate,
        cold,
        progress,
    }
}

#[cfg(test)]
mod tests {
    use drover_raft::model::{AdminState, DeadReason, Host, MigrationPolicy, Vm};
    use proptest::prelude::*;

    use super::*;
    use crate::fixtures;

    fn host(name: &str, memory_mib: u64) -> Host {
        fixtures::host(name, 8, memory_mib)
    }

    fn vm(name: &str, on: &str, running: bool, group: Option<&str>) -> Vm {
        Vm {
            observed: if running {
                ObservedState::Running
            } else {
                ObservedState::ShutOff
            },
            anti_affinity: group.map(String::from),
            ..fixtures::vm(name, Some(on), 1, 256)
        }
    }

    /// A cluster with h1 draining and VMs on it; returns the state and the drain op id.
    fn draining(hosts: Vec<Host>, vms: Vec<Vm>, stop_when_blocked: bool) -> (ClusterState, u64) {
        let mut s = fixtures::state(hosts, vms);
        s.hosts.get_mut("h1").unwrap().admin = AdminState::Draining;
        let id = s.operations.start(
            OpKind::Drain {
                host: "h1".into(),
                stop_when_blocked,
            },
            0,
        );
        (s, id)
    }

    fn start_migration(s: &mut ClusterState, vm: &str, dst: &str) {
        let id = s.operations.start(
            OpKind::Migrate {
                vm: vm.into(),
                src: s.vms[vm].host.clone().unwrap(),
                dst: dst.into(),
                generation: 2,
                policy: MigrationPolicy::default(),
            },
            0,
        );
        s.vms.get_mut(vm).unwrap().migration = Some(id);
    }

    #[test]
    fn migrates_two_at_a_time_and_finishes_when_empty() {
        let vms = (0..6)
            .map(|i| vm(&format!("v{i}"), "h1", true, None))
            .collect();
        let (mut s, id) = draining(
            vec![host("h1", 4096), host("h2", 4096), host("h3", 4096)],
            vms,
            false,
        );
        let limits = DrainLimits::default();
        let Step::Act {
            migrate,
            cold,
            progress,
        } = step(&s.operations.ops[&id], &s, &Policy::default(), limits)
        else {
            panic!("should act")
        };
        assert_eq!(migrate.len(), 2, "{migrate:?}");
        assert!(cold.is_empty());
        assert_eq!(progress.total, 6);
        // Spread: the two go to different hosts.
        assert_ne!(migrate[0].2, migrate[1].2);
        start_migration(&mut s, &migrate[0].0, &migrate[0].2);
        start_migration(&mut s, &migrate[1].0, &migrate[1].2);
        let Step::Act { migrate, .. } =
            step(&s.operations.ops[&id], &s, &Policy::default(), limits)
        else {
            panic!("should act")
        };
        assert!(migrate.is_empty(), "both slots are taken");
        // Empty host, nothing in flight: done.
        s.vms.clear();
        let running: Vec<u64> = s
            .operations
            .running()
            .filter(|o| o.id != id)
            .map(|o| o.id)
            .collect();
        for m in running {
            s.operations.finish(m, OpState::Succeeded, "", 1);
        }
        assert!(matches!(
            step(&s.operations.ops[&id], &s, &Policy::default(), limits),
            Step::Finish {
                state: OpState::Succeeded,
                ..
            }
        ));
    }

    /// A VM whose disk is local to the draining host moves only running, by a live
    /// migration that copies the disk; a stopped one is blocked with the reason. Before
    /// the plan knew, it was moved cold (and refused by `apply` at every step, forever).
    #[test]
    fn a_vm_with_a_local_disk_moves_only_live() {
        let with_disk = |name: &str, running: bool| {
            let mut v = vm(name, "h1", running, None);
            v.disks.push(drover_raft::model::Disk::empty(
                "local",
                format!("{name}-1-disk0.qcow2"),
                1 << 30,
            ));
            v
        };
        let (mut s, id) = draining(
            vec![host("h1", 4096), host("h2", 4096)],
            vec![with_disk("db", false), with_disk("web", true)],
            false,
        );
        // Set up on both hosts with room: only the disk being local keeps it on h1.
        let pool = crate::fixtures::pool("local", false, &["h1", "h2"]);
        s.pools.insert("local".into(), pool);
        let Step::Act {
            migrate,
            cold,
            progress,
        } = step(
            &s.operations.ops[&id],
            &s,
            &Policy::default(),
            DrainLimits::default(),
        )
        else {
            panic!("should act")
        };
        assert!(cold.is_empty(), "{cold:?}");
        assert_eq!(migrate, [("web".to_string(), 1, "h2".to_string())]);
        assert!(
            progress.blocked["db"].contains("pool local, local to this host"),
            "{progress:?}"
        );
        assert!(!progress.blocked.contains_key("web"), "{progress:?}");
    }

    #[test]
    fn blocked_vms_say_why_and_stop_only_when_asked() {
        let vms = vec![
            vm("a", "h1", true, Some("g")),
            vm("b", "h2", true, Some("g")),
            vm("off", "h1", false, None),
        ];
        let (s, id) = draining(vec![host("h1", 4096), host("h2", 4096)], vms.clone(), false);
        let Step::Act {
            migrate,
            cold,
            progress,
        } = step(
            &s.operations.ops[&id],
            &s,
            &Policy::default(),
            DrainLimits::default(),
        )
        else {
            panic!("should act")
        };
        assert!(migrate.is_empty());
        assert_eq!(cold, vec![("off".to_string(), 1, "h2".to_string())]);
        assert!(
            progress.blocked["a"].contains("h2: already runs a VM of anti-affinity group g"),
            "{progress:?}"
        );
        assert!(progress.blocked["a"].contains("h1: "), "{progress:?}");
        let (s, id) = draining(vec![host("h1", 4096), host("h2", 4096)], vms, true);
        let Step::Finish { state, message } = step(
            &s.operations.ops[&id],
            &s,
            &Policy::default(),
            DrainLimits::default(),
        ) else {
            panic!("should stop")
        };
        assert_eq!(state, OpState::Failed);
        assert!(message.contains("a: no host can take it"), "{message}");
    }

    /// Issue 9, point 1: h1 frozen and declared dead by its lease while a non-HA VM runs
    /// there. The drain must list it as blocked (with the command that unblocks it), not
    /// move it; an HA VM may go (h1 fenced it), and after an operator fence both may.
    #[test]
    fn a_vm_its_dead_or_suspect_host_may_still_run_is_blocked_not_moved() {
        let mut ha = vm("ha", "h1", true, None);
        ha.ha = true;
        let vms = vec![vm("plain", "h1", true, None), ha];
        for (health, reason) in [
            (HostHealth::Suspect, None),
            (HostHealth::Dead, Some(DeadReason::LeaseLapsed)),
        ] {
            let (mut s, id) =
                draining(vec![host("h1", 4096), host("h2", 4096)], vms.clone(), false);
            let h1 = s.hosts.get_mut("h1").unwrap();
            h1.health = health;
            h1.dead_reason = reason;
            let Step::Act {
                migrate,
                cold,
                progress,
            } = step(
                &s.operations.ops[&id],
                &s,
                &Policy::default(),
                DrainLimits::default(),
            )
            else {
                panic!("should act")
            };
            assert!(migrate.is_empty(), "{health:?}: {migrate:?}");
            let why = &progress.blocked["plain"];
            assert!(
                why.contains("drover host fence h1 --yes-it-is-off"),
                "{why}"
            );
            let moved: Vec<&str> = cold.iter().map(|c| c.0.as_str()).collect();
            if health == HostHealth::Dead {
                assert_eq!(moved, ["ha"], "the lease fenced the HA VM");
            } else {
                assert!(moved.is_empty(), "suspect: {moved:?}");
                assert!(progress.blocked.contains_key("ha"));
            }
        }
        let (mut s, id) = draining(vec![host("h1", 4096), host("h2", 4096)], vms, false);
        let h1 = s.hosts.get_mut("h1").unwrap();
        h1.health = HostHealth::Dead;
        h1.dead_reason = Some(DeadReason::Operator);
        let Step::Act { cold, progress, .. } = step(
            &s.operations.ops[&id],
            &s,
            &Policy::default(),
            DrainLimits::default(),
        ) else {
            panic!("should act")
        };
        assert_eq!(cold.len(), 2, "operator fence: {cold:?} {progress:?}");
    }

    proptest! {
        /// Whatever runs already, a step never starts more migrations than the limits
        /// leave, never targets the draining host or an overfull one.
        #[test]
        fn respects_limits_and_capacity(
            n_vms in 0usize..20,
            in_flight_here in 0usize..4,
            in_flight_elsewhere in 0usize..10,
            per_host in 1usize..4,
            cluster in 1usize..10,
            mem in prop::collection::vec(256u64..4096, 1..4),
        ) {
            let mut hosts = vec![host("h1", 1 << 20)];
            hosts.extend(mem.iter().enumerate().map(|(i, m)| host(&format!("h{}", i + 2), *m)));
            let mut vms: Vec<Vm> = (0..n_vms).map(|i| vm(&format!("v{i}"), "h1", true, None)).collect();
            vms.extend((0..in_flight_elsewhere).map(|i| vm(&format!("x{i}"), "h2", true, None)));
            let (mut s, id) = draining(hosts, vms, false);
            for i in 0..in_flight_here.min(n_vms) {
                start_migration(&mut s, &format!("v{i}"), "h2");
            }
            for i in 0..in_flight_elsewhere {
                start_migration(&mut s, &format!("x{i}"), "h3");
            }
            let limits = DrainLimits { per_host, cluster };
            if let Step::Act { migrate, .. } = step(&s.operations.ops[&id], &s, &Policy::default(), limits) {
                let here = in_flight_here.min(n_vms);
                let all = here + in_flight_elsewhere;
                prop_assert!(here + migrate.len() <= per_host.max(here));
                prop_assert!(all + migrate.len() <= cluster.max(all));
                let mut after = s.clone();
                for (name, _, dst) in &migrate {
                    prop_assert_ne!(dst.as_str(), "h1");
                    start_migration(&mut after, name, dst);
                }
                // Every destination chosen has room for what it was given.
                for (_, _, dst) in &migrate {
                    let (_, used, _) = after.allocated(dst);
                    prop_assert!(used <= after.hosts[dst].capacity.memory_mib, "{dst} overbooked");
                }
            }
        }
    }
}
