//! `drover.v1.DrillService`: failover drills. So far the plan of a host failure, from the
//! pure `drover_actors::drill::plan` over the replicated state and the controllers' health
//! (asked of each, as `cluster status` does).

use drover_actors::drill;
use drover_proto::transport::TlsHandle;
use drover_proto::v1 as pb;
use drover_proto::v1::drill_service_server::DrillService;
use drover_raft::RaftNode;
use tonic::{Request, Response, Status};

use super::cluster::{fresh_read, members};
use super::errors::not_leader;

pub struct DrillApi {
    node: RaftNode,
    tls: TlsHandle,
}

impl DrillApi {
    pub fn new(node: RaftNode, tls: TlsHandle) -> Self {
        Self { node, tls }
    }

    /// Voters, and how many of them answer now (this one included).
    async fn quorum(&self) -> drill::Quorum {
        let me = pb::Member {
            id: self.node.id(),
            ..Default::default()
        };
        let all = members(&self.node, me, &self.tls).await;
        let voters: Vec<_> = all.iter().filter(|m| m.voter).collect();
        drill::Quorum {
            voters: voters.len(),
            healthy: voters.iter().filter(|m| m.error.is_empty()).count(),
        }
    }
}

#[tonic::async_trait]
impl DrillService for DrillApi {
    async fn plan_host_failure(
        &self,
        req: Request<pb::PlanHostFailureRequest>,
    ) -> Result<Response<pb::HostFailurePlan>, Status> {
        let host = req.into_inner().host;
        if host.is_empty() {
            return Err(Status::invalid_argument("host name is empty"));
        }
        // Only the leader sees the cluster as the failover would act on it.
        if self.node.metrics().current_leader != Some(self.node.id()) {
            return Err(not_leader(self.node.leader().map(|(_, a)| a).as_deref()));
        }
        fresh_read(&self.node, false).await?;
        let quorum = self.quorum().await;
        let plan = self.node.view().read(|d| {
            if !d.state.hosts.contains_key(&host) {
                return Err(Status::not_found(format!("Host {host:?} not found")));
            }
            Ok(drill::plan(&host, &d.state, quorum, &d.state.placement))
        })?;
        Ok(Response::new(pb::HostFailurePlan {
            host,
            moves: plan
                .moves
                .into_iter()
                .map(|(vm, host)| pb::PlannedMove { vm, host })
                .collect(),
            stay_down: plan.stay_down.into_iter().collect(),
            refusals: plan.refusals.iter().map(ToString::to_string).collect(),
            voters: quorum.voters as u32,
            healthy_voters: quorum.healthy as u32,
        }))
    }
}
