//! The Raft log in sled. Durability rule: every method that changes the log or the vote
//! returns (or signals `LogFlushed`) only after a flush has put the change on disk,
//! because openraft treats that signal as "this survives a crash". Appends return once
//! written and signal from the `Flusher` thread (group commit).

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, LogState, RaftLogReader};

use super::flusher::Flusher;
use super::io_err;
use crate::election_guard::FlushWatch;
use crate::{Entry, LogId, StorageError, TypeConfig, Vote};

const VOTE: &[u8] = b"vote";
const LAST_PURGED: &[u8] = b"last_purged";
const COMMITTED: &[u8] = b"committed";

/// An append (its inserts, before the flush) slower than this is logged.
const SLOW_APPEND: std::time::Duration = std::time::Duration::from_millis(50);

/// Log entries keyed by big-endian index, so sled's key order is log order.
#[derive(Debug, Clone)]
pub struct LogStore {
    log: sled::Tree,
    meta: sled::Tree,
    flusher: Flusher,
    watch: Arc<FlushWatch>,
}

impl LogStore {
    pub(super) fn open(db: &sled::Db) -> Result<Self, sled::Error> {
        let watch = Arc::new(FlushWatch::default());
        Ok(Self {
            log: db.open_tree("raft_log")?,
            meta: db.open_tree("raft_meta")?,
            flusher: Flusher::start(db.clone(), watch.clone())?,
            watch,
        })
    }

    /// How this log's flushes are going (for the election guard).
    pub fn flush_watch(&self) -> Arc<FlushWatch> {
        self.watch.clone()
    }

    /// The last entry purged from the log (`None`: nothing purged yet).
    pub(super) fn last_purged(&self) -> Result<Option<LogId>, StorageError> {
        self.read_meta(LAST_PURGED, ErrorSubject::Store)
    }

    fn read_meta<T: serde::de::DeserializeOwned>(
        &self,
        key: &[u8],
        subject: ErrorSubject<crate::NodeId>,
    ) -> Result<Option<T>, StorageError> {
        let raw = self
            .meta
            .get(key)
            .map_err(|e| io_err(subject.clone(), ErrorVerb::Read, &e))?;
        raw.map(|v| serde_json::from_slice(&v))
            .transpose()
            .map_err(|e| io_err(subject, ErrorVerb::Read, &e))
    }

    fn write_meta<T: serde::Serialize>(
        &self,
        key: &[u8],
        value: &T,
        subject: ErrorSubject<crate::NodeId>,
    ) -> Result<(), StorageError> {
        let raw =
            serde_json::to_vec(value).map_err(|e| io_err(subject.clone(), ErrorVerb::Write, &e))?;
        self.meta
            .insert(key, raw)
            .map_err(|e| io_err(subject, ErrorVerb::Write, &e))?;
        Ok(())
    }

    async fn flush(&self, subject: ErrorSubject<crate::NodeId>) -> Result<(), StorageError> {
        self.flusher
            .flush()
            .await
            .map_err(|e| io_err(subject, ErrorVerb::Write, &e))
    }

    fn last_entry_log_id(&self) -> Result<Option<LogId>, StorageError> {
        match self
            .log
            .last()
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, &e))?
        {
            None => Ok(None),
            Some((_, v)) => {
                let entry: Entry = serde_json::from_slice(&v)
                    .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, &e))?;
                Ok(Some(entry.log_id))
            }
        }
    }

    /// Removes the keys in `from..=to` (inclusive; `to = None` means to the end).
    fn remove_range(&self, from: u64, to: Option<u64>) -> Result<(), StorageError> {
        let range = match to {
            Some(to) => self.log.range(from.to_be_bytes()..=to.to_be_bytes()),
            None => self.log.range(from.to_be_bytes()..),
        };
        let mut batch = sled::Batch::default();
        for k in range.keys() {
            let k = k.map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, &e))?;
            batch.remove(k);
        }
        self.log
            .apply_batch(batch)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, &e))
    }
}

/// Purged entries deleted between two pauses (`PURGE_PAUSE`).
const PURGE_STEP: usize = 32;
/// The pause: deleting 5,000 purged batch entries took 2 s of sled's log at full speed,
/// beside the appends of the live log (issue 10, session 8). Paced, a purge takes a
/// little longer and leaves sled's log to the appends most of the time; nothing waits for
/// it (`purge` returns before).
const PURGE_PAUSE: std::time::Duration = std::time::Duration::from_millis(2);

/// Removes the entries up to `to` one key at a time, pausing after every few: a
/// `sled::Batch` holds sled's process-wide write lock for the whole batch, and every
/// append and read of every tree in the process waits for it (thousands of big entries: up
/// to a second). Blocking.
fn remove_paced(log: &sled::Tree, to: u64) -> Result<(), StorageError> {
    let keys = log.range(..=to.to_be_bytes()).keys();
    for (n, k) in keys.enumerate() {
        let k = k.map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, &e))?;
        log.remove(k)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, &e))?;
        if (n + 1) % PURGE_STEP == 0 {
            std::thread::sleep(PURGE_PAUSE);
        }
    }
    Ok(())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i.saturating_add(1),
            Bound::Unbounded => 0,
        };
        // Purged entries may still be on disk (`purge` deletes them in the background, a
        // crash may leave them): they are not part of the log any more.
        let purged: Option<LogId> = self.read_meta(LAST_PURGED, ErrorSubject::Store)?;
        let start = start.max(purged.map_or(0, |p| p.index + 1));
        let iter = match range.end_bound() {
            Bound::Included(i) => self.log.range(start.to_be_bytes()..=i.to_be_bytes()),
            Bound::Excluded(i) if *i <= start => return Ok(Vec::new()),
            Bound::Excluded(i) => self.log.range(start.to_be_bytes()..i.to_be_bytes()),
            Bound::Unbounded => self.log.range(start.to_be_bytes()..),
        };
        iter.map(|kv| {
            let (_, v) = kv.map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, &e))?;
            serde_json::from_slice(&v).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, &e))
        })
        .collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self.read_meta(LAST_PURGED, ErrorSubject::Store)?;
        // The last entry may be purged but not deleted yet (see `purge`).
        let last = self.last_entry_log_id()?.max(last_purged);
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.write_meta(VOTE, vote, ErrorSubject::Vote)?;
        self.flush(ErrorSubject::Vote).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.read_meta(VOTE, ErrorSubject::Vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        metrics::gauge!("drover_raft_commit_index").set(committed.map_or(0, |l| l.index) as f64);
        // Not flushed: losing it only means re-deriving the commit index from the quorum.
        self.write_meta(COMMITTED, &committed, ErrorSubject::Store)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self
            .read_meta::<Option<LogId>>(COMMITTED, ErrorSubject::Store)?
            .flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        // One insert per entry, in index order, not a `sled::Batch`: in sled 0.34 a batch
        // rolls the I/O buffer before and after (`PageCache::pin_log`), each roll a synced
        // write handed to sled's pool, whose `notify_all` wakes all seven idle I/O threads
        // (4,200 writes a second at 2,200 client writes, issue 10), and atomicity is not
        // needed: sled recovers a prefix of the inserts, and openraft relies only on what
        // the flush below covers.
        let started = std::time::Instant::now();
        let mut count = 0usize;
        for entry in entries {
            count += 1;
            let raw = serde_json::to_vec(&entry)
                .map_err(|e| io_err(ErrorSubject::Log(entry.log_id), ErrorVerb::Write, &e))?;
            self.log
                .insert(entry.log_id.index.to_be_bytes(), raw)
                .map_err(|e| io_err(ErrorSubject::Log(entry.log_id), ErrorVerb::Write, &e))?;
        }
        // These inserts run on the Raft core's own task: while they wait, the node handles
        // no message (heartbeats included).
        let took = started.elapsed();
        if took > SLOW_APPEND {
            tracing::warn!(
                append_ms = took.as_millis() as u64,
                entries = count,
                "slow log append"
            );
        }
        // Group commit: openraft may append again while this flush runs; the callback
        // tells it when these entries are durable.
        self.flusher
            .after_flush(callback)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, &e))
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        tracing::debug!(%log_id, "truncating log from");
        self.remove_range(log_id.index, None)?;
        self.flush(ErrorSubject::Logs).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        // Record the purge point first and durably: from then on nothing reads below it,
        // and a crash before the entries are gone leaves extra entries (harmless) rather
        // than a hole openraft does not know about.
        self.write_meta(LAST_PURGED, &log_id, ErrorSubject::Store)?;
        self.flush(ErrorSubject::Store).await?;
        // The entries go in the background: deleting thousands of big batch entries took
        // up to 370 ms, and openraft's core awaits `purge` before it sends the next
        // heartbeat, so followers called elections (issue 10, session 8). A later append
        // or truncate touches only indexes above the purge point.
        let log = self.log.clone();
        tokio::task::spawn_blocking(move || {
            let started = std::time::Instant::now();
            match remove_paced(&log, log_id.index) {
                Ok(()) => tracing::info!(
                    upto = log_id.index,
                    remove_ms = started.elapsed().as_millis() as u64,
                    "log purged"
                ),
                // Left for the next purge, which covers this range again.
                Err(e) => {
                    tracing::warn!(upto = log_id.index, error = %e, "cannot delete purged entries")
                }
            }
        });
        Ok(())
    }
}
