//! One host's supervision on the leader: the session with its hostd, and the pure health
//! state machine the HA design runs on it.

mod actor;
pub mod health;

pub use actor::{HostActor, HostReport};
