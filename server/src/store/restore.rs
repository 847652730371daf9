//! Backups out of, and restores into, a store.
//!
//! A backup is a snapshot's data (see `snapshot.rs`) plus a header (`kvset_proto::backup`). A
//! restore seeds the store of kv-0 of a **new** cluster: the data keeps every key with its
//! revisions and the dedup table, but the membership is replaced by the new cluster's first
//! member alone, since the old members' addresses and volumes are gone. Then the others join as
//! on any first start and catch up by snapshot.
//!
//! Seeding writes, in this order: the snapshot (file first, then the state machine, as an
//! install always does), a vote in the snapshot's term (so the first election runs in a later
//! term than any entry in the snapshot), and the log's purge point at the snapshot's last entry
//! (so the log continues right after it). openraft then starts with a snapshot, an empty log after
//! it, and a one-voter membership: it elects itself, with no `initialize` call.

use std::io::Cursor;

use openraft::storage::{RaftLogStorage, RaftStateMachine};
use openraft::Membership;

use super::{snapshot, Store, StoreError};
use crate::raft::{MemberNode, NodeId, SnapshotMeta, StoredMembership, Vote};

/// What a snapshot holds, for a backup header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotSummary {
    /// The store revision.
    pub revision: i64,
    /// How many keys.
    pub keys: u64,
    /// The snapshot data format (1, or 2 when it carries alarms; see `snapshot.rs`).
    pub format: u32,
}

/// Summarizes snapshot data (checks its format on the way).
pub fn describe_snapshot(data: &[u8]) -> Result<SnapshotSummary, StoreError> {
    let payload = snapshot::decode(data)?;
    Ok(SnapshotSummary {
        revision: payload.revision,
        keys: payload.kvs.len() as u64,
        format: snapshot::format_of(data),
    })
}

impl Store {
    /// Seeds an empty store from backup `data`, with `member` as the only voter. Fails, touching
    /// nothing, if the store already holds Raft state.
    pub async fn seed_from_backup(
        &self,
        data: &[u8],
        member_id: NodeId,
        member: MemberNode,
    ) -> Result<SnapshotMeta, StoreError> {
        let mut log = self.log_store();
        if log.last_log_id()?.is_some()
            || log.last_purged()?.is_some()
            || self.state_machine().last_applied().is_some()
        {
            return Err(StoreError::InvalidArgument(
                "the data dir already holds a cluster's data; restore needs an empty data dir"
                    .into(),
            ));
        }
        let mut payload = snapshot::decode(data)?;
        let last = payload.last_applied.ok_or_else(|| StoreError::Corrupt {
            what: "backup",
            detail: "the snapshot covers no log entry".into(),
        })?;
        let membership = Membership::new(
            vec![std::collections::BTreeSet::from([member_id])],
            std::collections::BTreeMap::from([(member_id, member)]),
        );
        payload.membership = StoredMembership::new(Some(last), membership);
        // Alarms belong to the old cluster's members and their volumes, not to the data.
        payload.alarms.clear();
        let bytes = snapshot::encode(&payload)?;
        let meta = SnapshotMeta {
            last_log_id: Some(last),
            last_membership: payload.membership.clone(),
            snapshot_id: format!("restore-{}-{}", last.leader_id.term, last.index),
        };
        let task = |what: &str, e: openraft::StorageError<NodeId>| {
            StoreError::Task(format!("{what}: {e}"))
        };
        let mut sm = self.state_machine();
        sm.install_snapshot(&meta, Box::new(Cursor::new(bytes)))
            .await
            .map_err(|e| task("installing the snapshot", e))?;
        log.save_vote(&Vote::new(last.leader_id.term, member_id))
            .await
            .map_err(|e| task("saving the vote", e))?;
        log.purge(last)
            .await
            .map_err(|e| task("setting the log start", e))?;
        self.sync()?;
        Ok(meta)
    }
}
