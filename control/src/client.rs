//! A small client for the public API that finds the leader by itself: it tries the last
//! known good controller first, follows `UNAVAILABLE` + `x-drover-leader` hints, moves on
//! to the next endpoint when one is unreachable, and gives up with a clear error after a
//! deadline.
//!
//! Retrying is safe for reads and for the idempotent writes (start/stop/delete). A create
//! retried after a leader change may answer `ALREADY_EXISTS` for its own first attempt;
//! request ids that make every write exactly-once come with the Raft hardening issue.

use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use drover_proto::v1::cluster_service_client::ClusterServiceClient;
use drover_proto::v1::host_service_client::HostServiceClient;
use drover_proto::v1::vm_service_client::VmServiceClient;
use drover_proto::LEADER_METADATA_KEY;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("No endpoints given (use --endpoints or DROVER_ENDPOINTS)")]
    NoEndpoints,
    #[error("Invalid endpoint {endpoint:?}: {reason}")]
    BadEndpoint { endpoint: String, reason: String },
    #[error("No controller answered within {deadline:?} (tried {endpoints}); last error: {last}")]
    Unreachable {
        endpoints: String,
        deadline: Duration,
        last: String,
    },
    #[error("{}", status_text(.0))]
    Status(Status),
}

impl ClientError {
    /// The gRPC status the server answered with, if it answered.
    pub fn code(&self) -> Option<Code> {
        match self {
            ClientError::Status(s) => Some(s.code()),
            _ => None,
        }
    }
}

fn status_text(s: &Status) -> String {
    let code = match s.code() {
        Code::NotFound => "not found",
        Code::AlreadyExists => "already exists",
        Code::InvalidArgument => "invalid argument",
        Code::FailedPrecondition => "failed precondition",
        Code::Unavailable => "unavailable",
        _ => "error",
    };
    format!("{code}: {}", s.message())
}

#[derive(Debug)]
pub struct Client {
    endpoints: Vec<String>,
    /// The controller that last answered (usually the leader): tried first.
    preferred: Mutex<Option<String>>,
    deadline: Duration,
}

impl Client {
    /// `endpoints` are `host:port` (an `http://` prefix is accepted).
    pub fn new(endpoints: &[String]) -> Result<Self, ClientError> {
        let endpoints: Vec<String> = endpoints
            .iter()
            .map(|e| e.trim().trim_start_matches("http://").to_string())
            .filter(|e| !e.is_empty())
            .collect();
        if endpoints.is_empty() {
            return Err(ClientError::NoEndpoints);
        }
        for e in &endpoints {
            Endpoint::from_shared(format!("http://{e}")).map_err(|err| {
                ClientError::BadEndpoint {
                    endpoint: e.clone(),
                    reason: err.to_string(),
                }
            })?;
        }
        Ok(Self {
            endpoints,
            preferred: Mutex::new(None),
            deadline: Duration::from_secs(15),
        })
    }

    /// How long a call keeps retrying before it gives up.
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    async fn connect(addr: &str) -> Result<Channel, String> {
        Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| e.to_string())?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .connect()
            .await
            .map_err(|e| format!("{addr}: {}", error_chain(&e)))
    }

    /// Runs `f` against a controller, retrying as the module docs describe.
    pub async fn call<T, F, Fut>(&self, f: F) -> Result<T, ClientError>
    where
        F: Fn(Channel) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let start = Instant::now();
        let mut backoff = Duration::from_millis(50);
        let mut last = String::from("none");
        loop {
            let preferred = self
                .preferred
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone();
            let mut order: Vec<String> = preferred.into_iter().collect();
            order.extend(self.endpoints.iter().cloned());
            order.dedup();
            let mut hint = None;
            for addr in &order {
                let channel = match Self::connect(addr).await {
                    Ok(c) => c,
                    Err(e) => {
                        last = e;
                        continue;
                    }
                };
                match f(channel).await {
                    Ok(v) => {
                        *self.preferred.lock().unwrap_or_else(|p| p.into_inner()) =
                            Some(addr.clone());
                        return Ok(v);
                    }
                    Err(s) if s.code() == Code::Unavailable => {
                        last = format!("{addr}: {}", s.message());
                        hint = s
                            .metadata()
                            .get(LEADER_METADATA_KEY)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_string)
                            .filter(|l| l != addr);
                        if hint.is_some() {
                            break;
                        }
                    }
                    Err(s) => return Err(ClientError::Status(s)),
                }
            }
            if start.elapsed() >= self.deadline {
                return Err(ClientError::Unreachable {
                    endpoints: self.endpoints.join(","),
                    deadline: self.deadline,
                    last,
                });
            }
            match hint {
                // Go straight to the leader we were told about.
                Some(leader) => {
                    *self.preferred.lock().unwrap_or_else(|p| p.into_inner()) = Some(leader)
                }
                None => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    pub async fn cluster_status(
        &self,
    ) -> Result<drover_proto::v1::ClusterStatusResponse, ClientError> {
        self.call(|c| async move {
            ClusterServiceClient::new(c)
                .status(drover_proto::v1::ClusterStatusRequest { local_only: false })
                .await
                .map(tonic::Response::into_inner)
        })
        .await
    }

    pub async fn hosts(&self) -> Result<Vec<drover_proto::v1::Host>, ClientError> {
        self.call(|c| async move {
            HostServiceClient::new(c)
                .list_hosts(drover_proto::v1::ListHostsRequest {})
                .await
                .map(|r| r.into_inner().hosts)
        })
        .await
    }

    pub async fn add_host(
        &self,
        name: &str,
        address: &str,
    ) -> Result<drover_proto::v1::Host, ClientError> {
        let req = drover_proto::v1::AddHostRequest {
            name: name.to_string(),
            address: address.to_string(),
        };
        self.call(|c| {
            let req = req.clone();
            async move {
                HostServiceClient::new(c)
                    .add_host(req)
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await
    }

    pub async fn host(&self, name: &str) -> Result<drover_proto::v1::Host, ClientError> {
        let name = name.to_string();
        self.call(|c| {
            let name = name.clone();
            async move {
                HostServiceClient::new(c)
                    .get_host(drover_proto::v1::GetHostRequest { name })
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await
    }

    pub async fn vms(&self) -> Result<Vec<drover_proto::v1::Vm>, ClientError> {
        self.call(|c| async move {
            VmServiceClient::new(c)
                .list_vms(drover_proto::v1::ListVmsRequest {})
                .await
                .map(|r| r.into_inner().vms)
        })
        .await
    }

    pub async fn vm(&self, name: &str) -> Result<drover_proto::v1::Vm, ClientError> {
        let name = name.to_string();
        self.call(|c| {
            let name = name.clone();
            async move {
                VmServiceClient::new(c)
                    .get_vm(drover_proto::v1::GetVmRequest { name })
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await
    }

    pub async fn create_vm(
        &self,
        req: drover_proto::v1::CreateVmRequest,
    ) -> Result<drover_proto::v1::Vm, ClientError> {
        self.call(|c| {
            let req = req.clone();
            async move {
                VmServiceClient::new(c)
                    .create_vm(req)
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await
    }

    /// `verb` is `start`, `stop` or `delete`.
    pub async fn vm_action(
        &self,
        verb: VmVerb,
        name: &str,
    ) -> Result<drover_proto::v1::Vm, ClientError> {
        let req = drover_proto::v1::VmNameRequest {
            name: name.to_string(),
        };
        self.call(|c| {
            let req = req.clone();
            async move {
                let mut client = VmServiceClient::new(c);
                let resp = match verb {
                    VmVerb::Start => client.start_vm(req).await,
                    VmVerb::Stop => client.stop_vm(req).await,
                    VmVerb::Delete => client.delete_vm(req).await,
                };
                resp.map(tonic::Response::into_inner)
            }
        })
        .await
    }
}

/// An error and its sources, `a: b: c`: tonic's transport errors say little on their own.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmVerb {
    Start,
    Stop,
    Delete,
}
