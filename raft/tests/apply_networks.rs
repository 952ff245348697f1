//! Address management in `apply`, as a property: whatever sequence of VM creations,
//! deletions, NIC additions and removals the log holds (concurrent API calls are entries
//! one after the other in it), no address is ever held by two NICs, every NIC's address is
//! recorded for exactly that NIC, no address stays held by a NIC that is gone, and every
//! MAC in the cluster is distinct. Plus the case: 100 creations on one subnet.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use drover_raft::model::{
    parse_cidr, parse_range, ClusterState, NetworkKind, NetworkSpec, NicSpec, Subnet, VmOptions,
    VmSpec,
};
use drover_raft::{Command, Reply};
use proptest::prelude::*;

/// Network `net` with one subnet, 10.20.0.0/24, handing out .10-.(10+size-1).
fn state(size: u8) -> ClusterState {
    let mut s = ClusterState::default();
    let (address, prefix) = parse_cidr("10.20.0.0/24").unwrap();
    let range = format!(".10-.{}", 10 + u16::from(size) - 1);
    for cmd in [
        Command::CreateNetwork {
            name: "net".into(),
            spec: NetworkSpec {
                kind: NetworkKind::Vxlan { vni: 42 },
                mtu: None,
            },
        },
        Command::AddSubnet {
            network: "net".into(),
            subnet: Subnet {
                address,
                prefix,
                ranges: vec![parse_range(address, &range).unwrap()],
                gateway: Some("10.20.0.1".parse().unwrap()),
                dns: vec![],
                reserved: vec![],
                dhcp_server: None,
            },
        },
    ] {
        s.apply(&cmd).0.expect("setup");
    }
    s
}

fn create(name: &str, nics: Vec<NicSpec>) -> Command {
    Command::CreateVm {
        name: name.into(),
        spec: VmSpec {
            vcpus: 1,
            memory_mib: 64,
        },
        start: false,
        options: VmOptions {
            nics,
            ..Default::default()
        },
    }
}

fn nic(ip: Option<u8>) -> NicSpec {
    NicSpec {
        network: "net".into(),
        ip: ip.map(|last| Ipv4Addr::new(10, 20, 0, last)),
    }
}

/// The invariants, checked after every command.
fn check(s: &ClusterState) -> Result<(), TestCaseError> {
    let net = &s.networks["net"];
    let mut held = BTreeSet::new();
    let mut macs = BTreeSet::new();
    let mut with_ip = 0;
    for vm in s.vms.values() {
        for n in &vm.nics {
            prop_assert!(macs.insert(n.mac.clone()), "MAC {} twice", n.mac);
            if let Some(ip) = n.ip {
                with_ip += 1;
                prop_assert!(held.insert(ip), "{} held by two NICs", ip);
                let holder = net.addresses.get(&ip);
                prop_assert!(
                    holder.is_some_and(|h| h.vm == vm.name && h.mac == n.mac),
                    "{} of {} recorded as {:?}",
                    ip,
                    vm.name,
                    holder
                );
            }
        }
    }
    prop_assert_eq!(net.addresses.len(), with_ip, "addresses held by no NIC");
    Ok(())
}

#[derive(Debug, Clone)]
enum Step {
    Create { vm: u8, nics: Vec<Option<u8>> },
    Delete { vm: u8 },
    AddNic { vm: u8, ip: Option<u8> },
    RemoveNic { vm: u8, which: u8 },
}

fn arb_ip() -> impl Strategy<Value = Option<u8>> {
    // Mostly automatic; sometimes a named one, inside the range (.10-.29) or not.
    prop_oneof![
        3 => Just(None),
        1 => (5u8..35).prop_map(Some),
    ]
}

fn arb_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0u8..12, prop::collection::vec(arb_ip(), 0..4))
            .prop_map(|(vm, nics)| Step::Create { vm, nics }),
        (0u8..12).prop_map(|vm| Step::Delete { vm }),
        (0u8..12, arb_ip()).prop_map(|(vm, ip)| Step::AddNic { vm, ip }),
        (0u8..12, 0u8..4).prop_map(|(vm, which)| Step::RemoveNic { vm, which }),
    ]
}

fn command(s: &ClusterState, step: &Step) -> Command {
    let name = |vm: &u8| format!("vm{vm}");
    match step {
        Step::Create { vm, nics } => create(&name(vm), nics.iter().map(|ip| nic(*ip)).collect()),
        Step::Delete { vm } => Command::DeleteVm {
            name: name(vm),
            keep_disks: false,
        },
        Step::AddNic { vm, ip } => Command::AddNic {
            name: name(vm),
            nic: nic(*ip),
            hot_plug: false,
        },
        Step::RemoveNic { vm, which } => Command::RemoveNic {
            name: name(vm),
            // A MAC it has, or one it has not (refused).
            mac: s
                .vms
                .get(&name(vm))
                .and_then(|v| v.nics.get(usize::from(*which)))
                .map_or_else(|| "02:ff:ff:ff:ff:ff".into(), |n| n.mac.clone()),
            // As the API sends it for a VM that is not running.
            unplugged_at: None,
        },
    }
}

proptest! {
    #[test]
    fn no_address_is_ever_held_twice_or_leaked(steps in prop::collection::vec(arb_step(), 1..80)) {
        // 20 addresses for up to 12 VMs × 8 NICs: the pool runs dry often.
        let mut s = state(20);
        for step in &steps {
            let cmd = command(&s, step);
            let before = s.clone();
            let (result, _) = s.apply(&cmd);
            if result.is_err() {
                prop_assert_eq!(&s, &before, "a refused {:?} changed the state", step);
            }
            check(&s)?;
        }
    }
}

/// 100 NIC creations racing for one subnet's 100 addresses: 100 different addresses,
/// and the 101st is refused with the reason.
#[test]
fn a_hundred_concurrent_creations_get_a_hundred_addresses() {
    let mut s = state(100);
    let mut got = BTreeSet::new();
    for i in 0..100 {
        match s.apply(&create(&format!("vm{i}"), vec![nic(None)])).0 {
            Ok(Reply::Vm(vm)) => assert!(got.insert(vm.nics[0].ip.expect("an address"))),
            other => panic!("vm{i}: {other:?}"),
        }
    }
    assert_eq!(got.len(), 100);
    let e = s
        .apply(&create("vm100", vec![nic(None)]))
        .0
        .expect_err("the pool is empty");
    assert!(e.to_string().contains("no free address"), "{e}");
    check(&s).unwrap();
}

/// A host's networking report is checked, and placements (`PlaceVm`, which every
/// scheduler's answer becomes) are refused on hosts that cannot carry a VM's networks,
/// whatever the actor that proposed them believed.
#[test]
fn placements_go_only_to_hosts_that_carry_the_vms_networks() {
    use drover_raft::model::{Capacity, HostHealth, HostNetworking};
    use drover_raft::ApplyError;

    let mut s = state(4);
    for cmd in [
        Command::AddHost {
            name: "h1".into(),
            address: "mgmt-h1:7001".into(),
            labels: Default::default(),
        },
        Command::HostObserved {
            name: "h1".into(),
            health: HostHealth::Up,
            capacity: Some(Capacity {
                vcpus: 8,
                memory_mib: 8192,
            }),
            fencing_armed: None,
            armed_epoch: 0,
            migration_uri: None,
        },
        create("web", vec![nic(None)]),
    ] {
        s.apply(&cmd).0.expect("setup");
    }
    let place = Command::PlaceVm {
        name: "web".into(),
        host: "h1".into(),
        expected_generation: 0,
    };
    // Never reported (an older hostd, or log entries from before hosts reported): not
    // refused for its networks, so an old log applies as it did when it was written.
    let mut legacy = s.clone();
    legacy
        .apply(&place)
        .0
        .expect("placed on a host that never reported");

    let bad = Command::HostNetworkingObserved {
        name: "h1".into(),
        networking: HostNetworking {
            underlay: Some(Ipv4Addr::UNSPECIFIED),
            ..Default::default()
        },
    };
    let before = s.clone();
    assert!(matches!(s.apply(&bad).0, Err(ApplyError::InvalidReport(_))));
    assert_eq!(s, before, "a refused report changed the state");

    let no_underlay = Command::HostNetworkingObserved {
        name: "h1".into(),
        networking: HostNetworking {
            underlay: None,
            links: ["eth0".to_string()].into(),
            ..Default::default()
        },
    };
    s.apply(&no_underlay).0.expect("report");
    let before = s.clone();
    match s.apply(&place).0 {
        Err(ApplyError::NoRoom { reason, .. }) => {
            assert!(reason.contains("network net"), "{reason}")
        }
        other => panic!("placed on a host without an underlay: {other:?}"),
    }
    assert_eq!(s, before, "a refused placement changed the state");

    let good = Command::HostNetworkingObserved {
        name: "h1".into(),
        networking: HostNetworking {
            underlay: Some(Ipv4Addr::new(10, 99, 0, 1)),
            links: ["eth0".to_string()].into(),
            ..Default::default()
        },
    };
    s.apply(&good).0.expect("report");
    s.apply(&place)
        .0
        .expect("placed once the host can carry the overlay");
    assert_eq!(s.vms["web"].host.as_deref(), Some("h1"));
}
