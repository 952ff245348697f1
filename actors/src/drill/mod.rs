//! Failover drills: rehearsing a failure on a live cluster. The pure plan of a host
//! failure (what would restart where, what would stay down, whether the cluster could
//! survive it now) is what `drover drill host-failure --dry-run` shows and what a drill
//! checks before it starts; [`follow`] decides a running drill's steps, [`never_twice`]
//! checks its samples, and [`DrillActor`] carries a drill out on the leader.
//! [`LeaderWatch`] ends a leader-failover drill whose observer vanished;
//! [`MigrationDrillActor`] runs a migration drill's round trip; [`DrillCadence`] starts
//! scheduled drills.

mod actor;
pub mod cadence;
pub mod follow;
pub mod leader_watch;
pub mod migration_drill;
pub mod never_twice;
pub mod plan;

pub use actor::{count_finished, finished_event, DrillActor};
pub use cadence::DrillCadence;
pub use leader_watch::LeaderWatch;
pub use migration_drill::MigrationDrillActor;
pub use plan::{plan, DrillPlan, Quorum, Refusal};
