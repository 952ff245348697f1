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
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> PeerClient {
        let key = (target, node.addr.clone());
        let channel = {
            let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
            match channels.get(&key) {
                Some(c) => Ok(c.clone()),
                None => peer_channel(&node.addr, self.tls.as_deref()).inspect(|c| {
                    channels.insert(key, c.clone());
                }),
            }
        };
        PeerClient {
            target,
            client: channel.map(|c| {
                RaftServiceClient::new(c)
                    .max_decoding_message_size(MAX_MESSAGE_BYTES)
                    .max_encoding_message_size(MAX_MESSAGE_BYTES)
            }),
        }
    }
}

/// One peer, as openraft's replication and election tasks see it.
pub struct PeerClient {
    target: NodeId,
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
            Err(elapsed) => return Err(RPCError::Unreachable(Unreachable::new(&elapsed))),
            Ok(Err(status)) => return Err(failed(status, entries)),
            Ok(Ok(reply)) => reply.into_inner(),
        };
        let result: Result<Resp, E> = serde_json::from_slice(&reply.data)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let entries = rpc.entries.len();
        self.call(&rpc, entries, &option, |c, p| Box::pin(c.append_entries(p)))
            .await
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

/// A payload of `bytes` that exceeds the message limit: with entries, openraft is told how
/// many would fit (at least one); without, it is a plain error, never "unreachable".
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

    #[test]
    fn a_size_refusal_from_the_peer_is_told_apart_from_an_unreachable_peer() {
        let too_long = tonic::Status::out_of_range("decoded message length too large");
        assert_eq!(hint(failed::<E>(too_long.clone(), 40)), Some(20));
        assert!(matches!(failed::<E>(too_long, 0), RPCError::Network(_)));
        let down = tonic::Status::unavailable("connection refused");
        assert!(matches!(failed::<E>(down, 40), RPCError::Unreachable(_)));
    }
}
