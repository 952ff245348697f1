//! The controller's storage: one sled `Db` holding both the Raft log and the state machine,
//! each in its own trees, behind openraft's storage-v2 traits so another engine could
//! replace sled without touching the rest.
//!
//! Trees: `raft_log` (index → entry), `raft_meta` (vote, last purged, committed),
//! `sm_meta` (last applied, membership), `sm_hosts`, `sm_vms`, `sm_snapshot`.

mod flusher;
mod log;
mod state_machine;

use std::path::Path;

pub use log::LogStore;
pub use state_machine::{Change, SmData, StateMachineStore, StateView};

/// Why a store could not be opened. The node refuses to start rather than serve from a
/// store it cannot read.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("Cannot open the sled store at {path}: {source}")]
    Sled {
        path: String,
        #[source]
        source: sled::Error,
    },
    #[error(
        "The store at {path} is unreadable ({what}). Recover by moving the data directory \
         away and rejoining this node to the cluster as a new member"
    )]
    Corrupt { path: String, what: String },
}

/// Opens (or creates) the store in `dir` and returns its two halves.
pub fn open(dir: &Path) -> Result<(LogStore, StateMachineStore), OpenError> {
    let path = dir.display().to_string();
    let db = sled::Config::new()
        .path(dir)
        // Bounded explicitly: sled's default cache grows well past its nominal size.
        .cache_capacity(64 * 1024 * 1024)
        .open()
        .map_err(|source| OpenError::Sled {
            path: path.clone(),
            source,
        })?;
    let corrupt = |what: String| OpenError::Corrupt {
        path: path.clone(),
        what,
    };
    let log = LogStore::open(&db).map_err(|e| corrupt(e.to_string()))?;
    let sm = StateMachineStore::open(&db).map_err(|e| corrupt(e.to_string()))?;
    Ok((log, sm))
}

/// Puts every write so far on disk. sled 0.34's own `flush_async` can lose its wake-up when
/// two flushes race (spacejam/sled#1241, #1308) and then never completes; the log store and the
/// state machine flush concurrently, and that hang stalled a whole node. The blocking `flush`
/// has no such bug, so it runs on tokio's blocking pool instead.
async fn flush(db: &sled::Db) -> std::io::Result<()> {
    let db = db.clone();
    match tokio::task::spawn_blocking(move || db.flush()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(std::io::Error::other(e)),
        Err(join) => Err(std::io::Error::other(join)),
    }
}

/// Maps a sled or serde failure into openraft's I/O error for the given subject.
fn io_err<E: std::error::Error + 'static>(
    subject: openraft::ErrorSubject<crate::NodeId>,
    verb: openraft::ErrorVerb,
    e: &E,
) -> crate::StorageError {
    openraft::StorageIOError::new(subject, verb, openraft::AnyError::new(e)).into()
}
