//! Controller configuration and the parsing of `--initial-cluster`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use drover_raft::{NodeId, RaftTimings};

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub id: NodeId,
    pub data_dir: PathBuf,
    /// The address peers and clients use to reach this controller (from the initial
    /// cluster, so it matches what the Raft membership records).
    pub advertise: String,
    /// All founding members, this one included; used only on a pristine data dir. Empty
    /// when the node joins an existing cluster instead (`--join`).
    pub initial_cluster: BTreeMap<NodeId, String>,
    pub raft: RaftTimings,
    /// Entries applied between snapshots.
    pub snapshot_logs: u64,
    /// `--snapshot-fixed`: do not scale the snapshot interval with the state.
    pub snapshot_fixed: bool,
    /// Mutual TLS on every port and every outgoing hop (`None`: plaintext, dev only).
    pub tls: drover_proto::transport::TlsHandle,
    /// hostd heartbeat interval, lease ttl and margin (validated).
    pub lease: drover_actors::host::health::LeaseTimings,
    pub fence_agent: Option<drover_actors::host::FenceAgent>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("--initial-cluster entry {0:?} is not ID=HOST:PORT")]
    BadMember(String),
    #[error("--initial-cluster names node {0} twice")]
    DuplicateMember(NodeId),
    #[error("--initial-cluster does not include this node's --id {0}")]
    MissingSelf(NodeId),
    #[error("--initial-cluster is empty")]
    Empty,
}

/// Parses `1=127.0.0.1:7001,2=127.0.0.1:7002,…`.
pub fn parse_initial_cluster(s: &str) -> Result<BTreeMap<NodeId, String>, ConfigError> {
    let mut members = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let bad = || ConfigError::BadMember(part.to_string());
        let (id, addr) = part.split_once('=').ok_or_else(bad)?;
        let id: NodeId = id.trim().parse().map_err(|_| bad())?;
        let addr = addr.trim();
        drover_raft::model::validate_address(addr).map_err(|_| bad())?;
        if members.insert(id, addr.to_string()).is_some() {
            return Err(ConfigError::DuplicateMember(id));
        }
    }
    if members.is_empty() {
        return Err(ConfigError::Empty);
    }
    Ok(members)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_members() {
        let m =
            parse_initial_cluster("1=127.0.0.1:7001, 2=127.0.0.1:7002,3=localhost:7003").unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m[&3], "localhost:7003");
    }

    #[test]
    fn rejects_bad_members() {
        assert_eq!(parse_initial_cluster(""), Err(ConfigError::Empty));
        assert!(matches!(
            parse_initial_cluster("x=1.2.3.4:5"),
            Err(ConfigError::BadMember(_))
        ));
        assert!(matches!(
            parse_initial_cluster("1=nohost"),
            Err(ConfigError::BadMember(_))
        ));
        assert!(matches!(
            parse_initial_cluster("1=h:0"),
            Err(ConfigError::BadMember(_))
        ));
        assert_eq!(
            parse_initial_cluster("1=h:1,1=h:2"),
            Err(ConfigError::DuplicateMember(1))
        );
    }
}
