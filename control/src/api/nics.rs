//! NICs of running VMs (hot-plug). Adding: once `AddNic` committed (the NIC's MAC and
//! address are the cluster's from then on), the leader has the VM's host plug it into the
//! running guest (`HostAgent/PlugNic`, its network wired there first); a plug the host
//! could not do now happens at the next start, as the state says. Removing: the host
//! unplugs the NIC first (`HostAgent/UnplugNic`, which answers once the guest let go of
//! it), and only then is `RemoveNic` committed, naming the placement it was unplugged
//! from, so that its address is never free while a guest may still send from it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use drover_actors::vm::wire::{vm_nics, wiring};
use drover_actors::{deadline, AgentPool, START_CALL};
use drover_proto::agent::v1 as agent;
use drover_raft::RaftNode;
use tonic::Status;

/// One async lock per VM, held by the leader across "commit AddNic, then PlugNic" and
/// "UnplugNic, then commit RemoveNic": without it a late plug could land after the NIC's
/// removal freed its address (a client that timed out on an add and removed the NIC). A
/// new leader's term fences the old one's calls in hostd.
#[derive(Default, Clone)]
pub struct NicLocks(Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>);

impl NicLocks {
    pub async fn lock(&self, vm: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            // Unused entries go: only VMs being changed now keep one.
            locks.retain(|_, l| Arc::strong_count(l) > 1);
            Arc::clone(locks.entry(vm.to_string()).or_default())
        };
        lock.lock_owned().await
    }
}

/// Where a running VM is: its host's name and address, and its placement's generation.
struct Placed {
    host: String,
    address: String,
    generation: u64,
}

/// Plugs NIC `mac` of `vm` into its running guest; nothing when the VM is not running.
/// Only while this node still leads in `term`, the term `AddNic` was committed in.
pub async fn plug_online(
    node: &RaftNode,
    agents: &AgentPool,
    term: u64,
    vm: &str,
    mac: &str,
) -> Result<(), Status> {
    let not_now = |why: String| {
        Status::aborted(format!(
            "NIC {mac} was added to VM {vm:?} in the cluster's state, but {why}. The guest \
             gets it at its next start; `drover vm nic remove {vm} {mac}` undoes the add"
        ))
    };
    let m = node.metrics();
    if m.current_leader != Some(node.id()) || m.current_term != term {
        return Err(not_now(
            "this controller lost the lead before the host plugged it in".into(),
        ));
    }
    let target = node.view().read(|d| {
        let v = d.state.vms.get(vm)?;
        if !v.observed.is_active() {
            return None;
        }
        let host = d.state.hosts.get(v.host.as_deref()?)?;
        let nic = vm_nics(v, &d.state).into_iter().find(|n| n.mac == mac)?;
        let net = d.state.networks.get(&nic.network)?;
        let placed = Placed {
            host: host.name.clone(),
            address: host.address.clone(),
            generation: v.generation,
        };
        Some((placed, nic, wiring(net, &d.state, &host.name)))
    });
    let Some((placed, nic, network)) = target else {
        return Ok(());
    };
    let req = agent::PlugNicRequest {
        name: vm.to_string(),
        fence: Some(agent::Fence {
            term,
            generation: placed.generation,
        }),
        nic: Some(nic),
        network: Some(network),
    };
    let plugged = match agents.client(&placed.address) {
        Ok(mut client) => client
            .plug_nic(deadline(req, START_CALL))
            .await
            .map(|r| r.into_inner()),
        Err(e) => Err(Status::unavailable(e.to_string())),
    };
    match plugged {
        Ok(r) => {
            tracing::info!(vm, host = %placed.host, term, mac, online = r.online, "NIC plugged");
            Ok(())
        }
        Err(s) => Err(not_now(format!(
            "host {} could not plug it into the running guest: {}",
            placed.host,
            s.message()
        ))),
    }
}

/// Before NIC `mac` of `vm` is removed: has its host unplug it from the running guest and
/// returns the generation of the placement it is off (`None`: the VM is not running; the
/// removal is then `apply`'s to judge). Only on the leader, whose term fences the call.
pub async fn unplug_for_removal(
    node: &RaftNode,
    agents: &AgentPool,
    vm: &str,
    mac: &str,
) -> Result<Option<u64>, Status> {
    super::errors::leader_only(node)?;
    let term = node.metrics().current_term;
    // What `apply` would refuse anyway is refused before the guest loses anything.
    let target = node.view().read(|d| {
        let Some(v) = d.state.vms.get(vm) else {
            return Ok(None);
        };
        if let Some(op) = v.migration {
            return Err(Status::failed_precondition(format!(
                "VM {vm:?} is being migrated by operation {op}; wait for it or cancel it"
            )));
        }
        if !v.nics.iter().any(|n| n.mac.eq_ignore_ascii_case(mac)) {
            return Err(Status::not_found(format!("VM {vm:?} has no NIC {mac}")));
        }
        if !v.observed.is_active() {
            return Ok(None);
        }
        Ok(v.host
            .as_deref()
            .and_then(|h| d.state.hosts.get(h))
            .map(|host| Placed {
                host: host.name.clone(),
                address: host.address.clone(),
                generation: v.generation,
            }))
    })?;
    let Some(placed) = target else {
        return Ok(None);
    };
    let req = agent::UnplugNicRequest {
        name: vm.to_string(),
        fence: Some(agent::Fence {
            term,
            generation: placed.generation,
        }),
        mac: mac.to_string(),
    };
    let unplugged = match agents.client(&placed.address) {
        // The guest may take its time (hostd waits up to 15 s for it).
        Ok(mut client) => client
            .unplug_nic(deadline(req, START_CALL))
            .await
            .map(|r| r.into_inner()),
        Err(e) => Err(Status::unavailable(e.to_string())),
    };
    match unplugged {
        Ok(agent::UnplugNicResponse {}) => {
            tracing::info!(vm, host = %placed.host, term, mac, "NIC unplugged");
            Ok(Some(placed.generation))
        }
        Err(s) => Err(Status::new(
            s.code(),
            format!(
                "NIC {mac} of VM {vm:?} stays (nothing changed): host {} could not unplug it \
                 from the running guest: {}",
                placed.host,
                s.message()
            ),
        )),
    }
}
