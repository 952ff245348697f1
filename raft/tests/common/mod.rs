//! Fixtures shared by the integration tests of the store.

use drover_raft::model::VmSpec;
use drover_raft::Command;

/// Creates a stopped 1-vCPU/64-MiB VM named `name`.
pub fn create_vm(name: &str) -> Command {
    Command::CreateVm {
        name: name.into(),
        spec: VmSpec {
            vcpus: 1,
            memory_mib: 64,
        },
        start: false,
        options: Default::default(),
    }
}
