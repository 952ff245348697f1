//! Storage pools: where VM disks and images live. A pool is what the operator declared
//! (its kind, whether its hosts share it, which hosts see it) plus what each of those hosts
//! last reported about it (active with its space, or why it could not be set up). hostd
//! defines the pool in libvirt; the cluster only keeps the declaration and the reports.

use std::collections::{BTreeMap, BTreeSet};

use drover_proto::pool_path::validate_pool_path;
use serde::{Deserialize, Serialize};

/// A report's free space is committed again only when it moved by at least this much
/// (or by [`REPORT_STEP_PERCENT`] of the capacity, whichever is more): every host reports
/// at every heartbeat, and a disk being written must not become a Raft write per second.
pub const REPORT_STEP_BYTES: u64 = 256 * 1024 * 1024;
pub const REPORT_STEP_PERCENT: u64 = 1;

/// What backs a pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PoolKind {
    /// A directory at the same path on every host of the pool (libvirt `dir` pool). With
    /// `shared`, the hosts see the same files (NFS, CephFS, GlusterFS mounted there).
    Dir { path: String },
}

impl PoolKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            PoolKind::Dir { .. } => "dir",
        }
    }

    /// Where the pool is on each host.
    pub fn path(&self) -> &str {
        match self {
            PoolKind::Dir { path } => path,
        }
    }
}

/// Which hosts see a pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PoolHosts {
    /// Every host, those added later too.
    All,
    /// These hosts only.
    Only(BTreeSet<String>),
}

impl PoolHosts {
    pub fn includes(&self, host: &str) -> bool {
        match self {
            PoolHosts::All => true,
            PoolHosts::Only(hosts) => hosts.contains(host),
        }
    }
}

/// What the operator declares.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolSpec {
    pub kind: PoolKind,
    /// Every host of the pool sees the same files: a disk there can be opened by another
    /// host (HA restarts and migrations keep it), and one copy of an image serves all.
    pub shared: bool,
    pub hosts: PoolHosts,
}

impl PoolSpec {
    /// Checks what can be checked without the hosts: the path's form and the host list.
    pub fn validate(&self) -> Result<(), String> {
        validate_pool_path(self.kind.path())?;
        if let PoolHosts::Only(hosts) = &self.hosts {
            if hosts.is_empty() {
                return Err("the host list is empty (leave it out for every host)".into());
            }
        }
        Ok(())
    }
}

/// What one host last reported about a pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PoolOnHost {
    Active {
        capacity_bytes: u64,
        available_bytes: u64,
    },
    /// hostd could not set the pool up (the path is missing, not a directory, not
    /// writable, or libvirt refused it).
    Failed { reason: String },
}

impl PoolOnHost {
    /// Whether committing `new` over `self` tells anyone something: a change of state or
    /// reason, a capacity change, or free space moved by a step (see [`REPORT_STEP_BYTES`]).
    pub fn differs(&self, new: &PoolOnHost) -> bool {
        match (self, new) {
            (
                PoolOnHost::Active {
                    capacity_bytes: c0,
                    available_bytes: a0,
                },
                PoolOnHost::Active {
                    capacity_bytes: c1,
                    available_bytes: a1,
                },
            ) => {
                let step = REPORT_STEP_BYTES.max(c1 / 100 * REPORT_STEP_PERCENT);
                c0 != c1 || a0.abs_diff(*a1) >= step
            }
            (a, b) => a != b,
        }
    }
}

/// Longest failure reason kept from a host's report.
pub const MAX_POOL_REASON_LEN: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pool {
    pub name: String,
    pub spec: PoolSpec,
    /// The last committed report of each host the pool includes (absent: not reported yet).
    #[serde(default)]
    pub on_hosts: BTreeMap<String, PoolOnHost>,
}

impl Pool {
    /// The most free bytes any host reports for the pool; `None` before any reported it
    /// active (nothing is known yet).
    pub fn most_free(&self) -> Option<u64> {
        self.on_hosts
            .values()
            .filter_map(|r| match r {
                PoolOnHost::Active {
                    available_bytes, ..
                } => Some(*available_bytes),
                PoolOnHost::Failed { .. } => None,
            })
            .max()
    }

    /// Free bytes on `host`, if the pool is active there.
    pub fn available_on(&self, host: &str) -> Option<u64> {
        match self.on_hosts.get(host)? {
            PoolOnHost::Active {
                available_bytes, ..
            } => Some(*available_bytes),
            PoolOnHost::Failed { .. } => None,
        }
    }
}

#[cfg(test)]
impl Pool {
    /// For tests: a `dir` pool at `/srv/<name>` that every host includes, reported active
    /// with a terabyte free on `active_on`.
    pub(crate) fn for_tests(name: &str, shared: bool, active_on: &[&str]) -> Pool {
        let active = PoolOnHost::Active {
            capacity_bytes: 1 << 40,
            available_bytes: 1 << 40,
        };
        Pool {
            name: name.into(),
            spec: PoolSpec {
                kind: PoolKind::Dir {
                    path: format!("/srv/{name}"),
                },
                shared,
                hosts: PoolHosts::All,
            },
            on_hosts: active_on
                .iter()
                .map(|h| (h.to_string(), active.clone()))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_host_list_is_refused() {
        let spec = PoolSpec {
            kind: PoolKind::Dir {
                path: "/srv/p".into(),
            },
            shared: false,
            hosts: PoolHosts::Only(BTreeSet::new()),
        };
        assert!(spec.validate().unwrap_err().contains("empty"));
    }

    #[test]
    fn free_space_is_worth_a_commit_only_when_it_moved_by_a_step() {
        let gib = 1024 * 1024 * 1024;
        let active = |c: u64, a: u64| PoolOnHost::Active {
            capacity_bytes: c,
            available_bytes: a,
        };
        // 100 GiB pool: the step is 1 GiB (1 %), above the 256 MiB floor.
        assert!(!active(100 * gib, 50 * gib).differs(&active(100 * gib, 50 * gib + gib / 2)));
        assert!(active(100 * gib, 50 * gib).differs(&active(100 * gib, 49 * gib)));
        // 1 GiB pool: the floor (256 MiB) rules.
        assert!(!active(gib, gib / 2).differs(&active(gib, gib / 2 - 100 * 1024 * 1024)));
        assert!(active(gib, gib / 2).differs(&active(gib, gib / 4)));
        // Any capacity change, and any change of state or reason, counts.
        assert!(active(gib, gib).differs(&active(2 * gib, gib)));
        let failed = |r: &str| PoolOnHost::Failed { reason: r.into() };
        assert!(active(gib, gib).differs(&failed("gone")));
        assert!(failed("gone").differs(&failed("not writable")));
        assert!(!failed("gone").differs(&failed("gone")));
    }
}
