//! gRPC clients to hostd, one lazily connected channel per host address, shared by the
//! host and VM actors so a host's session and commands reuse one HTTP/2 connection.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use drover_proto::agent::v1::host_agent_client::HostAgentClient;
use tonic::transport::{Channel, Endpoint};

#[derive(Debug, Clone, Default)]
pub struct AgentPool {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl AgentPool {
    /// A client for the hostd at `address` (`host:port`).
    pub fn client(
        &self,
        address: &str,
    ) -> Result<HostAgentClient<Channel>, tonic::transport::Error> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = channels.get(address) {
            return Ok(HostAgentClient::new(c.clone()));
        }
        let channel = Endpoint::from_shared(format!("http://{address}"))?
            .connect_timeout(Duration::from_secs(1))
            .tcp_nodelay(true)
            .connect_lazy();
        channels.insert(address.to_string(), channel.clone());
        Ok(HostAgentClient::new(channel))
    }
}
