//! Raft traffic between controllers over tonic (`drover.raft.v1.RaftService`): the client
//! side openraft calls, the service peers call, and write forwarding from followers.

pub(crate) mod client;
mod service;

pub use client::{Network, PeerClient};
pub use service::RaftGrpcService;

/// Largest gRPC message between controllers. openraft sends snapshots in chunks well below
/// this; the cap keeps a confused peer from making us allocate without bound.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Largest command (a request as serialized into the log) a client may propose. Far above
/// any real command (a VM with 32 labels is a few KiB); bounded so that one client cannot
/// bloat the log, and so that a batch always fits in one message (below).
pub const MAX_COMMAND_BYTES: usize = 128 * 1024;

/// Most entries openraft puts in one AppendEntries: with batch entries of up to
/// `MAX_COMMAND_BYTES` each, 300 made AppendEntries of tens of megabytes whenever a
/// follower fell behind, each taking longer than openraft's 20 ms call timeout to encode,
/// send, decode and append — so it was sent again, up to eight times at once, and the
/// follower sank under copies of what it was already doing (issue 10, session 9). 16 keeps
/// a catch-up call near 2 MiB.
pub const MAX_PAYLOAD_ENTRIES: u64 = 16;

/// Payloads at least this big are encoded and decoded on tokio's blocking pool: a JSON
/// pass over megabytes takes milliseconds to hundreds of them, and the async workers
/// (two on a 2-core controller) also run the Raft core and its heartbeats.
pub(crate) const BLOCKING_CODEC_BYTES: usize = 64 * 1024;

/// Room per entry for what openraft wraps around the command (log id, term, JSON keys).
const ENTRY_OVERHEAD_BYTES: usize = 1024;

// A replication batch never exceeds the message size limit: every entry is bounded at
// proposal, and a batch holds a bounded number of them. (Membership entries are bounded by
// the member count.) The client still maps an oversized payload to openraft's
// `PayloadTooLarge`, which shrinks the batch, should this ever be wrong.
const _: () = assert!(
    (MAX_PAYLOAD_ENTRIES as usize) * (MAX_COMMAND_BYTES + ENTRY_OVERHEAD_BYTES)
        <= MAX_MESSAGE_BYTES
);
