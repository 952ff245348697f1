//! The state machine: the [`ClusterState`] in memory, made durable by snapshots and the
//! Raft log, as etcd's is by its snapshots and WAL. A snapshot (the whole serialized
//! `SmData`) is a file of its own (`snapshot_file`), named by its metadata in tree
//! `sm_snapshot`; both are on disk before openraft may purge the log they replace; between
//! snapshots the applied state is only in memory, and after a restart
//! openraft re-applies the log from the snapshot up to the commit index it stored
//! (`save_committed`). The snapshot schedule bounds that replay (`snapshot_schedule`).
//!
//! Why not a tree per record any more: writing every applied VM, request and event into
//! sled took half of all three controllers' CPU at 256 clients (issue 10, session 7;
//! sled 0.34 rewrites a whole leaf node per insert), and bought nothing a restart needs:
//! the log has every entry since the snapshot anyway.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::apply_request::{Applied, Slot};
use super::io_err;
use super::snapshot_file::{Partial, SnapshotDir, SnapshotFile};
use crate::apply::Touched;
use crate::command::{ApplyResult, Command, Reply, Request};
use crate::dedup::Dedup;
use crate::model::ClusterState;
use crate::{Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig};

/// The current snapshot's metadata (JSON); its data is the file the metadata's id names.
const SNAPSHOT_TREE: &str = "sm_snapshot";
const SNAPSHOT_META: &[u8] = b"current_meta";
/// Where earlier versions kept the data in sled: beside the meta, then (session 8) under
/// `data/<snapshot id>`. A store of either layout has its data moved to a file on open.
const LEGACY_DATA: &[u8] = b"current_data";
const LEGACY_DATA_PREFIX: &[u8] = b"data/";

/// The data of the snapshot `meta` describes, where earlier versions kept it.
fn read_legacy_data(
    tree: &sled::Tree,
    meta: &SnapshotMeta,
) -> Result<Option<sled::IVec>, sled::Error> {
    let key = [LEGACY_DATA_PREFIX, meta.snapshot_id.as_bytes()].concat();
    match tree.get(key)? {
        Some(d) => Ok(Some(d)),
        None => tree.get(LEGACY_DATA),
    }
}

/// Removes the data earlier versions kept in sled (after it is in a file).
fn remove_legacy_data(tree: &sled::Tree) -> Result<(), sled::Error> {
    tree.remove(LEGACY_DATA)?;
    for k in tree.scan_prefix(LEGACY_DATA_PREFIX).keys() {
        tree.remove(k?)?;
    }
    Ok(())
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
    files: SnapshotDir,
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

fn ser_err(e: &std::io::Error) -> StorageError {
    io_err(ErrorSubject::StateMachine, ErrorVerb::Write, e)
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
    /// Snapshot files live in `snapshot_dir`.
    pub(super) fn open(
        db: &sled::Db,
        snapshot_dir: &Path,
        purged: Option<LogId>,
    ) -> Result<Self, sled::Error> {
        let snapshot = db.open_tree(SNAPSHOT_TREE)?;
        let files = SnapshotDir::open(snapshot_dir.to_path_buf())?;
        let mut data = SmData::default();
        let mut current = None;
        if let Some(meta) = snapshot.get(SNAPSHOT_META)? {
            let meta: SnapshotMeta =
                serde_json::from_slice(&meta).map_err(|e| corrupt("sm_snapshot/meta", e))?;
            let bytes = read_snapshot_data(&snapshot, &files, &meta)?;
            data = serde_json::from_slice(&bytes).map_err(|e| {
                let path = files.path(&meta.snapshot_id);
                corrupt(&format!("sm_snapshot/data {}", path.display()), e)
            })?;
            data.last_applied = meta.last_log_id;
            data.membership = meta.last_membership;
            current = Some(meta.snapshot_id);
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
        // The current data is in its file now (`read_snapshot_data`); anything else is
        // garbage of an earlier layout or of a crash before a snapshot's meta was stored.
        remove_legacy_data(&snapshot)?;
        files.remove_except(current.as_deref())?;
        let (changes, _) = broadcast::channel(4096);
        let records = data.records();
        Ok(Self {
            shared: Arc::new(Shared {
                snapshot,
                files,
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

    /// Makes `partial` the current snapshot, described by `meta`, durably: openraft may
    /// purge the log entries it replaces as soon as this returns. A snapshot no newer than
    /// the stored one is not made current (returns `false`): replacing a newer snapshot
    /// with an older one would lose the state between them, whose log may already be
    /// purged.
    async fn commit_snapshot(
        &self,
        meta: &SnapshotMeta,
        partial: Partial,
    ) -> Result<bool, StorageError> {
        let err = |e: &dyn std::error::Error| snapshot_err(Some(meta), ErrorVerb::Write, e);
        let _held = self.shared.snapshot_lock.lock().await;
        let files = self.shared.files.clone();
        if let Some(stored) = self.stored_meta()? {
            if stored.last_log_id >= meta.last_log_id {
                tracing::debug!(
                    stored = %stored.snapshot_id,
                    offered = %meta.snapshot_id,
                    "not replacing a snapshot with an older one"
                );
                // Unlinking a gigabyte file takes a while too.
                tokio::task::spawn_blocking(move || files.discard(partial));
                return Ok(false);
            }
        }
        let meta_raw = serde_json::to_vec(meta).map_err(|e| err(&e))?;
        let tree = self.shared.snapshot.clone();
        let id = meta.snapshot_id.clone();
        // The file first, on disk under its name; then the meta naming it.
        tokio::task::spawn_blocking(move || -> Result<(), sled::Error> {
            files.commit(partial, &id)?;
            tree.insert(SNAPSHOT_META, meta_raw)?;
            Ok(())
        })
        .await
        .map_err(|e| err(&e))?
        .map_err(|e| err(&e))?;
        super::flush(&self.shared.db).await.map_err(|e| err(&e))?;
        // Older snapshots are garbage now; left behind by a crash, the next open or
        // snapshot removes them.
        let files = self.shared.files.clone();
        let id = meta.snapshot_id.clone();
        let removed = tokio::task::spawn_blocking(move || files.remove_except(Some(&id))).await;
        if let Ok(Err(e)) | Err(e) = removed.map_err(std::io::Error::other) {
            tracing::warn!(error = %e, "cannot remove an older snapshot");
        }
        Ok(true)
    }

    /// Serializes `data` into a partial snapshot file. Blocking.
    fn write_partial(&self, data: &SmData) -> std::io::Result<Partial> {
        self.shared
            .files
            .write_partial(|w| serde_json::to_writer(w, data).map_err(std::io::Error::from))
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
        let partial = self.write_partial(data).map_err(|e| ser_err(&e))?;
        let meta = SnapshotMeta {
            last_log_id: data.last_applied,
            last_membership: data.membership.clone(),
            snapshot_id: format!(
                "restore-{}",
                data.last_applied.map(|l| l.index).unwrap_or(0)
            ),
        };
        self.commit_snapshot(&meta, partial).await?;
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
        let store = self.clone();
        let started = std::time::Instant::now();
        let built = tokio::task::spawn_blocking(move || {
            let (data, writes) = {
                let d = store.shared.data.read().unwrap_or_else(|p| p.into_inner());
                // Counted under the same lock `apply` counts under.
                (d.clone(), store.shared.writes.load(Ordering::Relaxed))
            };
            let cloned = started.elapsed();
            // Streamed into the file: no buffer of the whole serialized state. The clone
            // is dropped here too: freeing the nodes `apply` has replaced since is work in
            // proportion to the writes meanwhile.
            store.write_partial(&data).map(|partial| {
                tracing::info!(
                    bytes = partial.len,
                    records = data.records(),
                    clone_ms = cloned.as_millis() as u64,
                    serialize_ms = (started.elapsed() - cloned).as_millis() as u64,
                    "snapshot serialized"
                );
                (
                    (data.last_applied, data.membership.clone()),
                    writes,
                    partial,
                )
            })
        })
        .await;
        let snap_err = |e: &dyn std::error::Error| snapshot_err(None, ErrorVerb::Write, e);
        let ((last_applied, last_membership), writes, partial) =
            built.map_err(|e| snap_err(&e))?.map_err(|e| snap_err(&e))?;
        let snapshot_id = match last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, partial.len),
            None => format!("empty-{}", partial.len),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership,
            snapshot_id,
        };
        // Opened before it is committed or discarded: the open file stays readable either
        // way (openraft reads only the meta of a built snapshot today, but the data it is
        // handed must be this snapshot's).
        let file = SnapshotFile::open_partial(&partial)
            .await
            .map_err(|e| snap_err(&e))?;
        // Not made current if an install overtook this build; openraft then ignores it
        // too (it keeps the newest snapshot it knows).
        let saving = std::time::Instant::now();
        if self.commit_snapshot(&meta, partial).await? {
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
            snapshot: Box::new(file),
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

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<SnapshotFile>, StorageError> {
        let received = self.shared.files.receive().await;
        received
            .map(Box::new)
            .map_err(|e| snapshot_err(None, ErrorVerb::Write, &e))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<SnapshotFile>,
    ) -> Result<(), StorageError> {
        let rd = |e: &dyn std::error::Error| snapshot_err(Some(meta), ErrorVerb::Read, e);
        let partial = snapshot.finish().await.map_err(|e| rd(&e))?;
        // Read and parsed off the async workers, like a build is serialized (see there).
        let (mut new_data, partial) = tokio::task::spawn_blocking(move || {
            let parsed = partial.read().and_then(|bytes| {
                serde_json::from_slice::<SmData>(&bytes).map_err(std::io::Error::from)
            });
            (parsed, partial)
        })
        .await
        .map(|(parsed, partial)| parsed.map(|d| (d, partial)))
        .map_err(|e| rd(&e))?
        .map_err(|e| rd(&e))?;
        new_data.last_applied = meta.last_log_id;
        new_data.membership = meta.last_membership.clone();
        self.commit_snapshot(meta, partial).await?;
        self.replace(new_data);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let rd = |e: &dyn std::error::Error| snapshot_err(None, ErrorVerb::Read, e);
        let _held = self.shared.snapshot_lock.lock().await;
        let Some(meta) = self.stored_meta()? else {
            return Ok(None);
        };
        let file = self
            .shared
            .files
            .open_file(&meta.snapshot_id)
            .await
            .map_err(|e| rd(&e))?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(file),
        }))
    }
}

/// The data of the current snapshot `meta`: its file, or, in a store of an earlier
/// layout, the value in sled, which is then written to its file (the sled value is
/// removed only after, by `open`).
fn read_snapshot_data(
    tree: &sled::Tree,
    files: &SnapshotDir,
    meta: &SnapshotMeta,
) -> Result<Vec<u8>, sled::Error> {
    let path = files.path(&meta.snapshot_id);
    match std::fs::read(&path) {
        Ok(bytes) => return Ok(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(sled::Error::Io(e)),
    }
    let Some(bytes) = read_legacy_data(tree, meta)? else {
        return Err(corrupt(
            "sm_snapshot/data",
            format!("missing: {} does not exist", path.display()),
        ));
    };
    let partial = files.write_partial(|w| w.write_all(&bytes))?;
    files.commit(partial, &meta.snapshot_id)?;
    tracing::info!(path = %path.display(), "snapshot data moved out of sled into a file of its own");
    Ok(bytes.to_vec())
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
        snap.insert(LEGACY_DATA, serde_json::to_vec(&data)?)?;
        db.open_tree("sm_vms")?.insert("web", &b"{}"[..])?;
        db.open_tree("sm_meta")?
            .insert("last_applied", &b"null"[..])?;
        let sm = StateMachineStore::open(&db, &dir.path().join("snapshots"), None)?;
        sm.view().read(|d| {
            assert_eq!(d.last_applied, applied);
            assert_eq!(d.state.placements, 7);
        });
        // The data moved to its file, out of sled.
        assert!(dir.path().join("snapshots/s.snap").exists());
        assert!(snap.get(LEGACY_DATA)?.is_none());
        let names = db.tree_names();
        for t in LEGACY_TREES {
            assert!(
                !names.iter().any(|n| n.as_ref() == t.as_bytes()),
                "{t} kept"
            );
        }
        Ok(())
    }

    /// A store of session 8's layout (data in sled under `data/<id>`) opens with its data
    /// moved into the snapshot file and out of sled.
    #[test]
    fn a_store_with_snapshot_data_in_sled_moves_it_to_a_file() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = sled::open(dir.path())?;
        let mut data = SmData::default();
        data.state.placements = 3;
        let meta = SnapshotMeta {
            last_log_id: Some(LogId::new(openraft::CommittedLeaderId::new(1, 1), 4)),
            last_membership: StoredMembership::default(),
            snapshot_id: "T1-N1-4-99".into(),
        };
        let snap = db.open_tree(SNAPSHOT_TREE)?;
        snap.insert(SNAPSHOT_META, serde_json::to_vec(&meta)?)?;
        snap.insert(b"data/T1-N1-4-99", serde_json::to_vec(&data)?)?;
        let sm = StateMachineStore::open(&db, &dir.path().join("snapshots"), None)?;
        sm.view().read(|d| assert_eq!(d.state.placements, 3));
        assert!(dir.path().join("snapshots/T1-N1-4-99.snap").exists());
        assert_eq!(snap.scan_prefix(LEGACY_DATA_PREFIX).count(), 0);
        Ok(())
    }

    #[test]
    fn an_unreadable_snapshot_refuses_to_open_naming_it() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = sled::open(dir.path())?;
        let meta = SnapshotMeta::default();
        let snap = db.open_tree(SNAPSHOT_TREE)?;
        snap.insert(SNAPSHOT_META, serde_json::to_vec(&meta)?)?;
        snap.insert(LEGACY_DATA, &b"\x00garbage"[..])?;
        let err = StateMachineStore::open(&db, &dir.path().join("snapshots"), None)
            .expect_err("opened a garbage snapshot");
        assert!(err.to_string().contains("sm_snapshot/data"), "{err}");
        Ok(())
    }

    /// openraft builds snapshots apart from installing them: a build of an older state
    /// that ends after an install of a newer one must not replace it.
    #[tokio::test]
    async fn an_older_snapshot_never_replaces_a_newer_one() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let db = sled::open(dir.path())?;
        let sm = StateMachineStore::open(&db, &dir.path().join("snapshots"), None)?;
        let meta = |index: u64| SnapshotMeta {
            last_log_id: Some(LogId::new(openraft::CommittedLeaderId::new(1, 1), index)),
            last_membership: StoredMembership::default(),
            snapshot_id: format!("s{index}"),
        };
        let save = |index: u64| {
            let sm = sm.clone();
            async move {
                let partial = sm
                    .write_partial(&SmData::default())
                    .map_err(|e| ser_err(&e))?;
                sm.commit_snapshot(&meta(index), partial).await
            }
        };
        assert!(save(9).await?);
        assert!(!save(5).await?);
        assert!(!save(9).await?);
        let stored = sm.stored_meta()?.map(|m| m.snapshot_id);
        assert_eq!(stored.as_deref(), Some("s9"));
        assert!(save(12).await?);
        // Only the current snapshot's file is left.
        let files: Vec<_> = std::fs::read_dir(dir.path().join("snapshots"))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<_, _>>()?;
        assert_eq!(files, vec![std::ffi::OsString::from("s12.snap")]);
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
        let err = StateMachineStore::open(&db, &dir.path().join("snapshots"), purged)
            .expect_err("opened with a gap");
        assert!(err.to_string().contains("purged up to 5"), "{err}");
        assert!(db.tree_names().iter().any(|n| n.as_ref() == b"sm_vms"));
        Ok(())
    }
}
