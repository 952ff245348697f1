//! The state machine reopens at its snapshot and re-applying the log after it (what
//! openraft does at start) gives back exactly the state as applied; a store with an
//! unreadable snapshot refuses to open with a message naming the problem and the
//! recovery; a store of the old layout (one `Db` for log and state) is migrated on open.

mod common;

use std::path::Path;

use common::create_vm;
use drover_raft::model::VmSpec;
use drover_raft::store::{self, LogStore, OpenError, StateMachineStore};
use drover_raft::{Command, Entry, LogId, Request};
use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::RaftSnapshotBuilder;
use openraft::{CommittedLeaderId, EntryPayload, RaftLogReader};

fn entry(index: u64, cmd: Command) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Request::anonymous(cmd)),
    }
}

/// What openraft does when a node starts: re-apply the (durable) log after the state
/// machine's position, which after a reopen is its last snapshot's.
async fn replay(sm: &mut StateMachineStore, log: &[Entry]) -> anyhow::Result<()> {
    let at = sm.applied_state().await?.0.map_or(0, |l| l.index);
    let rest: Vec<Entry> = log
        .iter()
        .filter(|e| e.log_id.index > at)
        .cloned()
        .collect();
    sm.apply(rest).await?;
    Ok(())
}

async fn snapshot(sm: &mut StateMachineStore) -> anyhow::Result<u64> {
    let snap = sm.get_snapshot_builder().await.build_snapshot().await?;
    Ok(snap.meta.last_log_id.map_or(0, |l| l.index))
}

/// Opens the store in `dir` again once the previous `Db` on it has let go of the directory.
/// Dropping a `Db` does not release sled's lock on `<dir>/db` at once: the last writes a
/// drop flushes run on sled's I/O thread pool, whose tasks hold the file until they end,
/// and under load they end after the drop has returned. Opening then fails with "could not
/// acquire lock" (seen under load, and in about 1 run in 70 with three copies of this file's
/// tests in parallel). So this waits, bounded, for that lock itself: it takes and releases
/// it the way sled takes it (`flock`), and only then opens.
fn reopen(dir: &Path) -> Result<(LogStore, StateMachineStore), OpenError> {
    // Both `Db`s: the state machine's and the log's (absent if the store never opened).
    let log_db = dir.join("log").join("db");
    let files = [Some(dir.join("db")), log_db.exists().then_some(log_db)];
    for file in files.into_iter().flatten() {
        wait_unlocked(&file);
    }
    store::open(dir)
}

fn commands() -> Vec<Command> {
    vec![
        Command::AddHost {
            name: "h1".into(),
            address: "127.0.0.1:7001".into(),
            labels: Default::default(),
        },
        Command::HostObserved {
            name: "h1".into(),
            health: drover_raft::model::HostHealth::Up,
            capacity: Some(drover_raft::model::Capacity {
                vcpus: 4,
                memory_mib: 4096,
            }),
            fencing_armed: None,
            armed_epoch: 0,
            migration_uri: None,
        },
        Command::CreateVm {
            name: "web".into(),
            spec: VmSpec {
                vcpus: 2,
                memory_mib: 512,
            },
            start: true,
            options: Default::default(),
        },
        Command::PlaceVm {
            name: "web".into(),
            host: "h1".into(),
            expected_generation: 0,
        },
        // Refused (duplicate): must leave no trace.
        Command::AddHost {
            name: "h1".into(),
            address: "127.0.0.1:9".into(),
            labels: Default::default(),
        },
        create_vm("tmp"),
        Command::SetDesiredState {
            name: "tmp".into(),
            desired: drover_raft::model::DesiredState::Deleted,
        },
        // Cluster-wide settings and the operations table persist too.
        Command::SetPlacementPolicy {
            policy: drover_raft::model::PlacementPolicy {
                cpu_overcommit_pct: 200,
                memory_overcommit_pct: 100,
                weigher: drover_raft::model::Weigher::Pack,
            },
        },
        Command::StartDrain {
            host: "h1".into(),
            stop_when_blocked: false,
            at_ms: 7,
        },
        // Users' tokens (hashes) persist with the settings.
        Command::CreateToken {
            token: token("00000000000000aa", 1_000),
        },
    ]
}

fn token(id: &str, expires_ms: u64) -> drover_raft::model::Token {
    drover_raft::model::Token {
        id: id.into(),
        hash: "ab".repeat(32),
        user: "alice".into(),
        role: "operator".into(),
        created_ms: 10,
        expires_ms,
    }
}

#[tokio::test]
async fn the_state_reopens_at_its_snapshot_and_the_log_rebuilds_the_rest() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let log: Vec<Entry> = commands()
        .into_iter()
        .enumerate()
        .map(|(i, c)| entry(i as u64 + 1, c))
        .collect();
    let (at_snapshot, before) = {
        let (_log, mut sm) = store::open(dir.path())?;
        let mut results = sm.apply(log[..4].to_vec()).await?;
        assert_eq!(snapshot(&mut sm).await?, 4);
        let at_snapshot = sm.view().read(|d| (d.last_applied, d.state.clone()));
        results.extend(sm.apply(log[4..].to_vec()).await?);
        assert_eq!(
            results.iter().filter(|r| r.is_err()).count(),
            1,
            "{results:?}"
        );
        (
            at_snapshot,
            sm.view().read(|d| (d.last_applied, d.state.clone())),
        )
    };
    let (_log, mut sm) = reopen(dir.path())?;
    let reopened = sm.view().read(|d| (d.last_applied, d.state.clone()));
    assert_eq!(reopened, at_snapshot, "a reopened store is at its snapshot");
    // The lock-free record count follows the state (the snapshot schedule reads it).
    assert_eq!(sm.view().records(), sm.view().read(|d| d.records()));
    replay(&mut sm, &log).await?;
    assert_eq!(sm.view().records(), sm.view().read(|d| d.records()));
    assert_eq!(sm.view().records(), 2, "one VM, one host, no request ids");
    let after = sm.view().read(|d| (d.last_applied, d.state.clone()));
    assert_eq!(before, after);
    assert_eq!(after.0.map(|l| l.index), Some(10));
    assert_eq!(after.1.tokens.len(), 1);
    assert_eq!(after.1.placement.cpu_overcommit_pct, 200);
    assert_eq!(after.1.operations.running().count(), 1);
    assert_eq!(after.1.vms.keys().collect::<Vec<_>>(), ["web"]);
    assert_eq!(after.1.vms["web"].generation, 1);
    assert_eq!((after.1.placements, after.1.vms["web"].placed_at), (1, 1));
    assert_eq!(sm.applied_state().await?.0, before.0);
    Ok(())
}

#[tokio::test]
async fn an_unreadable_snapshot_refuses_to_open() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    {
        let (_log, mut sm) = store::open(dir.path())?;
        sm.apply(vec![entry(1, create_vm("web"))]).await?;
        snapshot(&mut sm).await?;
    }
    wait_unlocked(&dir.path().join("db"));
    // The snapshot's data is a file in `snapshots/` (in sled before).
    let files: Vec<_> = std::fs::read_dir(dir.path().join("snapshots"))?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    assert!(!files.is_empty(), "no snapshot data to corrupt");
    for f in files {
        std::fs::write(f, b"{not json")?;
    }
    let err = reopen(dir.path()).expect_err("a corrupt store must not open");
    let msg = err.to_string();
    assert!(
        msg.contains("unreadable") && msg.contains("sm_snapshot"),
        "{msg}"
    );
    assert!(msg.contains("rejoining this node"), "{msg}");
    Ok(())
}

#[tokio::test]
async fn a_retried_request_applies_once_even_across_reopen() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let with_id = |index: u64, cmd: Command| Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(Request {
            id: Some("client-a-1".into()),
            command: cmd,
        }),
    };
    let log = vec![with_id(1, create_vm("web")), with_id(2, create_vm("web"))];
    let first = {
        let (_log, mut sm) = store::open(dir.path())?;
        let results = sm.apply(log.clone()).await?;
        // The retry answers like the first attempt (not "already exists").
        assert!(results[0].is_ok(), "{results:?}");
        assert_eq!(results[0], results[1]);
        results[0].clone()
    };
    let (_log, mut sm) = reopen(dir.path())?;
    replay(&mut sm, &log).await?;
    let results = sm.apply(vec![with_id(3, create_vm("other"))]).await?;
    assert_eq!(results[0], first, "the remembered result survives a reopen");
    sm.view().read(|d| {
        assert_eq!(d.state.vms.keys().collect::<Vec<_>>(), ["web"]);
        assert_eq!(d.requests.len(), 1);
    });
    Ok(())
}

/// A `Command::Batch` entry (group commit) applies its requests one after the other as if
/// each had its own entry: its own result in order, a refusal that touches nothing else,
/// exactly-once by request id inside the batch and across a reopen, and no nesting.
#[tokio::test]
async fn a_batch_entry_applies_each_request_as_its_own() -> anyhow::Result<()> {
    use drover_raft::{ApplyError, Reply};
    let dir = tempfile::tempdir()?;
    let req = |id: &str, command: Command| Request {
        id: Some(id.into()),
        command,
    };
    let batch = |index: u64, requests: Vec<Request>| entry(index, Command::Batch { requests });
    let log = vec![batch(
        1,
        vec![
            req("a", create_vm("web")),
            req("b", create_vm("web")), // refused: exists (after "a" in the same entry)
            req("a", create_vm("other")), // a retry of "a": its first result, no "other"
            Request::anonymous(create_vm("db")),
            req("n", Command::Batch { requests: vec![] }),
        ],
    )];
    let results = {
        let (_log, mut sm) = store::open(dir.path())?;
        let mut results = sm.apply(log.clone()).await?;
        assert_eq!(results.len(), 1);
        let Ok(Reply::Batch(each)) = results.remove(0) else {
            panic!("not a batch reply: {results:?}");
        };
        assert_eq!(each.len(), 5);
        assert!(
            matches!(&each[0], Ok(Reply::Vm(vm)) if vm.name == "web"),
            "{each:?}"
        );
        assert_eq!(each[1], Err(ApplyError::VmExists("web".into())));
        assert_eq!(each[2], each[0]);
        assert!(
            matches!(&each[3], Ok(Reply::Vm(vm)) if vm.name == "db"),
            "{each:?}"
        );
        assert_eq!(each[4], Err(ApplyError::NestedBatch));
        each
    };
    let (_log, mut sm) = reopen(dir.path())?;
    replay(&mut sm, &log).await?;
    sm.view().read(|d| {
        assert_eq!(d.state.vms.keys().collect::<Vec<_>>(), ["db", "web"]);
        let slots = |id: &str| d.requests.get(id).map(|r| (r.index, r.slot));
        assert_eq!(slots("a"), Some((1, 0)));
        assert_eq!(slots("b"), Some((1, 1)));
        assert_eq!(slots("n"), Some((1, 4)));
    });
    // Retries after the reopen, lone or batched, still get the first results.
    let again = sm
        .apply(vec![
            Entry {
                log_id: LogId::new(CommittedLeaderId::new(1, 1), 2),
                payload: EntryPayload::Normal(req("b", create_vm("web2"))),
            },
            batch(
                3,
                vec![req("a", create_vm("x")), req("c", create_vm("web"))],
            ),
        ])
        .await?;
    assert_eq!(again[0], results[1]);
    assert_eq!(
        again[1],
        Ok(Reply::Batch(vec![
            results[0].clone(),
            Err(ApplyError::VmExists("web".into()))
        ]))
    );
    sm.view()
        .read(|d| assert_eq!(d.state.vms.keys().collect::<Vec<_>>(), ["db", "web"]));
    Ok(())
}

/// The event log comes back bounded and numbered from a snapshot plus the log after it,
/// and continues the numbering: the same state as before, not just the same count.
#[tokio::test]
async fn event_log_reopens_bounded_and_numbered() -> anyhow::Result<()> {
    use drover_raft::model::{EventKind, MAX_EVENTS};
    let dir = tempfile::tempdir()?;
    let record = |i: u64| Command::RecordEvent {
        at_ms: i,
        kind: EventKind::HostDead,
        host: Some("h1".into()),
        vm: None,
        message: format!("event {i}"),
    };
    let total = MAX_EVENTS as u64 + 5;
    let log: Vec<Entry> = (1..=total).map(|i| entry(i, record(i))).collect();
    let before = {
        let (_log, mut sm) = store::open(dir.path())?;
        // Several batches, so evictions cross batch boundaries, and a snapshot midway.
        for (n, chunk) in log.chunks(300).enumerate() {
            sm.apply(chunk.to_vec()).await?;
            if n == 1 {
                snapshot(&mut sm).await?;
            }
        }
        sm.view().read(|d| d.state.clone())
    };
    assert_eq!(before.events.entries.len(), MAX_EVENTS);
    assert_eq!(before.events.entries.front().map(|e| e.seq), Some(5));
    let (_log, mut sm) = reopen(dir.path())?;
    replay(&mut sm, &log).await?;
    let after = sm.view().read(|d| d.state.clone());
    assert_eq!(before, after);
    sm.apply(vec![entry(total + 1, record(total + 1))]).await?;
    let last = sm
        .view()
        .read(|d| d.state.events.entries.back().map(|e| e.seq));
    assert_eq!(last, Some(total), "numbering continues after a reopen");
    Ok(())
}

/// Until the log got a `Db` of its own, its trees lived in the state machine's. Such a
/// store opens with its log, vote and state intact, the log moved to `log/` and gone from
/// the old `Db`; a migration cut short by a crash (a partial `log.migrating`) is redone.
#[tokio::test]
async fn a_store_of_the_one_db_layout_is_migrated_on_open() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let vote = drover_raft::Vote::new_committed(3, 2);
    let entries: Vec<Entry> = commands()
        .into_iter()
        .enumerate()
        .map(|(i, c)| entry(i as u64 + 1, c))
        .collect();
    {
        // The old layout, written the way the old LogStore wrote it.
        let db = sled::open(dir.path())?;
        let log = db.open_tree("raft_log")?;
        for e in &entries {
            log.insert(e.log_id.index.to_be_bytes(), serde_json::to_vec(e)?)?;
        }
        db.open_tree("raft_meta")?
            .insert("vote", serde_json::to_vec(&vote)?)?;
        db.flush()?;
        // A migration that crashed halfway: a partial copy.
        let partial = sled::open(dir.path().join("log.migrating"))?;
        partial.open_tree("raft_log")?.insert("junk", "junk")?;
        partial.flush()?;
    }
    wait_unlocked(&dir.path().join("db"));
    wait_unlocked(&dir.path().join("log.migrating").join("db"));
    {
        let (mut log, _sm) = store::open(dir.path())?;
        assert_eq!(log.read_vote().await?, Some(vote));
        let got = log.try_get_log_entries(0..).await?;
        assert_eq!(got, entries);
        let state = log.get_log_state().await?;
        assert_eq!(state.last_log_id, entries.last().map(|e| e.log_id));
    }
    assert!(dir.path().join("log").join("db").exists());
    assert!(!dir.path().join("log.migrating").exists());
    // Opened again: nothing left to migrate, the same log.
    let (mut log, _sm) = reopen(dir.path())?;
    assert_eq!(log.try_get_log_entries(0..).await?, entries);
    drop((log, _sm));
    wait_unlocked(&dir.path().join("db"));
    let db = sled::open(dir.path())?;
    let names = db.tree_names();
    assert!(
        !names
            .iter()
            .any(|n| n.as_ref() == b"raft_log" || n.as_ref() == b"raft_meta"),
        "the old Db keeps no log trees"
    );
    Ok(())
}

/// Waits, bounded, until no one holds sled's lock on `file` (see `reopen`).
fn wait_unlocked(file: &Path) {
    store::wait_released(file, store::RELEASE_WITHIN).expect("sled releases a dropped Db");
}
