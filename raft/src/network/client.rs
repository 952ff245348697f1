//! The openraft network factory: one lazily connected tonic `Channel` per peer, cached,
//! which reconnects by itself after transport errors.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drover_proto::raft::v1::raft_service_client::RaftServiceClient;
use drover_proto::raft::v1::RaftPayload;
use drover_proto::transport::{endpoint, Tls, TlsHandle};
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
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
    async fn call<Req, Resp, E>(
        &mut self,
        req: &Req,
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
        let fut = call(client, RaftPayload { data });
        let reply = match tokio::time::timeout(option.hard_ttl(), fut).await {
            Err(elapsed) => return Err(RPCError::Unreachable(Unreachable::new(&elapsed))),
            Ok(Err(status)) => return Err(RPCError::Unreachable(Unreachable::new(&status))),
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
        self.call(&rpc, &option, |c, p| Box::pin(c.append_entries(p)))
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
        self.call(&rpc, &option, |c, p| Box::pin(c.install_snapshot(p)))
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call(&rpc, &option, |c, p| Box::pin(c.vote(p))).await
    }
}
