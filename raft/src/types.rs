//! The openraft type configuration: what a log entry carries and what applying it returns.

use crate::command::{ApplyResult, Request};

/// A controller's identity in the Raft group (`--id`).
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// drover's Raft: commands in, apply results out, controllers addressed by their
    /// gRPC address, snapshots as files.
    pub TypeConfig:
        D = Request,
        R = ApplyResult,
        NodeId = NodeId,
        Node = openraft::BasicNode,
        SnapshotData = crate::store::SnapshotFile,
);

/// The Raft handle every controller holds.
pub type Raft = openraft::Raft<TypeConfig>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type LogId = openraft::LogId<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type Vote = openraft::Vote<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, openraft::BasicNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, openraft::BasicNode>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type RaftMetrics = openraft::RaftMetrics<NodeId, openraft::BasicNode>;
