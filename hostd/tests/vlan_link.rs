//! The kernel side of VLAN networks, in a network namespace of the test's own (a thread
//! that unshares its own; the `ip` commands hostd runs from it are in there too). Where the
//! kernel makes 802.1Q links, hostd makes one on the parent with the network's tag, joins
//! it to the bridge, finds it again (idempotent), refuses a device of its name made
//! otherwise, and removes it. Where the kernel cannot (this machine kind's has no 802.1Q), hostd refuses
//! with the reason and leaves nothing behind. Which of the two ran is printed: the first
//! runs only on such a kernel. Through hostd on the system libvirt, a host reports whether
//! it can, and one that cannot refuses a VLAN network before defining anything.

mod common;

use std::process::Command;

use common::hostd::Hostd;
use drover_chaos_tests::system_libvirt::{self, NetworkLeftovers, QEMU_SYSTEM};
use drover_hostd::network::VlanLink;
use drover_proto::agent::v1::{EnsureNetworkRequest, NetworkWiring};
use tonic::Code;

fn ip(args: &[&str]) -> Result<String, String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// Whether this thread could enter a network namespace of its own (root only).
fn own_namespace() -> Result<(), String> {
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)
        .map_err(|e| format!("cannot make a network namespace (needs root): {e}"))
}

fn link(tag: u16) -> VlanLink {
    VlanLink {
        name: format!("drvq{tag}"),
        parent: "up0".into(),
        tag,
        bridge: "drvl5".into(),
        mtu: Some(1400),
    }
}

/// The test's body, on a thread inside its own namespace (gone when the thread ends).
fn in_namespace() -> Result<(), String> {
    if !common::prerequisite(own_namespace()) {
        return Ok(());
    }
    ip(&["link", "add", "up0", "type", "veth", "peer", "name", "up1"])?;
    ip(&["link", "add", "drvl5", "type", "bridge"])?;
    let first = link(5);
    match first.ensure_link() {
        Err(e) => {
            let why = e.to_string();
            eprintln!("this kernel makes no 802.1Q links; checking the refusal: {why}");
            assert!(why.contains("cannot make 802.1Q VLAN links"), "{why}");
            let links = ip(&["-o", "link", "show"])?;
            assert!(!links.contains("drvq5"), "left behind: {links}");
        }
        Ok(()) => {
            eprintln!("this kernel makes 802.1Q links; checking hostd's");
            first.attach().map_err(|e| e.to_string())?;
            let details = ip(&["-d", "link", "show", "dev", "drvq5"])?;
            assert!(details.contains("drvq5@up0:"), "{details}");
            assert!(details.contains("vlan protocol 802.1Q id 5 "), "{details}");
            assert!(details.contains("master drvl5"), "{details}");
            assert!(details.contains("mtu 1400"), "{details}");
            // Again: found as it is, not remade.
            let index = |d: &str| d.split(':').next().map(str::to_string);
            first.ensure_link().map_err(|e| e.to_string())?;
            let again = ip(&["-d", "link", "show", "dev", "drvq5"])?;
            assert_eq!(index(&details), index(&again), "remade: {again}");
            // A device of its name made otherwise (another parent's, hash-colliding) is
            // refused and left alone.
            let other = VlanLink { tag: 6, ..link(5) };
            let e = other.ensure_link().expect_err("another VLAN's device");
            assert!(e.to_string().contains("not replacing it"), "{e}");
            let details = ip(&["-d", "link", "show", "dev", "drvq5"])?;
            assert!(details.contains("vlan protocol 802.1Q id 5 "), "{details}");
            VlanLink::remove("drvq5").map_err(|e| e.to_string())?;
            VlanLink::remove("drvq5").map_err(|e| format!("twice: {e}"))?;
            assert!(
                ip(&["link", "show", "dev", "drvq5"]).is_err(),
                "not removed"
            );
        }
    }
    Ok(())
}

#[test]
fn vlan_links_are_made_on_their_parent_or_refused_with_the_reason() {
    let outcome = std::thread::spawn(in_namespace)
        .join()
        .expect("the namespace thread panicked");
    outcome.expect("ip");
}

/// Whether this kernel makes 802.1Q links, tried in a namespace of a thread's own.
fn kernel_makes_vlans() -> Result<bool, String> {
    std::thread::spawn(|| {
        own_namespace()?;
        ip(&["link", "add", "up0", "type", "veth", "peer", "name", "up1"])?;
        Ok(ip(&[
            "link", "add", "link", "up0", "name", "up0.5", "type", "vlan", "id", "5",
        ])
        .is_ok())
    })
    .join()
    .map_err(|_| "the probing thread panicked".to_string())?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_cannot_make_the_link_defines_nothing() {
    let prerequisites = system_libvirt::available().and_then(|()| kernel_makes_vlans());
    let makes = match prerequisites {
        Ok(makes) => makes,
        Err(why) => {
            common::prerequisite(Err(why));
            return;
        }
    };
    let name = format!("tagged-{}", std::process::id());
    let _leftovers = NetworkLeftovers {
        networks: vec![name.clone()],
        links: vec![],
    };
    let mut hostd = Hostd::start("h1", QEMU_SYSTEM.into(), tempfile::tempdir().unwrap()).await;
    hostd.hold_lease(1).await;
    // It tells the cluster, which then places VLAN VMs elsewhere.
    let leader = hostd.leader.as_ref().expect("session");
    leader
        .wait_beat(|b| b.host.as_ref().and_then(|h| h.vlan_links) == Some(makes))
        .await;
    if makes {
        eprintln!("this kernel makes 802.1Q links: nothing to refuse here");
        hostd.shutdown().await;
        return;
    }
    let e = hostd
        .client
        .ensure_network(EnsureNetworkRequest {
            network: Some(NetworkWiring {
                name: name.clone(),
                r#type: "vlan".into(),
                vlan_tag: 5,
                parent: "lo".into(),
                ..Default::default()
            }),
            term: 1,
        })
        .await
        .expect_err("no 802.1Q here");
    assert_eq!(e.code(), Code::Internal, "{e:?}");
    assert!(
        e.message().contains("cannot make 802.1Q VLAN links"),
        "{}",
        e.message()
    );
    let out = Command::new("virsh")
        .args(["-c", QEMU_SYSTEM, "net-info", &format!("drover-{name}")])
        .output()
        .expect("virsh");
    assert!(
        !out.status.success(),
        "a libvirt network was defined anyway"
    );
    hostd.shutdown().await;
}
