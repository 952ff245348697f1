//! Maintenance drains on the leader: [`plan::step`] decides (pure), [`DrainActor`] commits
//! what it decides — migrations to start, VMs to re-place, progress, the end.

mod actor;
pub mod plan;

pub use actor::DrainActor;
pub use plan::DrainLimits;
