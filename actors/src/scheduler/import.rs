//! Where an image import goes: an up host that has the image's pool active with room for
//! the file and the pool's headroom; the one with the most free space there, so that a
//! shared pool (every host sees the same free space) takes the first such host in name
//! order and a local pool the emptiest.

use drover_raft::model::{ClusterState, HostHealth, PoolOnHost};

use super::batch::POOL_HEADROOM_PERCENT;

/// Why no host can take an import.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportRefusal {
    #[error("Pool {0:?} not found")]
    UnknownPool(String),
    #[error("No host can take the image into pool {pool:?}: {why}")]
    NoHost { pool: String, why: String },
}

/// The host to receive `bytes` into `pool`, or why none can.
pub fn import_host(state: &ClusterState, pool: &str, bytes: u64) -> Result<String, ImportRefusal> {
    let p = state
        .pools
        .get(pool)
        .ok_or_else(|| ImportRefusal::UnknownPool(pool.to_string()))?;
    let mut best: Option<(&str, u64)> = None;
    let mut why = Vec::new();
    for host in state
        .hosts
        .values()
        .filter(|h| p.spec.hosts.includes(&h.name))
    {
        let (capacity, free) = match p.on_hosts.get(&host.name) {
            Some(PoolOnHost::Active {
                capacity_bytes,
                available_bytes,
            }) => (*capacity_bytes, *available_bytes),
            _ => {
                why.push(format!("{}: pool not active", host.name));
                continue;
            }
        };
        if host.health != HostHealth::Up {
            why.push(format!("{}: host {}", host.name, host.health.as_str()));
            continue;
        }
        let keep = capacity / 100 * POOL_HEADROOM_PERCENT;
        if free < bytes.saturating_add(keep) {
            why.push(format!(
                "{}: {free} bytes free, needs {bytes} + {keep} kept free",
                host.name
            ));
            continue;
        }
        if best.is_none_or(|(_, f)| free > f) {
            best = Some((&host.name, free));
        }
    }
    match best {
        Some((host, _)) => Ok(host.to_string()),
        None => Err(ImportRefusal::NoHost {
            pool: pool.to_string(),
            why: if why.is_empty() {
                "it has no hosts".into()
            } else {
                why.join("; ")
            },
        }),
    }
}

#[cfg(test)]
mod tests {
    use drover_raft::model::{Host, Pool, PoolHosts, PoolKind, PoolSpec};

    use super::*;

    const GIB: u64 = 1 << 30;

    fn state(free: &[(&str, Option<u64>)]) -> ClusterState {
        let mut s = ClusterState::default();
        let mut pool = Pool {
            name: "img".into(),
            spec: PoolSpec {
                kind: PoolKind::Dir {
                    path: "/srv/img".into(),
                },
                shared: false,
                hosts: PoolHosts::All,
            },
            on_hosts: Default::default(),
        };
        for (host, free) in free {
            let mut h = Host::new(host, "127.0.0.1:1");
            h.health = HostHealth::Up;
            s.hosts.insert(host.to_string(), h);
            if let Some(free) = free {
                let active = PoolOnHost::Active {
                    capacity_bytes: 100 * GIB,
                    available_bytes: *free,
                };
                pool.on_hosts.insert(host.to_string(), active);
            }
        }
        s.pools.insert("img".into(), pool);
        s
    }

    #[test]
    fn the_emptiest_up_host_with_room_takes_it() {
        let s = state(&[("h1", Some(20 * GIB)), ("h2", Some(50 * GIB)), ("h3", None)]);
        assert_eq!(import_host(&s, "img", GIB), Ok("h2".into()));
        // 5 % of 100 GiB stays free: 50 GiB free takes 45, not 46.
        assert_eq!(import_host(&s, "img", 45 * GIB), Ok("h2".into()));
        let err = import_host(&s, "img", 46 * GIB).unwrap_err().to_string();
        assert!(err.contains("h3: pool not active"), "{err}");
        let mut down = s.clone();
        down.hosts.get_mut("h2").expect("h2").health = HostHealth::Dead;
        assert_eq!(import_host(&down, "img", GIB), Ok("h1".into()));
        assert_eq!(
            import_host(&s, "nope", GIB),
            Err(ImportRefusal::UnknownPool("nope".into()))
        );
    }
}
