//! The client's drill calls (`DrillService`).

use drover_proto::v1 as pb;
use drover_proto::v1::drill_service_client::DrillServiceClient;

use super::{Client, ClientError};

impl Client {
    /// What failing `host` now would do (the leader answers).
    pub async fn plan_host_failure(&self, host: &str) -> Result<pb::HostFailurePlan, ClientError> {
        self.call(|c| async move {
            DrillServiceClient::new(c)
                .plan_host_failure(pb::PlanHostFailureRequest {
                    host: host.to_string(),
                })
                .await
                .map(tonic::Response::into_inner)
        })
        .await
    }
}
