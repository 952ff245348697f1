//! The client's drill calls (`DrillService`).

use drover_proto::v1 as pb;
use drover_proto::v1::drill_service_client::DrillServiceClient;

use super::{Client, ClientError, Read};

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

    /// Starts a host-failure drill; the answer is its operation.
    pub async fn start_host_failure(
        &self,
        host: &str,
        mode: &str,
        max_duration_ms: u64,
    ) -> Result<pb::Operation, ClientError> {
        self.call(|c| async move {
            DrillServiceClient::new(c)
                .start_host_failure(pb::StartHostFailureRequest {
                    host: host.to_string(),
                    mode: mode.to_string(),
                    max_duration_ms,
                })
                .await
                .map(tonic::Response::into_inner)
        })
        .await
    }

    /// The drills kept, newest first.
    pub async fn drills(&self, stale: bool) -> Result<Read<Vec<pb::Operation>>, ClientError> {
        self.call(|c| async move {
            let resp = DrillServiceClient::new(c)
                .list_drills(pb::ListDrillsRequest { stale })
                .await?;
            Ok(Read::from_response(resp).map(|r| r.operations))
        })
        .await
    }
}
