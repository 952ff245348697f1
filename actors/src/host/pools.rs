//! Which storage pools one host must set up or drop, and what to record about them: a pure
//! comparison of the cluster's pools with the host's heartbeat report and the failures of
//! earlier attempts. The host actor carries the plan out (EnsurePool, RemovePool,
//! `PoolsObserved`).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use drover_proto::agent::v1::PoolStatus;
use drover_raft::model::{Pool, PoolKind, PoolOnHost, MAX_POOL_REASON_LEN};

/// A pool that could not be set up is tried again after this long: the operator fixes the
/// directory, and the next attempt finds it without anyone asking.
pub const RETRY_FAILED_POOL: Duration = Duration::from_secs(10);

/// The last failed attempt to set a pool up on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub path: String,
    pub reason: String,
    pub at: Instant,
}

/// What to do now.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct PoolPlan {
    /// Pools to define and start, with where.
    pub ensure: Vec<(String, PoolKind)>,
    /// Pools the host has that the cluster no longer puts there.
    pub remove: Vec<String>,
    /// What the host's pools are, as `PoolsObserved` records it.
    pub observed: BTreeMap<String, PoolOnHost>,
}

/// `pools`: the cluster's; `reported`: the host's last heartbeat; `failures`: by pool.
pub fn plan(
    host: &str,
    pools: &BTreeMap<String, Pool>,
    reported: &[PoolStatus],
    failures: &BTreeMap<String, Failure>,
    now: Instant,
) -> PoolPlan {
    let mut out = PoolPlan::default();
    for pool in pools.values().filter(|p| p.spec.hosts.includes(host)) {
        let path = pool.spec.kind.path();
        let here = reported.iter().find(|r| r.name == pool.name);
        match here {
            Some(r) if r.path == path && r.active => {
                out.observed.insert(
                    pool.name.clone(),
                    PoolOnHost::Active {
                        capacity_bytes: r.capacity_bytes,
                        // A filesystem can report more free than its size (reserved
                        // blocks, thin volumes); the state machine refuses that.
                        available_bytes: r.available_bytes.min(r.capacity_bytes),
                    },
                );
                continue;
            }
            _ => {}
        }
        match failures.get(&pool.name).filter(|f| f.path == path) {
            Some(f) => {
                out.observed.insert(
                    pool.name.clone(),
                    PoolOnHost::Failed {
                        reason: clip(&f.reason),
                    },
                );
                if now.saturating_duration_since(f.at) >= RETRY_FAILED_POOL {
                    out.ensure.push((pool.name.clone(), pool.spec.kind.clone()));
                }
            }
            None => out.ensure.push((pool.name.clone(), pool.spec.kind.clone())),
        }
    }
    for r in reported {
        let wanted = pools
            .get(&r.name)
            .is_some_and(|p| p.spec.hosts.includes(host));
        if !wanted {
            out.remove.push(r.name.clone());
        }
    }
    out
}

/// Whether `observed` tells the state anything new about `host` (see
/// [`PoolOnHost::differs`]).
pub fn worth_recording(
    host: &str,
    pools: &BTreeMap<String, Pool>,
    observed: &BTreeMap<String, PoolOnHost>,
) -> bool {
    pools
        .values()
        .filter(|p| p.spec.hosts.includes(host))
        .any(|p| match (p.on_hosts.get(host), observed.get(&p.name)) {
            (None, None) => false,
            (Some(old), Some(new)) => old.differs(new),
            _ => true,
        })
}

fn clip(reason: &str) -> String {
    if reason.len() <= MAX_POOL_REASON_LEN {
        return reason.to_string();
    }
    let mut end = MAX_POOL_REASON_LEN;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    reason[..end].to_string()
}

#[cfg(test)]
mod tests {
    use drover_raft::model::{PoolHosts, PoolSpec};

    use super::*;

    fn pool(name: &str, path: &str, hosts: PoolHosts) -> (String, Pool) {
        (
            name.to_string(),
            Pool {
                name: name.into(),
                spec: PoolSpec {
                    kind: PoolKind::Dir { path: path.into() },
                    shared: false,
                    hosts,
                },
                on_hosts: BTreeMap::new(),
            },
        )
    }

    fn dir(path: &str) -> PoolKind {
        PoolKind::Dir { path: path.into() }
    }

    fn status(name: &str, path: &str, active: bool) -> PoolStatus {
        PoolStatus {
            name: name.into(),
            path: path.into(),
            active,
            capacity_bytes: 100,
            available_bytes: 60,
        }
    }

    #[test]
    fn pools_missing_moved_or_inactive_are_set_up_and_foreign_ones_dropped() {
        let now = Instant::now();
        let only_h2 = PoolHosts::Only(["h2".to_string()].into());
        let pools = BTreeMap::from([
            pool("ok", "/srv/ok", PoolHosts::All),
            pool("new", "/srv/new", PoolHosts::All),
            pool("moved", "/srv/moved-now", PoolHosts::All),
            pool("down", "/srv/down", PoolHosts::All),
            pool("elsewhere", "/srv/e", only_h2),
        ]);
        let reported = [
            status("ok", "/srv/ok", true),
            status("moved", "/srv/moved-before", true),
            status("down", "/srv/down", false),
            status("elsewhere", "/srv/e", true),
            status("deleted", "/srv/d", true),
        ];
        let p = plan("h1", &pools, &reported, &BTreeMap::new(), now);
        let ensured: Vec<&str> = p.ensure.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(ensured, ["down", "moved", "new"]);
        assert_eq!(p.remove, ["elsewhere", "deleted"]);
        assert_eq!(
            p.observed,
            BTreeMap::from([(
                "ok".to_string(),
                PoolOnHost::Active {
                    capacity_bytes: 100,
                    available_bytes: 60
                }
            )])
        );
    }

    #[test]
    fn a_failed_pool_is_reported_and_retried_only_after_a_pause() {
        let then = Instant::now();
        let pools = BTreeMap::from([pool("p", "/srv/p", PoolHosts::All)]);
        let failures = BTreeMap::from([(
            "p".to_string(),
            Failure {
                path: "/srv/p".into(),
                reason: "does not exist".into(),
                at: then,
            },
        )]);
        let soon = plan("h1", &pools, &[], &failures, then + Duration::from_secs(1));
        assert!(soon.ensure.is_empty());
        assert_eq!(
            soon.observed["p"],
            PoolOnHost::Failed {
                reason: "does not exist".into()
            }
        );
        let later = plan("h1", &pools, &[], &failures, then + RETRY_FAILED_POOL);
        assert_eq!(later.ensure, [("p".to_string(), dir("/srv/p"))]);
        // A failure at another path (the pool was declared again) does not count.
        let mut moved = pools.clone();
        moved.insert("p".into(), pool("p", "/srv/q", PoolHosts::All).1);
        let fresh = plan("h1", &moved, &[], &failures, then);
        assert_eq!(fresh.ensure, [("p".to_string(), dir("/srv/q"))]);
        assert!(fresh.observed.is_empty());
    }

    #[test]
    fn only_news_is_worth_a_write() {
        let mut pools = BTreeMap::from([pool("p", "/srv/p", PoolHosts::All)]);
        let active = |a| PoolOnHost::Active {
            capacity_bytes: 1 << 40,
            available_bytes: a,
        };
        assert!(!worth_recording("h1", &pools, &BTreeMap::new()));
        let now = BTreeMap::from([("p".to_string(), active(1 << 39))]);
        assert!(worth_recording("h1", &pools, &now));
        pools
            .get_mut("p")
            .unwrap()
            .on_hosts
            .insert("h1".into(), active(1 << 39));
        assert!(!worth_recording("h1", &pools, &now));
        let a_little_less = BTreeMap::from([("p".to_string(), active((1 << 39) - 4096))]);
        assert!(!worth_recording("h1", &pools, &a_little_less));
        assert!(worth_recording("h1", &pools, &BTreeMap::new()));
    }

    #[test]
    fn long_reasons_are_clipped_on_a_char_boundary() {
        let long = "é".repeat(MAX_POOL_REASON_LEN);
        let c = clip(&long);
        assert!(c.len() <= MAX_POOL_REASON_LEN && long.starts_with(&c));
    }
}
