//! One lease configuration for the whole cluster (issue 9, point 4): the first leader
//! commits its flags; `drover ha lease` changes it for every leader; the previous lease is
//! kept (and waited out) until its grants have certainly lapsed, and no second change may
//! overlap; hosts keep their sessions and leases through the switch.

use std::time::Duration;

use drover_chaos_tests::ha::{spec, FAST};
use drover_chaos_tests::{wait_until, Cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lease_is_replicated_and_a_change_settles_before_the_next() -> anyhow::Result<()> {
    let cluster = Cluster::start(spec(&FAST)).await?;
    cluster.wait_hosts_up().await?;

    eprintln!("phase: the first leader committed its flags");
    let ha = wait_until("the lease replicated", Duration::from_secs(10), || async {
        let ha = cluster.cli_json(&["ha", "status"]).await?;
        Ok((!ha["lease"].is_null()).then_some(ha))
    })
    .await?;
    assert_eq!(ha["lease"]["ttl_ms"], 1500, "{ha}");
    assert_eq!(ha["lease"]["heartbeat_ms"], 200, "{ha}");

    eprintln!("phase: a longer lease; the shorter one settles at once behind it");
    let ha = cluster
        .cli_json(&["ha", "lease", "--ttl-ms", "3000", "--margin-ms", "500"])
        .await
        .map_err(anyhow::Error::msg)?;
    assert_eq!(ha["lease"]["ttl_ms"], 3000, "{ha}");
    assert_eq!(ha["previous_lease"]["ttl_ms"], 1500, "{ha}");
    let again = cluster.cli(&["ha", "lease", "--ttl-ms", "4000"]).await?;
    assert!(
        !again.success && again.stderr.contains("still settling"),
        "a second change must wait: {}",
        again.stderr
    );
    wait_until(
        "the previous lease settled",
        Duration::from_secs(15),
        || async {
            let ha = cluster.cli_json(&["ha", "status"]).await?;
            Ok(ha["previous_lease"].is_null().then_some(()))
        },
    )
    .await?;
    // Another controller's view: the same lease (it is replicated, not a flag).
    let ha = cluster
        .cli_json(&["ha", "status"])
        .await
        .map_err(anyhow::Error::msg)?;
    assert_eq!(ha["lease"]["ttl_ms"], 3000, "{ha}");

    eprintln!("phase: hosts hold leases under the new one");
    wait_until("hosts up and armed", Duration::from_secs(15), || async {
        let ha = cluster.cli_json(&["ha", "status"]).await?;
        let hosts = cluster.cli_json(&["host", "list"]).await?;
        let up = hosts
            .as_array()
            .is_some_and(|hs| hs.iter().all(|h| h["health"] == "up"));
        let armed = ha["hosts_not_armed"].as_array().is_some_and(Vec::is_empty);
        Ok((up && armed).then_some(()))
    })
    .await?;
    Ok(())
}
