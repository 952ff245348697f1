//! One VM's supervision on the leader: the pure reconcile step and the actor that runs it.

mod actor;
mod reconcile;
pub mod wire;

pub use actor::{observation, observed_state, Observe, Poke, VmActor};
pub use reconcile::{decide, Action, Observation};
