//! Who may call what on a controller. Every RPC on the controller's listener — the public
//! API, Raft, health, reflection — passes one [`ControllerPolicy`] (a layer in front of all
//! services, see [`drover_proto::guard`]) before any handler runs:
//!
//! 1. the caller is identified ([`identity`]): by its client certificate's `drover://` URI,
//!    or else by a bearer token ([`tokens`]), checked against this controller's applied
//!    state (a token just created or revoked takes effect on a follower once it has
//!    applied that write, normally within a heartbeat);
//! 2. [`roles::need`] says what the RPC needs: a controller (Raft), a user of at least some
//!    role, or nobody in particular (health);
//! 3. no or a bad credential → `UNAUTHENTICATED`; a known caller who lacks what the RPC
//!    needs → `PERMISSION_DENIED`, naming what is needed.

pub mod identity;
pub mod roles;
pub mod tokens;

use drover_proto::guard::{Caller, Policy};
use tonic::Status;

pub use roles::{need, Need};

/// The controller's policy. Without TLS (`--insecure`) nobody can be identified, and every
/// caller is served as if it were an admin and a controller: that is what plaintext means.
#[derive(Clone)]
pub struct ControllerPolicy {
    pub tls: bool,
    /// This controller's applied state, for the token table.
    pub state: drover_raft::store::StateView,
}

impl std::fmt::Debug for ControllerPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControllerPolicy")
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

impl Policy for ControllerPolicy {
    fn admit(&self, caller: &Caller<'_>) -> Result<(), Status> {
        if !self.tls {
            return Ok(());
        }
        let now_ms = drover_raft::wall_clock_ms();
        let decision = identity::identify(caller, &self.state, now_ms)
            .and_then(|who| roles::check(caller.path, who));
        if let Err(status) = &decision {
            tracing::info!(path = caller.path, code = ?status.code(), reason = status.message(), "call refused");
        }
        decision
    }
}
