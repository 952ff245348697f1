//! Identities and roles on every hop, against a real cluster with mutual TLS: hostd serves
//! controllers only, Raft RPCs accept controllers only, and a host's certificate calls
//! nothing on the controllers (a host needs nothing from them: controllers call hosts).

use drover_chaos_tests::cluster::TlsFiles;
use drover_chaos_tests::raw::call_empty;
use drover_chaos_tests::{Cluster, ClusterSpec};
use drover_proto::transport::endpoint;
use tonic::transport::Channel;
use tonic::Code;

async fn channel(addr: &str, tls: &TlsFiles) -> anyhow::Result<Channel> {
    Ok(endpoint(addr, Some(&tls.load()?))?.connect().await?)
}

/// The code `path` answers `tls` with at `addr` (`Ok` when it served the call).
async fn answer(addr: &str, tls: &TlsFiles, path: &str) -> anyhow::Result<Code> {
    Ok(
        match call_empty(channel(addr, tls).await?, path, &[]).await {
            Ok(()) => Code::Ok,
            Err(status) => {
                eprintln!("{path}: {:?} {}", status.code(), status.message());
                status.code()
            }
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_hop_serves_only_its_callers() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterSpec {
        controllers: 1,
        hosts: 1,
        tls: true,
        ..Default::default()
    })
    .await?;
    let controller = cluster.identity("controller-1").await?.expect("tls");
    let host = cluster.identity("host-h1").await?.expect("tls");
    let admin = cluster.admin().await?.expect("tls");
    let hostd = cluster.agents[0].addr.clone();
    let api = cluster.controllers[0].addr.clone();

    eprintln!("phase: hostd serves a controller, and refuses a host and an admin user");
    let list = "/drover.agent.v1.HostAgent/ListDomains";
    let session = "/drover.agent.v1.HostAgent/Session";
    assert_eq!(answer(&hostd, &controller, list).await?, Code::Ok);
    for who in [&host, &admin] {
        assert_eq!(answer(&hostd, who, list).await?, Code::PermissionDenied);
        // A session is where lease grants and the fencing term come from.
        assert_eq!(answer(&hostd, who, session).await?, Code::PermissionDenied);
    }

    eprintln!("phase: Raft RPCs pass a controller, and refuse a host and an admin user");
    for rpc in ["Vote", "AppendEntries", "ForwardWrite", "HoldElections"] {
        let path = format!("/drover.raft.v1.RaftService/{rpc}");
        // The empty payload is malformed: the call got past the gate to the handler.
        assert_eq!(
            answer(&api, &controller, &path).await?,
            Code::InvalidArgument
        );
        for who in [&host, &admin] {
            assert_eq!(answer(&api, who, &path).await?, Code::PermissionDenied);
        }
    }

    eprintln!("phase: a host's certificate calls nothing on the controllers");
    for path in [
        "/drover.v1.VmService/ListVms",
        "/drover.v1.ClusterService/Status",
        "/drover.v1.HostService/AddHost",
    ] {
        assert_eq!(answer(&api, &host, path).await?, Code::PermissionDenied);
    }
    assert_eq!(
        answer(&api, &admin, "/drover.v1.VmService/ListVms").await?,
        Code::Ok
    );
    Ok(())
}
