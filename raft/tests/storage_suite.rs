//! openraft's own storage conformance suite, run against the sled log store and state
//! machine (a fresh sled directory per case).

use drover_raft::store::{self, LogStore, StateMachineStore};
use drover_raft::{StorageError, TypeConfig};
use openraft::testing::{StoreBuilder, Suite};
use openraft::{ErrorSubject, ErrorVerb, StorageIOError};
use tempfile::TempDir;

struct SledBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for SledBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir().map_err(|e| {
            StorageError::from(StorageIOError::new(
                ErrorSubject::Store,
                ErrorVerb::Write,
                &e,
            ))
        })?;
        let (log, sm) = store::open(dir.path()).map_err(|e| {
            StorageError::from(StorageIOError::new(
                ErrorSubject::Store,
                ErrorVerb::Read,
                &e,
            ))
        })?;
        Ok((dir, log, sm))
    }
}

#[test]
fn sled_store_passes_openraft_suite() -> Result<(), StorageError> {
    Suite::test_all(SledBuilder)
}
