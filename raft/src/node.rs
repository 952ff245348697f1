//! `RaftNode`: one controller's Raft member — the openraft handle over the sled store and
//! the tonic network — plus the write path every API handler uses (local when leader,
//! forwarded to the leader otherwise).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use drover_proto::raft::v1::raft_service_client::RaftServiceClient;
use drover_proto::raft::v1::RaftPayload;
use openraft::error::{InitializeError, RaftError};
use openraft::{BasicNode, Config, SnapshotPolicy};

use crate::snapshot_schedule::SnapshotSchedule;
use serde::{Deserialize, Serialize};

use drover_proto::transport::{Tls, TlsHandle};

use crate::command::{ApplyResult, Request};
use crate::election_guard::ElectionGuard;
use crate::network::{
    client::peer_channel, Network, MAX_COMMAND_BYTES, MAX_MESSAGE_BYTES, MAX_PAYLOAD_ENTRIES,
};
use crate::store::{self, OpenError, StateView};
use crate::write_batch::WriteBatcher;
use crate::{NodeId, Raft, RaftMetrics};

/// Raft timings. openraft 0.9 makes a follower wait the leader lease (= the maximum
/// election timeout) plus a random election timeout after the last heartbeat before it
/// campaigns, so failover takes about 1.5–2.5 × the maximum. 80–160 ms with 20 ms
/// heartbeats measured p50 379 ms / p99 899 ms for leader loss on this machine kind
/// (BENCHMARKS.md); `--raft-*` flags lengthen them for slow or distant networks.
#[derive(Debug, Clone)]
pub struct RaftTimings {
    pub heartbeat_ms: u64,
    pub election_min_ms: u64,
    pub election_max_ms: u64,
}

impl Default for RaftTimings {
    fn default() -> Self {
        Self {
            heartbeat_ms: 20,
            election_min_ms: 80,
            election_max_ms: 160,
        }
    }
}

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub id: NodeId,
    /// This node's gRPC address as peers reach it.
    pub address: String,
    pub data_dir: PathBuf,
    pub timings: RaftTimings,
    /// When snapshots are taken; the log up to a snapshot is then purged, keeping a tail
    /// for followers that are only a little behind.
    pub snapshots: SnapshotSchedule,
    /// Mutual TLS for all controller-to-controller traffic (`None`: plaintext).
    pub tls: TlsHandle,
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error("Invalid Raft configuration: {0}")]
    Config(String),
    #[error("Raft failed: {0}")]
    Raft(String),
}

/// Why a write did not produce an apply result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum WriteError {
    #[error("This controller is not the leader (leader: {})", leader_addr.as_deref().unwrap_or("unknown"))]
    NotLeader {
        leader_id: Option<NodeId>,
        leader_addr: Option<String>,
    },
    #[error("Raft is shutting down or failed: {0}")]
    Raft(String),
    #[error("Command is {bytes} bytes; at most {max} are accepted")]
    TooLarge { bytes: usize, max: usize },
    #[error(
        "No answer within {secs} s (leadership changed?): the write may or may not be \
         committed; retry it with the same request id"
    )]
    Unknown { secs: u64 },
}

#[derive(Clone)]
pub struct RaftNode {
    inner: Arc<Inner>,
}

/// A handle that does not keep the node alive (background schedules hold this).
pub(crate) struct WeakRaftNode(std::sync::Weak<Inner>);

impl WeakRaftNode {
    pub(crate) fn upgrade(&self) -> Option<RaftNode> {
        self.0.upgrade().map(|inner| RaftNode { inner })
    }

    /// The loop step of every periodic node task: waits for `ticker`'s next tick, then
    /// returns the node and its metrics, or `None` once the node is dropped or its Raft
    /// has stopped (the task should end).
    pub(crate) async fn tick(
        &self,
        ticker: &mut tokio::time::Interval,
    ) -> Option<(RaftNode, RaftMetrics)> {
        ticker.tick().await;
        let node = self.upgrade()?;
        let m = node.metrics();
        m.running_state.is_ok().then_some((node, m))
    }
}

/// A ticker for periodic node tasks: a late tick is delayed, never bunched up.
pub(crate) fn ticker(every: std::time::Duration) -> tokio::time::Interval {
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker
}

struct Inner {
    id: NodeId,
    tls: TlsHandle,
    raft: Raft,
    view: StateView,
    /// Every local write goes through it (group commit).
    writes: WriteBatcher,
    guard: ElectionGuard,
}

impl std::fmt::Debug for RaftNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftNode")
            .field("id", &self.inner.id)
            .finish_non_exhaustive()
    }
}

impl RaftNode {
    /// Opens the store in `data_dir` and starts the Raft member. It takes part in the
    /// cluster once peers reach it or [`RaftNode::bootstrap`] is called.
    pub async fn start(config: &NodeConfig) -> Result<Self, NodeError> {
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            NodeError::Config(format!(
                "cannot create data dir {}: {e}",
                config.data_dir.display()
            ))
        })?;
        let (log, sm) = store::open(&config.data_dir.join("store"))?;
        let view = sm.view();
        let guard = ElectionGuard::new(log.flush_watch());
        let network = Network::new(config.tls.clone());
        let raft_config = Config {
            cluster_name: "drover".into(),
            heartbeat_interval: config.timings.heartbeat_ms,
            election_timeout_min: config.timings.election_min_ms,
            election_timeout_max: config.timings.election_max_ms,
            // Whole snapshots in few chunks: a chunk that outlives this timeout is retried
            // forever (openraft trap noted in shared/notes/crates.md).
            install_snapshot_timeout: 10_000,
            snapshot_max_chunk_size: 8 * 1024 * 1024,
            // Taken by `snapshot_schedule`, whose interval grows with the state.
            snapshot_policy: SnapshotPolicy::Never,
            // Keep enough log that a follower installing a snapshot can still catch up
            // without a second snapshot (the purge-during-install trap).
            max_in_snapshot_log_to_keep: config.snapshots.min_logs / 2,
            // With MAX_COMMAND_BYTES this bounds a batch below the message limit.
            max_payload_entries: MAX_PAYLOAD_ENTRIES,
            ..Default::default()
        }
        .validate()
        .map_err(|e| NodeError::Config(e.to_string()))?;
        let raft = Raft::new(config.id, Arc::new(raft_config), network.clone(), log, sm)
            .await
            .map_err(|e| NodeError::Raft(e.to_string()))?;
        let node = Self {
            inner: Arc::new(Inner {
                id: config.id,
                tls: config.tls.clone(),
                writes: WriteBatcher::start(raft.clone()),
                guard: guard.clone(),
                raft: raft.clone(),
                view,
            }),
        };
        tokio::spawn(guard.run(raft, config.id));
        tokio::spawn(crate::leader_alive::run(
            WeakRaftNode(Arc::downgrade(&node.inner)),
            network,
        ));
        tokio::spawn(crate::snapshot_schedule::run(
            WeakRaftNode(Arc::downgrade(&node.inner)),
            config.snapshots,
        ));
        tokio::spawn(crate::stall_probe::run(config.id));
        Ok(node)
    }

    /// etcd-style bootstrap: a pristine node initializes the cluster with the given
    /// members. Every initial member may do it (identical configs are safe in openraft);
    /// a node that already has state skips it, so a restart never re-bootstraps.
    pub async fn bootstrap(&self, members: &BTreeMap<NodeId, String>) -> Result<bool, NodeError> {
        let nodes: BTreeMap<NodeId, BasicNode> = members
            .iter()
            .map(|(id, addr)| (*id, BasicNode { addr: addr.clone() }))
            .collect();
        match self.inner.raft.initialize(nodes).await {
            Ok(()) => Ok(true),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(false),
            Err(e) => Err(NodeError::Raft(e.to_string())),
        }
    }

    pub fn id(&self) -> NodeId {
        self.inner.id
    }

    /// When this node may campaign (disk stalls, leadership transfers).
    pub(crate) fn election_guard(&self) -> &ElectionGuard {
        &self.inner.guard
    }

    /// The TLS identity this node uses towards its peers (and the API uses to reach them).
    pub fn tls(&self) -> Option<&Tls> {
        self.inner.tls.as_deref()
    }

    pub fn raft(&self) -> &Raft {
        &self.inner.raft
    }

    pub fn view(&self) -> &StateView {
        &self.inner.view
    }

    pub fn metrics(&self) -> RaftMetrics {
        self.inner.raft.metrics().borrow().clone()
    }

    /// The current leader and its address, as this node knows them.
    pub fn leader(&self) -> Option<(NodeId, String)> {
        let m = self.metrics();
        let leader = m.current_leader?;
        let addr = m
            .membership_config
            .membership()
            .get_node(&leader)
            .map(|n| n.addr.clone())?;
        Some((leader, addr))
    }

    /// Commits `req` here if this node leads, else forwards it once to the leader.
    pub async fn write(&self, req: Request) -> Result<ApplyResult, WriteError> {
        match self.write_local(req.clone()).await {
            Err(WriteError::NotLeader {
                leader_id,
                leader_addr: Some(addr),
            }) => match forward(&addr, &req, self.tls()).await {
                Ok(result) => result,
                Err(e) => {
                    tracing::debug!(leader = %addr, error = %e, "forwarding a write failed");
                    Err(WriteError::NotLeader {
                        leader_id,
                        leader_addr: Some(addr),
                    })
                }
            },
            other => other,
        }
    }

    /// Commits `req` only if this node is the leader. Writes that arrive together share a
    /// log entry (see [`crate::write_batch`]); each still gets its own result.
    pub async fn write_local(&self, req: Request) -> Result<ApplyResult, WriteError> {
        let bytes = check_size(&req)?;
        self.inner.writes.submit(req, bytes).await
    }

    pub async fn shutdown(&self) {
        if let Err(e) = self.inner.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }
}

/// Refuses a request whose log entry would exceed [`MAX_COMMAND_BYTES`]; returns its size.
fn check_size(req: &Request) -> Result<usize, WriteError> {
    // Entries are JSON in the log and on the wire; the count is what they will weigh.
    let bytes = serde_json::to_vec(req).map_or(usize::MAX, |v| v.len());
    if bytes > MAX_COMMAND_BYTES {
        return Err(WriteError::TooLarge {
            bytes,
            max: MAX_COMMAND_BYTES,
        });
    }
    Ok(bytes)
}

#[derive(Debug, thiserror::Error)]
enum ForwardError {
    #[error("transport: {0}")]
    Transport(String),
    #[error("malformed reply: {0}")]
    Decode(String),
}

async fn forward(
    addr: &str,
    req: &Request,
    tls: Option<&Tls>,
) -> Result<Result<ApplyResult, WriteError>, ForwardError> {
    let channel = peer_channel(addr, tls).map_err(|e| ForwardError::Transport(e.to_string()))?;
    let mut client = RaftServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE_BYTES);
    let data = serde_json::to_vec(req).map_err(|e| ForwardError::Decode(e.to_string()))?;
    let reply = client
        .forward_write(RaftPayload { data })
        .await
        .map_err(|s| ForwardError::Transport(s.to_string()))?;
    serde_json::from_slice(&reply.into_inner().data)
        .map_err(|e| ForwardError::Decode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Command;

    fn add_host(address: String) -> Request {
        Request::anonymous(Command::AddHost {
            name: "h1".into(),
            address,
            labels: Default::default(),
        })
    }

    #[test]
    fn a_command_over_the_limit_is_refused_before_it_reaches_the_log() {
        assert!(check_size(&add_host("127.0.0.1:1".into())).is_ok());
        match check_size(&add_host("a".repeat(MAX_COMMAND_BYTES))) {
            Err(WriteError::TooLarge { bytes, max }) => {
                assert!(bytes > MAX_COMMAND_BYTES);
                assert_eq!(max, MAX_COMMAND_BYTES);
            }
            other => panic!("not refused: {other:?}"),
        }
    }
}
