//! The leader tells its followers, every [`EVERY`], that its process is alive, from a task
//! outside the Raft core. openraft 0.9's core awaits each log flush, so a leader whose disk
//! stalls sends no heartbeats for that long, and followers with healthy disks campaigned
//! (issue 10, session 9: elections 0.1–0.6 s into a leader's 600 ms flush). With these
//! messages a follower tells "the leader is busy" (its process answers, see
//! `election_guard`) from "the leader is gone" (nothing arrives: killed, frozen, cut off).

use std::collections::HashMap;
use std::time::Duration;

use drover_proto::raft::v1::raft_service_client::RaftServiceClient;
use drover_proto::raft::v1::RaftPayload;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use crate::network::Network;
use crate::node::WeakRaftNode;
use crate::NodeId;

/// How often the leader says so.
pub(crate) const EVERY: Duration = Duration::from_millis(25);
/// Deadline of one message; a peer still busy with the last one is skipped.
const DEADLINE: Duration = Duration::from_millis(200);

/// What a follower checks against its own view before believing it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderAlive {
    pub term: u64,
    pub leader: NodeId,
}

/// Runs while the node lives; sends only while it is leader.
pub(crate) async fn run(node: WeakRaftNode, network: Network) {
    let mut in_flight: HashMap<NodeId, JoinHandle<()>> = HashMap::new();
    let mut ticker = crate::node::ticker(EVERY);
    while let Some((_, m)) = node.tick(&mut ticker).await {
        if m.current_leader != Some(m.id) {
            continue;
        }
        let msg = LeaderAlive {
            term: m.current_term,
            leader: m.id,
        };
        let Ok(data) = serde_json::to_vec(&msg) else {
            continue;
        };
        for (id, peer) in m.membership_config.membership().nodes() {
            if *id == m.id || in_flight.get(id).is_some_and(|h| !h.is_finished()) {
                continue;
            }
            let Ok(channel) = network.channel(*id, &peer.addr) else {
                continue;
            };
            let data = data.clone();
            in_flight.insert(
                *id,
                tokio::spawn(async move {
                    let mut client = RaftServiceClient::new(channel);
                    let call = client.leader_alive(RaftPayload { data });
                    // A lost one only means the follower may campaign: nothing to do.
                    let _ = tokio::time::timeout(DEADLINE, call).await;
                }),
            );
        }
    }
}
