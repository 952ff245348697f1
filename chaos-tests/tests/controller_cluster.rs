//! Three controllers as processes over real tonic on loopback: writes replicate to every
//! member; SIGKILL the leader → a new one is elected, the API keeps working and nothing
//! acknowledged is lost; the killed node restarts on its data dir and catches up without
//! bootstrapping again.

use std::time::Duration;

use drover_chaos_tests::client::{ClientConfig, LeaderClient};
use drover_chaos_tests::{wait_until, Cluster, ClusterSpec};
use serde_json::Value;

fn applied(status: &Value) -> Vec<(u64, u64)> {
    status["members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["error"].is_null())
        .map(|m| {
            (
                m["id"].as_u64().unwrap_or(0),
                m["last_applied"].as_u64().unwrap_or(0),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_replicate_and_survive_leader_loss() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(ClusterSpec {
        hosts: 1,
        ..Default::default()
    })
    .await?;

    // phase: writes through each controller in turn (followers forward them).
    let addrs: Vec<String> = cluster.controllers.iter().map(|c| c.addr.clone()).collect();
    for (i, addr) in addrs.iter().enumerate() {
        cluster
            .create_stopped_vm_at(addr, &format!("vm{i}"))
            .await?;
    }

    // phase: every member applies them.
    wait_until(
        "all members at the same applied index",
        Duration::from_secs(10),
        || async {
            let s = cluster.cli_json(&["cluster", "status"]).await?;
            let a = applied(&s);
            let same = a.len() == 3 && a.iter().all(|(_, i)| *i == a[0].1 && *i > 0);
            Ok(same.then_some(()))
        },
    )
    .await?;
    let vms = cluster
        .cli_json(&["vm", "list"])
        .await
        .map_err(anyhow::Error::msg)?;
    assert_eq!(vms.as_array().map(Vec::len), Some(3), "{vms}");

    // phase: SIGKILL the leader; a new leader is elected among the other two.
    let old = cluster.wait_for_leader(None).await?;
    cluster.kill_controller(old).await?;
    let new = cluster.wait_for_leader(Some(old)).await?;
    assert_ne!(new, old);

    // phase: the API keeps working; earlier VMs are all still there.
    cluster.create_stopped_vm("after").await?;
    let names: Vec<String> = cluster
        .cli_json(&["vm", "list"])
        .await
        .map_err(anyhow::Error::msg)?
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v["name"].as_str().map(str::to_string))
        .collect();
    assert_eq!(names, ["after", "vm0", "vm1", "vm2"]);
    // The same, a page of one and of three at a time (ListVms `after`/`limit`).
    let mut client = LeaderClient::new(&cluster.addrs(), ClientConfig::default())?;
    for page in [1, 3] {
        assert_eq!(client.vm_names_paged(page).await?, names, "pages of {page}");
    }

    // phase: the old leader restarts on its data dir and catches up as a follower.
    cluster.start_controller(old).await?;
    wait_until(
        "restarted node caught up",
        Duration::from_secs(15),
        || async {
            let s = cluster.cli_json(&["cluster", "status"]).await?;
            let a = applied(&s);
            let caught_up = a.len() == 3 && a.iter().all(|(_, i)| *i == a[0].1);
            Ok(caught_up.then_some(()))
        },
    )
    .await?;
    let s = cluster
        .cli_json(&["cluster", "status"])
        .await
        .map_err(anyhow::Error::msg)?;
    let me = s["members"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["id"].as_u64() == Some(old))
        .cloned()
        .unwrap_or_default();
    assert!(
        me["term"].as_u64() > Some(1),
        "rejoined in the new term: {me}"
    );
    assert_eq!(
        s["members"].as_array().map(Vec::len),
        Some(3),
        "membership unchanged: {s}"
    );
    Ok(())
}
