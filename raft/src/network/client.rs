//! The openraft network factory: one lazily connected tonic `Channel` per peer, cached,
//! which reconnects by itself after transport errors.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drover_proto::raft::v1::raft_service_client::RaftServiceClient;
use drover_proto::raft::v1::RaftPayload;
use drover_proto::transport::{endpoint, Tls, TlsHandle};
use openraft::error::{
    InstallSnapshotError, NetworkError, PayloadTooLarge, RPCError, RaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::Channel;

use super::MAX_MESSAGE_BYTES;
use crate::{NodeId, TypeConfig};

/// Builds a lazily connecting channel to a controller's gRPC address (`host:port`),
/// with mutual TLS when the cluster uses it.
pub fn peer_channel(addr: &str, tls: Option<&Tls>) -> Result<Channel, tonic::transport::Error> {
    Ok(endpoint(addr, tls)?
        .connect_timeout(Duration::from_millis(500))
        .connect_lazy())
}

#[derive(Debug, Clone, Default)]
pub struct Network {
    channels: Arc<Mutex<HashMap<(NodeId, String), Channel>>>,
    tls: TlsHandle,
}

impl Network {
    pub fn new(tls: TlsHandle) -> Self {
        Self {
            channels: Default::default(),
            tls,
        }
    }

    /// The one channel to peer `target` at `addr`, made on first use.
    pub(crate) fn channel(
        &self,
        target: NodeId,
        addr: &str,
    ) -> Result<Channel, tonic::transport::Error> {
        let key = (target, addr.to_string());
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        match channels.get(&key) {
            Some(c) => Ok(c.clone()),
            None => peer_channel(addr, self.tls.as_deref()).inspect(|c| {
                channels.insert(key, c.clone());
            }),
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        let channel = self.channel(target, &node.addr);
        PeerClient {
            target,
            detached: Detached::default(),
            client: channel.map(|c| {
                RaftServiceClient::new(c)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES)
            }),
        }
    }
}

/// How long a detached AppendEntries may run: far beyond openraft's own wait, short
/// enough that a peer that never answers does not hold tasks for long.
const DETACHED_DEADLINE: Duration = Duration::from_secs(2);
/// Detached AppendEntries calls in flight per peer, at most.
const MAX_DETACHED: usize = 8;

/// A peer's detached calls: a permit is one of them, released on drop.
#[derive(Debug, Clone)]
struct Detached(Arc<tokio::sync::Semaphore>);

impl Default for Detached {
    fn default() -> Self {
        Self(Arc::new(tokio::sync::Semaphore::new(MAX_DETACHED)))
    }
}

impl Detached {
    /// Waits for one of the peer's [`MAX_DETACHED`] slots.
    async fn acquire(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        Arc::clone(&self.0).acquire_owned().await.ok()
    }
}

/// One peer, as openraft's replication and election tasks see it.
pub struct PeerClient {
    target: NodeId,
    detached: Detached,
    /// An invalid address is reported on every call rather than at construction, which
    /// openraft's factory signature cannot fail.
    client: Result<RaftServiceClient<Channel>, tonic::transport::Error>,
}

type Call =
    fn(
        &mut RaftServiceClient<Channel>,
        RaftPayload,
    ) -> futures::future::BoxFuture<'_, Result<tonic::Response<RaftPayload>, tonic::Status>>;

impl PeerClient {
    /// One RPC. `entries` is how many log entries `req` carries (AppendEntries), so that a
    /// payload too large for one message becomes openraft's `PayloadTooLarge` (it retries
    /// with fewer) instead of looking like an unreachable peer (it would back off, and
    /// retry the same batch forever).
    async fn call<Req, Resp, E>(
        &mut self,
        req: &Req,
        entries: usize,
        option: &RPCOption,
        call: Call,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let client = match &mut self.client {
            Ok(c) => c,
            Err(e) => return Err(RPCError::Unreachable(Unreachable::new(e))),
        };
        let data = serde_json::to_vec(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        if data.len() > MAX_MESSAGE_BYTES {
            return Err(oversized(data.len(), entries));
        }
        let fut = call(client, RaftPayload { data });
        let reply = match tokio::time::timeout(option.hard_ttl(), fut).await {
            Err(elapsed) => return Err(late(&elapsed)),
            Ok(Err(status)) => return Err(failed(status, entries)),
            Ok(Ok(reply)) => reply.into_inner(),
        };
        decode(self.target, &reply)
    }
}

/// How long replication to a peer pauses after it could not be reached. openraft's
/// default is 500 ms: one refused or failed call, and the follower heard nothing for longer
/// than any election timeout and campaigned (issue 10, session 8: a 10-minute run went
/// from term 1 to 49). Below the shortest election timeout, a live follower keeps hearing
/// from the leader; a dead one costs a refused connect every 50 ms.
const UNREACHABLE_BACKOFF: Duration = Duration::from_millis(50);

/// A call that outlived its deadline: the peer is slow, not gone. Reported as a network
/// error, which openraft retries at the next heartbeat; as `Unreachable` it would pause
/// replication to that peer (see [`UNREACHABLE_BACKOFF`]).
fn late<E: std::error::Error>(
    elapsed: &tokio::time::error::Elapsed,
) -> RPCError<NodeId, BasicNode, E> {
    RPCError::Network(NetworkError::new(elapsed))
}

impl RaftNetwork<TypeConfig> for PeerClient {
    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new(std::iter::repeat(UNREACHABLE_BACKOFF))
    }

    /// openraft 0.9 bounds every AppendEntries by its heartbeat interval (20 ms by
    /// default) and drops the call when that passes. Dropping a tonic call cancels it, so
    /// on a busy machine, where a round trip with the follower's fsync takes longer, the
    /// request was often never delivered at all: the follower heard nothing for a whole
    /// election timeout and campaigned (issue 10: the term went from 1 to 7 in 15 s). The
    /// call therefore runs on a task of its own that outlives openraft's timeout (up to
    /// [`DETACHED_DEADLINE`]): the entries and the heartbeat still reach the follower, and
    /// only the late answer is lost (openraft sends again; Raft appends are idempotent).
    /// At most [`MAX_DETACHED`] such calls run per peer; beyond that the call waits for a
    /// slot before it sends anything, and openraft's own timeout ends the wait. Sending
    /// it in place, cancellable, was worse: every cancelled call resets an HTTP/2 stream,
    /// and past h2's limit of remotely reset streams the follower's server closed the
    /// whole connection (issue 10, session 8: term 513 in four minutes); failing at once
    /// instead made openraft retry in a tight loop, reading entries each time (term 629).
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let entries = rpc.entries.len();
        if self.detached.0.available_permits() == 0 {
            // Every slot holds a call this peer has not answered: openraft's timeout will
            // end this wait before anything is sent.
            tracing::debug!(
                target_node = self.target,
                "all call slots to the peer are busy"
            );
            metrics::counter!("drover_raft_peer_slots_full_total").increment(1);
        }
        let Some(slot) = self.detached.acquire().await else {
            let closed = std::io::Error::other("the peer's call slots are closed");
            return Err(RPCError::Network(NetworkError::new(&closed)));
        };
        let mut client = match &self.client {
            Ok(c) => c.clone(),
            Err(e) => return Err(RPCError::Unreachable(Unreachable::new(e))),
        };
        let data = encode_entries(rpc)
            .await
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        if data.len() > MAX_MESSAGE_BYTES {
            return Err(oversized(data.len(), entries));
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let call = client.append_entries(RaftPayload { data });
            let answer = tokio::time::timeout(DETACHED_DEADLINE, call).await;
            drop(slot);
            // openraft may have stopped waiting: then nobody wants the answer.
            let _ = tx.send(answer);
        });
        let reply = match rx.await {
            Ok(Ok(Ok(reply))) => reply.into_inner(),
            Ok(Ok(Err(status))) => return Err(failed(status, entries)),
            Ok(Err(elapsed)) => return Err(late(&elapsed)),
            Err(dropped) => return Err(RPCError::Network(NetworkError::new(&dropped))),
        };
        decode(self.target, &reply)
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call(&rpc, 0, &option, |c, p| Box::pin(c.install_snapshot(p)))
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(&rpc, 0, &option, |c, p| Box::pin(c.vote(p)))
            .await
    }
}

/// A peer's answer: its JSON `Result`, whose `Err` is the peer's own Raft error.
fn decode<Resp, E>(
    target: NodeId,
    reply: &RaftPayload,
) -> Result<Resp, RPCError<NodeId, BasicNode, E>>
where
    Resp: DeserializeOwned,
    E: std::error::Error + DeserializeOwned,
{
    let result: Result<Resp, E> = serde_json::from_slice(&reply.data)
        .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
    result.map_err(|e| RPCError::RemoteError(RemoteError::new(target, e)))
}

/// A payload of `bytes` that exceeds the message limit: with entries, openraft is told how
/// many would fit (at least one); without, it is a plain error, never "unreachable".
/// An AppendEntries as JSON; one with entries is encoded on the blocking pool (see
/// `BLOCKING_CODEC_BYTES`: a heartbeat has none and is a few hundred bytes).
async fn encode_entries(rpc: AppendEntriesRequest<TypeConfig>) -> std::io::Result<Vec<u8>> {
    if rpc.entries.is_empty() {
        return serde_json::to_vec(&rpc).map_err(std::io::Error::from);
    }
    tokio::task::spawn_blocking(move || serde_json::to_vec(&rpc).map_err(std::io::Error::from))
        .await
        .map_err(std::io::Error::other)?
}

fn oversized<E: std::error::Error>(bytes: usize, entries: usize) -> RPCError<NodeId, BasicNode, E> {
    if entries == 0 {
        let why = std::io::Error::other(format!(
            "payload of {bytes} bytes exceeds the {MAX_MESSAGE_BYTES}-byte message limit"
        ));
        return RPCError::Network(NetworkError::new(&why));
    }
    let fit = (entries as u128 * MAX_MESSAGE_BYTES as u128 / bytes.max(1) as u128) as u64;
    RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(fit.max(1)))
}

/// A failed call: a message-size refusal (tonic says `OutOfRange`, from either end) is the
/// payload's fault, not the peer's; anything else means the peer is not reachable now.
fn failed<E: std::error::Error>(
    status: tonic::Status,
    entries: usize,
) -> RPCError<NodeId, BasicNode, E> {
    if status.code() != tonic::Code::OutOfRange {
        return RPCError::Unreachable(Unreachable::new(&status));
    }
    if entries > 1 {
        let half = (entries / 2) as u64;
        return RPCError::PayloadTooLarge(PayloadTooLarge::new_entries_hint(half));
    }
    RPCError::Network(NetworkError::new(&status))
}

#[cfg(test)]
mod tests {
    use super::*;

    type E = RaftError<NodeId>;

    fn hint(e: RPCError<NodeId, BasicNode, E>) -> Option<u64> {
        match e {
            RPCError::PayloadTooLarge(p) => Some(p.entries_hint()),
            _ => None,
        }
    }

    #[tokio::test]
    async fn detached_calls_are_bounded_and_released() {
        let d = Detached::default();
        let mut slots = Vec::new();
        for _ in 0..MAX_DETACHED {
            slots.push(d.acquire().await.expect("slot"));
        }
        let more = tokio::time::timeout(Duration::from_millis(20), d.acquire()).await;
        assert!(more.is_err(), "one more than the bound must wait");
        drop(slots);
        assert!(d.acquire().await.is_some(), "released on drop");
    }

    #[test]
    fn an_oversized_batch_is_shrunk_not_called_unreachable() {
        // Twice the limit with 100 entries: 50 fit.
        assert_eq!(hint(oversized::<E>(2 * MAX_MESSAGE_BYTES, 100)), Some(50));
        // Even one entry too big gets a hint of one, never zero.
        assert_eq!(hint(oversized::<E>(10 * MAX_MESSAGE_BYTES, 3)), Some(1));
        assert!(matches!(
            oversized::<E>(2 * MAX_MESSAGE_BYTES, 0),
            RPCError::Network(_)
        ));
    }

    /// A slow peer is not a gone peer: a call past its deadline must not pause
    /// replication, and a pause for a gone one must end before a follower's shortest
    /// election timeout (with openraft's default 500 ms, a 10-minute run flapped).
    #[tokio::test]
    async fn a_late_answer_does_not_silence_the_follower() {
        let elapsed = tokio::time::timeout(Duration::ZERO, std::future::pending::<()>())
            .await
            .unwrap_err();
        assert!(matches!(late::<E>(&elapsed), RPCError::Network(_)));
        assert!(
            UNREACHABLE_BACKOFF.as_millis()
                < u128::from(crate::RaftTimings::default().election_min_ms),
            "the backoff outlasts the shortest election timeout"
        );
    }

    #[test]
    fn a_size_refusal_from_the_peer_is_told_apart_from_an_unreachable_peer() {
        let too_long = tonic::Status::out_of_range("decoded message length too large");
        assert_eq!(hint(failed::<E>(too_long.clone(), 40)), Some(20));
        assert!(matches!(failed::<E>(too_long, 0), RPCError::Network(_)));
        let down = tonic::Status::unavailable("connection refused");
        assert!(matches!(failed::<E>(down, 40), RPCError::Unreachable(_)));
    }
}
