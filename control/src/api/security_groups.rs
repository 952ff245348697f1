//! `SecurityGroupService`, and the filters of running guests: after a group's rules or a
//! VM's groups change (committed first: the state is the truth), the leader, still in that
//! term, has each affected running VM's host update its NICs' filters
//! (`HostAgent/UpdateNicFilters`). One the host cannot update now keeps its old filter
//! until its next start, and the answer says which.

use drover_actors::vm::wire::vm_nics;
use drover_actors::{deadline, AgentPool, QUICK_CALL};
use drover_proto::agent::v1 as agent;
use drover_proto::v1 as pb;
use drover_proto::v1::security_group_service_server::SecurityGroupService;
use drover_raft::model::{parse_cidr, ObservedState, SecurityGroup, SgProto, SgRule};
use drover_raft::{Command, RaftNode, Reply};
use tonic::{Request, Response, Status};

use super::cluster::{applied, fresh_read, read_response};
use super::write::commit;

pub struct SecurityGroupApi {
    node: RaftNode,
    agents: AgentPool,
}

impl SecurityGroupApi {
    pub fn new(node: RaftNode, agents: AgentPool) -> Self {
        Self { node, agents }
    }
}

pub(crate) fn to_pb(g: &SecurityGroup) -> pb::SecurityGroup {
    pb::SecurityGroup {
        name: g.name.clone(),
        rules: g
            .rules
            .iter()
            .map(|r| {
                let (port_lo, port_hi) = r.wire_ports();
                pb::SecurityRule {
                    proto: r.proto.as_str().into(),
                    port_lo,
                    port_hi,
                    from: r.wire_from(),
                }
            })
            .collect(),
    }
}

fn rule(r: &pb::SecurityRule) -> Result<SgRule, Status> {
    let proto = SgProto::parse(&r.proto).ok_or_else(|| {
        Status::invalid_argument(format!("unknown protocol {:?}: tcp, udp or icmp", r.proto))
    })?;
    let ports = match (r.port_lo, r.port_hi) {
        (0, 0) => None,
        (lo, hi) => Some(
            u16::try_from(lo)
                .ok()
                .zip(u16::try_from(hi).ok())
                .ok_or_else(|| {
                    Status::invalid_argument(format!("ports {lo}-{hi} are over 65535"))
                })?,
        ),
    };
    let from = match r.from.as_str() {
        "" => None,
        cidr => Some(
            parse_cidr(cidr).map_err(|why| Status::invalid_argument(format!("source: {why}")))?,
        ),
    };
    // The rest (ranges, host bits) is apply's to check, where every write is.
    Ok(SgRule { proto, ports, from })
}

/// Updates the filters of the running VMs among `vms`; the failures, by VM, in one error.
/// Only while this node still leads in `term`, the term the change was committed in.
pub(crate) async fn refresh_filters(
    node: &RaftNode,
    agents: &AgentPool,
    term: u64,
    vms: &[String],
) -> Result<(), Status> {
    let m = node.metrics();
    if m.current_leader != Some(node.id()) || m.current_term != term {
        return Err(Status::aborted(
            "The change is in the cluster's state, but this controller lost the lead before \
             running guests' filters were updated; they change at their next start",
        ));
    }
    let mut failed = Vec::new();
    let mut targets = Vec::new();
    node.view().read(|d| {
        for v in vms.iter().filter_map(|name| d.state.vms.get(name)) {
            if v.nics.is_empty() {
                continue;
            }
            // A VM starting now may come up with the rules its start was sent with.
            if v.observed == ObservedState::Starting {
                failed.push(format!(
                    "{}: starting, it may run the old rules; repeat the change once it runs",
                    v.name
                ));
                continue;
            }
            let host = v.host.as_deref().and_then(|h| d.state.hosts.get(h));
            let (true, Some(host)) = (v.observed.is_active(), host) else {
                continue;
            };
            let req = agent::UpdateNicFiltersRequest {
                name: v.name.clone(),
                fence: Some(agent::Fence {
                    term,
                    generation: v.generation,
                }),
                nics: vm_nics(v, &d.state),
            };
            targets.push((v.name.clone(), host.name.clone(), host.address.clone(), req));
        }
    });
    for (vm, host, address, req) in targets {
        let updated = match agents.client(&address) {
            Ok(mut client) => client
                .update_nic_filters(deadline(req, QUICK_CALL))
                .await
                .map(|r| r.into_inner()),
            Err(e) => Err(Status::unavailable(e.to_string())),
        };
        match updated {
            Ok(r) => {
                tracing::info!(vm, host = %host, term, online = r.online, "NIC filters updated")
            }
            Err(s) => failed.push(format!("{vm} (on {host}): {}", s.message())),
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(Status::aborted(format!(
            "The change is in the cluster's state, but these running guests keep their old \
             filters until their next start: {}",
            failed.join("; ")
        )))
    }
}

#[tonic::async_trait]
impl SecurityGroupService for SecurityGroupApi {
    async fn put_security_group(
        &self,
        req: Request<pb::PutSecurityGroupRequest>,
    ) -> Result<Response<pb::SecurityGroup>, Status> {
        let (meta, _, req) = req.into_parts();
        super::errors::leader_only(&self.node)?;
        let term = self.node.metrics().current_term;
        let rules = req.rules.iter().map(rule).collect::<Result<Vec<_>, _>>()?;
        let cmd = Command::PutSecurityGroup {
            name: req.name.clone(),
            rules,
        };
        let group = match commit(&self.node, &meta, cmd).await? {
            Reply::SecurityGroup(g) => g,
            other => return Err(Status::internal(format!("unexpected reply {other:?}"))),
        };
        let users: Vec<String> = self.node.view().read(|d| {
            d.state
                .vms
                .values()
                .filter(|v| v.security_groups.contains(&group.name))
                .map(|v| v.name.clone())
                .collect()
        });
        refresh_filters(&self.node, &self.agents, term, &users).await?;
        Ok(Response::new(to_pb(&group)))
    }

    async fn list_security_groups(
        &self,
        req: Request<pb::ListSecurityGroupsRequest>,
    ) -> Result<Response<pb::ListSecurityGroupsResponse>, Status> {
        fresh_read(&self.node, req.into_inner().stale).await?;
        let (index, groups) = self.node.view().read(|d| {
            (
                applied(d),
                d.state.security_groups.values().map(to_pb).collect(),
            )
        });
        Ok(read_response(
            &self.node,
            index,
            pb::ListSecurityGroupsResponse { groups },
        ))
    }

    async fn delete_security_group(
        &self,
        req: Request<pb::DeleteSecurityGroupRequest>,
    ) -> Result<Response<pb::DeleteSecurityGroupResponse>, Status> {
        let (meta, _, req) = req.into_parts();
        commit(
            &self.node,
            &meta,
            Command::DeleteSecurityGroup { name: req.name },
        )
        .await?;
        Ok(Response::new(pb::DeleteSecurityGroupResponse {}))
    }
}
