//! Failover drills: rehearsing a failure on a live cluster. The pure plan of a host
//! failure (what would restart where, what would stay down, whether the cluster could
//! survive it now) is what `drover drill host-failure --dry-run` shows and what a drill
//! checks before it starts.

pub mod plan;

pub use plan::{plan, DrillPlan, Quorum, Refusal};
