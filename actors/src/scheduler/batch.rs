//! The placement core, a pure function over plain views (built from the state by
//! `scheduler::views`; the policy comes from the replicated `PlacementPolicy`). Filters, in order: host up, admin
//! state active, not the source host, required labels, anti-affinity group, the VM's
//! networks carried there (its bridge or VLAN parent present, an underlay address for
//! an overlay), the VM's storage pools set up with room for its new volumes, vCPUs and
//! memory within capacity × overcommit ratio. Weighers: `Spread` (least loaded first, by
//! memory then vCPU fraction) or `Pack` (most loaded that still fits). Ties break by name.
//!
//! [`place_batch`] places many VMs at once (failover, drain) without overbooking: it is
//! exactly [`place_one`] applied in order, each answer booked into the view the next one
//! sees. Same input, same answer.

use std::collections::{BTreeMap, BTreeSet};

use drover_raft::model::{HostNetworking, NetworkKind};

/// The replicated placement policy: overcommit ratios (in percent) and the weigher.
pub use drover_raft::model::PlacementPolicy as Policy;
pub use drover_raft::model::Weigher;

/// A host as the scheduler sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostView {
    pub name: String,
    pub up: bool,
    /// Not in maintenance.
    pub active: bool,
    pub labels: BTreeMap<String, String>,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub used_vcpus: u32,
    pub used_memory_mib: u64,
    /// Anti-affinity groups with a VM on this host already.
    pub groups: BTreeSet<String>,
    /// Storage pools active here: (capacity, free) bytes, by pool.
    pub pools: BTreeMap<String, (u64, u64)>,
    /// Its underlay address and interfaces, as reported; `None`: not reported (an older
    /// hostd), not a reason to refuse.
    pub networking: Option<HostNetworking>,
}

/// Free space a placement leaves in a pool, in percent of the pool's capacity: a pool
/// filled to the last byte stops every guest writing to it.
pub const POOL_HEADROOM_PERCENT: u64 = 5;

/// A VM to place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub name: String,
    pub vcpus: u32,
    pub memory_mib: u64,
    pub require_labels: BTreeMap<String, String>,
    pub anti_affinity: Option<String>,
    /// Its current host, when moving it (migration, drain).
    pub not_on: Option<String>,
    /// Pools its disks are in, with the bytes a placement must find free there (0 where
    /// the volumes exist already: a shared pool's, once created).
    pub pools: BTreeMap<String, u64>,
    /// The networks its NICs are on, by name.
    pub networks: BTreeMap<String, NetworkKind>,
}

/// Why a VM fits nowhere: a reason per host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reasons: BTreeMap<String, String>,
}

/// Why `host` cannot take `req`, or `None` if it can.
pub fn refuse(req: &Request, host: &HostView, policy: &Policy) -> Option<String> {
    if !host.up {
        return Some("not up".into());
    }
    if !host.active {
        return Some("in maintenance".into());
    }
    if req.not_on.as_deref() == Some(host.name.as_str()) {
        return Some("it is the VM's current host".into());
    }
    for (k, v) in &req.require_labels {
        if host.labels.get(k) != Some(v) {
            return Some(format!("lacks label {k}={v}"));
        }
    }
    if let Some(group) = &req.anti_affinity {
        if host.groups.contains(group) {
            return Some(format!("already runs a VM of anti-affinity group {group}"));
        }
    }
    if let Some(networking) = &host.networking {
        for (network, kind) in &req.networks {
            if let Some(why) = networking.cannot_carry(kind) {
                return Some(format!("cannot carry network {network}: {why}"));
            }
        }
    }
    for (pool, need) in &req.pools {
        let Some(&(capacity, free)) = host.pools.get(pool) else {
            return Some(format!("storage pool {pool} is not set up here"));
        };
        let keep = capacity / 100 * POOL_HEADROOM_PERCENT;
        if free < need.saturating_add(keep) {
            return Some(format!(
                "storage pool {pool} has {free} bytes free, needs {need} and {POOL_HEADROOM_PERCENT} % of {capacity} kept free"
            ));
        }
    }
    let cpu_limit = policy.cpu_limit(host.vcpus);
    let cpu_needed = u64::from(host.used_vcpus) + u64::from(req.vcpus);
    if cpu_needed > cpu_limit {
        return Some(format!(
            "{} of {cpu_limit} vCPUs allocated (ratio {}), needs {}",
            host.used_vcpus,
            policy.cpu_ratio(),
            req.vcpus
        ));
    }
    let mem_limit = policy.memory_limit(host.memory_mib);
    if host.used_memory_mib + req.memory_mib > mem_limit {
        return Some(format!(
            "{} of {mem_limit} MiB allocated (ratio {}), needs {}",
            host.used_memory_mib,
            policy.memory_ratio(),
            req.memory_mib
        ));
    }
    None
}

/// Load after placing `req` on `host`, as (memory fraction, vCPU fraction) in parts per
/// million, so that ordering is exact and the same everywhere.
fn load_after(req: &Request, host: &HostView) -> (u64, u64) {
    let frac = |used: u64, cap: u64| (used * 1_000_000).checked_div(cap).unwrap_or(u64::MAX);
    (
        frac(host.used_memory_mib + req.memory_mib, host.memory_mib),
        frac(
            u64::from(host.used_vcpus) + u64::from(req.vcpus),
            u64::from(host.vcpus),
        ),
    )
}

/// The host for `req`, or why none fits.
pub fn place_one(req: &Request, hosts: &[HostView], policy: &Policy) -> Result<String, Refusal> {
    let mut reasons = BTreeMap::new();
    let mut best: Option<((u64, u64), &str)> = None;
    let mut sorted: Vec<&HostView> = hosts.iter().collect();
    sorted.sort_by(|a, b| a.name.cmp(&b.name));
    for host in sorted {
        if let Some(why) = refuse(req, host, policy) {
            reasons.insert(host.name.clone(), why);
            continue;
        }
        let load = load_after(req, host);
        let better = match (best, policy.weigher) {
            (None, _) => true,
            (Some((b, _)), Weigher::Spread) => load < b,
            (Some((b, _)), Weigher::Pack) => load > b,
        };
        if better {
            best = Some((load, &host.name));
        }
    }
    best.map(|(_, name)| name.to_string())
        .ok_or(Refusal { reasons })
}

/// Places `reqs` in order, booking each placement before the next: no overbooking within
/// the batch, and the same answers as placing them one by one.
pub fn place_batch(
    reqs: &[Request],
    hosts: &[HostView],
    policy: &Policy,
) -> Vec<Result<String, Refusal>> {
    let mut view = hosts.to_vec();
    reqs.iter()
        .map(|req| {
            let placed = place_one(req, &view, policy);
            if let Ok(name) = &placed {
                if let Some(h) = view.iter_mut().find(|h| &h.name == name) {
                    book(h, req);
                }
            }
            placed
        })
        .collect()
}

/// Adds `req`'s reservation (and group) to `host`.
pub fn book(host: &mut HostView, req: &Request) {
    host.used_vcpus += req.vcpus;
    host.used_memory_mib += req.memory_mib;
    if let Some(g) = &req.anti_affinity {
        host.groups.insert(g.clone());
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn host(name: &str, vcpus: u32, memory_mib: u64) -> HostView {
        HostView {
            name: name.into(),
            up: true,
            active: true,
            labels: BTreeMap::new(),
            vcpus,
            memory_mib,
            used_vcpus: 0,
            used_memory_mib: 0,
            groups: BTreeSet::new(),
            pools: BTreeMap::new(),
            networking: Some(HostNetworking::default()),
        }
    }

    fn req(name: &str, vcpus: u32, memory_mib: u64) -> Request {
        Request {
            name: name.into(),
            vcpus,
            memory_mib,
            require_labels: BTreeMap::new(),
            anti_affinity: None,
            not_on: None,
            pools: BTreeMap::new(),
            networks: BTreeMap::new(),
        }
    }

    #[test]
    fn each_filter_explains_itself() {
        let p = Policy::default();
        let mut hosts = vec![
            host("down", 8, 8192),
            host("maint", 8, 8192),
            host("src", 8, 8192),
            host("nolabel", 8, 8192),
            host("grouped", 8, 8192),
            host("small", 1, 256),
        ];
        hosts[0].up = false;
        hosts[1].active = false;
        hosts[4].labels.insert("ssd".into(), "yes".into());
        hosts[4].groups.insert("db".into());
        hosts[5].labels.insert("ssd".into(), "yes".into());
        let mut r = req("vm", 8, 512);
        r.require_labels.insert("ssd".into(), "yes".into());
        r.anti_affinity = Some("db".into());
        r.not_on = Some("src".into());
        let refusal = place_one(&r, &hosts, &p).unwrap_err();
        let why = |h: &str| refusal.reasons[h].clone();
        assert_eq!(why("down"), "not up");
        assert_eq!(why("maint"), "in maintenance");
        assert_eq!(why("src"), "it is the VM's current host");
        assert_eq!(why("nolabel"), "lacks label ssd=yes");
        assert!(why("grouped").contains("anti-affinity group db"));
        assert_eq!(why("small"), "0 of 4 vCPUs allocated (ratio 4), needs 8");
    }

    #[test]
    fn a_vm_goes_only_where_its_networks_can_be_wired() {
        let p = Policy::default();
        let mut hosts = vec![host("bare", 8, 8192), host("wired", 8, 8192)];
        hosts[1].networking = Some(HostNetworking {
            underlay: Some(std::net::Ipv4Addr::new(10, 0, 0, 2)),
            links: ["br0".to_string()].into(),
            vlan_links: Some(true),
        });
        let mut r = req("vm", 1, 64);
        r.networks.insert(
            "lan".into(),
            NetworkKind::Bridge {
                bridge: "br0".into(),
            },
        );
        r.networks
            .insert("overlay".into(), NetworkKind::Vxlan { vni: 7 });
        assert_eq!(place_one(&r, &hosts, &p), Ok("wired".to_string()));
        let refusal = place_one(&r, &hosts[..1], &p).unwrap_err();
        assert_eq!(
            refusal.reasons["bare"],
            "cannot carry network lan: has no bridge br0"
        );
        hosts[0].networking = Some(HostNetworking {
            underlay: None,
            links: ["br0".to_string()].into(),
            vlan_links: Some(false),
        });
        let refusal = place_one(&r, &hosts[..1], &p).unwrap_err();
        assert!(
            refusal.reasons["bare"].starts_with("cannot carry network overlay: has no underlay"),
            "{refusal:?}"
        );
        // A VLAN goes only where the kernel makes 802.1Q links.
        let mut v = req("vm", 1, 64);
        v.networks.insert(
            "tagged".into(),
            NetworkKind::Vlan {
                tag: 5,
                parent: "br0".into(),
            },
        );
        assert_eq!(place_one(&v, &hosts, &p), Ok("wired".to_string()));
        let refusal = place_one(&v, &hosts[..1], &p).unwrap_err();
        assert_eq!(
            refusal.reasons["bare"],
            "cannot carry network tagged: its kernel makes no 802.1Q VLAN links"
        );
        // A host that never reported (an older hostd) is not refused for its networks.
        hosts[0].networking = None;
        assert_eq!(place_one(&r, &hosts[..1], &p), Ok("bare".to_string()));
    }

    #[test]
    fn a_vm_goes_only_where_its_pools_are_set_up_with_room_to_spare() {
        let p = Policy::default();
        let gib = 1u64 << 30;
        let mut hosts = vec![
            host("nopool", 8, 8192),
            host("full", 8, 8192),
            host("roomy", 8, 8192),
        ];
        // 100 GiB pools: 5 GiB is kept free, so 24 GiB free takes a 19 GiB disk, not 20.
        hosts[1].pools.insert("fast".into(), (100 * gib, 24 * gib));
        hosts[2].pools.insert("fast".into(), (100 * gib, 25 * gib));
        let mut r = req("vm", 1, 64);
        r.pools.insert("fast".into(), 20 * gib);
        assert_eq!(place_one(&r, &hosts, &p), Ok("roomy".to_string()));
        let refusal = place_one(&r, &hosts[..2], &p).unwrap_err();
        assert_eq!(
            refusal.reasons["nopool"],
            "storage pool fast is not set up here"
        );
        assert!(
            refusal.reasons["full"].contains("needs 21474836480"),
            "{refusal:?}"
        );
        // Volumes that exist already (a shared pool's) need the pool, not the room.
        r.pools.insert("fast".into(), 0);
        assert_eq!(place_one(&r, &hosts[..2], &p), Ok("full".to_string()));
    }

    #[test]
    fn cpu_overcommit_ratio_applies() {
        let p = Policy::default();
        // 2 physical vCPUs × 4.0 = 8 allocatable.
        let hosts = vec![host("h", 2, 8192)];
        let placed = place_batch(
            &[req("a", 4, 64), req("b", 4, 64), req("c", 1, 64)],
            &hosts,
            &p,
        );
        assert!(placed[0].is_ok() && placed[1].is_ok());
        assert!(placed[2].is_err(), "the ninth vCPU is over the ratio");
    }

    #[test]
    fn spread_and_pack() {
        let hosts = vec![host("a", 8, 4096), host("b", 8, 4096)];
        let reqs: Vec<Request> = (0..4).map(|i| req(&format!("v{i}"), 1, 512)).collect();
        let spread: Vec<String> = place_batch(&reqs, &hosts, &Policy::default())
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(spread, ["a", "b", "a", "b"]);
        let pack = Policy {
            weigher: Weigher::Pack,
            ..Policy::default()
        };
        let packed: Vec<String> = place_batch(&reqs, &hosts, &pack)
            .into_iter()
            .map(Result::unwrap)
            .collect();
        assert_eq!(packed, ["a", "a", "a", "a"]);
    }

    fn arb_hosts() -> impl Strategy<Value = Vec<HostView>> {
        prop::collection::vec(
            (1u32..8, 256u64..4096, 0u32..3, any::<bool>(), any::<bool>()),
            1..6,
        )
        .prop_map(|hs| {
            hs.into_iter()
                .enumerate()
                .map(|(i, (cpu, mem, g, up, label))| {
                    let mut h = host(&format!("h{i}"), cpu, mem);
                    h.up = up || i == 0;
                    if label {
                        h.labels.insert("zone".into(), "a".into());
                    }
                    if g > 0 {
                        h.groups.insert(format!("g{g}"));
                    }
                    h
                })
                .collect()
        })
    }

    fn arb_reqs() -> impl Strategy<Value = Vec<Request>> {
        prop::collection::vec((1u32..4, 64u64..1024, 0u32..4, any::<bool>()), 1..20).prop_map(
            |rs| {
                rs.into_iter()
                    .enumerate()
                    .map(|(i, (cpu, mem, g, label))| {
                        let mut r = req(&format!("v{i}"), cpu, mem);
                        if g > 0 {
                            r.anti_affinity = Some(format!("g{g}"));
                        }
                        if label {
                            r.require_labels.insert("zone".into(), "a".into());
                        }
                        r
                    })
                    .collect()
            },
        )
    }

    proptest! {
        /// Never beyond capacity × ratio, never two VMs of a group on one host, never on a
        /// host that fails a filter; batch = one by one; same input, same answer.
        #[test]
        fn batch_invariants(hosts in arb_hosts(), reqs in arb_reqs(), pack in any::<bool>()) {
            let policy = Policy {
                weigher: if pack { Weigher::Pack } else { Weigher::Spread },
                ..Policy::default()
            };
            let placed = place_batch(&reqs, &hosts, &policy);
            prop_assert_eq!(&placed, &place_batch(&reqs, &hosts, &policy));
            let mut view = hosts.clone();
            for (r, p) in reqs.iter().zip(&placed) {
                // Sequential: the same answer place_one gives on the booked view.
                prop_assert_eq!(p, &place_one(r, &view, &policy));
                if let Ok(name) = p {
                    let h = view.iter_mut().find(|h| &h.name == name).unwrap();
                    prop_assert!(refuse(r, h, &policy).is_none());
                    if let Some(g) = &r.anti_affinity {
                        prop_assert!(!h.groups.contains(g), "anti-affinity violated");
                    }
                    book(h, r);
                    prop_assert!(u64::from(h.used_vcpus) <= policy.cpu_limit(h.vcpus));
                    prop_assert!(h.used_memory_mib <= policy.memory_limit(h.memory_mib));
                }
            }
        }

        /// Spread never picks a host that ends up more loaded than another candidate would.
        #[test]
        fn spread_picks_the_least_loaded(hosts in arb_hosts(), r in arb_reqs()) {
            let r = &r[0];
            let policy = Policy::default();
            if let Ok(name) = place_one(r, &hosts, &policy) {
                let chosen = hosts.iter().find(|h| h.name == name).unwrap();
                for h in hosts.iter().filter(|h| refuse(r, h, &policy).is_none()) {
                    prop_assert!(load_after(r, chosen) <= load_after(r, h));
                }
            }
        }
    }
}
