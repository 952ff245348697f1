//! drover's leader-side supervision, as actix actors.
//!
//! - [`Supervisor`]: follows Raft leadership; while this node leads it runs one
//!   [`host::HostActor`] per host and one [`vm::VmActor`] per VM.
//! - [`scheduler`] and [`vm::decide`]: the decisions, as pure functions the actors carry out.
//! - [`host::health`], [`host::stale`] and [`failover`]: the HA decisions (host health with
//!   lease arithmetic, which domains a returning host must destroy, failover planning),
//!   pure and tested; the host actors and the supervisor's failover rounds carry them out.
//! - [`migration`] and [`drain`]: one actor per running operation (live migration,
//!   maintenance drain); [`migration::locate`] and [`drain::plan`] are their pure decisions.

mod agents;
pub mod drain;
pub mod drill;
pub mod failover;
#[cfg(test)]
mod fixtures;
pub mod host;
mod image_copy;
pub mod migration;
pub mod scheduler;
mod supervisor;
pub mod vm;

pub use agents::{deadline, upload_deadline, AgentPool, QUICK_CALL, START_CALL};
pub use supervisor::{LeadingTerm, Supervisor, SupervisorConfig};
pub use vm::wire::vm_disk;

/// Asks an actor to stop.
#[derive(actix::Message, Debug)]
#[rtype(result = "()")]
pub struct Shutdown;
