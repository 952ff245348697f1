//! Growing a running VM's disk: after `ResizeDisk` committed the new size, the leader has
//! the VM's host grow the guest's block device (`HostAgent/GrowDisk`). The state is the
//! truth either way: every start grows a volume smaller than the state says, so a grow the
//! host could not do now happens at the next start, and repeating the resize (same size)
//! retries it.

use drover_actors::{AgentPool, QUICK_CALL};
use drover_proto::agent::v1 as agent;
use drover_raft::RaftNode;
use tonic::Status;

/// Grows disk `index` of `vm` on its host if the guest runs; nothing when it does not.
/// Only while this node still leads in `term`, the term the resize was committed in.
pub async fn grow_online(
    node: &RaftNode,
    agents: &AgentPool,
    term: u64,
    vm: &str,
    index: u32,
) -> Result<(), Status> {
    let m = node.metrics();
    if m.current_leader != Some(node.id()) || m.current_term != term {
        return Err(Status::aborted(format!(
            "Disk {index} of VM {vm:?} was grown in the cluster's state, but this controller \
             lost the lead before its host grew the running guest's disk; the guest sees \
             the new size at its next start, or repeat the resize"
        )));
    }
    let target = node.view().read(|d| {
        let v = d.state.vms.get(vm)?;
        if !v.observed.is_active() {
            return None;
        }
        let host = d.state.hosts.get(v.host.as_deref()?)?;
        let disk = v.disks.get(index as usize)?;
        Some((
            host.name.clone(),
            host.address.clone(),
            v.generation,
            drover_actors::vm_disk(disk),
        ))
    });
    let Some((host, address, generation, disk)) = target else {
        return Ok(());
    };
    let size = disk.size_bytes;
    let req = agent::GrowDiskRequest {
        name: vm.to_string(),
        fence: Some(agent::Fence { term, generation }),
        index,
        disk: Some(disk),
    };
    let grown = match agents.client(&address) {
        Ok(mut client) => {
            let mut call = tonic::Request::new(req);
            call.set_timeout(QUICK_CALL);
            client.grow_disk(call).await.map(|r| r.into_inner())
        }
        Err(e) => Err(Status::unavailable(e.to_string())),
    };
    match grown {
        Ok(r) => {
            tracing::info!(vm, host = %host, term, index, bytes = size, online = r.online, "disk grown");
            Ok(())
        }
        Err(s) => Err(Status::aborted(format!(
            "Disk {index} of VM {vm:?} is {size} bytes in the cluster's state, but host {host} \
             could not grow the running guest's disk: {}. The guest sees the new size at its \
             next start; repeat the resize to try again now",
            s.message()
        ))),
    }
}
