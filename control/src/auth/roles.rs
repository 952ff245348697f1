//! The table: every RPC a controller serves, by its full gRPC path, and the least that may
//! call it. One `match`, so that reviewing who may do what means reading one screen; a
//! path it does not know is refused, and a test walks every method of every service in
//! the descriptor set to make sure none is left out.

use drover_proto::identity::{Peer, Role};
use prost::Message as _;
use tonic::Status;

/// What an RPC needs of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// Nothing: anyone may ask (the gRPC health check, for load balancers and probes).
    Anyone,
    /// A controller certificate (Raft and the other internal traffic).
    Controller,
    /// A user with at least this role.
    User(Role),
    /// A user with at least this role, or a controller (peers ask each other's status).
    UserOrController(Role),
}

/// What the RPC at `path` (`/package.Service/Method`) needs; `None` for a path this table
/// does not know, which is refused.
pub fn need(path: &str) -> Option<Need> {
    use Need::*;
    use Role::*;
    let need = match path {
        // Raft between controllers, and the writes followers forward to the leader (which
        // include commands only the leader's own actors may send, e.g. DeclareHostDead).
        "/drover.raft.v1.RaftService/AppendEntries"
        | "/drover.raft.v1.RaftService/Vote"
        | "/drover.raft.v1.RaftService/InstallSnapshot"
        | "/drover.raft.v1.RaftService/ForwardWrite"
        | "/drover.raft.v1.RaftService/HoldElections"
        | "/drover.raft.v1.RaftService/LeaderAlive"
        | "/drover.raft.v1.RaftService/Campaign" => Controller,

        "/drover.v1.ClusterService/Status" => UserOrController(Viewer),
        "/drover.v1.ClusterService/GetHaStatus"
        | "/drover.v1.ClusterService/ListEvents"
        | "/drover.v1.ClusterService/GetPlacementPolicy" => User(Viewer),
        "/drover.v1.ClusterService/SetHaArmed" | "/drover.v1.ClusterService/SetPlacementPolicy" => {
            User(Operator)
        }
        // Membership; a backup holds the whole state, token hashes included; and the
        // lease timings decide when a silent host counts as fenced.
        "/drover.v1.ClusterService/SetLease"
        | "/drover.v1.ClusterService/AddNode"
        | "/drover.v1.ClusterService/RemoveNode"
        | "/drover.v1.ClusterService/TransferLeader"
        | "/drover.v1.ClusterService/SaveSnapshot" => User(Admin),

        "/drover.v1.HostService/GetHost" | "/drover.v1.HostService/ListHosts" => User(Viewer),
        "/drover.v1.HostService/AddHost"
        | "/drover.v1.HostService/FenceHost"
        | "/drover.v1.HostService/DrainHost"
        | "/drover.v1.HostService/ActivateHost"
        | "/drover.v1.HostService/RemoveHost" => User(Operator),

        "/drover.v1.OperationService/ListOperations"
        | "/drover.v1.OperationService/GetOperation" => User(Viewer),
        "/drover.v1.OperationService/CancelOperation" => User(Operator),

        "/drover.v1.VmService/GetVm" | "/drover.v1.VmService/ListVms" => User(Viewer),
        "/drover.v1.VmService/CreateVm"
        | "/drover.v1.VmService/StartVm"
        | "/drover.v1.VmService/StopVm"
        | "/drover.v1.VmService/DeleteVm"
        | "/drover.v1.VmService/MigrateVm"
        | "/drover.v1.VmService/AddDisk"
        | "/drover.v1.VmService/ResizeDisk"
        | "/drover.v1.VmService/RemoveDisk"
        | "/drover.v1.VmService/AddNic"
        | "/drover.v1.VmService/RemoveNic"
        | "/drover.v1.VmService/SetVmSecurityGroups" => User(Operator),
        // A console is a keyboard on the guest: viewers may not attach.
        "/drover.v1.VmService/VmConsole" => User(Operator),

        // A plan changes nothing: anyone who may read the cluster may ask.
        "/drover.v1.DrillService/PlanHostFailure" => User(Viewer),
        "/drover.v1.DrillService/ListDrills" => User(Viewer),
        "/drover.v1.DrillService/StartHostFailure"
        | "/drover.v1.DrillService/StartLeaderFailover"
        | "/drover.v1.DrillService/StartMigrationRoundTrip"
        | "/drover.v1.DrillService/CreateSchedule"
        | "/drover.v1.DrillService/DeleteSchedule" => User(Operator),
        "/drover.v1.DrillService/ListSchedules" => User(Viewer),
        // Only the drill's observer writes probes: another writer's numbers could hide a
        // lost one.
        "/drover.v1.DrillService/Probe" => Controller,
        // Only the drill's observer may tell a leader to go.
        "/drover.v1.DrillService/CutLeader" => Controller,

        "/drover.v1.PoolService/GetPool" | "/drover.v1.PoolService/ListPools" => User(Viewer),
        // Storage is cluster infrastructure, as hosts' membership is: admins declare it.
        "/drover.v1.PoolService/CreatePool" | "/drover.v1.PoolService/DeletePool" => User(Admin),

        "/drover.v1.NetworkService/GetNetwork"
        | "/drover.v1.NetworkService/ListNetworks"
        | "/drover.v1.SecurityGroupService/ListSecurityGroups" => User(Viewer),
        // Networks are cluster infrastructure, as pools are: admins declare them. NICs
        // on them are the VMs' (operators).
        "/drover.v1.NetworkService/CreateNetwork"
        | "/drover.v1.NetworkService/DeleteNetwork"
        | "/drover.v1.NetworkService/AddSubnet"
        | "/drover.v1.NetworkService/RemoveSubnet"
        | "/drover.v1.SecurityGroupService/PutSecurityGroup"
        | "/drover.v1.SecurityGroupService/DeleteSecurityGroup" => User(Admin),

        "/drover.v1.ImageService/GetImage" | "/drover.v1.ImageService/ListImages" => User(Viewer),
        // Images are content VMs are made from, as VMs are: operators bring them.
        "/drover.v1.ImageService/ImportImage" | "/drover.v1.ImageService/DeleteImage" => {
            User(Operator)
        }

        // Tokens are credentials: only admins make, see and revoke them.
        "/drover.v1.TokenService/CreateToken"
        | "/drover.v1.TokenService/ListTokens"
        | "/drover.v1.TokenService/RevokeToken" => User(Admin),

        "/grpc.health.v1.Health/Check" | "/grpc.health.v1.Health/Watch" => Anyone,
        // The schema is no secret, but it is not for strangers either.
        "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo" => User(Viewer),
        _ => return None,
    };
    Some(need)
}

/// Every method of every service the controller serves, from the descriptor set the
/// servers are built from (health and reflection are tonic's own, listed by hand).
pub fn every_rpc() -> Vec<String> {
    let set = prost_types::FileDescriptorSet::decode(drover_proto::FILE_DESCRIPTOR_SET)
        .expect("the descriptor set compiled into drover-proto");
    let mut paths = Vec::new();
    for file in &set.file {
        // hostd's service is served by hostd, not here (see hostd's own guard).
        if file.package() == "drover.agent.v1" {
            continue;
        }
        for service in &file.service {
            for method in &service.method {
                paths.push(format!(
                    "/{}.{}/{}",
                    file.package(),
                    service.name(),
                    method.name()
                ));
            }
        }
    }
    paths.extend(
        [
            "/grpc.health.v1.Health/Check",
            "/grpc.health.v1.Health/Watch",
            "/grpc.reflection.v1.ServerReflection/ServerReflectionInfo",
        ]
        .map(String::from),
    );
    paths
}

/// Admits `who` to the RPC at `path`, or says why not.
pub fn check(path: &str, who: Option<Peer>) -> Result<(), Status> {
    let Some(need) = need(path) else {
        return Err(Status::permission_denied(format!(
            "{path} is not in the controller's access table"
        )));
    };
    let who = match (need, who) {
        (Need::Anyone, _) => return Ok(()),
        (_, None) => {
            return Err(Status::unauthenticated(
                "No credential: present a client certificate from the cluster CA, or a \
                 bearer token (--token / DROVER_TOKEN)",
            ))
        }
        (_, Some(who)) => who,
    };
    let allowed = match (&who, need) {
        (_, Need::Anyone) => true,
        (Peer::Controller(_), Need::Controller | Need::UserOrController(_)) => true,
        (Peer::User { role, .. }, Need::User(least) | Need::UserOrController(least)) => {
            *role >= least
        }
        _ => false,
    };
    if allowed {
        return Ok(());
    }
    let needed = match need {
        Need::Anyone => unreachable!("always allowed"),
        Need::Controller => "a controller certificate".to_string(),
        Need::User(role) => format!("role {role}"),
        Need::UserOrController(role) => format!("role {role} (or a controller certificate)"),
    };
    Err(Status::permission_denied(format!(
        "{path} needs {needed}; the caller is {who}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rpc_is_classified() {
        let missing: Vec<String> = every_rpc()
            .into_iter()
            .filter(|p| need(p).is_none())
            .collect();
        assert!(
            missing.is_empty(),
            "RPCs missing from the table: {missing:?}"
        );
    }

    #[test]
    fn raft_is_for_controllers_only() {
        let vote = "/drover.raft.v1.RaftService/Vote";
        assert!(check(vote, Some(Peer::Controller(2))).is_ok());
        for who in [
            Peer::Host("h1".into()),
            Peer::User {
                name: "root".into(),
                role: Role::Admin,
            },
        ] {
            let e = check(vote, Some(who)).unwrap_err();
            assert_eq!(e.code(), tonic::Code::PermissionDenied);
            assert!(e.message().contains("controller certificate"), "{e:?}");
        }
        assert_eq!(
            check(vote, None).unwrap_err().code(),
            tonic::Code::Unauthenticated
        );
    }
}
