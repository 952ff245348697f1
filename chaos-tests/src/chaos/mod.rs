//! The chaos engine (issue 12, points 5–8): a seeded fault schedule run against a real
//! cluster while a workload records what its clients saw, then checkers judge the run.
pub mod faults;
pub mod history;
pub mod linearizable;
pub mod load;
pub mod rng;
pub mod run;
pub mod schedule;
pub mod verdicts;

pub use run::{run, ChaosConfig, ChaosReport};
pub use schedule::Mix;
