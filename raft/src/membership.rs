//! Changing who is in the controller cluster: add a node (learner first, voter once caught
//! up), remove one (refused when the rest could not form a quorum), and hand leadership to
//! another voter. These run on the leader; the quorum rule is a pure function.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use drover_proto::raft::v1::raft_service_client::RaftServiceClient;
use drover_proto::raft::v1::RaftPayload;
use openraft::error::{ClientWriteError, RaftError};
use openraft::{BasicNode, ChangeMembers, ServerState};

use crate::network::client::peer_channel;
use crate::node::RaftNode;
use crate::NodeId;

/// How long a new node may take to catch up before `add_node` gives up.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(60);
/// A leadership transfer tries this often while leadership stays here.
const TRANSFER_ATTEMPTS: u32 = 3;
/// The least time other voters hold their elections for a transfer: with short election
/// timeouts, three of them are less than a loaded machine needs for one vote round.
const MIN_TRANSFER_HOLD: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MembershipError {
    #[error("This controller is not the leader")]
    NotLeader { leader_addr: Option<String> },
    #[error("Invalid request: {0}")]
    Invalid(String),
    #[error("Node {0} is not a member")]
    UnknownNode(NodeId),
    #[error("Refused: {0}")]
    Refused(String),
    #[error("Membership change failed: {0}")]
    Raft(String),
}

/// Whether removing `remove` from `voters` leaves a voter set that can still reach a
/// quorum among the members known to be `reachable`.
pub fn check_removal(
    voters: &BTreeSet<NodeId>,
    remove: NodeId,
    reachable: &BTreeSet<NodeId>,
) -> Result<BTreeSet<NodeId>, String> {
    if !voters.contains(&remove) {
        return Err(format!("node {remove} is not a voter"));
    }
    let remaining: BTreeSet<NodeId> = voters.iter().copied().filter(|v| *v != remove).collect();
    if remaining.is_empty() {
        return Err(format!(
            "node {remove} is the last voter; a cluster needs at least one"
        ));
    }
    let quorum = remaining.len() / 2 + 1;
    let up = remaining.intersection(reachable).count();
    if up < quorum {
        return Err(format!(
            "removing node {remove} leaves {} voters of which {up} are reachable; a quorum needs {quorum}",
            remaining.len()
        ));
    }
    Ok(remaining)
}

impl RaftNode {
    fn leader_only(&self) -> Result<(), MembershipError> {
        let m = self.metrics();
        if m.state == ServerState::Leader && m.current_leader == Some(self.id()) {
            return Ok(());
        }
        Err(MembershipError::NotLeader {
            leader_addr: self.leader().map(|(_, a)| a),
        })
    }

    pub fn voters(&self) -> BTreeSet<NodeId> {
        self.metrics()
            .membership_config
            .membership()
            .voter_ids()
            .collect()
    }

    fn raft_err<E: std::fmt::Display>(&self, e: RaftError<NodeId, E>) -> MembershipError {
        MembershipError::Raft(e.to_string())
    }

    /// Adds controller `id` at `address`: as a learner, waiting until it has caught up,
    /// then as a voter. Adding a node that already votes at that address is a no-op.
    pub async fn add_node(&self, id: NodeId, address: &str) -> Result<(), MembershipError> {
        self.leader_only()?;
        crate::model::validate_address(address)
            .map_err(|reason| MembershipError::Invalid(format!("address {address:?}: {reason}")))?;
        let membership = self.metrics().membership_config.clone();
        if let Some(existing) = membership.membership().get_node(&id) {
            if existing.addr != address {
                return Err(MembershipError::Refused(format!(
                    "node {id} is already a member at {}; remove it first",
                    existing.addr
                )));
            }
            if self.voters().contains(&id) {
                return Ok(());
            }
        }
        let node = BasicNode {
            addr: address.to_string(),
        };
        tracing::info!(node = id, %address, "adding a learner");
        match tokio::time::timeout(CATCH_UP_TIMEOUT, self.raft().add_learner(id, node, true)).await
        {
            Err(_) => {
                return Err(MembershipError::Refused(format!(
                    "node {id} at {address} did not catch up within {CATCH_UP_TIMEOUT:?} \
                     (is it running with `drover server --join`?); it stays a learner"
                )))
            }
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f)))) => {
                return Err(MembershipError::NotLeader {
                    leader_addr: f.leader_node.map(|n| n.addr),
                })
            }
            Ok(Err(e)) => return Err(self.raft_err(e)),
            Ok(Ok(_)) => {}
        }
        tracing::info!(node = id, "learner caught up; promoting to voter");
        let ids = BTreeSet::from([id]);
        self.raft()
            .change_membership(ChangeMembers::AddVoterIds(ids), false)
            .await
            .map_err(|e| self.raft_err(e))?;
        Ok(())
    }

    /// Removes controller `id` (voter or learner). `reachable` are the members that
    /// answered just now; the removal must leave a reachable quorum.
    pub async fn remove_node(
        &self,
        id: NodeId,
        reachable: &BTreeSet<NodeId>,
    ) -> Result<(), MembershipError> {
        self.leader_only()?;
        let membership = self.metrics().membership_config.clone();
        if membership.membership().get_node(&id).is_none() {
            return Err(MembershipError::UnknownNode(id));
        }
        let voters = self.voters();
        if voters.contains(&id) {
            check_removal(&voters, id, reachable).map_err(MembershipError::Refused)?;
            tracing::info!(node = id, "removing a voter");
            // retain = false: the removed voter leaves the cluster instead of staying a learner.
            self.raft()
                .change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
                .await
                .map_err(|e| self.raft_err(e))?;
        } else {
            tracing::info!(node = id, "removing a learner");
            self.raft()
                .change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
                .await
                .map_err(|e| self.raft_err(e))?;
        }
        Ok(())
    }

    /// Hands leadership to voter `target`. openraft 0.9 has no transfer primitive and its
    /// voters refuse to vote while a leader's lease lasts, so: wait until `target` has the
    /// whole log, stop heartbeats here and hold elections on the other voters (both
    /// self-expiring), let the lease run out, then ask `target` to campaign.
    pub async fn transfer_leader(
        &self,
        target: NodeId,
        election_timeout_max: Duration,
    ) -> Result<(), MembershipError> {
        self.leader_only()?;
        if target == self.id() {
            return Ok(());
        }
        let voters = self.voters();
        if !voters.contains(&target) {
            return Err(MembershipError::Invalid(format!(
                "node {target} is not a voter"
            )));
        }
        let m = self.metrics();
        let nodes: BTreeMap<NodeId, String> = m
            .membership_config
            .membership()
            .nodes()
            .map(|(id, n)| (*id, n.addr.clone()))
            .collect();
        // The successor must hold every entry, or its campaign fails on log comparison.
        let caught_up = self
            .raft()
            .wait(Some(Duration::from_secs(5)))
            .metrics(
                |m| {
                    let last = m.last_log_index;
                    m.replication
                        .as_ref()
                        .is_some_and(|r| r.get(&target).and_then(|l| l.map(|l| l.index)) == last)
                },
                "transfer target caught up",
            )
            .await;
        if caught_up.is_err() {
            return Err(MembershipError::Refused(format!(
                "node {target} is not caught up with the log; try again"
            )));
        }
        // A campaign can lose on a loaded machine (a vote request late past the hold, a
        // spurious timeout elsewhere); while leadership is still here, try again.
        let mut last = None;
        for attempt in 1..=TRANSFER_ATTEMPTS {
            match self
                .campaign_once(target, &nodes, &voters, election_timeout_max)
                .await
            {
                Ok(()) => return Ok(()),
                Err(e) => {
                    let leader = self.metrics().current_leader;
                    // It won just after the wait ended: done.
                    if leader == Some(target) {
                        return Ok(());
                    }
                    tracing::warn!(node = target, attempt, ?leader, error = %e, "leadership transfer attempt failed");
                    last = Some(e);
                    if leader != Some(self.id()) {
                        break;
                    }
                }
            }
        }
        Err(last.unwrap_or_else(|| {
            MembershipError::Refused(format!("node {target} did not win the election"))
        }))
    }

    /// One transfer attempt: hold elections elsewhere, let the lease run out, ask
    /// `target` to campaign and wait for it to lead.
    async fn campaign_once(
        &self,
        target: NodeId,
        nodes: &BTreeMap<NodeId, String>,
        voters: &BTreeSet<NodeId>,
        election_timeout_max: Duration,
    ) -> Result<(), MembershipError> {
        let hold = (election_timeout_max * 3).max(MIN_TRANSFER_HOLD);
        for (id, addr) in nodes {
            if *id == target || *id == self.id() || !voters.contains(id) {
                continue;
            }
            if let Err(e) = raft_rpc(addr, RaftRpc::HoldElections(hold), self.tls()).await {
                tracing::warn!(node = id, error = %e, "cannot hold elections on a voter");
            }
        }
        self.hold_elections(hold);
        self.raft().runtime_config().heartbeat(false);
        // Followers reject votes until the lease since our last heartbeat has run out.
        tokio::time::sleep(election_timeout_max + Duration::from_millis(100)).await;
        let target_addr = nodes.get(&target).cloned().unwrap_or_default();
        let campaigned = raft_rpc(&target_addr, RaftRpc::Campaign, self.tls()).await;
        let moved = self
            .raft()
            .wait(Some(hold))
            .metrics(|m| m.current_leader == Some(target), "transfer done")
            .await;
        self.raft().runtime_config().heartbeat(true);
        match (campaigned, moved) {
            (_, Ok(_)) => Ok(()),
            (Err(e), Err(_)) => Err(MembershipError::Raft(format!(
                "node {target} could not be asked to campaign: {e}"
            ))),
            (Ok(()), Err(_)) => Err(MembershipError::Refused(format!(
                "node {target} did not win the election; leadership may have moved elsewhere"
            ))),
        }
    }

    /// Suspends this node's election timer for `hold`, then restores it. Bounded so a
    /// failed transfer can never leave a node that will not stand for election.
    pub fn hold_elections(&self, hold: Duration) {
        // Through the guard, which also holds elections during disk stalls: two
        // independent switches would re-enable each other's hold.
        self.election_guard().hold(hold);
        self.raft().runtime_config().elect(false);
    }
}

/// The internal leadership-transfer RPCs.
pub(crate) enum RaftRpc {
    HoldElections(Duration),
    Campaign,
}

async fn raft_rpc(
    addr: &str,
    rpc: RaftRpc,
    tls: Option<&drover_proto::transport::Tls>,
) -> Result<(), String> {
    let channel = peer_channel(addr, tls).map_err(|e| e.to_string())?;
    let mut client = RaftServiceClient::new(channel);
    let result = match rpc {
        RaftRpc::HoldElections(d) => {
            let data = serde_json::to_vec(&(d.as_millis() as u64)).map_err(|e| e.to_string())?;
            client.hold_elections(RaftPayload { data }).await
        }
        RaftRpc::Campaign => client.campaign(RaftPayload { data: Vec::new() }).await,
    };
    result.map(|_| ()).map_err(|s| s.message().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[NodeId]) -> BTreeSet<NodeId> {
        ids.iter().copied().collect()
    }

    #[test]
    fn removal_rules() {
        let voters = set(&[1, 2, 3]);
        assert_eq!(
            check_removal(&voters, 3, &set(&[1, 2, 3])),
            Ok(set(&[1, 2]))
        );
        // 2 left, one of them down: no quorum of 2.
        assert!(check_removal(&voters, 3, &set(&[1, 3]))
            .unwrap_err()
            .contains("quorum needs 2"));
        assert!(check_removal(&set(&[1]), 1, &set(&[1]))
            .unwrap_err()
            .contains("last voter"));
        assert!(check_removal(&voters, 9, &voters)
            .unwrap_err()
            .contains("not a voter"));
        // 5 → 4 with one down: 3 of 4 reachable is a quorum.
        let five = set(&[1, 2, 3, 4, 5]);
        assert!(check_removal(&five, 5, &set(&[1, 2, 3])).is_ok());
        assert!(check_removal(&five, 5, &set(&[1, 2])).is_err());
    }
}
