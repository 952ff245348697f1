//! A stop-agent failover drill, hostd's side: hostd refuses to stop without a watchdog
//! beside it; stopped, it ends with the drill's reason (the binary's exit code 75) and
//! leaves the drill's record; started again during the drill it refuses sessions while
//! still answering the drill's never-twice listings; EndIsolation gives the host back,
//! removes the record and says what the watchdog did.

mod common;

use std::time::Duration;

use common::hostd::{hello, within, Hostd, Leader};
use drover_hostd::watchdog_status::WatchdogStatus;
use drover_hostd::{drill_stop, Ended};
use drover_proto::agent::v1::{EndIsolationRequest, ListDomainsRequest, StopAgentRequest};
use tokio_stream::StreamExt as _;
use tonic::Code;

fn stop(term: u64, duration_ms: u64) -> StopAgentRequest {
    StopAgentRequest {
        term,
        drill: 9,
        duration_ms,
    }
}

#[tokio::test]
async fn a_stopped_agent_comes_back_cut_off_until_the_drill_gives_it_back() {
    if !common::prerequisite(common::libvirt_test_driver()) {
        return;
    }
    let mut hostd = Hostd::private("h1").await;
    let data = hostd.dir.path().join("data");
    let uri = hostd.uri.clone();

    let no_watchdog = hostd.client.stop_agent(stop(1, 60_000)).await.unwrap_err();
    assert_eq!(
        no_watchdog.code(),
        Code::FailedPrecondition,
        "{no_watchdog:?}"
    );
    assert!(
        no_watchdog.message().contains("No hostd-watchdog"),
        "{no_watchdog:?}"
    );
    assert!(!drill_stop::path_in(&data).exists());

    WatchdogStatus::now(None).write(&data).unwrap();
    let bad = hostd.client.stop_agent(stop(1, 0)).await.unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument, "{bad:?}");

    hostd.client.stop_agent(stop(1, 60_000)).await.unwrap();
    let (ended, _dir) = hostd.ended().await;
    assert_eq!(ended, Ended::StoppedByDrill { drill: 9 });
    assert!(drill_stop::path_in(&data).exists(), "the drill's record");

    // The service manager starts it again while the drill lasts.
    let mut again = Hostd::start_at(&uri, &data).await;
    let (requests, outbound) = tokio::sync::mpsc::channel(4);
    requests.send(hello(1, 100)).await.unwrap();
    let mut events = within(
        "session",
        again
            .client
            .session(tokio_stream::wrappers::ReceiverStream::new(outbound)),
    )
    .await
    .unwrap()
    .into_inner();
    let refused = within("refusal", events.next())
        .await
        .expect("an answer")
        .unwrap_err();
    assert_eq!(refused.code(), Code::Unavailable, "{refused:?}");
    assert!(refused.message().contains("drill 9"), "{refused:?}");
    // The drill samples its domains all along.
    again
        .client
        .list_domains(ListDomainsRequest {})
        .await
        .unwrap();

    let back = again
        .client
        .end_isolation(EndIsolationRequest { term: 1 })
        .await
        .unwrap()
        .into_inner();
    // The watchdog's status says it fenced nothing after the stop (there was nothing).
    assert!(
        back.fence_note.contains("destroyed no HA guest"),
        "{back:?}"
    );
    assert!(!drill_stop::path_in(&data).exists(), "record removed");
    let leader = Leader::open(&mut again.client, 1, Duration::from_secs(60)).await;
    leader.wait_held(true).await;
    again.leader = Some(leader);
    again.shutdown().await;
}
