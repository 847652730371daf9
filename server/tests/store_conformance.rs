//! openraft's storage conformance suite against the sled store, one fresh temp dir per case.

use kvset_server::raft::types::{StorageError, TypeConfig};
use kvset_server::store::{self, LogStore, StateMachineStore};
use openraft::testing::{StoreBuilder, Suite};
use tempfile::TempDir;

struct SledBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachineStore, TempDir> for SledBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachineStore), StorageError> {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store::open(dir.path())?;
        Ok((dir, store.log_store(), store.state_machine()))
    }
}

/// A plain `#[test]`: the suite makes its own tokio runtime per case.
#[test]
fn openraft_storage_suite() {
    Suite::test_all(SledBuilder).expect("openraft storage conformance");
}
