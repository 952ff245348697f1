//! `drover.v1.DrillService`: failover drills. The plan of a host failure, from the pure
//! `drover_actors::drill::plan` over the replicated state and the controllers' health
//! (asked of each, as `cluster status` does); starting a drill (refused while the plan has
//! refusals; `apply` checks what the state alone can tell again); the drills kept.

use drover_actors::drill;
use drover_proto::transport::TlsHandle;
use drover_proto::v1 as pb;
use drover_proto::v1::drill_service_server::DrillService;
use drover_raft::RaftNode;
use tonic::{Request, Response, Status};

use drover_raft::model::DrillMode;
use drover_raft::{Command, Reply};

use super::cluster::{applied, fresh_read, members, read_response};
use super::convert;
use super::errors::leader_only;
use super::write::commit;
use super::{drill_schedules, leader_drill};

/// How long a drill isolates its host when the request does not say.
const DEFAULT_DRILL_DURATION_MS: u64 = 120_000;

pub struct DrillApi {
    node: RaftNode,
    tls: TlsHandle,
    /// A leader drill's election timing (a step-down waits out the followers' lease).
    election_max: std::time::Duration,
    /// Told a leader drill's id when it stops this controller.
    stop: tokio::sync::watch::Sender<Option<u64>>,
    /// Calls to hostd (a stop-agent drill's check).
    agents: drover_actors::AgentPool,
    /// Where a stopped controller records the drill (see `crate::drill_hold`).
    data_dir: std::path::PathBuf,
}

impl DrillApi {
    pub fn new(
        node: RaftNode,
        tls: TlsHandle,
        election_max: std::time::Duration,
        stop: tokio::sync::watch::Sender<Option<u64>>,
        data_dir: std::path::PathBuf,
    ) -> Self {
        Self {
            agents: drover_actors::AgentPool::new(tls.clone()),
            node,
            tls,
            election_max,
            stop,
            data_dir,
        }
    }

    /// Voters, and how many of them answer now (this one included).
    async fn quorum(&self) -> drill::Quorum {
        use drover_actors::drill::cadence::QuorumProbe as _;
        PeerQuorum {
            node: self.node.clone(),
            tls: self.tls.clone(),
        }
        .quorum()
        .await
    }
}

impl DrillApi {
    /// A stop-agent drill needs the host's watchdog: hostd says whether it runs (and stops
    /// nothing), so that the drill is refused before it starts rather than failing.
    async fn check_stop_agent(&self, host: &str) -> Result<(), Status> {
        let address = self.node.view().read(|d| {
            d.state
                .hosts
                .get(host)
                .map(|h| h.address.clone())
                .ok_or_else(|| Status::not_found(format!("Host {host:?} not found")))
        })?;
        let mut client = self
            .agents
            .client(&address)
            .map_err(|e| Status::unavailable(format!("hostd of {host}: {e}")))?;
        let req = drover_proto::agent::v1::StopAgentRequest {
            term: self.node.metrics().current_term,
            drill: 0,
            duration_ms: 1,
            check_only: true,
        };
        client
            .stop_agent(drover_actors::deadline(req, drover_actors::QUICK_CALL))
            .await
            .map(drop)
            .map_err(|s| {
                Status::failed_precondition(format!(
                    "drill refused: stop-agent needs hostd-watchdog on {host}: {}",
                    s.message()
                ))
            })
    }

    /// The plan of `host` failing now, on the leader (only it sees the cluster as the
    /// failover would act on it), after a quorum read.
    async fn plan_now(&self, host: &str) -> Result<(drill::DrillPlan, drill::Quorum), Status> {
        if host.is_empty() {
            return Err(Status::invalid_argument("host name is empty"));
        }
        leader_only(&self.node)?;
        fresh_read(&self.node, false).await?;
        let quorum = self.quorum().await;
        let plan = self.node.view().read(|d| {
            if !d.state.hosts.contains_key(host) {
                return Err(Status::not_found(format!("Host {host:?} not found")));
            }
            Ok(drill::plan(host, &d.state, quorum, &d.state.placement))
        })?;
        Ok((plan, quorum))
    }
}

#[tonic::async_trait]
impl DrillService for DrillApi {
    async fn plan_host_failure(
        &self,
        req: Request<pb::PlanHostFailureRequest>,
    ) -> Result<Response<pb::HostFailurePlan>, Status> {
        let host = req.into_inner().host;
        let (plan, quorum) = self.plan_now(&host).await?;
        Ok(Response::new(plan_to_pb(host, plan, quorum)))
    }

    async fn start_host_failure(
        &self,
        req: Request<pb::StartHostFailureRequest>,
    ) -> Result<Response<pb::Operation>, Status> {
        let (meta, _, req) = req.into_parts();
        let mode = match req.mode.as_str() {
            "" => DrillMode::Isolate,
            other => DrillMode::parse(other).ok_or_else(|| {
                let known: Vec<&str> = DrillMode::ALL.iter().map(|m| m.as_str()).collect();
                Status::invalid_argument(format!(
                    "unknown drill mode {other:?}: one of {}",
                    known.join(", ")
                ))
            })?,
        };
        let (plan, _) = self.plan_now(&req.host).await?;
        if mode == DrillMode::StopAgent {
            self.check_stop_agent(&req.host).await?;
        }
        if !plan.refusals.is_empty() {
            let why: Vec<String> = plan.refusals.iter().map(ToString::to_string).collect();
            return Err(Status::failed_precondition(format!(
                "drill refused: the cluster could not survive losing {} now: {}",
                req.host,
                why.join("; ")
            )));
        }
        let cmd = Command::StartDrill {
            host: req.host,
            mode,
            max_duration_ms: match req.max_duration_ms {
                0 => DEFAULT_DRILL_DURATION_MS,
                ms => ms,
            },
            at_ms: drover_raft::wall_clock_ms(),
        };
        match commit(&self.node, &meta, cmd).await? {
            Reply::Operation(op) => Ok(Response::new(convert::operation(&op))),
            other => Err(Status::internal(format!("unexpected reply {other:?}"))),
        }
    }

    async fn start_leader_failover(
        &self,
        req: Request<pb::StartLeaderFailoverRequest>,
    ) -> Result<Response<pb::Operation>, Status> {
        let (meta, _, req) = req.into_parts();
        leader_drill::start(&self.node, &self.tls, &meta, req)
            .await
            .map(Response::new)
    }

    async fn probe(
        &self,
        req: Request<pb::ProbeRequest>,
    ) -> Result<Response<pb::ProbeResponse>, Status> {
        let (meta, _, req) = req.into_parts();
        leader_drill::probe(&self.node, &meta, req)
            .await
            .map(Response::new)
    }

    async fn cut_leader(
        &self,
        req: Request<pb::CutLeaderRequest>,
    ) -> Result<Response<pb::CutLeaderResponse>, Status> {
        leader_drill::cut(
            &self.node,
            self.election_max,
            (&self.stop, &self.data_dir),
            req.into_inner(),
        )
        .await
        .map(Response::new)
    }

    async fn start_migration_round_trip(
        &self,
        req: Request<pb::StartMigrationRoundTripRequest>,
    ) -> Result<Response<pb::Operation>, Status> {
        let (meta, _, req) = req.into_parts();
        if req.vm.is_empty() {
            return Err(Status::invalid_argument("VM name is empty"));
        }
        let cmd = Command::StartMigrationDrill {
            vm: req.vm,
            at_ms: drover_raft::wall_clock_ms(),
        };
        match commit(&self.node, &meta, cmd).await? {
            Reply::Operation(op) => Ok(Response::new(convert::operation(&op))),
            other => Err(Status::internal(format!("unexpected reply {other:?}"))),
        }
    }

    async fn create_schedule(
        &self,
        req: Request<pb::CreateDrillScheduleRequest>,
    ) -> Result<Response<pb::DrillSchedule>, Status> {
        let (meta, _, req) = req.into_parts();
        drill_schedules::create(&self.node, &meta, req)
            .await
            .map(Response::new)
    }

    async fn list_schedules(
        &self,
        req: Request<pb::ListDrillSchedulesRequest>,
    ) -> Result<Response<pb::ListDrillSchedulesResponse>, Status> {
        let (index, schedules) = drill_schedules::list(&self.node, req.into_inner().stale).await?;
        Ok(read_response(
            &self.node,
            index,
            pb::ListDrillSchedulesResponse { schedules },
        ))
    }

    async fn delete_schedule(
        &self,
        req: Request<pb::DeleteDrillScheduleRequest>,
    ) -> Result<Response<pb::DeleteDrillScheduleResponse>, Status> {
        let (meta, _, req) = req.into_parts();
        drill_schedules::delete(&self.node, &meta, req.name).await?;
        Ok(Response::new(pb::DeleteDrillScheduleResponse {}))
    }

    async fn list_drills(
        &self,
        req: Request<pb::ListDrillsRequest>,
    ) -> Result<Response<pb::ListOperationsResponse>, Status> {
        fresh_read(&self.node, req.into_inner().stale).await?;
        let (index, operations) = self.node.view().read(|d| {
            let drills = d
                .state
                .operations
                .ops
                .values()
                .rev()
                .filter(|o| o.kind.is_drill())
                .map(convert::operation)
                .collect();
            (applied(d), drills)
        });
        Ok(read_response(
            &self.node,
            index,
            pb::ListOperationsResponse { operations },
        ))
    }
}

fn plan_to_pb(host: String, plan: drill::DrillPlan, quorum: drill::Quorum) -> pb::HostFailurePlan {
    {
        pb::HostFailurePlan {
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
        }
    }
}

/// The scheduled drills' quorum check: the same round of `ClusterService.Status` calls as
/// `drover drill host-failure --dry-run` makes.
#[derive(Debug)]
pub struct PeerQuorum {
    pub node: RaftNode,
    pub tls: TlsHandle,
}

impl drover_actors::drill::cadence::QuorumProbe for PeerQuorum {
    fn quorum(&self) -> futures::future::BoxFuture<'static, drill::Quorum> {
        let (node, tls) = (self.node.clone(), self.tls.clone());
        Box::pin(async move {
            let me = pb::Member {
                id: node.id(),
                ..Default::default()
            };
            let all = members(&node, me, &tls).await;
            let voters: Vec<_> = all.iter().filter(|m| m.voter).collect();
            drill::Quorum {
                voters: voters.len(),
                healthy: voters.iter().filter(|m| m.error.is_empty()).count(),
            }
        })
    }
}
