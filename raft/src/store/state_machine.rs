//! The state machine in sled: the [`ClusterState`] lives in memory for reads and is
//! written through to the `sm_*` trees, each applied batch behind a redo record (`redo`),
//! so the persisted state and its `last_applied` never disagree.
//!
//! Applied state is not fsynced: after a crash openraft re-applies from the (durable) log
//! anything past the persisted `last_applied`.

use std::io::Cursor;
use std::sync::{Arc, RwLock};

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use super::apply_request::{Applied, Slot};
use super::io_err;
use super::redo::{self, TreeId, Write};
use crate::apply::Touched;
use crate::command::{ApplyResult, Command, Reply, Request};
use crate::dedup::{Dedup, Remembered};
use crate::model::{ClusterState, Event, EventLog, Host, Vm};
use crate::{Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig};

const LAST_APPLIED: &[u8] = b"last_applied";
const MEMBERSHIP: &[u8] = b"membership";
/// The cluster-wide HA switch (`drover ha arm|disarm`); written with every batch, it is tiny.
const HA: &[u8] = b"ha";
/// The operations table (bounded: running ones plus the newest finished), written when a
/// batch touched it.
const OPS: &[u8] = b"ops";
/// The placement policy; written with every batch, it is tiny.
const PLACEMENT: &[u8] = b"placement";
/// Users' bearer tokens (hashes); written with every batch, it is small (capped).
const TOKENS: &[u8] = b"tokens";
/// `ClusterState::placements`, the count of VM placement changes; written with every batch.
const PLACEMENTS: &[u8] = b"placements";
/// The current snapshot: its metadata (JSON) and its bytes (the serialized `SmData`),
/// under two keys so that reading the metadata never parses the state.
/// The batch being written, until it is (`redo`).
const REDO: &[u8] = b"redo";
const SNAPSHOT_META: &[u8] = b"current_meta";
const SNAPSHOT_DATA: &[u8] = b"current_data";

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
    trees: Trees,
    data: RwLock<SmData>,
    changes: broadcast::Sender<Change>,
    db: sled::Db,
}

#[derive(Clone)]
struct Trees {
    meta: sled::Tree,
    hosts: sled::Tree,
    vms: sled::Tree,
    requests: sled::Tree,
    snapshot: sled::Tree,
    /// `EventLog::key(seq)` → event.
    events: sled::Tree,
}

impl Trees {
    fn tree(&self, id: TreeId) -> &sled::Tree {
        match id {
            TreeId::Meta => &self.meta,
            TreeId::Hosts => &self.hosts,
            TreeId::Vms => &self.vms,
            TreeId::Requests => &self.requests,
            TreeId::Events => &self.events,
        }
    }

    /// Puts and deletes one key at a time, in order (no batch: see `redo`).
    fn write_all(&self, writes: Vec<Write>) -> Result<(), sled::Error> {
        for (tree, key, value) in writes {
            let tree = self.tree(tree);
            match value {
                Some(v) => tree.insert(key, v)?,
                None => tree.remove(key)?,
            };
        }
        Ok(())
    }
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

impl StateMachineStore {
    pub(super) fn open(db: &sled::Db) -> Result<Self, sled::Error> {
        let trees = Trees {
            meta: db.open_tree("sm_meta")?,
            hosts: db.open_tree("sm_hosts")?,
            vms: db.open_tree("sm_vms")?,
            requests: db.open_tree("sm_requests")?,
            snapshot: db.open_tree("sm_snapshot")?,
            events: db.open_tree("sm_events")?,
        };
        // A batch cut short by a crash: write it again (puts and deletes are idempotent).
        if let Some(raw) = trees.meta.get(REDO)? {
            let writes = redo::decode(&raw).map_err(|e| corrupt("sm_meta/redo", e))?;
            trees.write_all(writes)?;
            trees.meta.remove(REDO)?;
            db.flush()?;
        }
        let mut data = SmData::default();
        if let Some(v) = trees.meta.get(LAST_APPLIED)? {
            data.last_applied =
                serde_json::from_slice(&v).map_err(|e| corrupt("sm_meta/last_applied", e))?;
        }
        if let Some(v) = trees.meta.get(MEMBERSHIP)? {
            data.membership =
                serde_json::from_slice(&v).map_err(|e| corrupt("sm_meta/membership", e))?;
        }
        if let Some(v) = trees.meta.get(HA)? {
            data.state.ha = serde_json::from_slice(&v).map_err(|e| corrupt("sm_meta/ha", e))?;
        }
        if let Some(v) = trees.meta.get(PLACEMENT)? {
            data.state.placement =
                serde_json::from_slice(&v).map_err(|e| corrupt("sm_meta/placement", e))?;
        }
        if let Some(v) = trees.meta.get(TOKENS)? {
            data.state.tokens =
                serde_json::from_slice(&v).map_err(|e| corrupt("sm_meta/tokens", e))?;
        }
        if let Some(v) = trees.meta.get(PLACEMENTS)? {
            data.state.placements =
                serde_json::from_slice(&v).map_err(|e| corrupt("sm_meta/placements", e))?;
        }
        if let Some(v) = trees.meta.get(OPS)? {
            data.state.operations =
                serde_json::from_slice(&v).map_err(|e| corrupt("sm_meta/ops", e))?;
        }
        for kv in trees.hosts.iter() {
            let (k, v) = kv?;
            let host: Host = serde_json::from_slice(&v).map_err(|e| corrupt("sm_hosts", e))?;
            if k.as_ref() != host.name.as_bytes() {
                return Err(corrupt("sm_hosts", "key does not match the host's name"));
            }
            data.state.hosts.insert(host.name.clone(), host);
        }
        for kv in trees.vms.iter() {
            let (k, v) = kv?;
            let vm: Vm = serde_json::from_slice(&v).map_err(|e| corrupt("sm_vms", e))?;
            if k.as_ref() != vm.name.as_bytes() {
                return Err(corrupt("sm_vms", "key does not match the VM's name"));
            }
            data.state.vms.insert(vm.name.clone(), vm);
        }
        for kv in trees.events.iter() {
            let (_, v) = kv?;
            let event: Event = serde_json::from_slice(&v).map_err(|e| corrupt("sm_events", e))?;
            data.state.events.next_seq = event.seq + 1;
            data.state.events.entries.push_back(event);
        }
        let mut requests = std::collections::BTreeMap::new();
        for kv in trees.requests.iter() {
            let (k, v) = kv?;
            let id = String::from_utf8(k.to_vec()).map_err(|e| corrupt("sm_requests", e))?;
            let r: Remembered =
                serde_json::from_slice(&v).map_err(|e| corrupt("sm_requests", e))?;
            requests.insert(id, r);
        }
        data.requests = Dedup::from(requests);
        // A snapshot newer than the trees means an install was cut short after the
        // snapshot was stored (durably) but before the trees were rewritten: finish it.
        let mut interrupted_install = false;
        if let Some(meta) = trees.snapshot.get(SNAPSHOT_META)? {
            let meta: SnapshotMeta =
                serde_json::from_slice(&meta).map_err(|e| corrupt("sm_snapshot/meta", e))?;
            if meta.last_log_id > data.last_applied {
                let bytes = trees
                    .snapshot
                    .get(SNAPSHOT_DATA)?
                    .ok_or_else(|| corrupt("sm_snapshot/data", "missing"))?;
                data =
                    serde_json::from_slice(&bytes).map_err(|e| corrupt("sm_snapshot/data", e))?;
                data.last_applied = meta.last_log_id;
                data.membership = meta.last_membership;
                interrupted_install = true;
            }
        }
        let (changes, _) = broadcast::channel(4096);
        let store = Self {
            shared: Arc::new(Shared {
                trees,
                data: RwLock::new(data),
                changes,
                db: db.clone(),
            }),
        };
        if interrupted_install {
            tracing::warn!("completing a snapshot install interrupted by a crash");
            let data = store.view().read(|d| d.clone());
            store
                .persist_all(&data)
                .map_err(|e| corrupt("rewriting from the snapshot", e))?;
        }
        Ok(store)
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

    /// Writes one applied batch: its redo record, then each write, then the record's
    /// removal (see `redo`: sled's transactions cost a synced write each).
    fn persist(&self, ws: WriteSet) -> Result<(), StorageError> {
        let writes = ws.into_writes();
        let t = &self.shared.trees;
        let w = |e: sled::Error| io_err(ErrorSubject::StateMachine, ErrorVerb::Write, &e);
        t.meta.insert(REDO, redo::encode(&writes)).map_err(w)?;
        t.write_all(writes).map_err(w)?;
        t.meta.remove(REDO).map_err(w)?;
        Ok(())
    }

    /// Stores `data` as the current snapshot, durably: openraft may purge the log entries
    /// it replaces as soon as this returns.
    async fn save_snapshot(&self, meta: &SnapshotMeta, data: Vec<u8>) -> Result<(), StorageError> {
        let err = |e: &dyn std::error::Error| {
            io_err(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Write,
                &std::io::Error::other(e.to_string()),
            )
        };
        let meta_raw = serde_json::to_vec(meta).map_err(|e| err(&e))?;
        let mut batch = sled::Batch::default();
        batch.insert(SNAPSHOT_DATA, data);
        batch.insert(SNAPSHOT_META, meta_raw);
        self.shared
            .trees
            .snapshot
            .apply_batch(batch)
            .map_err(|e| err(&e))?;
        super::flush(&self.shared.db).await.map_err(|e| err(&e))?;
        Ok(())
    }

    /// Replaces the whole persisted state with `data`. Only called once `data` is stored
    /// durably as the current snapshot: one batch per tree (a single transaction over
    /// 100k keys is slow in sled), the apply position last; if a crash cuts this short,
    /// `open` sees the snapshot is ahead and redoes it.
    fn persist_all(&self, data: &SmData) -> Result<(), StorageError> {
        let t = &self.shared.trees;
        let w = |e: sled::Error| io_err(ErrorSubject::StateMachine, ErrorVerb::Write, &e);
        fn batch<'a, V: Serialize + 'a>(
            entries: impl Iterator<Item = (&'a String, V)>,
        ) -> Result<sled::Batch, StorageError> {
            let mut b = sled::Batch::default();
            for (k, v) in entries {
                b.insert(k.as_bytes(), serde_json::to_vec(&v).map_err(ser_err)?);
            }
            Ok(b)
        }
        let event_keys: Vec<(String, &Event)> = data
            .state
            .events
            .entries
            .iter()
            .map(|e| (EventLog::key(e.seq), e))
            .collect();
        for (tree, b) in [
            (&t.hosts, batch(data.state.hosts.iter())?),
            (&t.vms, batch(data.state.vms.iter())?),
            (&t.requests, batch(data.requests.iter())?),
            (&t.events, batch(event_keys.iter().map(|(k, e)| (k, e)))?),
        ] {
            tree.clear().map_err(w)?;
            tree.apply_batch(b).map_err(w)?;
        }
        let ws = WriteSet::position(data)?;
        let mut meta = sled::Batch::default();
        meta.insert(LAST_APPLIED, ws.last_applied);
        meta.insert(MEMBERSHIP, ws.membership);
        meta.insert(HA, ws.ha);
        meta.insert(PLACEMENT, ws.placement);
        meta.insert(TOKENS, ws.tokens);
        meta.insert(PLACEMENTS, ws.placements);
        meta.insert(
            OPS,
            serde_json::to_vec(&data.state.operations).map_err(ser_err)?,
        );
        t.meta.apply_batch(meta).map_err(w)
    }
}

/// Serialized keys to write (`Some`) or delete (`None`) for one applied batch.
#[derive(Default)]
struct WriteSet {
    hosts: Vec<(String, Option<Vec<u8>>)>,
    vms: Vec<(String, Option<Vec<u8>>)>,
    requests: Vec<(String, Option<Vec<u8>>)>,
    events: Vec<(String, Option<Vec<u8>>)>,
    last_applied: Vec<u8>,
    membership: Vec<u8>,
    ha: Vec<u8>,
    placement: Vec<u8>,
    tokens: Vec<u8>,
    placements: Vec<u8>,
    ops: Option<Vec<u8>>,
}

impl WriteSet {
    /// Every write of the batch, the apply position and membership last. Consumes the
    /// set: the serialized records move into the writes instead of being copied.
    fn into_writes(self) -> Vec<Write> {
        let keyed = |tree: TreeId, list: Vec<(String, Option<Vec<u8>>)>| {
            list.into_iter()
                .map(move |(k, v)| (tree, k.into_bytes(), v))
        };
        let meta = |key: &[u8], value: Vec<u8>| (TreeId::Meta, key.to_vec(), Some(value));
        let mut all: Vec<Write> = keyed(TreeId::Hosts, self.hosts)
            .chain(keyed(TreeId::Vms, self.vms))
            .chain(keyed(TreeId::Requests, self.requests))
            .chain(keyed(TreeId::Events, self.events))
            .collect();
        all.push(meta(HA, self.ha));
        all.push(meta(PLACEMENT, self.placement));
        all.push(meta(TOKENS, self.tokens));
        all.push(meta(PLACEMENTS, self.placements));
        if let Some(ops) = self.ops {
            all.push(meta(OPS, ops));
        }
        all.push(meta(MEMBERSHIP, self.membership));
        all.push(meta(LAST_APPLIED, self.last_applied));
        all
    }
}

fn ser_err(e: serde_json::Error) -> StorageError {
    io_err(ErrorSubject::StateMachine, ErrorVerb::Write, &e)
}

impl WriteSet {
    /// A write set holding `data`'s apply position and membership.
    fn position(data: &SmData) -> Result<Self, StorageError> {
        Ok(Self {
            last_applied: serde_json::to_vec(&data.last_applied).map_err(ser_err)?,
            membership: serde_json::to_vec(&data.membership).map_err(ser_err)?,
            ha: serde_json::to_vec(&data.state.ha).map_err(ser_err)?,
            placement: serde_json::to_vec(&data.state.placement).map_err(ser_err)?,
            tokens: serde_json::to_vec(&data.state.tokens).map_err(ser_err)?,
            placements: serde_json::to_vec(&data.state.placements).map_err(ser_err)?,
            ..Default::default()
        })
    }

    fn host(&mut self, data: &SmData, name: &str) -> Result<(), StorageError> {
        let v = data
            .state
            .hosts
            .get(name)
            .map(serde_json::to_vec)
            .transpose();
        self.hosts.push((name.to_string(), v.map_err(ser_err)?));
        Ok(())
    }

    fn event(
        &mut self,
        data: &SmData,
        added: u64,
        evicted: Option<u64>,
    ) -> Result<(), StorageError> {
        let event = data
            .state
            .events
            .entries
            .iter()
            .rev()
            .find(|e| e.seq == added);
        let v = event.map(serde_json::to_vec).transpose().map_err(ser_err)?;
        self.events.push((EventLog::key(added), v));
        if let Some(old) = evicted {
            self.events.push((EventLog::key(old), None));
        }
        Ok(())
    }

    fn ops(&mut self, data: &SmData) -> Result<(), StorageError> {
        self.ops = Some(serde_json::to_vec(&data.state.operations).map_err(ser_err)?);
        Ok(())
    }

    fn vm(&mut self, data: &SmData, name: &str) -> Result<(), StorageError> {
        let v = data.state.vms.get(name).map(serde_json::to_vec).transpose();
        self.vms.push((name.to_string(), v.map_err(ser_err)?));
        Ok(())
    }

    fn request(&mut self, id: &str, r: Option<&Remembered>) -> Result<(), StorageError> {
        let v = r.map(serde_json::to_vec).transpose().map_err(ser_err)?;
        self.requests.push((id.to_string(), v));
        Ok(())
    }
}

impl StateMachineStore {
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
        self.persist_all(data)?;
        *self.write_data() = data.clone();
        Ok(())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        // Cloning and serializing a large state takes long enough (a second for 100k VMs in
        // a debug build) to starve Raft heartbeats if it ran on an async worker.
        let view = self.view();
        let built = tokio::task::spawn_blocking(move || {
            let data = view.read(|d| d.clone());
            serde_json::to_vec(&data).map(|bytes| (data, bytes))
        })
        .await;
        let snap_err = |e: &dyn std::error::Error| {
            io_err(
                ErrorSubject::Snapshot(None),
                ErrorVerb::Write,
                &std::io::Error::other(e.to_string()),
            )
        };
        let (data, bytes) = built.map_err(|e| snap_err(&e))?.map_err(|e| snap_err(&e))?;
        let snapshot_id = match data.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, bytes.len()),
            None => format!("empty-{}", bytes.len()),
        };
        let meta = SnapshotMeta {
            last_log_id: data.last_applied,
            last_membership: data.membership.clone(),
            snapshot_id,
        };
        self.save_snapshot(&meta, bytes.clone()).await?;
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
        let ws = {
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
                        }
                        results.push(Ok(Reply::Batch(each)));
                    }
                    EntryPayload::Normal(req) => {
                        let at = Slot::new(entry.log_id.index, 0);
                        results.push(data.apply_request(at, req, &mut applied));
                    }
                    EntryPayload::Membership(m) => {
                        data.membership = StoredMembership::new(Some(entry.log_id), m);
                        results.push(Ok(Reply::Nothing));
                    }
                }
            }
            // Serialize only what this batch touched, under the lock, so the write set is
            // exactly the state readers now see.
            let mut ws = WriteSet::position(&data)?;
            for t in &applied.touched {
                match t {
                    Touched::Host(n) => ws.host(&data, n)?,
                    Touched::Vm(n) => ws.vm(&data, n)?,
                    Touched::AllHosts => {
                        let names: Vec<String> = data.state.hosts.keys().cloned().collect();
                        for n in &names {
                            ws.host(&data, n)?;
                        }
                    }
                    Touched::Event { added, evicted } => ws.event(&data, *added, *evicted)?,
                    Touched::Ops => ws.ops(&data)?,
                    Touched::Many(_) | Touched::Nothing => {}
                }
            }
            for (id, keep) in &applied.request_writes {
                let remembered = if *keep { data.requests.get(id) } else { None };
                ws.request(id, remembered)?;
            }
            ws
        };
        self.persist(ws)?;
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
        let bytes = snapshot.into_inner();
        let rd = |e: serde_json::Error| {
            io_err(
                ErrorSubject::Snapshot(Some(meta.signature())),
                ErrorVerb::Read,
                &e,
            )
        };
        let mut new_data: SmData = serde_json::from_slice(&bytes).map_err(rd)?;
        new_data.last_applied = meta.last_log_id;
        new_data.membership = meta.last_membership.clone();
        // The snapshot first, durably: if the rewrite below is cut short, `open` redoes it.
        self.save_snapshot(meta, bytes).await?;
        self.persist_all(&new_data)?;
        *self.write_data() = new_data;
        let _ = self.shared.changes.send(Change::Reset);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let rd = |e: &dyn std::error::Error| {
            io_err(
                ErrorSubject::Snapshot(None),
                ErrorVerb::Read,
                &std::io::Error::other(e.to_string()),
            )
        };
        let tree = &self.shared.trees.snapshot;
        let Some(meta) = tree.get(SNAPSHOT_META).map_err(|e| rd(&e))? else {
            return Ok(None);
        };
        let meta: SnapshotMeta = serde_json::from_slice(&meta).map_err(|e| rd(&e))?;
        let data = tree
            .get(SNAPSHOT_DATA)
            .map_err(|e| rd(&e))?
            .ok_or_else(|| rd(&std::io::Error::other("snapshot data missing")))?;
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data.to_vec())),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{DesiredState, Vm, VmSpec};
    use crate::LogId;
    use openraft::CommittedLeaderId;

    /// A batch cut short by a crash (its redo record stored, some writes not) is written
    /// again on open: the VM and the apply position it carried are there, the record gone.
    #[test]
    fn a_batch_cut_short_is_finished_on_open() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let spec = VmSpec {
            vcpus: 1,
            memory_mib: 64,
        };
        let vm = Vm::new("web", spec, DesiredState::Stopped);
        let applied = Some(LogId::new(CommittedLeaderId::new(1, 1), 7));
        // One handle throughout: `open` reads the trees, and reopening a directory right
        // after a drop can race sled's release of its lock (see tests/store_reopen.rs).
        let db = sled::open(dir.path())?;
        {
            let writes = vec![
                (TreeId::Vms, b"web".to_vec(), Some(serde_json::to_vec(&vm)?)),
                (
                    TreeId::Meta,
                    LAST_APPLIED.to_vec(),
                    Some(serde_json::to_vec(&applied)?),
                ),
            ];
            // Only the record made it to disk, none of its writes.
            db.open_tree("sm_meta")?
                .insert(REDO, redo::encode(&writes))?;
            db.flush()?;
        }
        let sm = StateMachineStore::open(&db)?;
        sm.view().read(|d| {
            assert_eq!(d.state.vms.get("web"), Some(&vm));
            assert_eq!(d.last_applied, applied);
        });
        assert_eq!(db.open_tree("sm_meta")?.get(REDO)?, None);
        Ok(())
    }
}
