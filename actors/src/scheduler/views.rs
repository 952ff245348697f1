//! The scheduler's inputs, read off the replicated state: one [`HostView`] per host (its
//! allocations include VMs migrating to it) and one [`Request`] per VM to place. Pure.

use std::collections::BTreeMap;
use std::fmt;

use drover_raft::model::{AdminState, ClusterState, HostHealth, PoolOnHost, Vm};

use super::batch::{place_one, HostView, Policy, Refusal, Request};

/// Every host as the scheduler sees it, sorted by name.
pub fn host_views(state: &ClusterState) -> Vec<HostView> {
    state
        .hosts
        .values()
        .map(|h| {
            let (used_vcpus, used_memory_mib, _) = state.allocated(&h.name);
            let groups = state
                .vms
                .values()
                .filter(|vm| {
                    vm.host.as_deref() == Some(h.name.as_str())
                        || state.migrating_to(vm) == Some(h.name.as_str())
                })
                .filter_map(|vm| vm.anti_affinity.clone())
                .collect();
            let pools = state
                .pools
                .values()
                .filter_map(|p| match p.on_hosts.get(&h.name) {
                    Some(PoolOnHost::Active {
                        capacity_bytes,
                        available_bytes,
                    }) => Some((p.name.clone(), (*capacity_bytes, *available_bytes))),
                    _ => None,
                })
                .collect();
            HostView {
                pools,
                networking: h.networking.clone(),
                name: h.name.clone(),
                up: h.health == HostHealth::Up,
                active: h.admin == AdminState::Active,
                labels: h.labels.clone(),
                vcpus: h.capacity.vcpus,
                memory_mib: h.capacity.memory_mib,
                used_vcpus,
                used_memory_mib,
                groups,
            }
        })
        .collect()
}

/// What placing `vm` asks for; `not_on` is its current host when moving it.
pub fn request_for(vm: &Vm, not_on: Option<&str>, state: &ClusterState) -> Request {
    let mut pools = BTreeMap::new();
    for d in &vm.disks {
        // A local pool's volume is made on the host that takes the VM; a shared pool's
        // exists once the VM has been placed (its first host made it) and then costs the
        // next host nothing.
        let shared = state.pools.get(&d.pool).is_some_and(|p| p.spec.shared);
        let need = if shared && vm.generation > 0 {
            0
        } else {
            d.size_bytes
        };
        *pools.entry(d.pool.clone()).or_insert(0u64) += need;
        // The image is there already; its host needs only to see it.
        if let Some(b) = &d.backing {
            pools.entry(b.pool.clone()).or_insert(0);
        }
    }
    Request {
        pools,
        networks: state.nic_networks(vm),
        name: vm.name.clone(),
        vcpus: vm.spec.vcpus,
        memory_mib: vm.spec.memory_mib,
        require_labels: vm.require_labels.clone(),
        anti_affinity: vm.anti_affinity.clone(),
        not_on: not_on.map(String::from),
    }
}

/// The host for `vm` (unplaced, or moving off `not_on`), or why none fits.
pub fn place_vm(
    vm: &Vm,
    not_on: Option<&str>,
    state: &ClusterState,
    policy: &Policy,
) -> Result<String, Refusal> {
    let mut views = host_views(state);
    let mut refused = BTreeMap::new();
    // A clone of an image in an unshared pool runs where the image is, or where a copy
    // can be made from it.
    views.retain(|h| match state.image_reachable(vm, &h.name) {
        Ok(()) => true,
        Err(why) => {
            refused.insert(h.name.clone(), why);
            false
        }
    });
    place_one(&request_for(vm, not_on, state), &views, policy).map_err(|mut r| {
        r.reasons.extend(refused);
        r
    })
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.reasons.is_empty() {
            return write!(f, "no hosts registered");
        }
        write!(f, "no host can take it: ")?;
        for (i, (host, why)) in self.reasons.iter().enumerate() {
            if i > 0 {
                write!(f, "; ")?;
            }
            write!(f, "{host}: {why}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use drover_raft::model::{Host, MigrationPolicy, OpKind};

    use super::*;
    use crate::fixtures::{self, state};

    fn host(name: &str, admin: AdminState) -> Host {
        Host {
            labels: [("rack".to_string(), name.to_string())].into(),
            admin,
            ..fixtures::host(name, 2, 1024)
        }
    }

    fn vm(name: &str, host: Option<&str>, group: Option<&str>) -> Vm {
        Vm {
            anti_affinity: group.map(String::from),
            ..fixtures::vm(name, host, 1, 512)
        }
    }

    /// A clone of an image in an unshared pool goes to any host of the pool while the
    /// image's host is up to copy it from; with that host down, only where a copy is
    /// ready, and the others' refusal says why.
    #[test]
    fn a_clone_of_an_unshared_image_goes_where_the_image_is_or_can_be_copied() {
        let mut s = state(
            vec![
                host("h1", AdminState::Active),
                host("h2", AdminState::Active),
            ],
            Vec::new(),
        );
        let pool = crate::fixtures::pool("local", false, &["h1", "h2"]);
        s.pools.insert("local".into(), pool);
        let deb = crate::fixtures::image("deb", "local", "h2");
        let mut v = vm("web", None, None);
        v.disks
            .push(crate::fixtures::clone_disk("web", "local", &deb));
        s.images.insert("deb".into(), deb);
        assert_eq!(
            place_vm(&v, Some("h2"), &s, &s.placement),
            Ok("h1".to_string()),
            "copied from h2 when it starts there"
        );
        s.hosts.get_mut("h2").expect("h2").health = drover_raft::model::HostHealth::Dead;
        let e = place_vm(&v, Some("h2"), &s, &s.placement).expect_err("no source to copy");
        assert!(
            e.reasons["h1"].contains("its host h2 is not up"),
            "{:?}",
            e.reasons
        );
        s.images.get_mut("deb").expect("deb").copies =
            [("h1".to_string(), drover_raft::model::ImageCopy::Ready)].into();
        assert_eq!(
            place_vm(&v, Some("h2"), &s, &s.placement),
            Ok("h1".to_string()),
            "h1 has its copy"
        );
    }

    #[test]
    fn maintenance_labels_and_groups_come_from_the_state() {
        let s = state(
            vec![
                host("h1", AdminState::Active),
                host("h2", AdminState::Maintenance),
                host("h3", AdminState::Active),
            ],
            vec![vm("a", Some("h1"), Some("db"))],
        );
        let new = vm("b", None, Some("db"));
        let err = place_vm(&new, None, &s, &Policy::default()).map(|_| ());
        // h3 is the only candidate: h1 runs group db, h2 is in maintenance.
        assert_eq!(place_vm(&new, None, &s, &Policy::default()).unwrap(), "h3");
        assert!(err.is_ok());
        let mut pinned = vm("c", None, None);
        pinned.require_labels = [("rack".to_string(), "h2".to_string())].into();
        let refusal = place_vm(&pinned, None, &s, &Policy::default()).unwrap_err();
        assert_eq!(refusal.reasons["h2"], "in maintenance");
        assert!(refusal.reasons["h1"].contains("lacks label rack=h2"));
        assert!(refusal.to_string().starts_with("no host can take it: h1: "));
    }

    #[test]
    fn a_migration_books_its_destination() {
        let mut s = state(
            vec![
                host("h1", AdminState::Active),
                host("h2", AdminState::Active),
            ],
            vec![vm("a", Some("h1"), Some("db"))],
        );
        let id = s.operations.start(
            OpKind::Migrate {
                vm: "a".into(),
                src: "h1".into(),
                dst: "h2".into(),
                generation: 2,
                policy: MigrationPolicy::default(),
            },
            0,
        );
        s.vms.get_mut("a").unwrap().migration = Some(id);
        let views = host_views(&s);
        assert_eq!(views[1].used_memory_mib, 512, "{views:?}");
        assert!(views[1].groups.contains("db"));
        assert_eq!(
            views[0].used_memory_mib, 512,
            "the source keeps it until it ends"
        );
    }
}
