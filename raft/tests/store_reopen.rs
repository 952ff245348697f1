//! The sled state machine survives a reopen exactly as applied, and a store with an
//! unreadable record refuses to open with a message naming the problem and the recovery.

use drover_raft::model::VmSpec;
use drover_raft::store;
use drover_raft::{Command, Entry, LogId};
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, EntryPayload};

fn entry(index: u64, cmd: Command) -> Entry {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(cmd),
    }
}

fn commands() -> Vec<Command> {
    vec![
        Command::AddHost {
            name: "h1".into(),
            address: "127.0.0.1:7001".into(),
        },
        Command::CreateVm {
            name: "web".into(),
            spec: VmSpec {
                vcpus: 2,
                memory_mib: 512,
            },
            start: true,
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
        },
        Command::CreateVm {
            name: "tmp".into(),
            spec: VmSpec {
                vcpus: 1,
                memory_mib: 64,
            },
            start: false,
        },
        Command::SetDesiredState {
            name: "tmp".into(),
            desired: drover_raft::model::DesiredState::Deleted,
        },
    ]
}

#[tokio::test]
async fn state_machine_reopens_as_applied() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let before = {
        let (_log, mut sm) = store::open(dir.path())?;
        let entries: Vec<Entry> = commands()
            .into_iter()
            .enumerate()
            .map(|(i, c)| entry(i as u64 + 1, c))
            .collect();
        let results = sm.apply(entries).await?;
        assert_eq!(
            results.iter().filter(|r| r.is_err()).count(),
            1,
            "{results:?}"
        );
        sm.view().read(|d| (d.last_applied, d.state.clone()))
    };
    let (_log, mut sm) = store::open(dir.path())?;
    let after = sm.view().read(|d| (d.last_applied, d.state.clone()));
    assert_eq!(before, after);
    assert_eq!(after.0.map(|l| l.index), Some(6));
    assert_eq!(after.1.vms.keys().collect::<Vec<_>>(), ["web"]);
    assert_eq!(after.1.vms["web"].generation, 1);
    assert_eq!(sm.applied_state().await?.0, before.0);
    Ok(())
}

#[test]
fn unreadable_record_refuses_to_open() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    {
        let db = sled::open(dir.path())?;
        db.open_tree("sm_vms")?.insert("web", &b"{not json"[..])?;
        db.flush()?;
    }
    let err = store::open(dir.path()).expect_err("a corrupt store must not open");
    let msg = err.to_string();
    assert!(
        msg.contains("unreadable") && msg.contains("sm_vms"),
        "{msg}"
    );
    assert!(msg.contains("rejoining this node"), "{msg}");
    Ok(())
}
