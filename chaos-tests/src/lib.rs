//! drover's process-level test harness: real `drover server` and `hostd` processes on
//! loopback, faults applied by PID, and outcomes read back through the CLI and the agents'
//! gRPC API.
//!
//! The binaries must be built first (`cargo build --bins`, as the README's test command
//! does); they are found next to the test executable's `target/<profile>` directory, or in
//! `$DROVER_BIN_DIR`.

pub mod cluster;
pub mod process;
pub mod wait;

pub use cluster::{Cluster, ClusterSpec};
pub use process::ChildProcess;
pub use wait::wait_until;
