//! Backups: the whole state machine at one applied index, as a self-describing file, and
//! seeding a fresh data dir from one (as `etcdutl snapshot restore` does) so a new cluster
//! starts with that state and a membership of its own.

use std::collections::BTreeMap;
use std::path::Path;

use openraft::storage::RaftLogStorage;
use openraft::{BasicNode, CommittedLeaderId, Membership, StoredMembership};
use serde::{Deserialize, Serialize};

use crate::store::{self, OpenError, SmData};
use crate::{LogId, NodeId};

/// Written into every backup; a file without it is not a drover backup.
pub const BACKUP_FORMAT: &str = "drover-backup/1";

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("Not a drover backup ({0})")]
    Format(String),
    #[error("The backup is empty: the cluster had applied nothing")]
    Empty,
    #[error("{dir} already holds a store; restore only into a new, empty data dir")]
    NotEmpty { dir: String },
    #[error("The restored cluster needs at least one member")]
    NoMembers,
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("Cannot write the restored store: {0}")]
    Store(String),
}

#[derive(Serialize, Deserialize)]
struct BackupFile {
    format: String,
    data: SmData,
}

/// Serializes `data` as a backup.
pub fn encode(data: &SmData) -> Result<Vec<u8>, BackupError> {
    serde_json::to_vec(&BackupFile {
        format: BACKUP_FORMAT.to_string(),
        data: data.clone(),
    })
    .map_err(|e| BackupError::Format(e.to_string()))
}

/// Parses and checks a backup.
pub fn decode(bytes: &[u8]) -> Result<SmData, BackupError> {
    let file: BackupFile =
        serde_json::from_slice(bytes).map_err(|e| BackupError::Format(e.to_string()))?;
    if file.format != BACKUP_FORMAT {
        return Err(BackupError::Format(format!(
            "format {:?}, expected {BACKUP_FORMAT:?}",
            file.format
        )));
    }
    if file.data.last_applied.is_none() {
        return Err(BackupError::Empty);
    }
    Ok(file.data)
}

/// Creates the store of a new cluster member in `data_dir` holding `backup`'s state, with
/// `members` as the voters. Every founding member is seeded from the same backup with the
/// same `members`; started with that `--initial-cluster`, they elect a leader and carry on
/// from the backup's index.
pub async fn seed(
    data_dir: &Path,
    backup: SmData,
    members: &BTreeMap<NodeId, String>,
) -> Result<LogId, BackupError> {
    if members.is_empty() {
        return Err(BackupError::NoMembers);
    }
    let store_dir = data_dir.join("store");
    if store_dir.exists() {
        return Err(BackupError::NotEmpty {
            dir: data_dir.display().to_string(),
        });
    }
    let index = backup
        .last_applied
        .map(|l| l.index)
        .ok_or(BackupError::Empty)?;
    // Term 0 precedes every term the new cluster will elect.
    let log_id = LogId::new(CommittedLeaderId::new(0, 0), index);
    let voters = members.keys().copied().collect();
    let nodes: BTreeMap<NodeId, BasicNode> = members
        .iter()
        .map(|(id, addr)| (*id, BasicNode { addr: addr.clone() }))
        .collect();
    let mut state = backup.state;
    // The new cluster's terms start again at 1: its fencing terms must still outrank every
    // term the hosts saw from the cluster it replaces.
    state.ha.restores += 1;
    let data = SmData {
        last_applied: Some(log_id),
        membership: StoredMembership::new(Some(log_id), Membership::new(vec![voters], nodes)),
        state,
        requests: backup.requests,
    };
    let (mut log, sm) = store::open(&store_dir)?;
    sm.restore(&data)
        .await
        .map_err(|e| BackupError::Store(e.to_string()))?;
    // The log starts after the backup: everything up to it counts as purged, so openraft
    // sees a compacted member, not a pristine one (and will not bootstrap over it).
    log.purge(log_id)
        .await
        .map_err(|e| BackupError::Store(e.to_string()))?;
    Ok(log_id)
}
