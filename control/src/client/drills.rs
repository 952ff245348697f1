//! The client's drill calls (`DrillService`).

use drover_proto::v1 as pb;
use drover_proto::v1::drill_service_client::DrillServiceClient;

use super::{with_request_id, Client, ClientError, Read};

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

    /// Starts a leader-failover drill; the answer is its operation.
    pub async fn start_leader_failover(
        &self,
        mode: &str,
        max_duration_ms: u64,
    ) -> Result<pb::Operation, ClientError> {
        self.call(|c| async move {
            DrillServiceClient::new(c)
                .start_leader_failover(pb::StartLeaderFailoverRequest {
                    mode: mode.to_string(),
                    max_duration_ms,
                })
                .await
                .map(tonic::Response::into_inner)
        })
        .await
    }

    /// One probe write of leader drill `op`, each call at most `per_call` long (retries
    /// within the client's deadline keep the request id: applied at most once).
    pub async fn drill_probe(
        &self,
        op: u64,
        seq: u64,
        per_call: std::time::Duration,
    ) -> Result<pb::ProbeResponse, ClientError> {
        let id = self.next_request_id();
        self.call_within(per_call, |c| {
            let req = with_request_id(pb::ProbeRequest { op, seq }, &id);
            async move {
                DrillServiceClient::new(c)
                    .probe(req)
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await
    }

    /// Tells leader drill `op`'s leader to go (a controller identity only).
    pub async fn cut_leader(&self, op: u64) -> Result<pb::CutLeaderResponse, ClientError> {
        self.call_within(std::time::Duration::from_secs(30), |c| async move {
            DrillServiceClient::new(c)
                .cut_leader(pb::CutLeaderRequest { op })
                .await
                .map(tonic::Response::into_inner)
        })
        .await
    }

    /// Starts a migration drill of `vm`; the answer is its operation.
    pub async fn start_migration_round_trip(&self, vm: &str) -> Result<pb::Operation, ClientError> {
        let id = self.next_request_id();
        self.call(|c| {
            let req = with_request_id(
                pb::StartMigrationRoundTripRequest { vm: vm.to_string() },
                &id,
            );
            async move {
                DrillServiceClient::new(c)
                    .start_migration_round_trip(req)
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await
    }

    pub async fn create_drill_schedule(
        &self,
        req: pb::CreateDrillScheduleRequest,
    ) -> Result<pb::DrillSchedule, ClientError> {
        let id = self.next_request_id();
        self.call(|c| {
            let req = with_request_id(req.clone(), &id);
            async move {
                DrillServiceClient::new(c)
                    .create_schedule(req)
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await
    }

    pub async fn drill_schedules(
        &self,
        stale: bool,
    ) -> Result<Read<Vec<pb::DrillSchedule>>, ClientError> {
        self.call(|c| async move {
            let resp = DrillServiceClient::new(c)
                .list_schedules(pb::ListDrillSchedulesRequest { stale })
                .await?;
            Ok(Read::from_response(resp).map(|r| r.schedules))
        })
        .await
    }

    pub async fn delete_drill_schedule(&self, name: &str) -> Result<(), ClientError> {
        let id = self.next_request_id();
        self.call(|c| {
            let req = with_request_id(
                pb::DeleteDrillScheduleRequest {
                    name: name.to_string(),
                },
                &id,
            );
            async move {
                DrillServiceClient::new(c)
                    .delete_schedule(req)
                    .await
                    .map(drop)
            }
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
