//! Controller membership: 3 → 5 → 3 voters while the API keeps answering writes; a
//! removal that would leave no reachable quorum is refused; leadership moves on request.

use std::time::Duration;

use drover_chaos_tests::{wait_until, Cluster, ClusterSpec};
use serde_json::Value;

fn members(status: &Value) -> Vec<Value> {
    status["members"].as_array().cloned().unwrap_or_default()
}

fn voters(status: &Value) -> Vec<u64> {
    members(status)
        .iter()
        .filter(|m| m["voter"] == true)
        .filter_map(|m| m["id"].as_u64())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_to_five_to_three() -> anyhow::Result<()> {
    let mut cluster = Cluster::start(ClusterSpec {
        hosts: 0,
        ..Default::default()
    })
    .await?;
    cluster.create_stopped_vm("before").await?;

    // phase: grow to five; each new node joins as a learner and becomes a voter.
    for id in [4, 5] {
        let addr = cluster.start_joining_controller(id).await?;
        let s = cluster
            .cli_json(&["cluster", "add-node", &id.to_string(), &addr])
            .await
            .map_err(anyhow::Error::msg)?;
        assert!(voters(&s).contains(&id), "{id} should vote now: {s}");
        cluster.create_stopped_vm(&format!("with-{id}")).await?;
    }
    let s = cluster
        .cli_json(&["cluster", "status"])
        .await
        .map_err(anyhow::Error::msg)?;
    assert_eq!(voters(&s), [1, 2, 3, 4, 5], "{s}");

    // phase: the new members hold everything (stale reads answer from their own state).
    for id in [4, 5] {
        let addr = cluster
            .controllers
            .iter()
            .find(|c| c.id == id)
            .map(|c| c.addr.clone());
        let addr = addr.expect("started");
        wait_until("new member caught up", Duration::from_secs(10), || async {
            let out = cluster
                .cli_at(&addr, &["vm", "list", "--stale"])
                .await
                .map_err(|e| e.to_string())?;
            let note = format!("stale read: controller {id} at applied index");
            if !out.stderr.contains(&note) {
                return Err(format!("no stale-read note: {}", out.stderr));
            }
            let vms: Value = serde_json::from_str(&out.stdout).map_err(|e| e.to_string())?;
            Ok((vms.as_array().map(Vec::len) == Some(3)).then_some(()))
        })
        .await?;
    }

    // phase: with node 5 down, shrink back to three: 4 (3 of the remaining 4 are up), then
    // the dead 5.
    cluster.kill_controller(5).await?;
    let out = cluster.cli(&["cluster", "remove-node", "4"]).await?;
    assert!(
        out.success,
        "removing 4 keeps 3 of 4 voters up: {}",
        out.stderr
    );
    let s = cluster
        .cli_json(&["cluster", "remove-node", "5"])
        .await
        .map_err(anyhow::Error::msg)?;
    assert_eq!(voters(&s), [1, 2, 3], "{s}");
    cluster.create_stopped_vm("after").await?;

    // phase: with 3 down, removing 2 would leave {1, 3} with only 1 up: refused.
    cluster.kill_controller(3).await?;
    let out = cluster.cli(&["cluster", "remove-node", "2"]).await?;
    assert!(
        !out.success,
        "removal without a reachable quorum must be refused"
    );
    assert!(
        out.stderr.contains("failed precondition") && out.stderr.contains("a quorum needs 2"),
        "{}",
        out.stderr
    );
    cluster.start_controller(3).await?;
    wait_until("3 back", Duration::from_secs(10), || async {
        let s = cluster.cli_json(&["cluster", "status"]).await?;
        Ok(members(&s)
            .iter()
            .all(|m| m["error"].is_null())
            .then_some(()))
    })
    .await?;

    // phase: unknown and invalid membership requests.
    let out = cluster.cli(&["cluster", "remove-node", "9"]).await?;
    assert!(
        out.stderr.contains("not found: Node 9 is not a member"),
        "{}",
        out.stderr
    );
    let out = cluster.cli(&["cluster", "transfer-leader", "9"]).await?;
    assert!(out.stderr.contains("invalid argument"), "{}", out.stderr);

    // phase: hand leadership to a chosen voter.
    let old = cluster.wait_for_leader(None).await?;
    let target = if old == 1 { 2 } else { 1 };
    let s = cluster
        .cli_json(&["cluster", "transfer-leader", &target.to_string()])
        .await
        .map_err(anyhow::Error::msg)?;
    assert_eq!(s["leader_id"], target, "{s}");
    assert_eq!(cluster.wait_for_leader(None).await?, target);
    cluster.create_stopped_vm("after-transfer").await?;
    let vms = cluster
        .cli_json(&["vm", "list"])
        .await
        .map_err(anyhow::Error::msg)?;
    assert_eq!(vms.as_array().map(Vec::len), Some(5), "{vms}");
    Ok(())
}
