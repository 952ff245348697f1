//! Storage pools through hostd on libvirt's test driver: EnsurePool defines and starts a
//! `dir` pool at an existing directory, heartbeats report it, a second call changes
//! nothing, a new path replaces the definition, RemovePool undefines it and leaves the
//! files; bad paths and stale terms are refused with the reason.

mod common;

use common::hostd::Hostd;
use drover_proto::agent::v1::{EnsurePoolRequest, Heartbeat, RemovePoolRequest};
use tonic::Code;

fn ensure(name: &str, path: &str, term: u64) -> EnsurePoolRequest {
    EnsurePoolRequest {
        name: name.into(),
        r#type: "dir".into(),
        path: path.into(),
        term,
    }
}

fn reported<'a>(
    beat: &'a Heartbeat,
    name: &str,
) -> Option<&'a drover_proto::agent::v1::PoolStatus> {
    beat.pools.iter().find(|p| p.name == name)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pools_are_set_up_reported_moved_and_removed() {
    if !common::prerequisite(common::libvirt_test_driver()) {
        return;
    }
    let mut hostd = Hostd::private("h1").await;
    let dirs = tempfile::tempdir().expect("tempdir");
    let a = dirs.path().join("a");
    let b = dirs.path().join("b");
    std::fs::create_dir(&a).unwrap();
    std::fs::create_dir(&b).unwrap();
    std::fs::write(a.join("keep.img"), b"data").unwrap();
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());

    eprintln!("phase: EnsurePool defines and starts it, and heartbeats report it");
    let status = hostd
        .client
        .ensure_pool(ensure("fast", a, 1))
        .await
        .expect("EnsurePool")
        .into_inner();
    assert_eq!((status.name.as_str(), status.path.as_str()), ("fast", a));
    assert!(status.active, "{status:?}");
    let leader = hostd.leader.as_ref().expect("session");
    let beat = leader
        .wait_beat(|b| reported(b, "fast").is_some_and(|p| p.active))
        .await;
    assert_eq!(reported(&beat, "fast").unwrap().path, a);
    // The test driver's own "default-pool" is not drover's: never reported.
    assert_eq!(beat.pools.len(), 1, "{:?}", beat.pools);

    eprintln!("phase: a second EnsurePool is a no-op; a new path replaces the definition");
    hostd
        .client
        .ensure_pool(ensure("fast", a, 1))
        .await
        .expect("again");
    let moved = hostd
        .client
        .ensure_pool(ensure("fast", b, 1))
        .await
        .expect("moved")
        .into_inner();
    assert_eq!(moved.path, b);
    let leader = hostd.leader.as_ref().expect("session");
    leader
        .wait_beat(|beat| reported(beat, "fast").is_some_and(|p| p.path == b))
        .await;

    eprintln!("phase: RemovePool undefines it (once) and keeps the files");
    let removed = hostd
        .client
        .remove_pool(RemovePoolRequest {
            name: "fast".into(),
            term: 1,
        })
        .await
        .expect("RemovePool")
        .into_inner();
    assert!(removed.existed);
    let leader = hostd.leader.as_ref().expect("session");
    leader.wait_beat(|beat| beat.pools.is_empty()).await;
    let again = hostd
        .client
        .remove_pool(RemovePoolRequest {
            name: "fast".into(),
            term: 1,
        })
        .await
        .expect("RemovePool again")
        .into_inner();
    assert!(!again.existed);
    assert_eq!(std::fs::read(format!("{a}/keep.img")).unwrap(), b"data");

    hostd.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_pools_are_refused_with_the_reason() {
    if !common::prerequisite(common::libvirt_test_driver()) {
        return;
    }
    let mut hostd = Hostd::private("h1").await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("plain-file");
    std::fs::write(&file, b"x").unwrap();
    let missing = dir.path().join("missing");
    let cases = [
        (
            ensure("p", missing.to_str().unwrap(), 1),
            Code::FailedPrecondition,
            "does not exist",
        ),
        (
            ensure("p", file.to_str().unwrap(), 1),
            Code::FailedPrecondition,
            "is not a directory",
        ),
        (
            ensure("p", "relative/dir", 1),
            Code::InvalidArgument,
            "not absolute",
        ),
        (
            ensure("p", "/srv/../etc", 1),
            Code::InvalidArgument,
            "not normalized",
        ),
        (ensure("bad name", "/srv", 1), Code::InvalidArgument, "name"),
        (
            EnsurePoolRequest {
                r#type: "lvm".into(),
                ..ensure("p", dir.path().to_str().unwrap(), 1)
            },
            Code::InvalidArgument,
            "not supported",
        ),
    ];
    for (req, code, says) in cases {
        let what = format!("{req:?}");
        let err = hostd.client.ensure_pool(req).await.expect_err(&what);
        assert_eq!(err.code(), code, "{what}: {err:?}");
        assert!(err.message().contains(says), "{what}: {}", err.message());
    }

    eprintln!("phase: a deposed leader's term is refused");
    hostd.hold_lease(5).await;
    let err = hostd
        .client
        .ensure_pool(ensure("p", dir.path().to_str().unwrap(), 4))
        .await
        .expect_err("stale term");
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    assert!(
        err.message().contains("Stale leader term"),
        "{}",
        err.message()
    );
    let leader = hostd.leader.as_ref().expect("session");
    let beat = leader.wait_beat(|_| true).await;
    assert!(
        beat.pools.is_empty(),
        "a refused pool was defined: {:?}",
        beat.pools
    );

    hostd.shutdown().await;
}
