//! Networks and address management end to end, on a 3-controller cluster through the
//! CLI: a VXLAN network with a subnet, 100 VMs created concurrently with a NIC on it (100
//! CLI processes racing: 100 distinct addresses and MACs, each recorded for its VM), bad
//! input refused with the reason and nothing changed, and addresses released when NICs
//! and VMs go.

use std::collections::BTreeSet;

use drover_chaos_tests::{Cluster, ClusterSpec};
use futures::stream::{self, StreamExt as _};
use serde_json::Value;

/// How many CLI processes run at once: all 100 at once only measures the machine.
const CONCURRENCY: usize = 25;

async fn ok(cluster: &Cluster, args: &[&str]) -> anyhow::Result<Value> {
    cluster
        .cli_json(args)
        .await
        .map_err(|e| anyhow::anyhow!("{args:?}: {e}"))
}

/// `drover vm create NAME … --stopped --nic NIC`.
fn create_args<'a>(name: &'a str, nic: &'a str) -> Vec<&'a str> {
    vec![
        "vm",
        "create",
        name,
        "--vcpus",
        "1",
        "--memory-mib",
        "64",
        "--stopped",
        "--nic",
        nic,
    ]
}

/// The network's held addresses as (ip, vm, mac).
fn held(network: &Value) -> Vec<(String, String, String)> {
    network["addresses"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|x| {
                    let s = |k: &str| x[k].as_str().unwrap_or_default().to_string();
                    (s("ip"), s("vm"), s("mac"))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_nics_never_share_an_address_and_bad_input_changes_nothing() -> anyhow::Result<()>
{
    let cluster = Cluster::start(ClusterSpec {
        hosts: 1,
        ..Default::default()
    })
    .await?;
    cluster.wait_hosts_up().await?;

    eprintln!("phase: a VXLAN network with one subnet");
    ok(
        &cluster,
        &["net", "create", "blue", "--type", "vxlan", "--vni", "100"],
    )
    .await?;
    let blue = ok(
        &cluster,
        &[
            "net",
            "subnet",
            "add",
            "blue",
            "10.10.0.0/24",
            "--range",
            ".10-.109",
            "--gateway",
            ".1",
            "--dns",
            ".2",
        ],
    )
    .await?;
    assert_eq!(blue["mtu"], 1450, "an overlay's default MTU: {blue}");
    assert_eq!(blue["subnets"][0]["ranges"][0], "10.10.0.10-10.10.0.109");

    eprintln!("phase: 100 VMs with a NIC each, created concurrently");
    let names: Vec<String> = (0..100).map(|i| format!("vm{i:03}")).collect();
    let results: Vec<anyhow::Result<Value>> = stream::iter(names.iter())
        .map(|name| {
            let cluster = &cluster;
            async move { ok(cluster, &create_args(name, "blue")).await }
        })
        .buffer_unordered(CONCURRENCY)
        .collect()
        .await;
    let mut ips = BTreeSet::new();
    let mut macs = BTreeSet::new();
    for r in results {
        let vm = r?;
        let nic = &vm["nics"][0];
        assert!(
            ips.insert(nic["ip"].as_str().unwrap_or_default().to_string()),
            "{vm}"
        );
        assert!(
            macs.insert(nic["mac"].as_str().unwrap_or_default().to_string()),
            "{vm}"
        );
    }
    assert_eq!((ips.len(), macs.len()), (100, 100));
    let blue = ok(&cluster, &["net", "ips", "blue"]).await?;
    assert_eq!(blue.as_array().map(Vec::len), Some(100), "{blue}");
    let blue = ok(&cluster, &["net", "get", "blue"]).await?;
    for (ip, vm, mac) in held(&blue) {
        let v = ok(&cluster, &["vm", "get", &vm]).await?;
        assert_eq!(v["nics"][0]["ip"], ip.as_str(), "{v}");
        assert_eq!(v["nics"][0]["mac"], mac.as_str(), "{v}");
    }

    eprintln!("phase: bad input is refused with the reason, and changes nothing");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (create_args("x", "blue"), "no free address left"),
        (create_args("x", "green"), "Network \"green\" not found"),
        (
            create_args("x", "blue,ip=10.10.0.10"),
            "10.10.0.10 on network \"blue\" is already held by VM",
        ),
        (
            create_args("x", "blue,ip=10.10.0.300"),
            "not an IPv4 address",
        ),
        (
            create_args("x", "blue,ip=10.10.0.200"),
            "not inside an address range",
        ),
        (
            vec![
                "net",
                "subnet",
                "add",
                "blue",
                "10.10.0.128/25",
                "--range",
                ".130-.140",
            ],
            "overlaps subnet 10.10.0.0/24",
        ),
        (
            vec![
                "net",
                "subnet",
                "add",
                "blue",
                "10.20.0.0/24",
                "--range",
                "10.30.0.1-10.30.0.9",
            ],
            "not inside its host addresses",
        ),
        (
            vec!["net", "create", "red", "--type", "vxlan", "--vni", "100"],
            "VNI 100 is in use by network \"blue\"",
        ),
        (
            vec![
                "net", "create", "red", "--type", "vxlan", "--vni", "16777216",
            ],
            "outside 1..=16777215",
        ),
        (vec!["net", "delete", "blue"], "has NICs of VMs vm000"),
        (
            vec!["net", "subnet", "remove", "blue", "10.10.0.0/24"],
            "in use by VMs vm000",
        ),
    ];
    for (args, says) in cases {
        let out = cluster.cli(&args).await?;
        assert!(!out.success, "{args:?} succeeded: {}", out.stdout);
        assert!(out.stderr.contains(says), "{args:?}: {}", out.stderr);
    }
    let after = ok(&cluster, &["net", "get", "blue"]).await?;
    assert_eq!(
        held(&after),
        held(&blue),
        "a refused command changed the addresses"
    );
    let nets = ok(&cluster, &["net", "list"]).await?;
    assert_eq!(nets.as_array().map(Vec::len), Some(1), "{nets}");

    eprintln!("phase: a removed NIC's and a deleted VM's addresses are free again");
    let first = ok(&cluster, &["vm", "get", "vm000"]).await?;
    let mac = first["nics"][0]["mac"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let ip = first["nics"][0]["ip"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let vm = ok(&cluster, &["vm", "nic", "remove", "vm000", &mac]).await?;
    assert_eq!(vm["nics"], serde_json::json!([]), "{vm}");
    let nic = format!("blue,ip={ip}");
    let vm = ok(&cluster, &["vm", "nic", "add", "vm000", &nic]).await?;
    assert_eq!(vm["nics"][0]["ip"], ip.as_str(), "{vm}");
    assert_ne!(
        vm["nics"][0]["mac"],
        mac.as_str(),
        "a new NIC gets a new MAC"
    );
    let second = ok(&cluster, &["vm", "get", "vm001"]).await?;
    ok(&cluster, &["vm", "delete", "vm001"]).await?;
    let again = ok(&cluster, &create_args("late", "blue")).await?;
    assert_eq!(again["nics"][0]["ip"], second["nics"][0]["ip"], "{again}");

    eprintln!("phase: a VM with a NIC starts on its host, which wires the network first");
    // The host reports what it can carry: its underlay address (hostd's listen address)
    // and its interfaces (the test driver's host has one, eth1).
    let h1 = drover_chaos_tests::wait_until(
        "h1's networking",
        std::time::Duration::from_secs(30),
        || async {
            let h = cluster
                .cli_json(&["host", "get", "h1"])
                .await
                .map_err(|e| e.to_string())?;
            Ok((h["links"] != serde_json::json!([])).then_some(h))
        },
    )
    .await?;
    assert_eq!(h1["links"], serde_json::json!(["eth1"]), "{h1}");
    assert_eq!(h1["underlay"], "127.0.0.1", "{h1}");
    // The test driver's networks are libvirt's alone: it carries VLANs.
    assert_eq!(h1["vlan_links"], true, "{h1}");
    ok(
        &cluster,
        &[
            "net", "create", "prod", "--type", "bridge", "--bridge", "eth1",
        ],
    )
    .await?;
    let args = [
        "vm",
        "create",
        "web",
        "--vcpus",
        "1",
        "--memory-mib",
        "64",
        "--nic",
        "prod",
        "--nic",
        "blue",
    ];
    let e = cluster.cli(&args).await?;
    assert!(
        e.stderr.contains("no free address"),
        "blue is full: {}",
        e.stderr
    );
    ok(&cluster, &["vm", "delete", "vm002"]).await?;
    // Its address is free once the VM is gone (at once when it was never placed).
    drover_chaos_tests::wait_until("vm002 gone", std::time::Duration::from_secs(30), || async {
        let out = cluster
            .cli(&["vm", "get", "vm002"])
            .await
            .map_err(|e| e.to_string())?;
        Ok((!out.success && out.stderr.contains("not found")).then_some(()))
    })
    .await?;
    let web = ok(&cluster, &args).await?;
    assert_eq!(
        web["nics"][0]["ip"],
        serde_json::Value::Null,
        "prod has no subnet"
    );
    let web = cluster
        .wait_vm_state("web", "running", std::time::Duration::from_secs(30))
        .await?;
    assert_eq!(web["nics"].as_array().map(Vec::len), Some(2), "{web}");

    eprintln!("phase: NICs of a running VM on a host without device hot-plug");
    // The test driver cannot attach or detach devices: the add is kept in the state for
    // the next start and says so; the NIC the guest has stays, and so does its address.
    let out = cluster.cli(&["vm", "nic", "add", "web", "prod"]).await?;
    assert!(!out.success, "hot-plug on the test driver: {}", out.stdout);
    assert!(
        out.stderr
            .contains("could not plug it into the running guest")
            && out.stderr.contains("next start"),
        "{}",
        out.stderr
    );
    let web = ok(&cluster, &["vm", "get", "web"]).await?;
    assert_eq!(web["nics"].as_array().map(Vec::len), Some(3), "{web}");
    // Never plugged in: nothing to unplug, so it goes.
    let added = web["nics"][2]["mac"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let web = ok(&cluster, &["vm", "nic", "remove", "web", &added]).await?;
    assert_eq!(web["nics"].as_array().map(Vec::len), Some(2), "{web}");
    let blue_before = ok(&cluster, &["net", "get", "blue"]).await?;
    let plugged = web["nics"][1]["mac"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let out = cluster
        .cli(&["vm", "nic", "remove", "web", &plugged])
        .await?;
    assert!(!out.success, "unplugged on the test driver: {}", out.stdout);
    assert!(
        out.stderr.contains("stays (nothing changed)"),
        "{}",
        out.stderr
    );
    let web = ok(&cluster, &["vm", "get", "web"]).await?;
    assert_eq!(web["nics"].as_array().map(Vec::len), Some(2), "{web}");
    let blue_after = ok(&cluster, &["net", "get", "blue"]).await?;
    assert_eq!(
        held(&blue_after),
        held(&blue_before),
        "the address stays held"
    );
    Ok(())
}
