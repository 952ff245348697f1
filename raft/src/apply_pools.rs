//! `apply` for storage pools: declare, forget, and record what hosts report about them.
//! Kept apart from `apply.rs`, which calls in here from one arm per command.

use std::collections::BTreeMap;

use crate::command::{ApplyError, ApplyResult, Reply};
use crate::model::{
    validate_name, ClusterState, Pool, PoolHosts, PoolOnHost, PoolSpec, MAX_POOL_REASON_LEN,
};

/// Whether two host selections share a host.
fn overlap(a: &PoolHosts, b: &PoolHosts) -> bool {
    match (a, b) {
        (PoolHosts::All, _) | (_, PoolHosts::All) => true,
        (PoolHosts::Only(a), PoolHosts::Only(b)) => !a.is_disjoint(b),
    }
}

impl ClusterState {
    pub(crate) fn create_pool(&mut self, name: &str, spec: &PoolSpec) -> ApplyResult {
        validate_name(name).map_err(|reason| ApplyError::InvalidName {
            what: "pool".into(),
            reason,
        })?;
        spec.validate().map_err(ApplyError::InvalidPool)?;
        if let PoolHosts::Only(hosts) = &spec.hosts {
            if let Some(unknown) = hosts.iter().find(|h| !self.hosts.contains_key(*h)) {
                return Err(ApplyError::UnknownHost(unknown.clone()));
            }
        }
        if self.pools.contains_key(name) {
            return Err(ApplyError::PoolExists(name.to_string()));
        }
        // Two pools over one directory of one host would each take the other's volumes
        // for its own (and delete them with their VMs).
        let path = spec.kind.path();
        if let Some(other) = self
            .pools
            .values()
            .find(|p| p.spec.kind.path() == path && overlap(&p.spec.hosts, &spec.hosts))
        {
            return Err(ApplyError::PoolPathTaken {
                path: path.to_string(),
                pool: other.name.clone(),
            });
        }
        let pool = Pool {
            name: name.to_string(),
            spec: spec.clone(),
            on_hosts: BTreeMap::new(),
        };
        self.pools.insert(name.to_string(), pool.clone());
        Ok(Reply::Pool(pool))
    }

    pub(crate) fn delete_pool(&mut self, name: &str) -> ApplyResult {
        let users: Vec<&str> = self
            .vms
            .values()
            .filter(|vm| {
                vm.disks
                    .iter()
                    .chain(&vm.dropped_disks)
                    .any(|d| d.pool == name)
            })
            .map(|vm| vm.name.as_str())
            .collect();
        if !users.is_empty() {
            return Err(ApplyError::PoolInUse {
                pool: name.to_string(),
                vms: users.join(", "),
            });
        }
        let images: Vec<&str> = self
            .images
            .values()
            .filter(|i| i.pool == name)
            .map(|i| i.name.as_str())
            .collect();
        if !images.is_empty() {
            return Err(ApplyError::PoolHoldsImages {
                pool: name.to_string(),
                images: images.join(", "),
            });
        }
        self.pools
            .remove(name)
            .map(|p| Reply::PoolDeleted { name: p.name })
            .ok_or_else(|| ApplyError::UnknownPool(name.to_string()))
    }

    pub(crate) fn pools_observed(
        &mut self,
        host: &str,
        reports: &BTreeMap<String, PoolOnHost>,
    ) -> ApplyResult {
        if !self.hosts.contains_key(host) {
            return Err(ApplyError::UnknownHost(host.to_string()));
        }
        for (pool, report) in reports {
            match report {
                PoolOnHost::Active {
                    capacity_bytes,
                    available_bytes,
                } if available_bytes > capacity_bytes => {
                    return Err(ApplyError::InvalidReport(format!(
                        "pool {pool:?}: {available_bytes} bytes free of {capacity_bytes}"
                    )));
                }
                PoolOnHost::Failed { reason } if reason.len() > MAX_POOL_REASON_LEN => {
                    return Err(ApplyError::InvalidReport(format!(
                        "pool {pool:?}: a failure reason longer than {MAX_POOL_REASON_LEN} bytes"
                    )));
                }
                _ => {}
            }
        }
        for pool in self.pools.values_mut() {
            match reports.get(&pool.name) {
                Some(report) if pool.spec.hosts.includes(host) => {
                    pool.on_hosts.insert(host.to_string(), report.clone());
                }
                _ => {
                    pool.on_hosts.remove(host);
                }
            }
        }
        Ok(Reply::Nothing)
    }
}

#[cfg(test)]
mod tests {
    use crate::command::Command;
    use crate::model::{Host, PoolKind};

    use super::*;

    fn state(hosts: &[&str]) -> ClusterState {
        let mut s = ClusterState::default();
        for h in hosts {
            s.hosts.insert(h.to_string(), Host::new(h, "127.0.0.1:1"));
        }
        s
    }

    fn dir(path: &str, hosts: Option<&[&str]>) -> PoolSpec {
        PoolSpec {
            kind: PoolKind::Dir { path: path.into() },
            shared: false,
            hosts: match hosts {
                None => PoolHosts::All,
                Some(h) => PoolHosts::Only(h.iter().map(|s| s.to_string()).collect()),
            },
        }
    }

    fn create(s: &mut ClusterState, name: &str, spec: PoolSpec) -> ApplyResult {
        s.apply(&Command::CreatePool {
            name: name.into(),
            spec,
        })
        .0
    }

    #[test]
    fn a_pool_is_created_once_with_a_valid_name_path_and_known_hosts() {
        let mut s = state(&["h1", "h2"]);
        let before = s.clone();
        for (name, spec, err) in [
            ("bad name", dir("/srv/a", None), "Invalid pool name"),
            ("a", dir("srv/a", None), "not absolute"),
            (
                "a",
                dir("/srv/a", Some(&["h1", "h9"])),
                "Host \"h9\" not found",
            ),
        ] {
            let e = create(&mut s, name, spec).expect_err(name);
            assert!(e.to_string().contains(err), "{e}");
        }
        assert_eq!(s, before, "a refused create changed the state");
        assert!(create(&mut s, "a", dir("/srv/a", Some(&["h1"]))).is_ok());
        let e = create(&mut s, "a", dir("/srv/b", None)).unwrap_err();
        assert_eq!(e, ApplyError::PoolExists("a".into()));
    }

    #[test]
    fn one_directory_of_one_host_is_never_two_pools() {
        let mut s = state(&["h1", "h2"]);
        create(&mut s, "a", dir("/srv/a", Some(&["h1"]))).unwrap();
        // Same path on other hosts only: fine.
        create(&mut s, "b", dir("/srv/a", Some(&["h2"]))).unwrap();
        for spec in [dir("/srv/a", None), dir("/srv/a", Some(&["h2", "h1"]))] {
            let e = create(&mut s, "c", spec).unwrap_err();
            assert!(matches!(e, ApplyError::PoolPathTaken { .. }), "{e}");
        }
    }

    #[test]
    fn reports_are_kept_per_host_for_the_pools_that_include_it() {
        let mut s = state(&["h1", "h2"]);
        create(&mut s, "all", dir("/srv/all", None)).unwrap();
        create(&mut s, "two", dir("/srv/two", Some(&["h2"]))).unwrap();
        let active = PoolOnHost::Active {
            capacity_bytes: 100,
            available_bytes: 40,
        };
        let report: BTreeMap<_, _> = [
            ("all".to_string(), active.clone()),
            ("two".to_string(), active.clone()),
            ("gone".to_string(), active.clone()),
        ]
        .into();
        let observe = |s: &mut ClusterState, host: &str, pools: &BTreeMap<String, PoolOnHost>| {
            s.apply(&Command::PoolsObserved {
                host: host.into(),
                pools: pools.clone(),
            })
            .0
        };
        observe(&mut s, "h1", &report).unwrap();
        assert_eq!(s.pools["all"].on_hosts.get("h1"), Some(&active));
        // "two" does not include h1: its report there is not kept.
        assert!(s.pools["two"].on_hosts.is_empty());
        // A later report without the pool: not set up there (any more).
        observe(&mut s, "h1", &BTreeMap::new()).unwrap();
        assert!(s.pools["all"].on_hosts.is_empty());

        let before = s.clone();
        let lying: BTreeMap<_, _> = [(
            "all".to_string(),
            PoolOnHost::Active {
                capacity_bytes: 1,
                available_bytes: 2,
            },
        )]
        .into();
        assert!(observe(&mut s, "h1", &lying).is_err());
        let rambling: BTreeMap<_, _> = [(
            "all".to_string(),
            PoolOnHost::Failed {
                reason: "x".repeat(MAX_POOL_REASON_LEN + 1),
            },
        )]
        .into();
        assert!(observe(&mut s, "h1", &rambling).is_err());
        assert_eq!(
            observe(&mut s, "h9", &report),
            Err(ApplyError::UnknownHost("h9".into()))
        );
        assert_eq!(s, before);
    }

    #[test]
    fn removing_a_host_drops_its_reports() {
        let mut s = state(&["h1"]);
        create(&mut s, "all", dir("/srv/all", None)).unwrap();
        let report = BTreeMap::from([(
            "all".to_string(),
            PoolOnHost::Failed {
                reason: "gone".into(),
            },
        )]);
        s.apply(&Command::PoolsObserved {
            host: "h1".into(),
            pools: report,
        })
        .0
        .unwrap();
        s.apply(&Command::RemoveHost { name: "h1".into() })
            .0
            .unwrap();
        assert!(s.pools["all"].on_hosts.is_empty());
    }

    #[test]
    fn deleting_an_unknown_pool_names_it() {
        let mut s = state(&[]);
        assert_eq!(
            s.apply(&Command::DeletePool { name: "p".into() }).0,
            Err(ApplyError::UnknownPool("p".into()))
        );
    }
}
