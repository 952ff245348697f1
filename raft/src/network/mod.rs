//! Raft traffic between controllers over tonic (`drover.raft.v1.RaftService`): the client
//! side openraft calls, the service peers call, and write forwarding from followers.

pub(crate) mod client;
mod service;

pub use client::{Network, PeerClient};
pub use service::RaftGrpcService;

/// Largest gRPC message between controllers. openraft sends snapshots in chunks well below
/// this; the cap keeps a confused peer from making us allocate without bound.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
