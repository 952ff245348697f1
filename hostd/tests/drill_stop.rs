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
        check_only: false,
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
    // The API's check before a drill: answered, and nothing stops.
    let check = StopAgentRequest {
        check_only: true,
        ..stop(1, 60_000)
    };
    hostd.client.stop_agent(check).await.unwrap();
    assert!(!drill_stop::path_in(&data).exists());
    hostd
        .client
        .list_domains(ListDomainsRequest {})
        .await
        .unwrap();
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

/// A hostd a stop-agent drill holds runs no fence loop of its own — unless its watchdog
/// is gone: then nobody would fence, and hostd must. Here the held hostd starts with a
/// lapsed lease, an HA guest running, and a watchdog that last looked 10 s ago: the
/// guest must be destroyed.
#[tokio::test]
async fn a_held_agent_whose_watchdog_is_gone_fences_for_itself() {
    if !common::prerequisite(common::libvirt_test_driver()) {
        return;
    }
    use drover_hostd::clock::BootInstant;
    use drover_hostd::lease_file::{self, LeaseRecord};
    use drover_proto::agent::v1::DomainState;

    let dir = tempfile::tempdir().unwrap();
    let node = dir.path().join("node.xml");
    let ns = drover_hostd::hypervisor::domain_xml::DROVER_NS;
    std::fs::write(
        &node,
        format!(
            "<node>
  <cpu><mhz>2000</mhz><model>x86_64</model><nodes>1</nodes><sockets>1</sockets>
    <cores>8</cores><threads>1</threads><active>8</active></cpu>
  <memory>16777216</memory>
  <domain type='test'>
    <name>keeper</name>
    <metadata><drover:vm xmlns:drover=\"{ns}\"><drover:generation>1</drover:generation><drover:term>1</drover:term><drover:ha>true</drover:ha></drover:vm></metadata>
    <memory unit='MiB'>64</memory><vcpu>1</vcpu>
    <os><type arch='x86_64'>hvm</type></os>
  </domain>
</node>
"
        ),
    )
    .unwrap();
    let uri = format!("test://{}", node.display());
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    let now = BootInstant::now().as_nanos();
    lease_file::write(
        &lease_file::path_in(&data),
        &LeaseRecord {
            expires_boot_ns: Some(now.saturating_sub(1_000_000_000)),
            term: 1,
            boot_id: lease_file::boot_id(),
            disarmed: false,
        },
    )
    .unwrap();
    WatchdogStatus {
        alive_boot_ns: now.saturating_sub(10_000_000_000),
        ..WatchdogStatus::now(None)
    }
    .write(&data)
    .unwrap();
    drill_stop::DrillStop::new(9, 1, Duration::from_secs(60))
        .write(&data)
        .unwrap();

    let mut hostd = Hostd::start_at(&uri, &data).await;
    let listed = hostd.list().await;
    assert!(
        listed.iter().any(|d| d.name == "keeper"),
        "the HA guest is managed: {listed:?}"
    );
    within("the HA guest fenced", async {
        loop {
            let running = hostd
                .list()
                .await
                .iter()
                .any(|d| d.name == "keeper" && d.state() == DomainState::Running);
            if !running {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    hostd.shutdown().await;
}
