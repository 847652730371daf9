//! The state machine's metadata record, `m/state` in its tree: where apply stands (last applied
//! log id, membership, revision) and the counters kept beside it.
//!
//! Its own module because two others read and write it: the state machine keeps it current on
//! every apply, and the snapshot code captures it into a snapshot and rebuilds it from one. With
//! the type here, both look down at it instead of at each other.

use serde::{Deserialize, Serialize};

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
}
