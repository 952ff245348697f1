//! How drover's errors look at the gRPC edge: not leader → `UNAVAILABLE` with the leader's
//! address in `x-drover-leader`; bad input → `INVALID_ARGUMENT`; conflicts →
//! `ALREADY_EXISTS` / `FAILED_PRECONDITION`; unknown names → `NOT_FOUND`.

use drover_proto::LEADER_METADATA_KEY;
use drover_raft::model::NetworkError;
use drover_raft::{ApplyError, ApplyResult, Reply, WriteError};
use tonic::metadata::MetadataValue;
use tonic::Status;

pub fn apply_error(e: &ApplyError) -> Status {
    let msg = e.to_string();
    match e {
        ApplyError::InvalidName { .. }
        | ApplyError::InvalidSpec(_)
        | ApplyError::InvalidCloudInit(_)
        | ApplyError::InvalidAddress { .. }
        | ApplyError::InvalidLabels(_)
        | ApplyError::InvalidPolicy(_)
        | ApplyError::InvalidPlacement(_)
        | ApplyError::InvalidLease(_)
        | ApplyError::SameHost { .. }
        | ApplyError::InvalidToken(_)
        | ApplyError::InvalidReport(_)
        | ApplyError::InvalidPool(_)
        | ApplyError::InvalidDisk(_)
        | ApplyError::InvalidDrill(_)
        | ApplyError::HaNeedsSharedPool { .. }
        | ApplyError::InvalidSecurityGroup { .. } => Status::invalid_argument(msg),
        ApplyError::UnknownSecurityGroup(_) => Status::not_found(msg),
        ApplyError::PoolInUse { .. }
        | ApplyError::SecurityGroupInUse { .. }
        | ApplyError::LocalDisk { .. }
        | ApplyError::PoolHoldsImages { .. }
        | ApplyError::PoolNotActive { .. }
        | ApplyError::ImageNotImporting(_)
        | ApplyError::ImageNotReady(_)
        | ApplyError::ImageInUse { .. }
        | ApplyError::ImageCopyUnderWay { .. }
        | ApplyError::ImageCopyNeedless { .. }
        | ApplyError::DisksInUse(_)
        | ApplyError::HostHoldsImages { .. }
        | ApplyError::NoSpace { .. } => Status::failed_precondition(msg),
        ApplyError::ImageExists(_) => Status::already_exists(msg),
        ApplyError::UnknownImage(_) => Status::not_found(msg),
        ApplyError::PoolExists(_) | ApplyError::PoolPathTaken { .. } => Status::already_exists(msg),
        ApplyError::UnknownPool(_) => Status::not_found(msg),
        ApplyError::TokenExists(_) => Status::already_exists(msg),
        ApplyError::ScheduleExists(_) => Status::already_exists(msg),
        ApplyError::UnknownSchedule(_) => Status::not_found(msg),
        ApplyError::UnknownToken(_) => Status::not_found(msg),
        ApplyError::TooManyTokens(_) => Status::resource_exhausted(msg),
        ApplyError::HostExists(_) | ApplyError::VmExists(_) => Status::already_exists(msg),
        ApplyError::UnknownHost(_) | ApplyError::UnknownVm(_) | ApplyError::UnknownOperation(_) => {
            Status::not_found(msg)
        }
        ApplyError::StaleGeneration { .. }
        | ApplyError::VmDeleting(_)
        | ApplyError::VmNotDeleted(_)
        | ApplyError::HostNotDead { .. }
        | ApplyError::VmNotPlaced(_)
        | ApplyError::VmNotHa(_)
        | ApplyError::FencingNotArmed(_)
        | ApplyError::OperationFinished { .. }
        | ApplyError::VmMigrating { .. }
        | ApplyError::VmNotRunning { .. }
        | ApplyError::HostNotUp { .. }
        | ApplyError::HostNotActive { .. }
        | ApplyError::NoRoom { .. }
        | ApplyError::MigrationLimit { .. }
        | ApplyError::NoMigrationUri { .. }
        | ApplyError::HostAlreadyDraining { .. }
        | ApplyError::HostNotEmpty { .. }
        | ApplyError::HostBusy { .. }
        | ApplyError::LeaseSettling { .. }
        | ApplyError::VmMayStillRun { .. }
        | ApplyError::StartUnconfirmed(_)
        | ApplyError::StaleListing { .. }
        | ApplyError::NotToStart { .. }
        | ApplyError::DrillRunning { .. }
        | ApplyError::DrillHaDisarmed
        | ApplyError::ScheduleNotDue { .. }
        | ApplyError::OtherHostDown { .. } => Status::failed_precondition(msg),
        ApplyError::NicsInUse(_) | ApplyError::NicPlugged { .. } => {
            Status::failed_precondition(msg)
        }
        ApplyError::Network(e) => network_error(e, msg),
        ApplyError::WrongOperation { .. } => Status::invalid_argument(msg),
        // Only the leader's own host actors send this; a client never can.
        ApplyError::DeadNeedsReason(_) => Status::invalid_argument(msg),
        // Only the write path makes batches, and never nested: an internal error.
        ApplyError::NestedBatch => Status::internal(msg),
    }
}

fn network_error(e: &NetworkError, msg: String) -> Status {
    match e {
        NetworkError::Unknown(_)
        | NetworkError::UnknownSubnet { .. }
        | NetworkError::UnknownNic { .. } => Status::not_found(msg),
        NetworkError::Exists(_)
        | NetworkError::VniTaken { .. }
        | NetworkError::VlanTaken { .. }
        | NetworkError::AddressTaken { .. } => Status::already_exists(msg),
        NetworkError::Ifname { .. }
        | NetworkError::Vni { .. }
        | NetworkError::VlanTag { .. }
        | NetworkError::Mtu { .. }
        | NetworkError::Subnet { .. }
        | NetworkError::SubnetOverlap { .. }
        | NetworkError::TooManySubnets { .. }
        | NetworkError::DhcpNeedsOverlay { .. }
        | NetworkError::DhcpSubnetOverlap { .. }
        | NetworkError::OutsideRanges { .. }
        | NetworkError::AddressReserved { .. }
        | NetworkError::NoSubnets { .. }
        | NetworkError::TooManyNics { .. } => Status::invalid_argument(msg),
        NetworkError::InUse { .. } | NetworkError::SubnetInUse { .. } => {
            Status::failed_precondition(msg)
        }
        NetworkError::Exhausted { .. } => Status::resource_exhausted(msg),
    }
}

pub fn write_error(e: &WriteError) -> Status {
    match e {
        WriteError::NotLeader { leader_addr, .. } => not_leader(leader_addr.as_deref()),
        WriteError::Raft(_) => Status::unavailable(e.to_string()),
        WriteError::TooLarge { .. } => Status::invalid_argument(e.to_string()),
        WriteError::Unknown { .. } => Status::deadline_exceeded(e.to_string()),
    }
}

/// Ok on the leader; elsewhere [`not_leader`] with the leader's address, for calls only
/// the leader may answer.
pub fn leader_only(node: &drover_raft::RaftNode) -> Result<(), Status> {
    if node.metrics().current_leader == Some(node.id()) {
        Ok(())
    } else {
        Err(not_leader(node.leader().map(|(_, a)| a).as_deref()))
    }
}

/// `UNAVAILABLE`, with the leader's address when known so the client can go there.
pub fn not_leader(leader_addr: Option<&str>) -> Status {
    let mut status = Status::unavailable(match leader_addr {
        Some(a) => format!("Not the leader; the leader is at {a}"),
        None => "No leader is known right now (election in progress?)".to_string(),
    });
    if let Some(addr) = leader_addr.and_then(|a| MetadataValue::try_from(a).ok()) {
        status.metadata_mut().insert(LEADER_METADATA_KEY, addr);
    }
    status
}

/// Unwraps a committed write's result into the reply or the matching status.
pub fn committed(result: Result<ApplyResult, WriteError>) -> Result<Reply, Status> {
    match result {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(e)) => Err(apply_error(&e)),
        Err(e) => Err(write_error(&e)),
    }
}
