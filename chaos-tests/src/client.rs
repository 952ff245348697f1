//! A small leader-following client for the public API, owned by the harness so load
//! generators and checks do not depend on `drover-control` (whose client is the thing
//! under test in the CLI tests).
//!
//! It keeps one lazily connected channel per controller, tries the controller that last
//! answered, follows `UNAVAILABLE` + `x-drover-leader` hints, moves on when a controller is
//! unreachable, and reports how many attempts a call took. Writes carry a request id
//! (`x-drover-request-id`) so retries are applied once; should drover still answer a retry
//! `ALREADY_EXISTS`, the attempt count tells the workload an earlier attempt committed.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use drover_proto::v1::cluster_service_client::ClusterServiceClient;
use drover_proto::v1::vm_service_client::VmServiceClient;
use drover_proto::v1::{ClusterStatusRequest, ClusterStatusResponse, ListVmsRequest, Vm};
use drover_proto::{LEADER_METADATA_KEY, REQUEST_ID_METADATA_KEY};
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

/// ListVms is one unpaginated message; the load tests create tens of thousands of VMs,
/// past tonic's 4 MiB default.
const MAX_LIST_BYTES: usize = 512 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Bound on one attempt against one controller.
    pub attempt_timeout: Duration,
    /// How long a call keeps retrying before it returns the last error.
    pub deadline: Duration,
    /// The longest pause between rounds of failures. Kept short: the failover benchmark
    /// measures availability through this client, and a long pause would be counted as
    /// drover's unavailability.
    pub max_backoff: Duration,
}

impl Default for ClientConfig {
    fn default() -> Self {
        Self {
            attempt_timeout: Duration::from_secs(5),
            deadline: Duration::from_secs(20),
            max_backoff: Duration::from_millis(100),
        }
    }
}

/// A call's final answer, with the number of attempts it took.
#[derive(Debug)]
pub struct Answer<T> {
    pub result: Result<T, Status>,
    pub attempts: u32,
    /// When the last attempt was sent: the failover benchmark only counts successes whose
    /// attempt started after the kill.
    pub last_attempt_at: Instant,
}

#[derive(Debug, Clone)]
pub struct LeaderClient {
    endpoints: Vec<String>,
    channels: Vec<Channel>,
    /// Index of the controller to try first (the one that last answered, or a hint).
    preferred: usize,
    config: ClientConfig,
}

/// Codes after which another attempt (maybe elsewhere) can still succeed: not the leader,
/// no leader yet, or the transport failed (tonic reports broken connections as these).
pub fn retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable | Code::DeadlineExceeded | Code::Cancelled | Code::Unknown
    )
}

impl LeaderClient {
    /// `endpoints` are `host:port`. Nothing connects until the first call.
    pub fn new(endpoints: &[String], config: ClientConfig) -> anyhow::Result<Self> {
        anyhow::ensure!(!endpoints.is_empty(), "no endpoints");
        let channels = endpoints
            .iter()
            .map(|e| {
                Ok(Endpoint::from_shared(format!("http://{e}"))
                    .with_context(|| format!("bad endpoint {e:?}"))?
                    .connect_timeout(Duration::from_millis(500))
                    .tcp_nodelay(true)
                    .connect_lazy())
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            endpoints: endpoints.to_vec(),
            channels,
            preferred: 0,
            config,
        })
    }

    /// Runs `f` against controllers until it succeeds, fails for a reason another attempt
    /// cannot fix, or the deadline passes.
    pub async fn call<T, F, Fut>(&mut self, mut f: F) -> Answer<T>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let start = Instant::now();
        let mut attempts = 0;
        let mut failures_in_row = 0usize;
        let mut backoff = Duration::from_millis(10);
        loop {
            let idx = self.preferred;
            attempts += 1;
            let last_attempt_at = Instant::now();
            let result = match tokio::time::timeout(
                self.config.attempt_timeout,
                f(self.channels[idx].clone()),
            )
            .await
            {
                Ok(r) => r,
                Err(_) => Err(Status::deadline_exceeded(format!(
                    "{}: no answer within {:?}",
                    self.endpoints[idx], self.config.attempt_timeout
                ))),
            };
            let status = match result {
                Err(s) if retryable(s.code()) => s,
                result => {
                    return Answer {
                        result,
                        attempts,
                        last_attempt_at,
                    }
                }
            };
            if start.elapsed() >= self.config.deadline {
                return Answer {
                    result: Err(status),
                    attempts,
                    last_attempt_at,
                };
            }
            let hint = status
                .metadata()
                .get(LEADER_METADATA_KEY)
                .and_then(|v| v.to_str().ok())
                .and_then(|addr| self.endpoints.iter().position(|e| e == addr))
                .filter(|h| *h != idx);
            self.preferred = hint.unwrap_or((idx + 1) % self.endpoints.len());
            // A stale hint can bounce between a follower and a dead leader without ever
            // waiting, so pause after every round of failures whatever the hints say.
            failures_in_row += 1;
            if failures_in_row.is_multiple_of(self.endpoints.len()) {
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(self.config.max_backoff);
            }
        }
    }

    /// Creates a VM. `request_id` is sent on every attempt, so drover applies the write
    /// once however many attempts reach it.
    pub async fn create_vm(
        &mut self,
        req: drover_proto::v1::CreateVmRequest,
        request_id: &str,
    ) -> Answer<Vm> {
        let id = MetadataValue::try_from(request_id).ok();
        self.call(|c| {
            let mut req = tonic::Request::new(req.clone());
            if let Some(id) = id.clone() {
                req.metadata_mut().insert(REQUEST_ID_METADATA_KEY, id);
            }
            async move {
                VmServiceClient::new(c)
                    .create_vm(req)
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await
    }

    /// Every VM, read from the leader (followers refuse reads and point at it).
    pub async fn list_vms(&mut self) -> Result<Vec<Vm>, Status> {
        self.call(|c| async move {
            VmServiceClient::new(c)
                .max_decoding_message_size(MAX_LIST_BYTES)
                .list_vms(ListVmsRequest::default())
                .await
                .map(|r| r.into_inner().vms)
        })
        .await
        .result
    }

    /// Every VM's name, read from the leader a page of `page` at a time (a state of
    /// millions of VMs does not fit one answer, and one read would hold the state's lock
    /// for seconds).
    pub async fn vm_names_paged(&mut self, page: u32) -> Result<Vec<String>, Status> {
        let mut names = Vec::new();
        let mut after = String::new();
        loop {
            let req = ListVmsRequest {
                stale: false,
                after: after.clone(),
                limit: page,
            };
            let resp = self
                .call(|c| {
                    let req = req.clone();
                    async move {
                        VmServiceClient::new(c)
                            .max_decoding_message_size(MAX_LIST_BYTES)
                            .list_vms(req)
                            .await
                            .map(tonic::Response::into_inner)
                    }
                })
                .await
                .result?;
            names.extend(resp.vms.into_iter().map(|v| v.name));
            if resp.next_after.is_empty() {
                return Ok(names);
            }
            after = resp.next_after;
        }
    }

    /// Every host, read from the leader.
    pub async fn list_hosts(&mut self) -> Result<Vec<drover_proto::v1::Host>, Status> {
        self.call(|c| async move {
            drover_proto::v1::host_service_client::HostServiceClient::new(c)
                .list_hosts(drover_proto::v1::ListHostsRequest::default())
                .await
                .map(|r| r.into_inner().hosts)
        })
        .await
        .result
    }

    /// Every member's Raft progress, as seen by whichever controller answers.
    pub async fn status(&mut self) -> Result<ClusterStatusResponse, Status> {
        self.call(|c| async move {
            ClusterServiceClient::new(c)
                .status(ClusterStatusRequest { local_only: false })
                .await
                .map(tonic::Response::into_inner)
        })
        .await
        .result
    }

    /// One controller's own view of itself, without retrying elsewhere.
    pub async fn local_status(&self, endpoint: &str) -> Result<drover_proto::v1::Member, Status> {
        let idx = self
            .endpoints
            .iter()
            .position(|e| e == endpoint)
            .ok_or_else(|| Status::invalid_argument(format!("unknown endpoint {endpoint}")))?;
        let mut client = ClusterServiceClient::new(self.channels[idx].clone());
        let call = client.status(ClusterStatusRequest { local_only: true });
        let resp = tokio::time::timeout(self.config.attempt_timeout, call)
            .await
            .map_err(|_| Status::deadline_exceeded(format!("{endpoint}: no answer")))??;
        resp.into_inner()
            .members
            .into_iter()
            .next()
            .ok_or_else(|| Status::internal(format!("{endpoint}: empty status")))
    }
}
