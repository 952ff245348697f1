//! Fencing tokens: every command carries the leader's Raft term and the VM's generation.
//! hostd keeps the highest term it has seen on disk and refuses anything older, so a
//! deposed leader cannot start, stop or move a VM; and it refuses a generation older than
//! the one the VM's domain carries, so a stale decision cannot act on a VM that moved.
//!
//! A higher term is made durable (written, fsynced, renamed) before the command that
//! brought it is acted on: after a crash and restart hostd still refuses the old leader.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use crate::error::HostdError;

const FILE: &str = "fencing.json";

#[derive(Debug, Default, Serialize, Deserialize)]
struct Persisted {
    highest_term: u64,
}

/// The highest term seen, in memory and on disk.
#[derive(Debug)]
pub struct Fencing {
    path: PathBuf,
    /// Held across the persist, so two concurrent higher terms are written in order.
    highest: Mutex<u64>,
}

/// Whether a command's `term` may act, given the highest term seen; `Ok(true)` when it is
/// a new highest that must be persisted first.
pub fn check_term(highest: u64, term: u64) -> Result<bool, HostdError> {
    if term == 0 {
        return Err(HostdError::InvalidArgument(
            "commands must carry the leader's term (fencing token)".into(),
        ));
    }
    match term.cmp(&highest) {
        std::cmp::Ordering::Less => Err(HostdError::StaleTerm { term, highest }),
        std::cmp::Ordering::Equal => Ok(false),
        std::cmp::Ordering::Greater => Ok(true),
    }
}

/// Whether a command for generation `requested` may act on a domain that carries `held`.
pub fn check_generation(vm: &str, held: Option<u64>, requested: u64) -> Result<(), HostdError> {
    match held {
        Some(held) if held > requested => Err(HostdError::StaleGeneration {
            vm: vm.to_string(),
            requested,
            held,
        }),
        _ => Ok(()),
    }
}

impl Fencing {
    /// Loads the highest term from `data_dir` (0 if hostd never saw one).
    pub fn open(data_dir: &Path) -> Result<Self, HostdError> {
        let path = data_dir.join(FILE);
        let highest = match std::fs::read(&path) {
            Ok(bytes) => {
                let p: Persisted =
                    serde_json::from_slice(&bytes).map_err(|e| HostdError::FencingState {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                p.highest_term
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => {
                return Err(HostdError::FencingState {
                    path,
                    reason: e.to_string(),
                })
            }
        };
        Ok(Self {
            path,
            highest: Mutex::new(highest),
        })
    }

    pub async fn highest(&self) -> u64 {
        *self.highest.lock().await
    }

    /// Admits a command from `term`, persisting it first when it is the highest yet.
    pub async fn admit(&self, term: u64) -> Result<(), HostdError> {
        let mut highest = self.highest.lock().await;
        if check_term(*highest, term)? {
            let path = self.path.clone();
            tokio::task::spawn_blocking(move || persist(&path, term))
                .await
                .map_err(HostdError::Blocking)??;
            tracing::info!(term, previous = *highest, "new highest leader term");
            *highest = term;
        }
        Ok(())
    }
}

fn persist(path: &Path, term: u64) -> Result<(), HostdError> {
    let err = |e: std::io::Error| HostdError::FencingState {
        path: path.to_path_buf(),
        reason: e.to_string(),
    };
    let tmp = path.with_extension("tmp");
    let bytes = serde_json::to_vec(&Persisted { highest_term: term })
        .map_err(|e| err(std::io::Error::other(e)))?;
    {
        use std::io::Write as _;
        let mut f = std::fs::File::create(&tmp).map_err(err)?;
        f.write_all(&bytes).map_err(err)?;
        f.sync_all().map_err(err)?;
    }
    std::fs::rename(&tmp, path).map_err(err)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(err)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn term_rules() {
        assert!(matches!(
            check_term(5, 4),
            Err(HostdError::StaleTerm {
                term: 4,
                highest: 5
            })
        ));
        assert!(!check_term(5, 5).unwrap());
        assert!(check_term(5, 6).unwrap());
        assert!(check_term(0, 1).unwrap());
        assert!(matches!(
            check_term(0, 0),
            Err(HostdError::InvalidArgument(_))
        ));
    }

    #[test]
    fn generation_rules() {
        assert!(check_generation("a", None, 0).is_ok());
        assert!(check_generation("a", Some(3), 3).is_ok());
        assert!(check_generation("a", Some(3), 4).is_ok());
        assert!(matches!(
            check_generation("a", Some(3), 2),
            Err(HostdError::StaleGeneration {
                held: 3,
                requested: 2,
                ..
            })
        ));
    }

    #[tokio::test]
    async fn highest_term_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let f = Fencing::open(dir.path()).unwrap();
        f.admit(3).await.unwrap();
        f.admit(7).await.unwrap();
        assert!(f.admit(5).await.is_err());
        drop(f);
        let f = Fencing::open(dir.path()).unwrap();
        assert_eq!(f.highest().await, 7);
        assert!(matches!(
            f.admit(6).await,
            Err(HostdError::StaleTerm { .. })
        ));
        f.admit(7).await.unwrap();
    }
}
