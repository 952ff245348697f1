//! Live migrations on the leader: one [`MigrationActor`] per running migrate operation
//! drives the source hostd's `MigrateVm` stream and commits the outcome; [`locate`] decides,
//! from both hosts' domain lists, where a migration whose stream was lost ended up (a new
//! leader, a broken connection).

mod actor;
pub mod locate;

pub use actor::MigrationActor;
