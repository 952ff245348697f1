//! The public gRPC API (`drover.v1`) served by every controller. Writes go through
//! [`RaftNode::write`](drover_raft::RaftNode::write) (forwarded to the leader when needed);
//! reads come from the local state machine, after a quorum check when this node leads.

mod cluster;
mod console;
mod convert;
mod disks;
mod drill;
mod drill_schedules;
mod errors;
mod events;
mod ha;
mod host;
mod http_source;
mod image;
mod leader_drill;
mod network;
mod nics;
mod operation;
mod placement;
mod pool;
mod security_groups;
mod tokens;
mod vm;
mod write;

pub use cluster::ClusterApi;
pub use drill::{DrillApi, PeerQuorum};
pub use host::HostApi;
pub use image::ImageApi;
pub use network::NetworkApi;
pub use operation::OperationApi;
pub use pool::PoolApi;
pub use security_groups::SecurityGroupApi;
pub use tokens::{TokenApi, MAX_TOKEN_TTL};
pub use vm::VmApi;
