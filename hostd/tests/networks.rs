//! Networks through hostd on libvirt's test driver: StartVm wires the networks its NICs
//! use before it defines the domain, EnsureNetwork wires one by itself (a migration's
//! destination) and redefines it when the wiring changed, heartbeats report what is
//! wired, RemoveNetwork refuses while a domain uses the network and removes it after;
//! bad names, MACs, unsupported kinds and stale terms are refused with the reason and
//! wire nothing. (The kernel side, bridges and VXLAN links, needs real libvirt.)

mod common;

use common::hostd::{start_req, vm_ref_at, Hostd};
use drover_proto::agent::v1::{EnsureNetworkRequest, NetworkWiring, RemoveNetworkRequest, VmNic};
use tonic::Code;

fn vxlan(name: &str, vni: u32) -> NetworkWiring {
    NetworkWiring {
        name: name.into(),
        r#type: "vxlan".into(),
        vni,
        mtu: 1450,
        peers: vec!["10.99.0.2".into()],
        ..Default::default()
    }
}

fn bridge(name: &str, bridge: &str) -> NetworkWiring {
    NetworkWiring {
        name: name.into(),
        r#type: "bridge".into(),
        bridge: bridge.into(),
        ..Default::default()
    }
}

fn nic(network: &str, mac: &str) -> VmNic {
    VmNic {
        network: network.into(),
        mac: mac.into(),
        ip: "10.10.0.10".into(),
        prefix: 24,
        ..Default::default()
    }
}

async fn wired(hostd: &Hostd, names: &[&str]) {
    let leader = hostd.leader.as_ref().expect("session");
    let want: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    leader.wait_beat(|b| b.networks == want).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn networks_are_wired_before_their_vms_and_bad_wiring_is_refused() {
    if !common::prerequisite(common::libvirt_test_driver()) {
        return;
    }
    let mut hostd = Hostd::private("h1").await;
    hostd.hold_lease(1).await;

    eprintln!("phase: a bad NIC or network is refused, and nothing is wired or defined");
    let bad = [
        (
            vec![nic("blue", "03:00:00:00:00:01")],
            vec![vxlan("blue", 7)],
            "not a unicast MAC",
        ),
        (
            vec![nic("blue", "02:00:00:00:00:01")],
            vec![bridge("blue", "br0'/><x")],
            "not an interface name",
        ),
        (
            vec![nic("blue", "02:00:00:00:00:01")],
            vec![NetworkWiring {
                name: "blue".into(),
                r#type: "vlan".into(),
                vlan_tag: 4095,
                parent: "eth0".into(),
                ..Default::default()
            }],
            "outside 1..=4094",
        ),
    ];
    for (nics, networks, says) in bad {
        let req = drover_proto::agent::v1::StartVmRequest {
            nics,
            networks,
            ..start_req("web", 1)
        };
        let e = hostd.client.start_vm(req).await.expect_err(says);
        assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
        assert!(e.message().contains(says), "{}", e.message());
    }
    assert!(
        hostd.list().await.is_empty(),
        "a refused start defined a domain"
    );
    wired(&hostd, &[]).await;

    eprintln!("phase: StartVm wires the network, then starts the VM on it");
    let req = drover_proto::agent::v1::StartVmRequest {
        nics: vec![nic("blue", "02:00:00:00:00:01")],
        networks: vec![vxlan("blue", 7)],
        ..start_req("web", 1)
    };
    let domain = hostd
        .client
        .start_vm(req)
        .await
        .expect("start")
        .into_inner();
    assert_eq!(domain.name, "web");
    wired(&hostd, &["blue"]).await;

    eprintln!("phase: EnsureNetwork wires another; a changed wiring is redefined");
    let ensure = |network: NetworkWiring, term: u64| EnsureNetworkRequest {
        network: Some(network),
        term,
    };
    let answer = hostd
        .client
        .ensure_network(ensure(bridge("prod", "br0"), 1))
        .await
        .expect("EnsureNetwork")
        .into_inner();
    assert_eq!(answer.bridge, "br0");
    wired(&hostd, &["blue", "prod"]).await;
    let answer = hostd
        .client
        .ensure_network(ensure(bridge("prod", "br1"), 1))
        .await
        .expect("EnsureNetwork again")
        .into_inner();
    assert_eq!(answer.bridge, "br1");
    let answer = hostd
        .client
        .ensure_network(ensure(vxlan("blue", 7), 1))
        .await
        .expect("EnsureNetwork of a wired overlay")
        .into_inner();
    assert_eq!(answer.bridge, "drvb7");
    // A VLAN is a bridge libvirt makes, named for its tag and parent (its 802.1Q link is
    // the kernel's side, which the test driver has not).
    let vlan = NetworkWiring {
        name: "tagged".into(),
        r#type: "vlan".into(),
        vlan_tag: 100,
        parent: "eth1".into(),
        ..Default::default()
    };
    let answer = hostd
        .client
        .ensure_network(ensure(vlan, 1))
        .await
        .expect("EnsureNetwork of a VLAN")
        .into_inner();
    assert_eq!(
        answer.bridge,
        format!("drvl{}", drover_hostd::network::vlan_suffix(100, "eth1"))
    );

    eprintln!("phase: a deposed leader cannot wire anything");
    hostd.hold_lease(5).await;
    let e = hostd
        .client
        .ensure_network(ensure(bridge("late", "br0"), 2))
        .await
        .expect_err("stale term");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    wired(&hostd, &["blue", "prod", "tagged"]).await;

    eprintln!("phase: a network a domain uses is not removed; once it is gone, it is");
    let remove = |name: &str| RemoveNetworkRequest {
        name: name.into(),
        term: 5,
    };
    let e = hostd
        .client
        .remove_network(remove("blue"))
        .await
        .expect_err("in use");
    assert_eq!(e.code(), Code::FailedPrecondition, "{e:?}");
    assert!(
        e.message().contains("in use by domains web"),
        "{}",
        e.message()
    );
    let mut web = vm_ref_at("web", 1);
    if let Some(f) = web.fence.as_mut() {
        f.term = 5;
    }
    hostd.client.undefine_vm(web).await.expect("undefine");
    let gone = hostd
        .client
        .remove_network(remove("blue"))
        .await
        .expect("RemoveNetwork")
        .into_inner();
    assert!(gone.existed);
    let again = hostd
        .client
        .remove_network(remove("blue"))
        .await
        .expect("again")
        .into_inner();
    assert!(!again.existed, "removed twice");
    wired(&hostd, &["prod", "tagged"]).await;
    hostd.shutdown().await;
}
