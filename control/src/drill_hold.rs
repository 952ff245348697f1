//! A controller that a leader drill stopped (`--mode stop`) must not simply come back as
//! leader: restarted at once by its service manager, openraft would resume its committed
//! leadership before the others had even noticed it was gone, and the drill would measure
//! a restart, not a failover. So before it stops, the controller records the drill in
//! `<data-dir>/drill-stop.json` (its term, its peers, the drill's deadline); started again,
//! it stays off the network until a peer reports a leader of a newer term (or the
//! deadline passes), and only then starts its Raft node, as a follower.

use std::path::{Path, PathBuf};
use std::time::Duration;

use drover_proto::transport::TlsHandle;
use drover_proto::v1 as pb;
use serde::{Deserialize, Serialize};

use crate::client::Client;

const FILE_NAME: &str = "drill-stop.json";
const POLL: Duration = Duration::from_millis(200);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrillStop {
    pub drill: u64,
    /// The term this controller led in when it stopped.
    pub term: u64,
    /// Wall-clock Unix ms after which it comes back whatever the peers say.
    pub until_ms: u64,
    /// The other voters' API addresses.
    pub peers: Vec<String>,
}

fn path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE_NAME)
}

/// Records the stop (before the controller exits for the drill).
pub fn record(data_dir: &Path, stop: &DrillStop) -> std::io::Result<()> {
    let tmp = data_dir.join("drill-stop.json.tmp");
    std::fs::write(
        &tmp,
        serde_json::to_vec(stop).map_err(std::io::Error::other)?,
    )?;
    std::fs::rename(tmp, path(data_dir))
}

/// The recorded stop, removed: it is acted on once.
pub fn take(data_dir: &Path) -> Option<DrillStop> {
    let p = path(data_dir);
    let bytes = std::fs::read(&p).ok()?;
    let _ = std::fs::remove_file(&p);
    serde_json::from_slice(&bytes).ok()
}

/// Pure: whether `status` (from a peer) shows a leader other than `me` in a term after
/// `term`.
pub fn successor_seen(status: &pb::ClusterStatusResponse, me: u64, term: u64) -> bool {
    status.leader_id != 0
        && status.leader_id != me
        && status
            .members
            .iter()
            .any(|m| m.id == status.leader_id && m.term > term)
}

/// Waits until a peer reports a successor, or `stop.until_ms`; says which.
pub async fn wait_for_successor(stop: &DrillStop, me: u64, tls: TlsHandle) -> String {
    let client = match Client::new(&stop.peers) {
        Ok(c) => c.with_tls(tls).with_deadline(Duration::from_secs(1)),
        Err(e) => return format!("cannot ask the peers ({e}); rejoining"),
    };
    loop {
        if let Ok(status) = client.cluster_status().await {
            if successor_seen(&status, me, stop.term) {
                return format!("controller {} leads now", status.leader_id);
            }
        }
        if drover_raft::wall_clock_ms() >= stop.until_ms {
            return "the drill's time is over".into();
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(leader: u64, term: u64) -> pb::ClusterStatusResponse {
        pb::ClusterStatusResponse {
            leader_id: leader,
            members: vec![pb::Member {
                id: leader,
                term,
                ..Default::default()
            }],
        }
    }

    #[test]
    fn only_another_leader_of_a_newer_term_is_a_successor() {
        assert!(successor_seen(&status(2, 6), 1, 5));
        assert!(!successor_seen(&status(1, 6), 1, 5), "itself");
        assert!(!successor_seen(&status(2, 5), 1, 5), "not newer");
        assert!(!successor_seen(&status(0, 6), 1, 5), "no leader");
    }

    #[test]
    fn a_recorded_stop_is_taken_once() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(take(dir.path()), None);
        let stop = DrillStop {
            drill: 3,
            term: 5,
            until_ms: 10,
            peers: vec!["127.0.0.1:1".into()],
        };
        record(dir.path(), &stop).unwrap();
        assert_eq!(take(dir.path()), Some(stop));
        assert_eq!(take(dir.path()), None);
    }
}
