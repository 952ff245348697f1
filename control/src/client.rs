//! A small client for the public API that finds the leader by itself: it tries the last
//! known good controller first, follows `UNAVAILABLE` + `x-drover-leader` hints, moves on
//! to the next endpoint when one is unreachable, and gives up with a clear error after a
//! deadline.
//!
//! Every write carries a request id (`x-drover-request-id`), the same on each retry, so a
//! write whose reply was lost (leader change mid-commit) is applied once: the state
//! machine answers the retry with the first result.

mod console;
mod drills;
mod images;
mod networks;
mod pools;
mod security_groups;

pub use console::ConsoleSession;
pub use networks::{NetworkOp, NicOp};

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use drover_proto::transport::{endpoint, TlsHandle};
use drover_proto::v1 as pb;
use drover_proto::v1::cluster_service_client::ClusterServiceClient;
use drover_proto::v1::host_service_client::HostServiceClient;
use drover_proto::v1::operation_service_client::OperationServiceClient;
use drover_proto::v1::token_service_client::TokenServiceClient;
use drover_proto::v1::vm_service_client::VmServiceClient;
use drover_proto::{
    APPLIED_INDEX_METADATA_KEY, LEADER_METADATA_KEY, REQUEST_ID_METADATA_KEY,
    SERVED_BY_METADATA_KEY,
};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Status};

/// A connection to a controller that adds the bearer token (if any) to every call.
pub type Conn = InterceptedService<Channel, Bearer>;

/// Adds `authorization: Bearer <token>` to each request, when the client has a token.
#[derive(Debug, Clone, Default)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(value) = &self.0 {
            req.metadata_mut()
                .insert(crate::auth::identity::AUTHORIZATION, value.clone());
        }
        Ok(req)
    }
}

const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("No endpoints given (use --endpoints or DROVER_ENDPOINTS)")]
    NoEndpoints,
    #[error("Invalid endpoint {endpoint:?}: {reason}")]
    BadEndpoint { endpoint: String, reason: String },
    #[error(
        "No controller answered within {deadline:?} (tried {endpoints}); last error: {last}. \
         If the cluster uses mutual TLS, check --ca/--cert/--key (DROVER_CA/DROVER_CERT/DROVER_KEY) \
         or --ca/--token (DROVER_TOKEN)"
    )]
    Unreachable {
        endpoints: String,
        deadline: Duration,
        last: String,
    },
    #[error("{}", status_text(.0))]
    Status(Status),
    #[error("The token is not a valid metadata value")]
    BadToken,
    #[error("Cannot read {path}: {reason}")]
    File { path: String, reason: String },
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
        Code::PermissionDenied => "permission denied",
        Code::Unauthenticated => "unauthenticated",
        Code::Aborted => "aborted",
        Code::DeadlineExceeded => "deadline exceeded",
        Code::Internal => "internal error",
        // `main` says "error: " already.
        _ => "failed",
    };
    format!("{code}: {}", s.message())
}

#[derive(Debug)]
pub struct Client {
    endpoints: Vec<String>,
    /// The controller that last answered (usually the leader): tried first.
    preferred: Mutex<Option<String>>,
    deadline: Duration,
    /// Unique per client instance; request ids are `<nonce>-<counter>`.
    nonce: String,
    counter: AtomicU64,
    tls: TlsHandle,
    bearer: Bearer,
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
            endpoint(e, None).map_err(|err| ClientError::BadEndpoint {
                endpoint: e.clone(),
                reason: err.to_string(),
            })?;
        }
        Ok(Self {
            endpoints,
            preferred: Mutex::new(None),
            deadline: Duration::from_secs(15),
            nonce: client_nonce(),
            counter: AtomicU64::new(0),
            tls: None,
            bearer: Bearer::default(),
        })
    }

    /// A fresh request id for one logical write (reused by its retries).
    pub fn next_request_id(&self) -> String {
        format!(
            "{}-{}",
            self.nonce,
            self.counter.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// How long a call keeps retrying before it gives up.
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// Uses mutual TLS with this identity (the cluster's CA and a client certificate).
    pub fn with_tls(mut self, tls: TlsHandle) -> Self {
        self.tls = tls;
        self
    }

    /// Authenticates with a bearer token (with a CA-only `tls`, or none at all).
    pub fn with_token(mut self, token: Option<&str>) -> Result<Self, ClientError> {
        self.bearer = match token {
            None => Bearer(None),
            Some(t) => Bearer(Some(
                format!("Bearer {}", t.trim())
                    .parse()
                    .map_err(|_| ClientError::BadToken)?,
            )),
        };
        Ok(self)
    }

    /// Largest answer accepted: a `vm list` of 100k VMs is ~20 MB, above tonic's 4 MiB.
    pub const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

    async fn connect(&self, addr: &str, request_timeout: Duration) -> Result<Conn, String> {
        let channel = endpoint(addr, self.tls.as_deref())
            .map_err(|e| e.to_string())?
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(request_timeout)
            .connect()
            .await
            .map_err(|e| format!("{addr}: {}", error_chain(&e)))?;
        Ok(InterceptedService::new(channel, self.bearer.clone()))
    }

    /// Runs `f` against a controller, retrying as the module docs describe.
    pub async fn call<T, F, Fut>(&self, f: F) -> Result<T, ClientError>
    where
        F: Fn(Conn) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        self.call_within(REQUEST_TIMEOUT, f).await
    }

    /// [`Client::call`] for calls that may each take up to `request_timeout` (a
    /// file's upload) instead of the usual few seconds.
    pub async fn call_within<T, F, Fut>(
        &self,
        request_timeout: Duration,
        f: F,
    ) -> Result<T, ClientError>
    where
        F: Fn(Conn) -> Fut,
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
                let channel = match self.connect(addr, request_timeout).await {
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
                    // tonic reports a connection that broke mid-call (a TLS handshake the
                    // server refused, an HTTP/2 error) as UNKNOWN/CANCELLED: try elsewhere.
                    Err(s) if is_connection_failure(&s) => {
                        last = format!("{addr}: {}", s.message());
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

    pub async fn cluster_status(&self) -> Result<pb::ClusterStatusResponse, ClientError> {
        self.call(|c| async move {
            ClusterServiceClient::new(c)
                .max_decoding_message_size(Self::MAX_RESPONSE_BYTES)
                .status(pb::ClusterStatusRequest { local_only: false })
                .await
                .map(tonic::Response::into_inner)
        })
        .await
    }

    /// `drover ha arm` (`true`) / `disarm` (`false`).
    pub async fn set_ha_armed(&self, armed: bool) -> Result<pb::HaStatus, ClientError> {
        let id = self.next_request_id();
        self.call(|c| {
            let req = with_request_id(pb::SetHaArmedRequest { armed }, &id);
            async move {
                ClusterServiceClient::new(c)
                    .set_ha_armed(req)
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await
    }

    pub async fn set_lease(&self, req: pb::SetLeaseRequest) -> Result<pb::HaStatus, ClientError> {
        let id = self.next_request_id();
        self.call(|c| {
            let req = with_request_id(req, &id);
            async move {
                ClusterServiceClient::new(c)
                    .set_lease(req)
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await
    }

    pub async fn events(
        &self,
        req: pb::ListEventsRequest,
    ) -> Result<pb::ListEventsResponse, ClientError> {
        self.call(|c| {
            let req = req.clone();
            async move {
                ClusterServiceClient::new(c)
                    .max_decoding_message_size(Self::MAX_RESPONSE_BYTES)
                    .list_events(req)
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await
    }

    pub async fn placement(&self) -> Result<pb::PlacementPolicy, ClientError> {
        self.call(|c| async move {
            ClusterServiceClient::new(c)
                .get_placement_policy(pb::GetPlacementPolicyRequest { stale: false })
                .await
                .map(tonic::Response::into_inner)
        })
        .await
    }

    pub async fn set_placement(
        &self,
        req: pb::PlacementPolicy,
    ) -> Result<pb::PlacementPolicy, ClientError> {
        let id = self.next_request_id();
        self.call(|c| {
            let req = with_request_id(req.clone(), &id);
            async move {
                ClusterServiceClient::new(c)
                    .set_placement_policy(req)
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await
    }

    pub async fn ha_status(&self) -> Result<pb::HaStatus, ClientError> {
        self.call(|c| async move {
            ClusterServiceClient::new(c)
                .get_ha_status(pb::GetHaStatusRequest { stale: false })
                .await
                .map(tonic::Response::into_inner)
        })
        .await
    }

    /// A backup from the leader: its bytes and the applied index it reflects.
    pub async fn save_snapshot(&self) -> Result<(Vec<u8>, u64), ClientError> {
        self.call(|c| async move {
            let mut stream = ClusterServiceClient::new(c)
                .max_decoding_message_size(Self::MAX_RESPONSE_BYTES)
                .save_snapshot(pb::SaveSnapshotRequest {})
                .await?
                .into_inner();
            let mut bytes = Vec::new();
            let mut index = 0;
            while let Some(chunk) = stream.message().await? {
                bytes.extend_from_slice(&chunk.data);
                index = chunk.applied_index;
            }
            Ok((bytes, index))
        })
        .await
    }

    /// `drover cluster add-node|remove-node|transfer-leader`.
    pub async fn membership(
        &self,
        change: Membership,
    ) -> Result<pb::ClusterStatusResponse, ClientError> {
        self.call(|c| {
            let change = change.clone();
            async move {
                let mut client = ClusterServiceClient::new(c)
                    .max_decoding_message_size(Self::MAX_RESPONSE_BYTES);
                let resp = match change {
                    Membership::Add { id, address } => {
                        client.add_node(pb::AddNodeRequest { id, address }).await
                    }
                    Membership::Remove { id } => {
                        client.remove_node(pb::RemoveNodeRequest { id }).await
                    }
                    Membership::TransferLeader { id } => {
                        client
                            .transfer_leader(pb::TransferLeaderRequest { id })
                            .await
                    }
                };
                resp.map(tonic::Response::into_inner)
            }
        })
        .await
    }

    pub async fn hosts(&self, stale: bool) -> Result<Read<Vec<pb::Host>>, ClientError> {
        self.call(|c| async move {
            let resp = HostServiceClient::new(c)
                .max_decoding_message_size(Self::MAX_RESPONSE_BYTES)
                .list_hosts(pb::ListHostsRequest { stale })
                .await?;
            Ok(Read::from_response(resp).map(|r| r.hosts))
        })
        .await
    }

    pub async fn host(&self, name: &str, stale: bool) -> Result<Read<pb::Host>, ClientError> {
        let name = name.to_string();
        self.call(|c| {
            let name = name.clone();
            async move {
                let resp = HostServiceClient::new(c)
                    .max_decoding_message_size(Self::MAX_RESPONSE_BYTES)
                    .get_host(pb::GetHostRequest { name, stale })
                    .await?;
                Ok(Read::from_response(resp))
            }
        })
        .await
    }

    pub async fn add_host(
        &self,
        name: &str,
        address: &str,
        labels: &[(String, String)],
    ) -> Result<pb::Host, ClientError> {
        let req = pb::AddHostRequest {
            name: name.to_string(),
            address: address.to_string(),
            labels: labels.iter().cloned().collect(),
        };
        self.host_write(req, |mut c, r| async move { c.add_host(r).await })
            .await
    }

    /// Declares `name` powered off (`drover host fence`); the API refuses without the
    /// confirmation.
    pub async fn fence_host(&self, name: &str, confirm: bool) -> Result<pb::Host, ClientError> {
        let req = pb::FenceHostRequest {
            name: name.to_string(),
            confirm_powered_off: confirm,
        };
        self.host_write(req, |mut c, r| async move { c.fence_host(r).await })
            .await
    }

    pub async fn activate_host(&self, name: &str) -> Result<pb::Host, ClientError> {
        let req = pb::ActivateHostRequest {
            name: name.to_string(),
        };
        self.host_write(req, |mut c, r| async move { c.activate_host(r).await })
            .await
    }

    pub async fn remove_host(&self, name: &str) -> Result<(), ClientError> {
        let req = pb::RemoveHostRequest {
            name: name.to_string(),
        };
        let id = self.next_request_id();
        self.call(|c| {
            let req = with_request_id(req.clone(), &id);
            async move { HostServiceClient::new(c).remove_host(req).await.map(drop) }
        })
        .await
    }

    pub async fn drain_host(
        &self,
        req: pb::DrainHostRequest,
    ) -> Result<pb::Operation, ClientError> {
        let id = self.next_request_id();
        self.call(|c| {
            let req = with_request_id(req.clone(), &id);
            async move {
                HostServiceClient::new(c)
                    .drain_host(req)
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await
    }

    pub async fn migrate_vm(
        &self,
        req: pb::MigrateVmRequest,
    ) -> Result<pb::Operation, ClientError> {
        let id = self.next_request_id();
        self.call(|c| {
            let req = with_request_id(req.clone(), &id);
            async move {
                VmServiceClient::new(c)
                    .migrate_vm(req)
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await
    }

    pub async fn operations(
        &self,
        running: bool,
        stale: bool,
    ) -> Result<Read<Vec<pb::Operation>>, ClientError> {
        self.call(|c| async move {
            let resp = OperationServiceClient::new(c)
                .max_decoding_message_size(Self::MAX_RESPONSE_BYTES)
                .list_operations(pb::ListOperationsRequest { stale, running })
                .await?;
            Ok(Read::from_response(resp).map(|r| r.operations))
        })
        .await
    }

    pub async fn operation(
        &self,
        id: u64,
        stale: bool,
    ) -> Result<Read<pb::Operation>, ClientError> {
        self.call(|c| async move {
            let resp = OperationServiceClient::new(c)
                .get_operation(pb::GetOperationRequest { id, stale })
                .await?;
            Ok(Read::from_response(resp))
        })
        .await
    }

    pub async fn cancel_operation(&self, id: u64) -> Result<pb::Operation, ClientError> {
        let rid = self.next_request_id();
        self.call(|c| {
            let req = with_request_id(pb::CancelOperationRequest { id }, &rid);
            async move {
                OperationServiceClient::new(c)
                    .cancel_operation(req)
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await
    }

    /// `drover token create`: the token's record and its secret (shown once).
    pub async fn create_token(
        &self,
        req: pb::CreateTokenRequest,
    ) -> Result<pb::CreatedToken, ClientError> {
        self.call(|c| {
            let req = req.clone();
            async move {
                TokenServiceClient::new(c)
                    .create_token(req)
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await
    }

    pub async fn tokens(&self, stale: bool) -> Result<Read<Vec<pb::TokenInfo>>, ClientError> {
        self.call(|c| async move {
            let resp = TokenServiceClient::new(c)
                .list_tokens(pb::ListTokensRequest { stale })
                .await?;
            Ok(Read::from_response(resp).map(|r| r.tokens))
        })
        .await
    }

    pub async fn revoke_token(&self, id: &str) -> Result<pb::TokenInfo, ClientError> {
        let rid = self.next_request_id();
        self.call(|c| {
            let req = with_request_id(pb::RevokeTokenRequest { id: id.to_string() }, &rid);
            async move {
                TokenServiceClient::new(c)
                    .revoke_token(req)
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await
    }

    /// A HostService write under one request id, so that a retry applies once.
    async fn host_write<R, F, Fut>(&self, req: R, rpc: F) -> Result<pb::Host, ClientError>
    where
        R: Clone,
        F: Fn(HostServiceClient<Conn>, tonic::Request<R>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<pb::Host>, Status>>,
    {
        let id = self.next_request_id();
        self.call(|c| {
            let client =
                HostServiceClient::new(c).max_decoding_message_size(Self::MAX_RESPONSE_BYTES);
            let fut = rpc(client, with_request_id(req.clone(), &id));
            async move { fut.await.map(tonic::Response::into_inner) }
        })
        .await
    }

    pub async fn vms(&self, stale: bool) -> Result<Read<Vec<pb::Vm>>, ClientError> {
        self.call(|c| async move {
            let resp = VmServiceClient::new(c)
                .max_decoding_message_size(Self::MAX_RESPONSE_BYTES)
                .list_vms(pb::ListVmsRequest {
                    stale,
                    ..Default::default()
                })
                .await?;
            Ok(Read::from_response(resp).map(|r| r.vms))
        })
        .await
    }

    pub async fn vm(&self, name: &str, stale: bool) -> Result<Read<pb::Vm>, ClientError> {
        let name = name.to_string();
        self.call(|c| {
            let name = name.clone();
            async move {
                let resp = VmServiceClient::new(c)
                    .max_decoding_message_size(Self::MAX_RESPONSE_BYTES)
                    .get_vm(pb::GetVmRequest { name, stale })
                    .await?;
                Ok(Read::from_response(resp))
            }
        })
        .await
    }

    pub async fn create_vm(&self, req: pb::CreateVmRequest) -> Result<pb::Vm, ClientError> {
        let id = self.next_request_id();
        self.call(|c| {
            let req = with_request_id(req.clone(), &id);
            async move {
                VmServiceClient::new(c)
                    .max_decoding_message_size(Self::MAX_RESPONSE_BYTES)
                    .create_vm(req)
                    .await
                    .map(tonic::Response::into_inner)
            }
        })
        .await
    }

    /// Adds, resizes or removes one of a VM's disks.
    pub async fn disk_op(&self, op: DiskOp) -> Result<pb::Vm, ClientError> {
        let id = self.next_request_id();
        self.call(|c| {
            let op = op.clone();
            let id = id.clone();
            async move {
                let mut client =
                    VmServiceClient::new(c).max_decoding_message_size(Self::MAX_RESPONSE_BYTES);
                let resp = match op {
                    DiskOp::Add(r) => client.add_disk(with_request_id(r, &id)).await,
                    DiskOp::Resize(r) => client.resize_disk(with_request_id(r, &id)).await,
                    DiskOp::Remove(r) => client.remove_disk(with_request_id(r, &id)).await,
                };
                resp.map(tonic::Response::into_inner)
            }
        })
        .await
    }

    pub async fn vm_action(&self, verb: VmVerb, name: &str) -> Result<pb::Vm, ClientError> {
        let req = pb::VmNameRequest {
            name: name.to_string(),
        };
        let id = self.next_request_id();
        self.call(|c| {
            let req = with_request_id(req.clone(), &id);
            async move {
                let mut client =
                    VmServiceClient::new(c).max_decoding_message_size(Self::MAX_RESPONSE_BYTES);
                let resp = match verb {
                    VmVerb::Start => client.start_vm(req).await,
                    VmVerb::Stop => client.stop_vm(req).await,
                    VmVerb::Delete { keep_disks } => {
                        let del = pb::DeleteVmRequest {
                            name: req.get_ref().name.clone(),
                            keep_disks,
                        };
                        let mut del = tonic::Request::new(del);
                        *del.metadata_mut() = req.metadata().clone();
                        client.delete_vm(del).await
                    }
                };
                resp.map(tonic::Response::into_inner)
            }
        })
        .await
    }
}

/// A read's answer and what it reflects.
#[derive(Debug, Clone)]
pub struct Read<T> {
    pub value: T,
    /// The answering controller's applied index when it read.
    pub applied_index: u64,
    pub served_by: u64,
}

impl<T> Read<T> {
    fn from_response(resp: tonic::Response<T>) -> Self {
        let number = |key: &str| {
            resp.metadata()
                .get(key)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        let applied_index = number(APPLIED_INDEX_METADATA_KEY);
        let served_by = number(SERVED_BY_METADATA_KEY);
        Read {
            value: resp.into_inner(),
            applied_index,
            served_by,
        }
    }

    fn map<U>(self, f: impl FnOnce(T) -> U) -> Read<U> {
        Read {
            value: f(self.value),
            applied_index: self.applied_index,
            served_by: self.served_by,
        }
    }
}

/// A change to the controller membership.
#[derive(Debug, Clone)]
pub enum Membership {
    Add { id: u64, address: String },
    Remove { id: u64 },
    TransferLeader { id: u64 },
}

/// Whether `s` reports a broken connection rather than the server's answer: tonic turns
/// transport failures (a refused TLS handshake, a plaintext client at a TLS port) into
/// UNKNOWN/CANCELLED, or INTERNAL with an h2 error; drover's handlers never answer so.
fn is_connection_failure(s: &Status) -> bool {
    match s.code() {
        Code::Unknown | Code::Cancelled => true,
        Code::Internal => s.message().contains("h2 protocol error"),
        _ => false,
    }
}

/// Wraps `msg` in a request carrying `id` as its request id.
pub fn with_request_id<T>(msg: T, id: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    if let Ok(v) = MetadataValue::try_from(id) {
        req.metadata_mut().insert(REQUEST_ID_METADATA_KEY, v);
    }
    req
}

/// Distinguishes this client's request ids from every other client's: process id, start
/// time and the address of a stack value (ASLR) — unique enough without a random crate.
fn client_nonce() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let marker = 0u8;
    format!(
        "{:x}{:x}{:x}",
        std::process::id(),
        nanos,
        &marker as *const u8 as usize
    )
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

/// A change to a VM's disks.
#[derive(Debug, Clone)]
pub enum DiskOp {
    Add(pb::AddDiskRequest),
    Resize(pb::ResizeDiskRequest),
    Remove(pb::RemoveDiskRequest),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VmVerb {
    Start,
    Stop,
    Delete {
        /// Leave the VM's volumes in their pools.
        keep_disks: bool,
    },
}
