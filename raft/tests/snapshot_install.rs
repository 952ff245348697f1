//! A new member catches up from a large state by snapshot install over gRPC: node 1 is
//! seeded from a backup of N VMs (default 100 000; `DROVER_SNAPSHOT_VMS` overrides), so its
//! log holds nothing before the backup index, and node 2 added as a learner can only get
//! there through the chunked snapshot transfer. Writes keep coming during the install and
//! node 1 snapshots and purges every 100 entries meanwhile (the purge-during-install trap):
//! node 2 must still converge.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::create_vm;
use drover_proto::raft::v1::raft_service_server::RaftServiceServer;
use drover_raft::backup;
use drover_raft::model::{ClusterState, DesiredState, Vm, VmSpec};
use drover_raft::network::{RaftGrpcService, MAX_MESSAGE_BYTES};
use drover_raft::snapshot_schedule::SnapshotSchedule;
use drover_raft::store::SmData;
use drover_raft::{LogId, NodeConfig, RaftNode, RaftTimings, Request};
use openraft::CommittedLeaderId;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

async fn serve(node: RaftNode, listener: TcpListener) {
    let svc = RaftServiceServer::new(RaftGrpcService::new(node))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
}

fn big_state(vms: usize) -> SmData {
    let mut state = ClusterState::default();
    for i in 0..vms {
        let name = format!("vm-{i:06}");
        state.vms.insert(
            name.clone(),
            Vm::new(
                &name,
                VmSpec {
                    vcpus: 1,
                    memory_mib: 512,
                },
                DesiredState::Stopped,
            ),
        );
    }
    SmData {
        last_applied: Some(LogId::new(CommittedLeaderId::new(3, 1), 250_000)),
        state,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn learner_catches_up_by_chunked_snapshot() -> anyhow::Result<()> {
    let n: usize = std::env::var("DROVER_SNAPSHOT_VMS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir()?;
    let l1 = TcpListener::bind("127.0.0.1:0").await?;
    let l2 = TcpListener::bind("127.0.0.1:0").await?;
    let a1 = l1.local_addr()?.to_string();
    let a2 = l2.local_addr()?.to_string();

    // phase: seed node 1 from a backup of n VMs; it leads a one-node cluster.
    let t = std::time::Instant::now();
    let bytes = backup::encode(&big_state(n))?;
    eprintln!("backup of {n} VMs: {} bytes", bytes.len());
    let members = BTreeMap::from([(1, a1.clone())]);
    backup::seed(&dir.path().join("n1"), backup::decode(&bytes)?, &members).await?;
    let config = |id: u64, addr: &str| NodeConfig {
        id,
        address: addr.to_string(),
        data_dir: dir.path().join(format!("n{id}")),
        // What is under test is the transfer, not election speed: the leader builds a 15 MB
        // snapshot every 100 entries on a 2-core machine, so elections get slack enough that
        // a starved heartbeat does not depose it mid-test.
        timings: RaftTimings {
            heartbeat_ms: 100,
            election_min_ms: 1000,
            election_max_ms: 2000,
        },
        // Every 100 entries whatever the state's size: the trap needs frequent purges.
        snapshots: SnapshotSchedule {
            min_logs: 100,
            scale_with_state: false,
        },
        tls: None,
    };
    eprintln!("seeded in {:?}", t.elapsed());
    let n1 = RaftNode::start(&config(1, &a1)).await?;
    serve(n1.clone(), l1).await;
    let n2 = RaftNode::start(&config(2, &a2)).await?;
    serve(n2.clone(), l2).await;
    n1.raft()
        .wait(Some(Duration::from_secs(10)))
        .metrics(|m| m.current_leader == Some(1), "node 1 leads")
        .await?;

    // phase: add node 2; its log is empty and node 1 has nothing before the backup index,
    // so only a snapshot can bring it up.
    let writer = {
        let n1 = n1.clone();
        tokio::spawn(async move {
            let mut written = 0u64;
            loop {
                let req = Request::anonymous(create_vm(&format!("bg-{written}")));
                match n1.write(req).await {
                    Ok(Ok(_)) => written += 1,
                    other => panic!("background write failed: {other:?}"),
                }
                if written >= 400 {
                    return written;
                }
            }
        })
    };
    let t = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(120), n1.add_node(2, &a2)).await??;
    eprintln!("added (caught up) in {:?}", t.elapsed());
    let written = tokio::time::timeout(Duration::from_secs(60), writer).await?? as usize;
    let target = n1.metrics().last_applied;
    n2.raft()
        .wait(Some(Duration::from_secs(60)))
        .metrics(|m| m.last_applied >= target, "node 2 caught up")
        .await?;
    let count = n2.view().read(|d| d.state.vms.len());
    assert_eq!(count, n + written, "node 2 holds every VM");
    assert!(
        n1.metrics().purged.is_some_and(|p| p.index > 250_000),
        "node 1 purged its log during the test"
    );
    assert!(
        n2.metrics().snapshot.is_some(),
        "node 2 installed a snapshot"
    );
    tokio::time::timeout(Duration::from_secs(30), async {
        n2.shutdown().await;
        n1.shutdown().await;
    })
    .await?;
    Ok(())
}
