//! A write retried with the same request id is applied once: the retry gets the first
//! answer, even when it reaches a different controller.

use drover_chaos_tests::{Cluster, ClusterSpec};
use drover_proto::v1::vm_service_client::VmServiceClient;
use drover_proto::v1::{CreateVmRequest, VmSpec};
use drover_proto::REQUEST_ID_METADATA_KEY;
use tonic::Code;

fn create(name: &str, id: Option<&str>) -> tonic::Request<CreateVmRequest> {
    let mut req = tonic::Request::new(CreateVmRequest {
        name: name.into(),
        spec: Some(VmSpec {
            vcpus: 1,
            memory_mib: 64,
        }),
        start: false,
        ..Default::default()
    });
    if let Some(id) = id {
        req.metadata_mut()
            .insert(REQUEST_ID_METADATA_KEY, id.parse().expect("ascii"));
    }
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retried_write_applies_once() -> anyhow::Result<()> {
    let cluster = Cluster::start(ClusterSpec {
        hosts: 0,
        ..Default::default()
    })
    .await?;
    let leader = cluster.wait_for_leader(None).await?;
    let follower = cluster
        .controllers
        .iter()
        .find(|c| c.id != leader)
        .expect("3 controllers");
    let leader_addr = &cluster.controllers[(leader - 1) as usize].addr;
    let mut at_leader = VmServiceClient::connect(format!("http://{leader_addr}")).await?;
    let mut at_follower = VmServiceClient::connect(format!("http://{}", follower.addr)).await?;

    let first = at_leader
        .create_vm(create("web", Some("req-1")))
        .await?
        .into_inner();
    // Same id through the follower (forwarded): the first result, not ALREADY_EXISTS.
    let retry = at_follower
        .create_vm(create("web", Some("req-1")))
        .await?
        .into_inner();
    assert_eq!(first, retry);
    // Without an id (or with a new one) the duplicate is refused, as it must be.
    let err = at_leader
        .create_vm(create("web", None))
        .await
        .expect_err("duplicate");
    assert_eq!(err.code(), Code::AlreadyExists);
    let err = at_leader
        .create_vm(create("web", Some("req-2")))
        .await
        .expect_err("duplicate");
    assert_eq!(err.code(), Code::AlreadyExists);
    // A malformed id is bad input.
    let long = "x".repeat(200);
    let err = at_leader
        .create_vm(create("other", Some(&long)))
        .await
        .expect_err("bad id");
    assert_eq!(err.code(), Code::InvalidArgument);

    let vms = cluster
        .cli_json(&["vm", "list"])
        .await
        .map_err(anyhow::Error::msg)?;
    assert_eq!(vms.as_array().map(Vec::len), Some(1), "{vms}");
    Ok(())
}
