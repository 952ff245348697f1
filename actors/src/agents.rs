//! gRPC clients to hostd, one lazily connected channel per host address, shared by the
//! host and VM actors so a host's session and commands reuse one HTTP/2 connection; and the
//! deadlines every call to hostd carries.
//!
//! A hostd that goes silent (frozen, partitioned, its traffic dropped) must never wedge an
//! actor: every unary call has a deadline ([`deadline`], under the channel's ceiling
//! [`MAX_CALL`]), and HTTP/2 keepalive pings end a stream whose peer stopped answering
//! within [`KEEPALIVE`] + [`KEEPALIVE_TIMEOUT`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drover_proto::agent::v1::host_agent_client::HostAgentClient;
use drover_proto::transport::{endpoint, TlsHandle};
use tonic::transport::Channel;

/// The longest any call may take (a graceful stop: 30 s for the guest, then a destroy).
pub const MAX_CALL: Duration = Duration::from_secs(60);
/// Quick calls: list, destroy, undefine, abort.
pub const QUICK_CALL: Duration = Duration::from_secs(10);
/// A start: defining the domain and starting QEMU.
pub const START_CALL: Duration = Duration::from_secs(30);
/// How often the channel pings a hostd, streams or not.
pub const KEEPALIVE: Duration = Duration::from_secs(1);
/// A ping unanswered this long ends the connection and every call and stream on it.
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(3);

/// `msg` as a request that gives up after `within` (sent to hostd as `grpc-timeout` too).
pub fn deadline<T>(msg: T, within: Duration) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.set_timeout(within);
    req
}

#[derive(Debug, Clone, Default)]
pub struct AgentPool {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
    /// The controller's TLS identity; hostd requires it when the cluster uses mTLS.
    tls: TlsHandle,
}

impl AgentPool {
    pub fn new(tls: TlsHandle) -> Self {
        Self {
            channels: Default::default(),
            tls,
        }
    }

    /// A client for the hostd at `address` (`host:port`).
    pub fn client(
        &self,
        address: &str,
    ) -> Result<HostAgentClient<Channel>, tonic::transport::Error> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = channels.get(address) {
            return Ok(HostAgentClient::new(c.clone()));
        }
        let channel = endpoint(address, self.tls.as_deref())?
            .timeout(MAX_CALL)
            .http2_keep_alive_interval(KEEPALIVE)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .connect_lazy();
        channels.insert(address.to_string(), channel.clone());
        Ok(HostAgentClient::new(channel))
    }

    /// A client for one bulk transfer (an image upload) to the hostd at `address`: its own
    /// connection, without the channel's [`MAX_CALL`] ceiling, since a big file takes
    /// longer; the caller sets a deadline that fits the size, and keepalive still ends it
    /// if the host stops answering.
    pub fn bulk_client(
        &self,
        address: &str,
    ) -> Result<HostAgentClient<Channel>, tonic::transport::Error> {
        let channel = endpoint(address, self.tls.as_deref())?
            .http2_keep_alive_interval(KEEPALIVE)
            .keep_alive_timeout(KEEPALIVE_TIMEOUT)
            .keep_alive_while_idle(true)
            .connect_lazy();
        Ok(HostAgentClient::new(channel))
    }
}

/// The deadline of an upload of `bytes`: a minute, plus a second per 10 MiB (a slow disk
/// on the host, or a shared filesystem, at its slowest reasonable pace).
pub fn upload_deadline(bytes: u64) -> Duration {
    Duration::from_secs(60 + bytes / (10 << 20))
}
