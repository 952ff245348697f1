//! One host's supervision on the leader: the session with its hostd.

mod actor;

pub use actor::{HostActor, HostReport};
