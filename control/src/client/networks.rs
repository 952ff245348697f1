//! The client's network calls (`NetworkService`) and VM NIC changes.

use drover_proto::v1 as pb;
use drover_proto::v1::network_service_client::NetworkServiceClient;
use drover_proto::v1::vm_service_client::VmServiceClient;

use super::{with_request_id, Client, ClientError, Read};

/// A change to a network: each is one write, retried with one request id.
#[derive(Debug, Clone)]
pub enum NetworkOp {
    Create(pb::CreateNetworkRequest),
    AddSubnet(pb::AddSubnetRequest),
    RemoveSubnet(pb::RemoveSubnetRequest),
}

/// A change to a VM's NICs.
#[derive(Debug, Clone)]
pub enum NicOp {
    Add(pb::AddNicRequest),
    Remove(pb::RemoveNicRequest),
    SecurityGroups(pb::SetVmSecurityGroupsRequest),
}

impl Client {
    pub async fn network_op(&self, op: NetworkOp) -> Result<pb::Network, ClientError> {
        let rid = self.next_request_id();
        self.call(|c| {
            let op = op.clone();
            let rid = rid.clone();
            async move {
                let mut client = NetworkServiceClient::new(c);
                let resp = match op {
                    NetworkOp::Create(r) => client.create_network(with_request_id(r, &rid)).await,
                    NetworkOp::AddSubnet(r) => client.add_subnet(with_request_id(r, &rid)).await,
                    NetworkOp::RemoveSubnet(r) => {
                        client.remove_subnet(with_request_id(r, &rid)).await
                    }
                };
                resp.map(tonic::Response::into_inner)
            }
        })
        .await
    }

    pub async fn network(&self, name: &str, stale: bool) -> Result<Read<pb::Network>, ClientError> {
        self.call(|c| async move {
            let resp = NetworkServiceClient::new(c)
                .max_decoding_message_size(Self::MAX_RESPONSE_BYTES)
                .get_network(pb::GetNetworkRequest {
                    name: name.to_string(),
                    stale,
                })
                .await?;
            Ok(Read::from_response(resp))
        })
        .await
    }

    pub async fn networks(&self, stale: bool) -> Result<Read<Vec<pb::Network>>, ClientError> {
        self.call(|c| async move {
            let resp = NetworkServiceClient::new(c)
                .max_decoding_message_size(Self::MAX_RESPONSE_BYTES)
                .list_networks(pb::ListNetworksRequest { stale })
                .await?;
            Ok(Read::from_response(resp).map(|r| r.networks))
        })
        .await
    }

    pub async fn delete_network(&self, name: &str) -> Result<(), ClientError> {
        let rid = self.next_request_id();
        self.call(|c| {
            let req = with_request_id(
                pb::DeleteNetworkRequest {
                    name: name.to_string(),
                },
                &rid,
            );
            async move {
                NetworkServiceClient::new(c)
                    .delete_network(req)
                    .await
                    .map(drop)
            }
        })
        .await
    }

    pub async fn nic_op(&self, op: NicOp) -> Result<pb::Vm, ClientError> {
        let rid = self.next_request_id();
        self.call(|c| {
            let op = op.clone();
            let rid = rid.clone();
            async move {
                let mut client =
                    VmServiceClient::new(c).max_decoding_message_size(Self::MAX_RESPONSE_BYTES);
                let resp = match op {
                    NicOp::Add(r) => client.add_nic(with_request_id(r, &rid)).await,
                    NicOp::Remove(r) => client.remove_nic(with_request_id(r, &rid)).await,
                    NicOp::SecurityGroups(r) => {
                        client
                            .set_vm_security_groups(with_request_id(r, &rid))
                            .await
                    }
                };
                resp.map(tonic::Response::into_inner)
            }
        })
        .await
    }
}
