//! The state machine: the [`ClusterState`] in memory, made durable by snapshots and the
//! Raft log, as etcd's is by its snapshots and WAL. A snapshot (the whole serialized
//! `SmData`) is stored in tree `sm_snapshot` and flushed before openraft may purge the log
//! it replaces; between snapshots the applied state is only in memory, and after a restart
//! openraft re-applies the log from the snapshot up to the commit index it stored
//! (`save_committed`). The snapshot schedule bounds that replay (`snapshot_schedule`).
//!
//! Why not a tree per record any more: writing every applied VM, request and event into
//! sled took half of all three controllers' CPU at 256 clients (issue 10, session 7;
//! sled 0.34 rewrites a whole leaf node per insert), and bought nothing a restart needs:
//! the log has every entry since the snapshot anyway.

use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::apply_request::{Applied, Slot};
use super::io_err;
use crate::apply::Touched;
use crate::command::{ApplyResult, Command, Reply, Request};
use crate::dedup::Dedup;
use crate::model::ClusterState;
use crate::{Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig};

/// The current snapshot: its metadata (JSON) and its bytes (the serialized `SmData`),
/// under two keys so that reading the metadata never parses the state.
const SNAPSHOT_TREE: &str = "sm_snapshot";
const SNAPSHOT_META: &[u8] = b"current_meta";
/// Where earlier versions kept the data, beside the meta (written in one batch).
const SNAPSHOT_DATA: &[u8] = b"current_data";
/// Data keys now: `data/<snapshot id>`, written before the meta that names it, so that two
/// plain inserts are crash-safe without a `sled::Batch` — which holds sled's process-wide
/// write lock while it writes, and every log append of the process waited for a
/// gigabyte-sized snapshot (issue 10, session 8).
const DATA_PREFIX: &[u8] = b"data/";

fn data_key(snapshot_id: &str) -> Vec<u8> {
    [DATA_PREFIX, snapshot_id.as_bytes()].concat()
}

/// The data of the snapshot `meta` describes (in the layout of earlier versions too).
fn read_data(tree: &sled::Tree, meta: &SnapshotMeta) -> Result<Option<sled::IVec>, sled::Error> {
    match tree.get(data_key(&meta.snapshot_id))? {
        Some(d) => Ok(Some(d)),
        None => tree.get(SNAPSHOT_DATA),
    }
}

/// The per-record trees of earlier versions. Their content is in the snapshot and the
/// log (they were never fsynced on their own), so a store that has them drops them.
const LEGACY_TREES: [&str; 5] = ["sm_meta", "sm_hosts", "sm_vms", "sm_requests", "sm_events"];

/// Everything the state machine holds.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SmData {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub state: ClusterState,
    /// Results of recent identified requests, for exactly-once retries.
    #[serde(default)]
    pub requests: Dedup,
}

impl SmData {
    /// VMs + hosts + remembered requests: what a snapshot's size grows with.
    pub fn records(&self) -> u64 {
        (self.state.vms.len() + self.state.hosts.len() + self.requests.len()) as u64
    }
}

/// A committed change, broadcast after it is applied so the leader's actors react to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    Host(String),
    Vm(String),
    /// An operation started, progressed, was cancelled or ended.
    Ops,
    /// The whole state was replaced (snapshot installed) or a cluster-wide setting changed:
    /// re-read everything.
    Reset,
}

struct Shared {
    snapshot: sled::Tree,
    data: RwLock<SmData>,
    changes: broadcast::Sender<Change>,
    db: sled::Db,
    /// Requests applied since this store opened (a batch entry counts each of its own).
    writes: AtomicU64,
    /// `writes` when the current snapshot's state was taken (or installed).
    writes_at_snapshot: AtomicU64,
    /// The state's record count (VMs + hosts + remembered requests), kept beside the lock
    /// so that the snapshot schedule never waits for it: `std`'s `RwLock` makes a reader
    /// wait behind a waiting writer, `apply` waits while a snapshot clones a big state
    /// (seconds at millions of VMs), and a tokio worker blocked that way is one the Raft
    /// core cannot run on.
    records: AtomicU64,
    /// Held while the stored snapshot is written or read: openraft builds snapshots on a
    /// task of their own, so a build of an older state can finish after an install of a
    /// newer one, and a reader must never see one snapshot's meta with another's data.
    snapshot_lock: tokio::sync::Mutex<()>,
}

/// Read access to the applied state, for API handlers and actors on any node.
#[derive(Clone)]
pub struct StateView {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for StateView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateView").finish_non_exhaustive()
    }
}

impl StateView {
    /// Runs `f` on the applied state. Keep `f` short: apply waits for it.
    pub fn read<R>(&self, f: impl FnOnce(&SmData) -> R) -> R {
        let guard = self
            .shared
            .data
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&guard)
    }

    /// Changes applied from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Change> {
        self.shared.changes.subscribe()
    }

    /// The state's record count (VMs + hosts + remembered requests), without the lock.
    pub fn records(&self) -> u64 {
        self.shared.records.load(Ordering::Relaxed)
    }

    /// Requests applied since the current snapshot's state (what a restart would
    /// re-apply from the log).
    pub fn writes_since_snapshot(&self) -> u64 {
        let s = &self.shared;
        s.writes
            .load(Ordering::Relaxed)
            .saturating_sub(s.writes_at_snapshot.load(Ordering::Relaxed))
    }
}

#[derive(Clone)]
pub struct StateMachineStore {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for StateMachineStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMachineStore").finish_non_exhaustive()
    }
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> sled::Error {
    sled::Error::Unsupported(format!("{what}: {e}"))
}

fn ser_err(e: serde_json::Error) -> StorageError {
    io_err(ErrorSubject::StateMachine, ErrorVerb::Write, &e)
}

/// A failure reading or writing a snapshot (`meta`: which one, when known).
fn snapshot_err(
    meta: Option<&SnapshotMeta>,
    verb: ErrorVerb,
    e: &dyn std::error::Error,
) -> StorageError {
    io_err(
        ErrorSubject::Snapshot(meta.map(SnapshotMeta::signature)),
        verb,
        &std::io::Error::other(e.to_string()),
    )
}

impl StateMachineStore {
    /// Opens the state at the current snapshot (empty without one); openraft re-applies
    /// the log after it, which must therefore reach back to the snapshot: a log purged
    /// past it (`purged`) refuses to open.
    pub(super) fn open(db: &sled::Db, purged: Option<LogId>) -> Result<Self, sled::Error> {
        let snapshot = db.open_tree(SNAPSHOT_TREE)?;
        let mut data = SmData::default();
        if let Some(meta) = snapshot.get(SNAPSHOT_META)? {
            let meta: SnapshotMeta =
                serde_json::from_slice(&meta).map_err(|e| corrupt("sm_snapshot/meta", e))?;
            let bytes = read_data(&snapshot, &meta)?
                .ok_or_else(|| corrupt("sm_snapshot/data", "missing"))?;
            data = serde_json::from_slice(&bytes).map_err(|e| corrupt("sm_snapshot/data", e))?;
            data.last_applied = meta.last_log_id;
            data.membership = meta.last_membership;
        }
        if purged > data.last_applied {
            // Only a store of an earlier version can be so: it kept the applied state in
            // per-record trees, and after a crash that left them ahead of the log openraft
            // purged the log up to them. Checked before those trees are dropped.
            return Err(corrupt(
                "sm_snapshot",
                format!(
                    "the log was purged up to {} but the snapshot ends at {}: the state \
                     between them is only in the per-record trees of an earlier version",
                    purged.map_or(0, |l| l.index),
                    data.last_applied.map_or(0, |l| l.index)
                ),
            ));
        }
        let names = db.tree_names();
        let legacy: Vec<&str> = LEGACY_TREES
            .into_iter()
            .filter(|t| names.iter().any(|n| n.as_ref() == t.as_bytes()))
            .collect();
        if !legacy.is_empty() {
            tracing::info!(
                trees = ?legacy,
                "dropping the per-record state trees of an earlier version: the state is \
                 the snapshot plus the log from now on"
            );
            for t in legacy {
                db.drop_tree(t)?;
            }
            db.flush()?;
        }
        let (changes, _) = broadcast::channel(4096);
        let records = data.records();
        Ok(Self {
            shared: Arc::new(Shared {
                snapshot,
                data: RwLock::new(data),
                changes,
                db: db.clone(),
                writes: AtomicU64::new(0),
                writes_at_snapshot: AtomicU64::new(0),
                records: AtomicU64::new(records),
                snapshot_lock: tokio::sync::Mutex::new(()),
            }),
        })
    }

    pub fn view(&self) -> StateView {
        StateView {
            shared: self.shared.clone(),
        }
    }

    fn write_data(&self) -> std::sync::RwLockWriteGuard<'_, SmData> {
        self.shared
            .data
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Stores `data` as the current snapshot, durably: openraft may purge the log entries
    /// it replaces as soon as this returns. A snapshot no newer than the stored one is not
    /// written (returns `false`): replacing a newer snapshot with an older one would lose
    /// the state between them, whose log may already be purged.
    async fn save_snapshot(
        &self,
        meta: &SnapshotMeta,
        data: Vec<u8>,
    ) -> Result<bool, StorageError> {
        let err = |e: &dyn std::error::Error| snapshot_err(Some(meta), ErrorVerb::Write, e);
        let _held = self.shared.snapshot_lock.lock().await;
        if let Some(stored) = self.stored_meta()? {
            if stored.last_log_id >= meta.last_log_id {
                tracing::debug!(
                    stored = %stored.snapshot_id,
                    offered = %meta.snapshot_id,
                    "not replacing a snapshot with an older one"
                );
                return Ok(false);
            }
        }
        let meta_raw = serde_json::to_vec(meta).map_err(|e| err(&e))?;
        // sled copies the value and writes it out inline: for a state of millions of VMs
        // that is a gigabyte and seconds, which must not hold a tokio worker. Data first,
        // then the meta naming it (see `DATA_PREFIX`).
        let tree = self.shared.snapshot.clone();
        let key = data_key(&meta.snapshot_id);
        tokio::task::spawn_blocking(move || {
            tree.insert(key, data)?;
            tree.insert(SNAPSHOT_META, meta_raw)
        })
        .await
        .map_err(|e| err(&e))?
        .map_err(|e| err(&e))?;
        super::flush(&self.shared.db).await.map_err(|e| err(&e))?;
        // Older data (and the earlier layout's) is garbage now; left behind by a crash,
        // the next snapshot removes it.
        let tree = self.shared.snapshot.clone();
        let keep = data_key(&meta.snapshot_id);
        let removed = tokio::task::spawn_blocking(move || -> Result<(), sled::Error> {
            tree.remove(SNAPSHOT_DATA)?;
            for k in tree.scan_prefix(DATA_PREFIX).keys() {
                let k = k?;
                if k.as_ref() != keep.as_slice() {
                    tree.remove(k)?;
                }
            }
            Ok(())
        })
        .await;
        if let Ok(Err(e)) | Err(e) = removed.map_err(|j| sled::Error::Io(std::io::Error::other(j)))
        {
            tracing::warn!(error = %e, "cannot remove an older snapshot's data");
        }
        Ok(true)
    }

    /// The stored snapshot's metadata (callers hold `snapshot_lock`).
    fn stored_meta(&self) -> Result<Option<SnapshotMeta>, StorageError> {
        let rd = |e: &dyn std::error::Error| snapshot_err(None, ErrorVerb::Read, e);
        let Some(raw) = self
            .shared
            .snapshot
            .get(SNAPSHOT_META)
            .map_err(|e| rd(&e))?
        else {
            return Ok(None);
        };
        serde_json::from_slice(&raw).map(Some).map_err(|e| rd(&e))
    }

    /// Replaces the state with `data` and stores it as the current snapshot (backup
    /// restore into a fresh store).
    pub async fn restore(&self, data: &SmData) -> Result<(), StorageError> {
        let bytes = serde_json::to_vec(data).map_err(ser_err)?;
        let meta = SnapshotMeta {
            last_log_id: data.last_applied,
            last_membership: data.membership.clone(),
            snapshot_id: format!(
                "restore-{}",
                data.last_applied.map(|l| l.index).unwrap_or(0)
            ),
        };
        self.save_snapshot(&meta, bytes).await?;
        self.replace(data.clone());
        Ok(())
    }

    /// The whole state becomes `data`, which is the current snapshot's.
    fn replace(&self, data: SmData) {
        let records = data.records();
        let old = std::mem::replace(&mut *self.write_data(), data);
        // Freeing millions of VMs is not a job for a tokio worker either.
        tokio::task::spawn_blocking(move || drop(old));
        let s = &self.shared;
        s.records.store(records, Ordering::Relaxed);
        s.writes_at_snapshot
            .store(s.writes.load(Ordering::Relaxed), Ordering::Relaxed);
        let _ = s.changes.send(Change::Reset);
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        // Serializing a large state takes long enough (seconds at millions of VMs) to
        // starve Raft heartbeats if it ran on an async worker. The clone is cheap (the VM
        // map is persistent), so the lock is held for microseconds, not for the copy.
        let shared = self.shared.clone();
        let started = std::time::Instant::now();
        let built = tokio::task::spawn_blocking(move || {
            let (data, writes) = {
                let d = shared.data.read().unwrap_or_else(|p| p.into_inner());
                // Counted under the same lock `apply` counts under.
                (d.clone(), shared.writes.load(Ordering::Relaxed))
            };
            let cloned = started.elapsed();
            // One copy for sled, one for openraft: copied here, not on a worker.
            // The clone is dropped here too: freeing the nodes `apply` has replaced since
            // is work in proportion to the writes meanwhile.
            serde_json::to_vec(&data).map(|bytes| {
                let at = (data.last_applied, data.membership.clone());
                tracing::info!(
                    bytes = bytes.len(),
                    records = data.records(),
                    clone_ms = cloned.as_millis() as u64,
                    serialize_ms = (started.elapsed() - cloned).as_millis() as u64,
                    "snapshot serialized"
                );
                (at, writes, bytes.clone(), bytes)
            })
        })
        .await;
        let snap_err = |e: &dyn std::error::Error| snapshot_err(None, ErrorVerb::Write, e);
        let ((last_applied, last_membership), writes, bytes, stored) =
            built.map_err(|e| snap_err(&e))?.map_err(|e| snap_err(&e))?;
        let snapshot_id = match last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, bytes.len()),
            None => format!("empty-{}", bytes.len()),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership,
            snapshot_id,
        };
        // Not stored if an install overtook this build; openraft then ignores it too (it
        // keeps the newest snapshot it knows).
        let saving = std::time::Instant::now();
        if self.save_snapshot(&meta, stored).await? {
            self.shared
                .writes_at_snapshot
                .fetch_max(writes, Ordering::Relaxed);
        }
        tracing::info!(
            snapshot = %meta.snapshot_id,
            save_ms = saving.elapsed().as_millis() as u64,
            total_ms = started.elapsed().as_millis() as u64,
            "snapshot stored"
        );
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        Ok(self.view().read(|d| (d.last_applied, d.membership.clone())))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<ApplyResult>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let started = std::time::Instant::now();
        let mut results = Vec::new();
        let mut applied = Applied::default();
        let mut writes = 0u64;
        {
            let mut data = self.write_data();
            for entry in entries {
                data.last_applied = Some(entry.log_id);
                match entry.payload {
                    EntryPayload::Blank => results.push(Ok(Reply::Nothing)),
                    EntryPayload::Normal(Request {
                        id: None,
                        command: Command::Batch { requests },
                    }) => {
                        // Group commit: every request as if it had an entry of its own.
                        let mut each = Vec::with_capacity(requests.len());
                        for (slot, req) in requests.into_iter().enumerate() {
                            let at = Slot::new(entry.log_id.index, slot);
                            each.push(data.apply_request(at, req, &mut applied));
                            writes += 1;
                        }
                        results.push(Ok(Reply::Batch(each)));
                    }
                    EntryPayload::Normal(req) => {
                        let at = Slot::new(entry.log_id.index, 0);
                        results.push(data.apply_request(at, req, &mut applied));
                        writes += 1;
                    }
                    EntryPayload::Membership(m) => {
                        data.membership = StoredMembership::new(Some(entry.log_id), m);
                        results.push(Ok(Reply::Nothing));
                    }
                }
            }
            self.shared.writes.fetch_add(writes, Ordering::Relaxed);
            self.shared.records.store(data.records(), Ordering::Relaxed);
        }
        metrics::histogram!("drover_raft_apply_seconds").record(started.elapsed().as_secs_f64());
        metrics::counter!("drover_raft_applied_entries_total").increment(results.len() as u64);
        for t in applied.touched {
            let change = match t {
                Touched::Host(n) => Change::Host(n),
                Touched::Vm(n) => Change::Vm(n),
                Touched::AllHosts => Change::Reset,
                Touched::Ops => Change::Ops,
                Touched::Event { .. } | Touched::Many(_) | Touched::Nothing => continue,
            };
            // No receivers (not leader) is normal.
            let _ = self.shared.changes.send(change);
        }
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let rd = |e: &dyn std::error::Error| snapshot_err(Some(meta), ErrorVerb::Read, e);
        // Parsed off the async workers, like a build is serialized (see there).
        let (mut new_data, bytes) = tokio::task::spawn_blocking(move || {
            let bytes = snapshot.into_inner();
            serde_json::from_slice::<SmData>(&bytes).map(|d| (d, bytes))
        })
        .await
        .map_err(|e| rd(&e))?
        .map_err(|e| rd(&e))?;
        new_data.last_applied = meta.last_log_id;
        new_data.membership = meta.last_membership.clone();
        self.save_snapshot(meta, bytes).await?;
        self.replace(new_data);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let rd = |e: &dyn std::error::Error| snapshot_err(None, ErrorVerb::Read, e);
        let _held = self.shared.snapshot_lock.lock().await;
        let Some(meta) = self.stored_meta()? else {
            return Ok(None);
        };
        // A read and a copy of up to a gigabyte: off the async workers.
        let tree = self.shared.snapshot.clone();
        let which = meta.clone();
        let data = tokio::task::spawn_blocking(move || {
            read_data(&tree, &which).map(|d| d.map(|d| d.to_vec()))
        })
        .await
        .map_err(|e| rd(&e))?
        .map_err(|e| rd(&e))?
        .ok_or_else(|| rd(&std::io::Error::other("snapshot data missing")))?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store of the per-record layout (earlier versions) opens at its snapshot and drops
    /// the old trees; their content comes back from the log, which openraft re-applies.
    #[test]
    fn a_store_of_the_per_record_layout_opens_at_its_snapshot() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        // One handle throughout: reopening a directory right after a drop can race sled's
        // release of its lock (see tests/store_reopen.rs).
        let db = sled::open(dir.path())?;
        let mut data = SmData::default();
        data.state.placements = 7;
        let applied = Some(LogId::new(openraft::CommittedLeaderId::new(1, 1), 9));
        let meta = SnapshotMeta {
            last_log_id: applied,
            last_membership: StoredMembership::default(),
            snapshot_id: "s".into(),
        };
        let snap = db.open_tree(SNAPSHOT_TREE)?;
        snap.insert(SNAPSHOT_META, serde_json::to_vec(&meta)?)?;
        snap.insert(SNAPSHOT_DATA, serde_json::to_vec(&data)?)?;
        db.open_tree("sm_vms")?.insert("web", &b"{}"[..])?;
        db.open_tree("sm_meta")?
            .insert("last_applied", &b"null"[..])?;
        let sm = StateMachineStore::open(&db, None)?;
        sm.view().read(|d| {
            assert_eq!(d.last_applied, applied);
            assert_eq!(d.state.placements, 7);
        });
        let names = db.tree_names();
        for t in LEGACY_TREES {
            assert!(
                !names.iter().any(|n| n.as_ref() == t.as_bytes()),
                "{t} kept"
            );
        }
        Ok(())
    }

    #[test]
    fn an_unreadable_snapshot_refuses_to_open_naming_it() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = sled::open(dir.path())?;
        let meta = SnapshotMeta::default();
        let snap = db.open_tree(SNAPSHOT_TREE)?;
        snap.insert(SNAPSHOT_META, serde_json::to_vec(&meta)?)?;
        snap.insert(SNAPSHOT_DATA, &b"\x00garbage"[..])?;
        let err = StateMachineStore::open(&db, None).expect_err("opened a garbage snapshot");
        assert!(err.to_string().contains("sm_snapshot/data"), "{err}");
        Ok(())
    }

    /// openraft builds snapshots apart from installing them: a build of an older state
    /// that ends after an install of a newer one must not replace it.
    #[tokio::test]
    async fn an_older_snapshot_never_replaces_a_newer_one() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = sled::open(dir.path())?;
        let sm = StateMachineStore::open(&db, None)?;
        let meta = |index: u64| SnapshotMeta {
            last_log_id: Some(LogId::new(openraft::CommittedLeaderId::new(1, 1), index)),
            last_membership: StoredMembership::default(),
            snapshot_id: format!("s{index}"),
        };
        assert!(sm.save_snapshot(&meta(9), b"{}".to_vec()).await?);
        assert!(!sm.save_snapshot(&meta(5), b"{}".to_vec()).await?);
        assert!(!sm.save_snapshot(&meta(9), b"{}".to_vec()).await?);
        let stored = sm.stored_meta()?.map(|m| m.snapshot_id);
        assert_eq!(stored.as_deref(), Some("s9"));
        assert!(sm.save_snapshot(&meta(12), b"{}".to_vec()).await?);
        Ok(())
    }

    /// The state between the snapshot and a purge past it exists nowhere: refuse, and
    /// leave everything in place (the legacy trees are not dropped).
    #[test]
    fn a_log_purged_past_the_snapshot_refuses_to_open() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = sled::open(dir.path())?;
        db.open_tree("sm_vms")?.insert("web", &b"{}"[..])?;
        let purged = Some(LogId::new(openraft::CommittedLeaderId::new(1, 1), 5));
        let err = StateMachineStore::open(&db, purged).expect_err("opened with a gap");
        assert!(err.to_string().contains("purged up to 5"), "{err}");
        assert!(db.tree_names().iter().any(|n| n.as_ref() == b"sm_vms"));
        Ok(())
    }
}
