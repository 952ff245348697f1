//! gRPC clients to hostd, one lazily connected channel per host address, shared by the
//! host and VM actors so a host's session and commands reuse one HTTP/2 connection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use drover_proto::agent::v1::host_agent_client::HostAgentClient;
use drover_proto::transport::{endpoint, TlsHandle};
use tonic::transport::Channel;

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
        let channel = endpoint(address, self.tls.as_deref())?.connect_lazy();
        channels.insert(address.to_string(), channel.clone());
        Ok(HostAgentClient::new(channel))
    }
}
