//! The controller's storage: two sled `Db`s, the Raft log's and the state machine's, behind
//! openraft's storage-v2 traits so another engine could replace sled without touching the
//! rest.
//!
//! Log `Db` (`store/log`): `raft_log` (index → entry), `raft_meta` (vote, last purged,
//! committed). State machine `Db` (`store`): `sm_snapshot` only, the current snapshot's
//! metadata; its data is a file in `store/snapshots`. The applied state lives in memory and
//! is durable as the current snapshot plus the log after it.

mod apply_request;
mod db_lock;
mod flusher;
mod log;
mod snapshot_file;
mod state_machine;

use std::path::Path;

pub use db_lock::{wait_released, RELEASE_WITHIN};
pub use log::LogStore;
pub use snapshot_file::SnapshotFile;
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

/// Where the log's own `Db` lives, inside the state machine's directory (sled ignores
/// entries of its directory other than its own files).
const LOG_DIR: &str = "log";
/// Where snapshot files live (`snapshot_file`), inside the state machine's directory too.
const SNAPSHOT_DIR: &str = "snapshots";
/// A log being moved out of a store of the old one-`Db` layout; renamed to `LOG_DIR` once
/// complete.
const MIGRATING_DIR: &str = "log.migrating";
/// The trees the log used to have in the state machine's `Db`.
const LEGACY_LOG_TREES: [&str; 2] = ["raft_log", "raft_meta"];

/// Opens (or creates) the store in `dir` and returns its two halves: the state machine's
/// `Db` in `dir`, the log's in `dir/log`. Two `Db`s because a sled flush writes back every
/// tree of its `Db`, and a log flush should write the log's pages only. A store of the old
/// layout (the log's trees in the state machine's `Db`) is migrated on open, crash-safely.
pub fn open(dir: &Path) -> Result<(LogStore, StateMachineStore), OpenError> {
    let sm_db = open_db(dir)?;
    let log_db = open_log_db(dir, &sm_db)?;
    let corrupt = |what: String| OpenError::Corrupt {
        path: dir.display().to_string(),
        what,
    };
    let log = LogStore::open(&log_db).map_err(|e| corrupt(e.to_string()))?;
    let purged = log.last_purged().map_err(|e| corrupt(e.to_string()))?;
    let sm = StateMachineStore::open(&sm_db, &dir.join(SNAPSHOT_DIR), purged)
        .map_err(|e| corrupt(e.to_string()))?;
    Ok((log, sm))
}

fn open_db(dir: &Path) -> Result<sled::Db, OpenError> {
    sled::Config::new()
        .path(dir)
        // Bounded explicitly: sled's default cache grows well past its nominal size.
        .cache_capacity(64 * 1024 * 1024)
        .open()
        .map_err(|source| OpenError::Sled {
            path: dir.display().to_string(),
            source,
        })
}

/// The log's `Db`, moving the log out of `sm_db` first if this store has the old layout.
/// Steps: copy the legacy trees into `log.migrating`, flush, rename it to `log`, then drop
/// the legacy trees. A crash before the rename leaves the old layout intact (the copy is
/// redone); after it, the legacy trees are only dropped again.
fn open_log_db(dir: &Path, sm_db: &sled::Db) -> Result<sled::Db, OpenError> {
    let sled_err = |path: &Path| {
        let path = path.display().to_string();
        move |source| OpenError::Sled { path, source }
    };
    let log_dir = dir.join(LOG_DIR);
    let names = sm_db.tree_names();
    let legacy = LEGACY_LOG_TREES
        .iter()
        .any(|t| names.iter().any(|n| n.as_ref() == t.as_bytes()));
    if !log_dir.exists() && legacy {
        let tmp = dir.join(MIGRATING_DIR);
        if tmp.exists() {
            std::fs::remove_dir_all(&tmp).map_err(|e| io_open(&tmp, e))?;
        }
        let copy = open_db(&tmp)?;
        let mut entries = 0usize;
        for name in LEGACY_LOG_TREES {
            let from = sm_db.open_tree(name).map_err(sled_err(dir))?;
            let to = copy.open_tree(name).map_err(sled_err(&tmp))?;
            let mut batch = sled::Batch::default();
            for kv in from.iter() {
                let (k, v) = kv.map_err(sled_err(dir))?;
                batch.insert(k, v);
                entries += 1;
            }
            to.apply_batch(batch).map_err(sled_err(&tmp))?;
        }
        copy.flush().map_err(sled_err(&tmp))?;
        drop(copy);
        // The dropped copy's last flush may still hold its lock; `log_dir` is the same file.
        db_lock::wait_released(&tmp.join("db"), RELEASE_WITHIN)?;
        std::fs::rename(&tmp, &log_dir).map_err(|e| io_open(&log_dir, e))?;
        // The rename must be on disk before the old trees are dropped below.
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io_open(dir, e))?;
        tracing::info!(path = %dir.display(), entries, "store migrated: the Raft log has a Db of its own");
    }
    let log_db = open_db(&log_dir)?;
    if legacy {
        for name in LEGACY_LOG_TREES {
            sm_db.drop_tree(name).map_err(sled_err(dir))?;
        }
        sm_db.flush().map_err(sled_err(dir))?;
    }
    Ok(log_db)
}

fn io_open(path: &Path, e: std::io::Error) -> OpenError {
    OpenError::Sled {
        path: path.display().to_string(),
        source: sled::Error::Io(e),
    }
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
