//! The walking skeleton end to end: 3 controllers + 2 hostd on libvirt's test driver.
//! `vm create` → running on exactly one host (per `vm get` and per that host's libvirt);
//! `vm stop` → shut off; `vm delete` → gone from the state and from hostd's libvirt.

use std::time::Duration;

use drover_chaos_tests::{wait_until, Cluster, ClusterSpec};
use drover_proto::agent::v1::DomainState;
use serde_json::Value;

const CONVERGE: Duration = Duration::from_secs(10);

async fn vm_field(cluster: &Cluster, name: &str, field: &str) -> Result<Value, String> {
    Ok(cluster.cli_json(&["vm", "get", name]).await?[field].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_run_stop_delete() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterSpec::default()).await?;

    // phase: create; the VM is placed and observed running within a few seconds.
    let created = cluster
        .cli_json(&["vm", "create", "web", "--vcpus", "1", "--memory-mib", "256"])
        .await
        .map_err(anyhow::Error::msg)?;
    assert_eq!(created["name"], "web");
    assert_eq!(created["desired_state"], "running");
    let vm = wait_until("web observed running", CONVERGE, || async {
        let vm = cluster.cli_json(&["vm", "get", "web"]).await?;
        Ok((vm["observed_state"] == "running").then_some(vm))
    })
    .await?;
    let host = vm["host"]
        .as_str()
        .expect("a running VM has a host")
        .to_string();
    // Placed (1), then moved to a new generation before its start (2, `BeginStart`).
    assert_eq!(
        vm["generation"], 2,
        "one placement and one start so far: {vm}"
    );

    // phase: libvirt agrees — running on that host, absent from the other.
    for agent in ["h1", "h2"] {
        let domains = cluster.domains(agent).await?;
        let web: Vec<_> = domains.iter().filter(|d| d.name == "web").collect();
        if agent == host {
            assert_eq!(web.len(), 1, "{agent}: {domains:?}");
            assert_eq!(web[0].state(), DomainState::Running);
            assert_eq!(web[0].generation, 2);
        } else {
            assert!(
                web.is_empty(),
                "web must run on one host only; {agent} has {domains:?}"
            );
        }
    }

    // phase: stop → shut off, on the host too.
    let stopping = cluster
        .cli_json(&["vm", "stop", "web"])
        .await
        .map_err(anyhow::Error::msg)?;
    assert_eq!(stopping["desired_state"], "stopped");
    wait_until("web shut off", CONVERGE, || async {
        Ok((vm_field(&cluster, "web", "observed_state").await? == "shut off").then_some(()))
    })
    .await?;
    let domains = cluster.domains(&host).await?;
    assert!(
        domains
            .iter()
            .any(|d| d.name == "web" && d.state() == DomainState::ShutOff),
        "{domains:?}"
    );

    // phase: start again on the same host, then delete while running.
    cluster
        .cli_json(&["vm", "start", "web"])
        .await
        .map_err(anyhow::Error::msg)?;
    wait_until("web running again", CONVERGE, || async {
        Ok((vm_field(&cluster, "web", "observed_state").await? == "running").then_some(()))
    })
    .await?;
    assert_eq!(
        vm_field(&cluster, "web", "host")
            .await
            .map_err(anyhow::Error::msg)?,
        host.as_str()
    );
    cluster
        .cli_json(&["vm", "delete", "web"])
        .await
        .map_err(anyhow::Error::msg)?;
    wait_until("web gone from the state", CONVERGE, || async {
        let out = cluster
            .cli(&["vm", "get", "web"])
            .await
            .map_err(|e| e.to_string())?;
        Ok((!out.success && out.stderr.contains("not found")).then_some(()))
    })
    .await?;
    for agent in ["h1", "h2"] {
        let domains = cluster.domains(agent).await?;
        assert!(
            domains.iter().all(|d| d.name != "web"),
            "{agent} still has web: {domains:?}"
        );
    }
    let vms = cluster
        .cli_json(&["vm", "list"])
        .await
        .map_err(anyhow::Error::msg)?;
    assert_eq!(vms, serde_json::json!([]));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vms_spread_by_free_memory_and_pending_when_full() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterSpec::default()).await?;
    let hosts = cluster
        .cli_json(&["host", "list"])
        .await
        .map_err(anyhow::Error::msg)?;
    let host_mem = hosts[0]["memory_mib"].as_u64().expect("capacity reported");
    assert!(host_mem > 0, "{hosts}");

    // Two VMs: most free memory wins, so the second lands on the other host.
    for name in ["a", "b"] {
        cluster
            .cli_json(&["vm", "create", name, "--vcpus", "1", "--memory-mib", "512"])
            .await
            .map_err(anyhow::Error::msg)?;
        wait_until("VM running", CONVERGE, || async {
            Ok((vm_field(&cluster, name, "observed_state").await? == "running").then_some(()))
        })
        .await?;
    }
    let a = vm_field(&cluster, "a", "host")
        .await
        .map_err(anyhow::Error::msg)?;
    let b = vm_field(&cluster, "b", "host")
        .await
        .map_err(anyhow::Error::msg)?;
    assert_ne!(a, b, "the scheduler should spread a and b");

    // A VM bigger than any host stays unplaced, with the reason per host.
    let big = (host_mem + 1).to_string();
    cluster
        .cli_json(&["vm", "create", "huge", "--vcpus", "1", "--memory-mib", &big])
        .await
        .map_err(anyhow::Error::msg)?;
    let reason = wait_until("huge pending with a reason", CONVERGE, || async {
        let vm = cluster.cli_json(&["vm", "get", "huge"]).await?;
        let reason = vm["reason"].as_str().unwrap_or_default().to_string();
        Ok((!reason.is_empty()).then_some((vm, reason)))
    })
    .await?;
    assert_eq!(reason.0["host"], Value::Null);
    assert!(
        reason.1.contains("h1:") && reason.1.contains("h2:"),
        "{}",
        reason.1
    );
    Ok(())
}
