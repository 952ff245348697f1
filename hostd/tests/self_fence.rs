//! Self-fencing (layer 1) against libvirt's test driver: hostd destroys its HA guests when
//! its lease lapses, keeps non-HA guests, refuses starts without a lease, ignores grants
//! from a deposed leader and grants longer than the maximum ttl, and a restarted hostd
//! resumes the lease its predecessor held.

mod common;

use std::time::Duration;

use common::hostd::{private_uri, state, within, Hostd, Leader};
use drover_hostd::lease_file;
use drover_proto::agent::v1::{DomainState, Fence, StartVmRequest};
use tonic::Code;

fn start(name: &str, term: u64, ha: bool) -> StartVmRequest {
    StartVmRequest {
        name: name.into(),
        vcpus: 1,
        memory_mib: 64,
        fence: Some(Fence {
            term,
            generation: 1,
        }),
        ha,
        ..Default::default()
    }
}

/// hostd on a private test-driver instance with no session yet, so no lease.
async fn without_lease(name: &str) -> Hostd {
    let (uri, dir) = private_uri();
    let data_dir = dir.path().join("data");
    Hostd::start_with(name, uri, dir, data_dir).await
}

/// Polls ListDomains until `name` is in `want` (or gone when `want` is `None`).
async fn wait_state(hostd: &mut Hostd, name: &str, want: DomainState) {
    within(&format!("{name} to be {want:?}"), async {
        loop {
            let domains = hostd.list().await;
            if domains.iter().any(|d| d.name == name && state(d) == want) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lapsed_lease_destroys_ha_guests_and_refuses_starts() {
    if !common::prerequisite(common::libvirt_test_driver()) {
        return;
    }
    let mut hostd = without_lease("sf1").await;

    eprintln!("phase: without a lease nothing starts");
    let err = hostd
        .client
        .start_vm(start("ha-vm", 1, true))
        .await
        .expect_err("no lease yet");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains("No lease"), "{err:?}");

    eprintln!("phase: a leader grants 1.5 s leases; an HA and a plain guest start");
    let leader = Leader::open(&mut hostd.client, 1, Duration::from_millis(1500)).await;
    leader.wait_held(true).await;
    hostd
        .client
        .start_vm(start("ha-vm", 1, true))
        .await
        .expect("start HA");
    hostd
        .client
        .start_vm(start("plain-vm", 1, false))
        .await
        .expect("start plain");
    let listed = hostd.list().await;
    assert!(
        listed.iter().any(|d| d.name == "ha-vm" && d.ha),
        "the HA flag is in the domain's marker: {listed:?}"
    );

    eprintln!("phase: grants stop; the lease lapses; hostd fences the HA guest only");
    leader.set_granting(false);
    let beat = leader
        .wait_beat(|b| b.lease.is_some_and(|l| !l.held && l.self_fences >= 1))
        .await;
    eprintln!("lease after lapse: {:?}", beat.lease);
    wait_state(&mut hostd, "ha-vm", DomainState::ShutOff).await;
    let plain = hostd.list().await;
    assert!(
        plain
            .iter()
            .any(|d| d.name == "plain-vm" && state(d) == DomainState::Running),
        "non-HA guests keep running through a lapse: {plain:?}"
    );
    let err = hostd
        .client
        .start_vm(start("ha-vm", 1, true))
        .await
        .expect_err("lapsed lease");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");

    eprintln!("phase: grants resume; starts are allowed again");
    leader.set_granting(true);
    leader.wait_held(true).await;
    hostd
        .client
        .start_vm(start("ha-vm", 1, true))
        .await
        .expect("start after a new lease");
    wait_state(&mut hostd, "ha-vm", DomainState::Running).await;
    drop(leader);
    hostd.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_from_a_deposed_leader_do_not_extend_the_lease() {
    if !common::prerequisite(common::libvirt_test_driver()) {
        return;
    }
    let mut hostd = without_lease("sf2").await;

    eprintln!("phase: the term-3 leader grants 1 s leases");
    let old = Leader::open(&mut hostd.client, 3, Duration::from_millis(1000)).await;
    old.wait_held(true).await;

    eprintln!("phase: a term-5 leader says Hello and grants nothing; term 3 keeps granting");
    let new = Leader::open(&mut hostd.client, 5, Duration::from_millis(1000)).await;
    new.set_granting(false);
    // The old leader's grants are now ignored, so the lease runs out under it.
    old.wait_held(false).await;
    let err = hostd
        .client
        .start_vm(start("vm", 5, true))
        .await
        .expect_err("no lease from the deposed leader");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");

    eprintln!("phase: the term-5 leader grants; the lease holds again");
    new.set_granting(true);
    new.wait_held(true).await;
    hostd
        .client
        .start_vm(start("vm", 5, true))
        .await
        .expect("start under the new leader");
    drop((old, new));
    hostd.shutdown().await;
}

/// A heartbeat names the newest grant of its session that hostd had received before it
/// listed its domains, so the leader knows which placements the listing could know of.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_name_the_grant_they_were_listed_after() {
    if !common::prerequisite(common::libvirt_test_driver()) {
        return;
    }
    let mut hostd = without_lease("sf-mark").await;

    eprintln!("phase: no grant yet: beats name none");
    let leader =
        Leader::open_granting(&mut hostd.client, 2, Duration::from_millis(1500), false).await;
    for _ in 0..2 {
        let beat = leader.wait_beat(|_| true).await;
        assert_eq!(beat.after_grant, 0, "{beat:?}");
    }

    eprintln!("phase: grants flow: beats name them, never one not yet sent, never going back");
    leader.set_granting(true);
    let first = leader.wait_beat(|b| b.after_grant > 0).await.after_grant;
    let mut last = first;
    for _ in 0..4 {
        let beat = leader.wait_beat(|_| true).await;
        assert!(
            beat.after_grant >= last && beat.after_grant <= leader.highest_grant(),
            "after {last}, with {} sent: {beat:?}",
            leader.highest_grant()
        );
        last = beat.after_grant;
    }
    assert!(last > first, "later grants are named: {first} then {last}");

    eprintln!("phase: a new session numbers its grants afresh");
    drop(leader);
    let next =
        Leader::open_granting(&mut hostd.client, 3, Duration::from_millis(1500), false).await;
    let beat = next.wait_beat(|_| true).await;
    assert_eq!(beat.after_grant, 0, "{beat:?}");
    drop(next);
    hostd.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grants_longer_than_the_maximum_ttl_are_refused() {
    if !common::prerequisite(common::libvirt_test_driver()) {
        return;
    }
    let mut hostd = without_lease("sf-max").await;
    let max = drover_hostd::DEFAULT_MAX_LEASE_TTL;

    eprintln!("phase: a session grants leases one hour long: every grant is refused");
    let greedy = Leader::open(&mut hostd.client, 2, Duration::from_secs(3600)).await;
    // Three fresh beats, each after a grant could have been applied, and still no lease.
    for _ in 0..3 {
        let beat = greedy.wait_beat(|_| true).await;
        assert!(
            beat.lease.is_some_and(|l| !l.held),
            "a grant above {max:?} gave a lease: {beat:?}"
        );
    }
    drop(greedy);

    eprintln!("phase: grants of exactly the maximum are honoured");
    let fair = Leader::open(&mut hostd.client, 2, max).await;
    fair.wait_held(true).await;
    drop(fair);
    hostd.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_hostd_resumes_its_lease_from_the_file() {
    if !common::prerequisite(common::libvirt_test_driver()) {
        return;
    }
    let (uri, dir) = private_uri();
    let data_dir = dir.path().join("data");

    eprintln!("phase: hostd holds a 60 s lease, then stops");
    let mut hostd = Hostd::start_at(&uri, &data_dir).await;
    hostd.hold_lease(2).await;
    hostd.shutdown().await;
    let record = lease_file::read(&lease_file::path_in(&data_dir))
        .expect("readable lease file")
        .expect("a lease file");
    assert_eq!(record.term, 2);
    assert!(
        record
            .remaining()
            .is_some_and(|d| d > Duration::from_secs(50)),
        "the file names an expiry ~60 s ahead: {record:?}"
    );

    eprintln!("phase: a new hostd, with no session yet, still holds the host's lease");
    let mut hostd = Hostd::start_at(&uri, &data_dir).await;
    hostd
        .client
        .start_vm(start("vm", 2, true))
        .await
        .expect("start under the resumed lease");
    hostd.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disarmed_grants_suspend_self_fencing_until_an_armed_one() {
    if !common::prerequisite(common::libvirt_test_driver()) {
        return;
    }
    let mut hostd = without_lease("sf3").await;
    let leader = Leader::open(&mut hostd.client, 1, Duration::from_millis(1000)).await;
    leader.wait_held(true).await;
    hostd
        .client
        .start_vm(start("ha-vm", 1, true))
        .await
        .expect("start HA");

    eprintln!("phase: a disarmed grant, then silence: the lease lapses, the guest stays");
    let epoch = leader.set_disarmed(true);
    // The heartbeat says which grant its "not armed" comes from.
    leader
        .wait_beat(|b| {
            b.lease
                .is_some_and(|l| l.held && !l.armed && l.ha_epoch == epoch)
        })
        .await;
    leader.set_granting(false);
    leader.wait_beat(|b| b.lease.is_some_and(|l| !l.held)).await;
    // Every heartbeat over three fence checks after the lapse says: no self-fence.
    let lapsed = std::time::Instant::now();
    while lapsed.elapsed() < drover_hostd::self_fence::FENCE_CHECK * 3 {
        let beat = leader.wait_beat(|_| true).await;
        assert_eq!(
            beat.lease.map(|l| l.self_fences),
            Some(0),
            "disarmed: no fence"
        );
    }
    wait_state(&mut hostd, "ha-vm", DomainState::Running).await;

    eprintln!("phase: an armed grant re-arms; the next lapse fences");
    let epoch = leader.set_disarmed(false);
    leader.set_granting(true);
    leader
        .wait_beat(|b| {
            b.lease
                .is_some_and(|l| l.held && l.armed && l.ha_epoch == epoch)
        })
        .await;
    leader.set_granting(false);
    wait_state(&mut hostd, "ha-vm", DomainState::ShutOff).await;
    drop(leader);
    hostd.shutdown().await;
}
