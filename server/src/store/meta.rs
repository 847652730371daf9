//! The state machine's metadata record, `m/state` in its tree: where apply stands (last applied
//! log id, membership, revision) and the counters kept beside it.
//!
//! Its own module because two others read and write it: the state machine keeps it current on
//! every apply, and the snapshot code captures it into a snapshot and rebuilds it from one. With
//! the type here, both look down at it instead of at each other.

//!
//! Store format 3 added the compact revision and the lease id counter at the end. postcard is
//! not self-describing, so a format-2 record does not decode as the new struct: [`SmMeta::decode`]
//! falls back to the old shape, and treats everything up to the old record's revision as
//! compacted (no history was kept before the upgrade).

use serde::{Deserialize, Serialize};

use super::codec;
use super::error::StoreError;
use crate::raft::types::{LogId, StoredMembership};

/// The state machine's metadata record (`m/state` in its tree).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct SmMeta {
    /// The last log entry applied.
    pub last_applied: Option<LogId>,
    /// The last membership applied.
    pub membership: StoredMembership,
    /// The global revision.
    pub revision: i64,
    /// Number of keys.
    pub key_count: u64,
    /// Number of clients in the dedup table.
    pub client_count: u64,
    /// History at and below this revision is forgotten (`history.rs`).
    pub compact_revision: i64,
    /// The highest lease id ever granted: the next id the cluster picks is one above it, so
    /// lease ids are unique across the cluster's life (`lease.rs`).
    pub max_lease_id: i64,
}

/// The record as store format 2 wrote it.
#[derive(Deserialize)]
struct SmMetaV2 {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    revision: i64,
    key_count: u64,
    client_count: u64,
}

impl SmMeta {
    /// The record's bytes.
    pub(crate) fn encode(&self) -> Result<Vec<u8>, StoreError> {
        codec::encode("state-machine metadata", self)
    }

    /// Parses a record of this format or of store format 2 (see the module docs).
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        match postcard::take_from_bytes::<Self>(bytes) {
            Ok((meta, [])) => Ok(meta),
            _ => {
                let old: SmMetaV2 = codec::decode("state-machine metadata", bytes)?;
                Ok(Self {
                    last_applied: old.last_applied,
                    membership: old.membership,
                    revision: old.revision,
                    key_count: old.key_count,
                    client_count: old.client_count,
                    compact_revision: old.revision,
                    max_lease_id: 0,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_format_2_record_decodes_with_its_revision_compacted() {
        let old = (
            None::<LogId>,
            StoredMembership::default(),
            41i64,
            3u64,
            2u64,
        );
        let bytes = postcard::to_allocvec(&old).unwrap();
        let meta = SmMeta::decode(&bytes).unwrap();
        assert_eq!(
            (meta.revision, meta.key_count, meta.client_count),
            (41, 3, 2)
        );
        assert_eq!((meta.compact_revision, meta.max_lease_id), (41, 0));
        let new = SmMeta {
            compact_revision: 7,
            max_lease_id: 9,
            ..meta
        };
        assert_eq!(SmMeta::decode(&new.encode().unwrap()).unwrap(), new);
    }
}
