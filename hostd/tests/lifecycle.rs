//! hostd against libvirt's real test driver: each test runs hostd in-process with `run` on a
//! port-0 listener and talks to it through the generated gRPC client.
//!
//! Most tests use a private test-driver instance (`test:///<node file>`), so they cannot
//! see each other's domains; the foreign-domain test uses the shared `test:///default`,
//! whose ready-made `test` domain is exactly the stranger hostd must leave alone.

mod common;

use common::hostd::{hello, private_uri, start_req, state, vm_ref, vm_ref_at, within, Hostd};
use drover_proto::agent::v1::host_agent_client::HostAgentClient;
use drover_proto::agent::v1::session_event::Kind as EventKind;
use drover_proto::agent::v1::{
    DomainState, Fence, GetHostInfoRequest, SessionRequest, StartVmRequest, StopVmRequest, VmRef,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::Code;

/// Stop and destroy of a VM hostd does not manage both answer NotFound.
async fn assert_stop_and_destroy_not_found(client: &mut HostAgentClient<Channel>, name: &str) {
    let stop = StopVmRequest {
        name: name.into(),
        timeout_ms: 100,
        fence: vm_ref(name).fence,
    };
    let err = client.stop_vm(stop).await.expect_err("StopVm must fail");
    assert_eq!(err.code(), Code::NotFound, "stop {name}: {err:?}");
    let err = client
        .destroy_vm(vm_ref(name))
        .await
        .expect_err("DestroyVm must fail");
    assert_eq!(err.code(), Code::NotFound, "destroy {name}: {err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_lifecycle() {
    if !common::prerequisite(common::libvirt_test_driver()) {
        return;
    }
    let mut hostd = Hostd::private("h1").await;

    eprintln!("phase: host info comes from the node and the config");
    let info = hostd
        .client
        .get_host_info(GetHostInfoRequest {})
        .await
        .expect("GetHostInfo")
        .into_inner();
    assert_eq!(info.name, "h1");
    assert_eq!(info.vcpus, 8);
    assert_eq!(info.memory_mib, 16 * 1024);
    assert_eq!(info.libvirt_uri, hostd.uri);
    assert_eq!(info.hypervisor, "TEST");
    // Checked after the first answer: run creates the directory before it serves.
    assert!(
        hostd.dir.path().join("data").is_dir(),
        "run creates the data dir"
    );

    eprintln!("phase: start, and start again is a no-op");
    let started = hostd
        .client
        .start_vm(start_req("vm-a", 1))
        .await
        .expect("StartVm")
        .into_inner();
    assert_eq!(state(&started), DomainState::Running);
    assert_eq!(
        (
            started.name.as_str(),
            started.generation,
            started.vcpus,
            started.memory_mib
        ),
        ("vm-a", 1, 2, 128)
    );
    let again = hostd
        .client
        .start_vm(start_req("vm-a", 1))
        .await
        .expect("StartVm again")
        .into_inner();
    assert_eq!(again, started);

    eprintln!("phase: the list shows only the managed domain, running, with its generation");
    let listed = hostd.list().await;
    assert_eq!(listed, vec![started.clone()]);

    eprintln!("phase: stop shuts it off");
    let stopped = hostd
        .client
        .stop_vm(StopVmRequest {
            name: "vm-a".into(),
            timeout_ms: 5_000,
            fence: Some(Fence {
                term: 1,
                generation: 1,
            }),
        })
        .await
        .expect("StopVm")
        .into_inner();
    assert_eq!(state(&stopped), DomainState::ShutOff);
    let listed = hostd.list().await;
    assert_eq!(listed.len(), 1);
    assert_eq!(state(&listed[0]), DomainState::ShutOff);

    eprintln!("phase: starting a shut-off domain redefines it with the new generation");
    let restarted = hostd
        .client
        .start_vm(start_req("vm-a", 2))
        .await
        .expect("StartVm after stop")
        .into_inner();
    assert_eq!(state(&restarted), DomainState::Running);
    assert_eq!(restarted.generation, 2);
    assert_eq!(hostd.list().await[0].generation, 2);

    eprintln!("phase: destroy powers it off at once");
    let destroyed = hostd
        .client
        .destroy_vm(vm_ref_at("vm-a", 2))
        .await
        .expect("DestroyVm")
        .into_inner();
    assert_eq!(state(&destroyed), DomainState::ShutOff);
    assert_eq!(destroyed.generation, 2);

    eprintln!("phase: undefine removes it, and is idempotent");
    let undefined = hostd
        .client
        .undefine_vm(vm_ref_at("vm-a", 2))
        .await
        .expect("UndefineVm")
        .into_inner();
    assert!(undefined.existed);
    assert!(hostd.list().await.is_empty());
    let again = hostd
        .client
        .undefine_vm(vm_ref_at("vm-a", 2))
        .await
        .expect("UndefineVm again")
        .into_inner();
    assert!(!again.existed);

    eprintln!("phase: undefine of a running domain destroys it first");
    hostd
        .client
        .start_vm(start_req("vm-b", 1))
        .await
        .expect("StartVm vm-b");
    let undefined = hostd
        .client
        .undefine_vm(vm_ref_at("vm-b", 1))
        .await
        .expect("UndefineVm running")
        .into_inner();
    assert!(undefined.existed);
    assert!(hostd.list().await.is_empty());

    hostd.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_domains_and_bad_requests() {
    if !common::prerequisite(common::libvirt_test_driver()) {
        return;
    }
    // The shared default instance, on purpose: its built-in `test` domain is the foreign
    // domain. Names used here are unique to this test.
    let dir = tempfile::tempdir().expect("tempdir");
    let mut hostd = Hostd::start("h2", "test:///default".into(), dir).await;

    eprintln!("phase: the foreign domain is not listed");
    assert!(hostd.list().await.iter().all(|d| d.name != "test"));

    eprintln!("phase: a name held by a foreign domain cannot be started");
    let err = hostd
        .client
        .start_vm(start_req("test", 1))
        .await
        .expect_err("StartVm on a foreign name");
    assert_eq!(err.code(), Code::AlreadyExists, "{err:?}");

    eprintln!("phase: the foreign domain is invisible to stop, destroy and undefine");
    assert_stop_and_destroy_not_found(&mut hostd.client, "test").await;
    let undefined = hostd
        .client
        .undefine_vm(vm_ref("test"))
        .await
        .expect("UndefineVm on a foreign domain")
        .into_inner();
    assert!(!undefined.existed);
    let conn = virt::connect::Connect::open(Some("test:///default")).expect("open");
    let foreign = conn.lookup_domain_by_name("test").expect("test domain");
    assert!(
        foreign.is_active().expect("is_active"),
        "hostd touched the foreign domain"
    );

    eprintln!("phase: unknown VMs are NotFound");
    assert_stop_and_destroy_not_found(&mut hostd.client, "foreign-test-no-such-vm").await;

    eprintln!("phase: bad input is InvalidArgument");
    let bad = [
        StartVmRequest {
            memory_mib: 0,
            ..start_req("foreign-test-bad", 1)
        },
        StartVmRequest {
            vcpus: 0,
            ..start_req("foreign-test-bad", 1)
        },
        start_req("", 1),
        start_req("a/b", 1),
    ];
    for request in bad {
        let err = hostd
            .client
            .start_vm(request.clone())
            .await
            .expect_err("bad StartVm");
        assert_eq!(err.code(), Code::InvalidArgument, "{request:?}: {err:?}");
    }

    eprintln!("phase: a managed domain next to the foreign one is listed alone");
    hostd
        .client
        .start_vm(start_req("foreign-test-mine", 4))
        .await
        .expect("StartVm");
    let names: Vec<String> = hostd.list().await.into_iter().map(|d| d.name).collect();
    assert!(
        names.contains(&"foreign-test-mine".to_string()),
        "{names:?}"
    );
    assert!(!names.contains(&"test".to_string()), "{names:?}");
    hostd
        .client
        .undefine_vm(vm_ref_at("foreign-test-mine", 4))
        .await
        .expect("UndefineVm");

    hostd.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_sends_heartbeats() {
    if !common::prerequisite(common::libvirt_test_driver()) {
        return;
    }
    let mut hostd = Hostd::private("h3").await;
    hostd
        .client
        .start_vm(start_req("vm-s", 5))
        .await
        .expect("StartVm");

    eprintln!("phase: Hello opens the session; heartbeats follow at its interval");
    let (requests, outbound) = mpsc::channel(4);
    requests.send(hello(1, 100)).await.expect("queue Hello");
    let mut events = within(
        "session to open",
        hostd.client.session(ReceiverStream::new(outbound)),
    )
    .await
    .expect("Session")
    .into_inner();

    let mut last_seq = 0;
    let mut last_request = 0;
    let mut beats = 0;
    let mut lease_requests = 0;
    while beats < 3 {
        let event = within("a heartbeat", events.message())
            .await
            .expect("session stream")
            .expect("session ended early");
        let beat = match event.kind {
            Some(EventKind::Heartbeat(beat)) => beat,
            // One lease request per tick, numbered on their own: they never wait for a
            // heartbeat (whose libvirt listing may be slow).
            Some(EventKind::LeaseRequest(req)) => {
                assert_eq!(req.seq, last_request + 1, "lease requests in order");
                last_request = req.seq;
                lease_requests += 1;
                continue;
            }
            None => panic!("empty session event"),
        };
        beats += 1;
        assert!(beat.seq > last_seq, "seq {} after {last_seq}", beat.seq);
        last_seq = beat.seq;
        let host = beat.host.expect("heartbeat carries host info");
        assert_eq!(host.name, "h3");
        assert!(host.vcpus > 0 && host.memory_mib > 0, "{host:?}");
        assert_eq!(beat.domains.len(), 1, "{:?}", beat.domains);
        assert_eq!(beat.domains[0].name, "vm-s");
        assert_eq!(beat.domains[0].generation, 5);
        assert_eq!(state(&beat.domains[0]), DomainState::Running);
    }
    assert!(lease_requests >= 2, "{lease_requests} lease requests");

    eprintln!("phase: closing the request stream ends the session");
    drop(requests);
    loop {
        match within("the session to end", events.message()).await {
            Ok(Some(_)) => continue,
            Ok(None) => break,
            Err(status) => panic!("session ended with {status:?}"),
        }
    }

    hostd.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_sessions() {
    if !common::prerequisite(common::libvirt_test_driver()) {
        return;
    }
    let mut hostd = Hostd::private("h4").await;
    let (requests, outbound) = mpsc::channel(4);
    requests.send(hello(1, 0)).await.expect("queue Hello");
    let mut events = hostd
        .client
        .session(ReceiverStream::new(outbound))
        .await
        .expect("Session")
        .into_inner();
    within("the first heartbeat", events.message())
        .await
        .expect("session stream")
        .expect("a heartbeat");

    eprintln!("phase: hostd stops although the session stays open on the client side");
    let client_side = (requests, events);
    hostd.shutdown().await;
    drop(client_side);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_must_open_with_hello() {
    if !common::prerequisite(common::libvirt_test_driver()) {
        return;
    }
    let mut hostd = Hostd::private("h5").await;
    let (requests, outbound) = mpsc::channel(4);
    requests
        .send(SessionRequest { kind: None })
        .await
        .expect("queue request");
    let mut events = hostd
        .client
        .session(ReceiverStream::new(outbound))
        .await
        .expect("Session")
        .into_inner();
    let status = within("the session to fail", events.message())
        .await
        .expect_err("a session without Hello");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    drop(requests);
    hostd.shutdown().await;
}

/// Fencing tokens: a lower term than the highest seen (persisted across restarts) and a
/// lower generation than the domain's are refused before libvirt is touched.
#[tokio::test]
async fn fencing_tokens_refuse_deposed_leaders_and_stale_generations() {
    if !common::prerequisite(common::libvirt_test_driver()) {
        return;
    }
    let (uri, dir) = private_uri();
    let data_dir = dir.path().join("state");
    let fenced = |term: u64, generation: u64| Some(Fence { term, generation });
    let start = |term: u64, generation: u64| StartVmRequest {
        name: "fenced".into(),
        vcpus: 1,
        memory_mib: 64,
        fence: fenced(term, generation),
        ha: false,
        ..Default::default()
    };

    eprintln!("phase: term 5 starts generation 3; term 4 is a deposed leader");
    let mut hostd = Hostd::start_at(&uri, &data_dir).await;
    hostd.hold_lease(5).await;
    hostd.client.start_vm(start(5, 3)).await.expect("term 5");
    let err = hostd
        .client
        .start_vm(start(4, 3))
        .await
        .expect_err("term 4");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("Stale leader term 4"), "{err:?}");
    let stop = StopVmRequest {
        name: "fenced".into(),
        timeout_ms: 100,
        fence: fenced(4, 3),
    };
    let err = hostd.client.stop_vm(stop).await.expect_err("deposed stop");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(state(&hostd.list().await[0]), DomainState::Running);

    eprintln!("phase: an older generation cannot act on the VM");
    let err = hostd
        .client
        .destroy_vm(vm_ref_at_term("fenced", 5, 2))
        .await
        .expect_err("stale generation");
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("Stale generation 2"), "{err:?}");
    assert_eq!(state(&hostd.list().await[0]), DomainState::Running);

    eprintln!("phase: a stray (the state places the VM elsewhere) goes whatever its generation");
    let stray = |term: u64| VmRef {
        stray: true,
        ..vm_ref_at_term("fenced", term, 2)
    };
    let err = hostd
        .client
        .destroy_vm(stray(4))
        .await
        .expect_err("a deposed leader cannot call a copy stray");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert_eq!(state(&hostd.list().await[0]), DomainState::Running);
    hostd
        .client
        .destroy_vm(stray(5))
        .await
        .expect("the current leader destroys a newer stray copy");
    assert_eq!(state(&hostd.list().await[0]), DomainState::ShutOff);
    hostd.client.start_vm(start(5, 3)).await.expect("restart");

    eprintln!("phase: a missing token is bad input");
    let err = hostd
        .client
        .destroy_vm(VmRef {
            name: "fenced".into(),
            fence: None,
            stray: false,
            ..Default::default()
        })
        .await
        .expect_err("no token");
    assert_eq!(err.code(), Code::InvalidArgument);

    eprintln!("phase: a newer term is accepted and remembered across a restart");
    hostd
        .client
        .destroy_vm(vm_ref_at_term("fenced", 6, 3))
        .await
        .expect("term 6");
    hostd.shutdown().await;
    let mut hostd = Hostd::start_at(&uri, &data_dir).await;
    hostd.hold_lease(6).await;
    let err = hostd
        .client
        .start_vm(start(5, 3))
        .await
        .expect_err("term 5 after restart");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    hostd
        .client
        .start_vm(start(6, 3))
        .await
        .expect("term 6 after restart");
    hostd.shutdown().await;
}

fn vm_ref_at_term(name: &str, term: u64, generation: u64) -> VmRef {
    VmRef {
        name: name.to_string(),
        fence: Some(Fence { term, generation }),
        stray: false,
        ..Default::default()
    }
}
