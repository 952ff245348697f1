//! `VmService/VmConsole`: a VM's serial console relayed between the operator's stream and
//! the hostd of the VM's host (`HostAgent/Console`). The leader does it: it knows where the
//! VM runs and holds the term hostd admits. The session is not re-checked after it opens:
//! a leader change leaves it attached to the same guest, which is where the VM still is.

use std::pin::Pin;

use drover_actors::{AgentPool, QUICK_CALL};
use drover_proto::agent::v1 as agent;
use drover_proto::v1 as pb;
use drover_raft::model::ObservedState;
use drover_raft::RaftNode;
use futures::{Stream, StreamExt};
use tonic::{Code, Status, Streaming};

use super::errors::leader_only;

/// The guest's output, as the operator's stream carries it.
pub type Output = Pin<Box<dyn Stream<Item = Result<pb::VmConsoleOutput, Status>> + Send>>;

/// Opens the console the first message of `input` names; `input`'s further data goes to
/// the guest.
pub async fn attach(
    node: &RaftNode,
    agents: &AgentPool,
    mut input: Streaming<pb::VmConsoleInput>,
) -> Result<Output, Status> {
    let first = match tokio::time::timeout(QUICK_CALL, input.message()).await {
        Ok(Ok(Some(first))) if !first.name.is_empty() => first,
        Ok(Err(status)) => return Err(status),
        _ => {
            return Err(Status::invalid_argument(
                "The first message of a console session must name the VM",
            ))
        }
    };
    leader_only(node)?;
    let metrics = node.metrics();
    let (host, address) = node.view().read(|d| {
        let vm = d
            .state
            .vms
            .get(&first.name)
            .ok_or_else(|| Status::not_found(format!("VM {:?} not found", first.name)))?;
        let host = match (&vm.host, vm.observed) {
            (Some(host), ObservedState::Running | ObservedState::Paused) => host.clone(),
            (_, observed) => {
                return Err(Status::failed_precondition(format!(
                    "VM {:?} is not running (it is {observed:?}): a console needs a running guest",
                    first.name
                )))
            }
        };
        let address = d
            .state
            .hosts
            .get(&host)
            .map(|h| h.address.clone())
            .ok_or_else(|| Status::unavailable(format!("Host {host} is gone")))?;
        Ok((host, address))
    })?;
    tracing::info!(vm = %first.name, host = %host, term = metrics.current_term, "console attach");
    let opening = agent::ConsoleInput {
        name: first.name.clone(),
        term: metrics.current_term,
        data: first.data,
    };
    // The session ends at the first error from the operator's side (a broken stream).
    let rest = input
        .take_while(|m| std::future::ready(m.is_ok()))
        .filter_map(|m| std::future::ready(m.ok()))
        .map(|m| agent::ConsoleInput {
            data: m.data,
            ..Default::default()
        });
    let outbound = futures::stream::iter([opening]).chain(rest);
    // Its own connection, without the per-call ceiling: a session lasts as long as the
    // operator wants; keepalive still ends it when the host stops answering.
    let mut client = agents
        .bulk_client(&address)
        .map_err(|e| Status::aborted(format!("Host {host}: {e}")))?;
    let opened = tokio::time::timeout(QUICK_CALL, client.console(outbound))
        .await
        .map_err(|_| Status::aborted(format!("Host {host} did not open the console in time")))?
        .map_err(|s| host_status(&host, s))?;
    let output = opened
        .into_inner()
        .map(|m| m.map(|o| pb::VmConsoleOutput { data: o.data }));
    Ok(Box::pin(output))
}

/// A host's refusal as the operator should see it: their own mistakes keep their code;
/// the rest is `Aborted` (not `Unavailable`, which clients retry at another controller).
fn host_status(host: &str, s: Status) -> Status {
    let msg = format!("Host {host}: {}", s.message());
    match s.code() {
        Code::NotFound => Status::not_found(msg),
        Code::FailedPrecondition => Status::failed_precondition(msg),
        Code::InvalidArgument => Status::invalid_argument(msg),
        _ => Status::aborted(msg),
    }
}
