//! The client's storage pool calls (`PoolService`).

use drover_proto::v1 as pb;
use drover_proto::v1::pool_service_client::PoolServiceClient;

use super::{with_request_id, Client, ClientError, Read};

impl Client {
    pub async fn create_pool(&self, req: pb::CreatePoolRequest) -> Result<pb::Pool, ClientError> {
        let rid = self.next_request_id();
        self.call(|c| {
            let req = with_request_id(req.clone(), &rid);
            async move {
                PoolServiceClient::new(c)
                    .create_pool(req)
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await
    }

    pub async fn pool(&self, name: &str, stale: bool) -> Result<Read<pb::Pool>, ClientError> {
        self.call(|c| async move {
            let resp = PoolServiceClient::new(c)
                .get_pool(pb::GetPoolRequest {
                    name: name.to_string(),
                    stale,
                })
                .await?;
            Ok(Read::from_response(resp))
        })
        .await
    }

    pub async fn pools(&self, stale: bool) -> Result<Read<Vec<pb::Pool>>, ClientError> {
        self.call(|c| async move {
            let resp = PoolServiceClient::new(c)
                .list_pools(pb::ListPoolsRequest { stale })
                .await?;
            Ok(Read::from_response(resp).map(|r| r.pools))
        })
        .await
    }

    pub async fn delete_pool(&self, name: &str) -> Result<(), ClientError> {
        let rid = self.next_request_id();
        self.call(|c| {
            let req = with_request_id(
                pb::DeletePoolRequest {
                    name: name.to_string(),
                },
                &rid,
            );
            async move { PoolServiceClient::new(c).delete_pool(req).await.map(drop) }
        })
        .await
    }
}
