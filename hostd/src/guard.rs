//! Who may call hostd: controllers, and nobody else. Every RPC passes this one check (a
//! layer in front of the whole `HostAgent` service, see [`drover_proto::guard`]) before any
//! handler runs: a host's or a user's certificate from the same CA cannot open a session
//! (and forge lease grants, or poison the fencing term), start, stop or migrate guests.

use drover_proto::guard::{Caller, Policy};
use drover_proto::identity::Peer;
use tonic::Status;
use tracing::warn;

/// hostd's policy. Without TLS (`--insecure`) there is nobody to tell apart, and every
/// caller is served: that is what plaintext mode means.
#[derive(Debug, Clone)]
pub(crate) struct ControllersOnly {
    pub(crate) tls: bool,
    /// This host's name, for the log.
    pub(crate) host: String,
}

impl Policy for ControllersOnly {
    fn admit(&self, caller: &Caller<'_>) -> Result<(), Status> {
        if !self.tls {
            return Ok(());
        }
        let refused = match &caller.certificate {
            Some(Ok(Peer::Controller(_))) => return Ok(()),
            Some(Ok(other)) => Status::permission_denied(format!(
                "hostd serves controllers only; this certificate is for {other}"
            )),
            Some(Err(e)) => Status::unauthenticated(format!(
                "hostd serves controllers only, identified by a drover://controller/<id> \
                 certificate: {e}"
            )),
            // The TLS handshake requires a client certificate; this is for completeness.
            None => Status::unauthenticated(
                "hostd serves controllers only: present a controller certificate",
            ),
        };
        warn!(host = %self.host, path = caller.path, status = %refused.message(), "Call refused");
        Err(refused)
    }
}
