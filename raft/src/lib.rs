//! drover's replicated cluster state.
//!
//! - [`model`]: hosts, VMs and storage pools; [`command`]: the changes to them; `apply`: the
//!   deterministic state transition every controller runs on every committed entry.
//! - [`store`]: the sled-backed openraft log store and state machine.
//! - [`network`]: Raft RPCs over tonic; [`node`]: one controller's Raft member and write path;
//!   [`write_batch`]: group commit of concurrent writes into one log entry.

mod apply;
mod apply_disks;
mod apply_drill_schedules;
mod apply_drills;
mod apply_images;
mod apply_leader_drill;
mod apply_migration_drill;
mod apply_networks;
mod apply_pools;
mod apply_security_groups;
mod apply_tokens;
mod apply_vm_create;
pub mod backup;
pub mod command;
pub mod dedup;
pub mod election_guard;
mod leader_alive;
pub mod membership;
pub mod model;
pub mod network;
pub mod node;
pub mod snapshot_schedule;
mod stall_probe;
pub mod store;
mod types;
pub mod write_batch;

pub use apply::Touched;
pub use command::{wall_clock_ms, ApplyError, ApplyResult, Command, ImageImported, Reply, Request};
pub use membership::MembershipError;
pub use node::{NodeConfig, NodeError, RaftNode, RaftTimings, WriteError};
pub use types::*;
