//! Mutual TLS on every hop: a cluster with certificates from its own CA works end to end
//! (client→controller, controller↔controller, controller→hostd), and anyone without a
//! certificate from that CA — no TLS, no client certificate, a certificate from another
//! CA — is refused by controllers and by hostd alike.

use std::time::Duration;

use drover_chaos_tests::{wait_until, Cluster, ClusterSpec};
use drover_proto::agent::v1::host_agent_client::HostAgentClient;
use drover_proto::agent::v1::ListDomainsRequest;
use drover_proto::raft::v1::raft_service_client::RaftServiceClient;
use drover_proto::raft::v1::RaftPayload;
use drover_proto::transport::{endpoint, Tls};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_everywhere_and_strangers_refused() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterSpec {
        hosts: 1,
        tls: true,
        ..Default::default()
    })
    .await?;

    // phase: the whole path works under mTLS (the hosts came up, so controller→hostd does).
    cluster
        .cli_json(&["vm", "create", "web", "--vcpus", "1", "--memory-mib", "64"])
        .await
        .map_err(anyhow::Error::msg)?;
    wait_until("web running", Duration::from_secs(10), || async {
        let vm = cluster.cli_json(&["vm", "get", "web"]).await?;
        Ok((vm["observed_state"] == "running").then_some(()))
    })
    .await?;
    assert_eq!(cluster.domains("h1").await?.len(), 1);

    // A stranger: a certificate from another CA, with the right CA to trust the server.
    let other = tempfile::tempdir()?;
    let other_dir = other.path().display().to_string();
    assert!(
        cluster
            .drover(&["certs", "init", "--dir", &other_dir])
            .await?
            .success
    );
    assert!(
        cluster
            .drover(&["certs", "issue", "--dir", &other_dir, "--user", "evil", "--role", "admin"])
            .await?
            .success
    );
    let own = cluster.admin().await?.expect("tls cluster");
    let evil_cert = other.path().join("user-evil.pem");
    let evil_key = other.path().join("user-evil-key.pem");
    let stranger = Tls::load(&own.ca, &evil_cert, &evil_key)?;

    // phase: the CLI without TLS, and with the stranger's certificate, is refused.
    let ep = cluster.controllers[0].addr.clone();
    let plain = cluster
        .drover(&["vm", "list", "--endpoints", &ep, "--timeout", "2"])
        .await?;
    assert!(!plain.success, "plaintext client served: {}", plain.stdout);
    let (ca, cert, key) = (
        own.ca.display().to_string(),
        evil_cert.display().to_string(),
        evil_key.display().to_string(),
    );
    let foreign = cluster
        .drover(&[
            "vm",
            "list",
            "--endpoints",
            &ep,
            "--timeout",
            "2",
            "--ca",
            &ca,
            "--cert",
            &cert,
            "--key",
            &key,
        ])
        .await?;
    assert!(
        !foreign.success,
        "foreign certificate served: {}",
        foreign.stdout
    );
    assert!(
        foreign.stderr.contains("No controller answered"),
        "{}",
        foreign.stderr
    );

    // phase: a rogue Raft peer (stranger's certificate) cannot even ask for a vote.
    let channel = endpoint(&ep, Some(&stranger))?.connect().await;
    let refused = match channel {
        Err(_) => true,
        Ok(ch) => RaftServiceClient::new(ch)
            .vote(RaftPayload {
                data: b"{}".to_vec(),
            })
            .await
            .is_err(),
    };
    assert!(refused, "a controller answered a Raft RPC from a stranger");

    // phase: hostd refuses plaintext and strangers, serves cluster certificates.
    let agent = cluster.agents[0].addr.clone();
    let plain = async {
        let ch = endpoint(&agent, None)?.connect().await?;
        HostAgentClient::new(ch)
            .list_domains(ListDomainsRequest {})
            .await?;
        anyhow::Ok(())
    };
    assert!(plain.await.is_err(), "hostd served a plaintext client");
    let foreign = async {
        let ch = endpoint(&agent, Some(&stranger))?.connect().await?;
        HostAgentClient::new(ch)
            .list_domains(ListDomainsRequest {})
            .await?;
        anyhow::Ok(())
    };
    assert!(foreign.await.is_err(), "hostd served a foreign certificate");
    Ok(())
}
