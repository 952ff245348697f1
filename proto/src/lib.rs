//! drover's gRPC contracts, generated from `proto/drover/**.proto`.
//!
//! - [`v1`]: the public API (`ClusterService`, `HostService`, `VmService`).
//! - [`agent::v1`]: controller → hostd (`HostAgent`).
//! - [`raft::v1`]: controller ↔ controller Raft traffic (`RaftService`).
//! - [`transport`]: how every hop connects (plaintext or mutual TLS).
//! - [`identity`]: who holds a certificate; [`guard`]: the layer that checks it on every call.
//! - [`pool_path`]: what a storage pool's path may be, for both ends.
//!
//! Conversions to domain types live with the domain types (`drover-raft`), which depend on
//! this crate, not the other way round.

pub mod guard;
pub mod identity;
pub mod ifname;
pub mod pool_path;
pub mod transport;

#[allow(clippy::all, missing_docs)]
pub mod v1 {
    tonic::include_proto!("drover.v1");
}

#[allow(clippy::all, missing_docs)]
pub mod agent {
    pub mod v1 {
        tonic::include_proto!("drover.agent.v1");
    }
}

#[allow(clippy::all, missing_docs)]
pub mod raft {
    pub mod v1 {
        tonic::include_proto!("drover.raft.v1");
    }
}

/// Encoded descriptors of every drover service, for gRPC reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("drover_descriptor");

/// Response metadata key carrying the leader's API address on `UNAVAILABLE`.
pub const LEADER_METADATA_KEY: &str = "x-drover-leader";

/// Request metadata key carrying a client's request id: a retried write with the same id
/// is applied once and answers with the first result.
pub const REQUEST_ID_METADATA_KEY: &str = "x-drover-request-id";

/// Read-response metadata: the applied log index the answer reflects.
pub const APPLIED_INDEX_METADATA_KEY: &str = "x-drover-applied-index";

/// Read-response metadata: the id of the controller that answered.
pub const SERVED_BY_METADATA_KEY: &str = "x-drover-served-by";
