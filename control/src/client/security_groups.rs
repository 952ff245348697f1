//! The client's security group calls (`SecurityGroupService`).

use drover_proto::v1 as pb;
use drover_proto::v1::security_group_service_client::SecurityGroupServiceClient;

use super::{with_request_id, Client, ClientError, Read};

impl Client {
    pub async fn put_security_group(
        &self,
        req: pb::PutSecurityGroupRequest,
    ) -> Result<pb::SecurityGroup, ClientError> {
        let rid = self.next_request_id();
        self.call(|c| {
            let req = with_request_id(req.clone(), &rid);
            async move {
                SecurityGroupServiceClient::new(c)
                    .put_security_group(req)
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await
    }

    pub async fn security_groups(
        &self,
        stale: bool,
    ) -> Result<Read<Vec<pb::SecurityGroup>>, ClientError> {
        self.call(|c| async move {
            let resp = SecurityGroupServiceClient::new(c)
                .max_decoding_message_size(Self::MAX_RESPONSE_BYTES)
                .list_security_groups(pb::ListSecurityGroupsRequest { stale })
                .await?;
            Ok(Read::from_response(resp).map(|r| r.groups))
        })
        .await
    }

    pub async fn delete_security_group(&self, name: &str) -> Result<(), ClientError> {
        let rid = self.next_request_id();
        self.call(|c| {
            let req = with_request_id(
                pb::DeleteSecurityGroupRequest {
                    name: name.to_string(),
                },
                &rid,
            );
            async move {
                SecurityGroupServiceClient::new(c)
                    .delete_security_group(req)
                    .await
                    .map(drop)
            }
        })
        .await
    }
}
