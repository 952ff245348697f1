//! drover's process-level test harness: real `drover server` and `hostd` processes on
//! loopback, faults applied by PID, and outcomes read back through the CLI and the agents'
//! gRPC API.
//!
//! Load comes from [`workload`] over a small leader-following gRPC client ([`client`]);
//! [`checkers`] judges the cluster against the history the clients recorded.
//!
//! The binaries must be built first (`cargo build --bins`, as the README's test command
//! does); they are found next to the test executable's `target/<profile>` directory, or in
//! `$DROVER_BIN_DIR`.

pub mod bench_kit;
pub mod chaos;
pub mod checkers;
pub mod client;
pub mod cluster;
pub mod console;
pub mod etcd;
pub mod guest;
pub mod guest_shell;
pub mod ha;
pub mod libvirt_hosts;
pub mod machine_lock;
pub mod multihost;
pub mod netns;
pub mod partition;
pub mod process;
pub mod qemu_host;
pub mod raw;
pub mod require;
pub mod sampler;
pub mod system_libvirt;
pub mod wait;
pub mod workload;

pub use cluster::{free_port, Cluster, ClusterSpec};
pub use process::ChildProcess;
pub use sampler::{Sampler, Samples};
pub use wait::wait_until;
pub use workload::{History, Workload, WorkloadConfig};
