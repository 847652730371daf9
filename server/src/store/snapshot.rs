//! The snapshot data format: the whole state machine as one versioned byte string.
//!
//! Layout: the magic `KVSS`, the format version as a big-endian `u32` ([`SNAPSHOT_FORMAT`]),
//! then postcard of [`SnapshotPayload`]: last applied log id, membership, revision, every key
//! with its metadata in key order, and the dedup table in client-id order. The payload is typed
//! rather than a dump of sled's pairs, so the internal key layout can change without breaking
//! snapshots sent between versions; a change of the payload bumps the format.
//!
//! [`capture`] reads a state-machine tree into a payload (the state machine calls it where no
//! apply can run concurrently); [`load`] writes a payload into an empty tree and returns the
//! metadata the tree then holds.

use serde::{Deserialize, Serialize};

use super::codec::{self, KvRecord};
use super::dedup::{self, ClientRecord};
use super::error::StoreError;
use super::state_machine::SmMeta;
use super::view::Scan;
use super::view::View;
use crate::raft::types::{LogId, StoredMembership};

/// The snapshot format this build writes and reads.
pub const SNAPSHOT_FORMAT: u32 = 1;
const MAGIC: &[u8; 4] = b"KVSS";
/// Pairs per sled batch when loading a snapshot.
const LOAD_BATCH: usize = 4096;

/// Everything a replica needs to continue from a snapshot.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct SnapshotPayload {
    /// The last log entry the snapshot includes.
    pub last_applied: Option<LogId>,
    /// The membership as of `last_applied`.
    pub membership: StoredMembership,
    /// The global revision.
    pub revision: i64,
    /// Every key, ascending.
    pub kvs: Vec<SnapshotKv>,
    /// The dedup table, ascending by client id.
    pub clients: Vec<(u64, ClientRecord)>,
}

/// One key in a snapshot.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SnapshotKv {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
}

/// The snapshot's bytes.
pub(crate) fn encode(payload: &SnapshotPayload) -> Result<Vec<u8>, StoreError> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&SNAPSHOT_FORMAT.to_be_bytes());
    postcard::to_extend(payload, out).map_err(StoreError::codec("snapshot"))
}

/// Parses a snapshot's bytes.
pub(crate) fn decode(bytes: &[u8]) -> Result<SnapshotPayload, StoreError> {
    if bytes.len() < 8 || &bytes[..4] != MAGIC {
        return Err(StoreError::Corrupt {
            what: "snapshot",
            detail: format!("{} bytes without the KVSS magic", bytes.len()),
        });
    }
    let mut version = [0; 4];
    version.copy_from_slice(&bytes[4..8]);
    let found = u32::from_be_bytes(version);
    if found != SNAPSHOT_FORMAT {
        return Err(StoreError::UnsupportedFormat {
            what: "snapshot",
            found,
            supported: SNAPSHOT_FORMAT,
        });
    }
    codec::decode("snapshot", &bytes[8..])
}

/// Reads the whole state machine held by `tree` (whose metadata is `meta`).
pub(crate) fn capture(tree: &sled::Tree, meta: &SmMeta) -> Result<SnapshotPayload, StoreError> {
    let mut kvs = Vec::with_capacity(usize::try_from(meta.key_count).unwrap_or(0));
    let (lo, hi) = (codec::kv_key(b""), codec::kv_upper(None));
    tree.scan(&lo, &hi, &mut |k, v| {
        let r = KvRecord::decode(v)?;
        kvs.push(SnapshotKv {
            key: codec::user_key(k).to_vec(),
            value: r.value,
            create_revision: r.create_revision,
            mod_revision: r.mod_revision,
            version: r.version,
        });
        Ok(Scan::Continue)
    })?;
    Ok(SnapshotPayload {
        last_applied: meta.last_applied,
        membership: meta.membership.clone(),
        revision: meta.revision,
        kvs,
        clients: dedup::all(tree)?,
    })
}

/// Writes `payload` into the empty `tree` and returns the resulting metadata. Not atomic: the
/// caller makes the tree visible only once this returned and the tree is durable.
pub(crate) fn load(tree: &sled::Tree, payload: SnapshotPayload) -> Result<SmMeta, StoreError> {
    let meta = SmMeta {
        last_applied: payload.last_applied,
        membership: payload.membership,
        revision: payload.revision,
        key_count: payload.kvs.len() as u64,
        client_count: payload.clients.len() as u64,
    };
    let mut batch = sled::Batch::default();
    let mut pending = 0;
    let flush = |batch: &mut sled::Batch, pending: &mut usize| -> Result<(), StoreError> {
        if *pending > 0 {
            tree.apply_batch(std::mem::take(batch))?;
            *pending = 0;
        }
        Ok(())
    };

    let mut previous: Option<&[u8]> = None;
    for kv in &payload.kvs {
        if kv.key.is_empty() || previous.is_some_and(|p| p >= kv.key.as_slice()) {
            return Err(StoreError::Corrupt {
                what: "snapshot",
                detail: "keys are not unique, non-empty and ascending".into(),
            });
        }
        previous = Some(&kv.key);
        let record = KvRecord {
            create_revision: kv.create_revision,
            mod_revision: kv.mod_revision,
            version: kv.version,
            value: kv.value.clone(),
        };
        batch.insert(codec::kv_key(&kv.key), record.encode());
        pending += 1;
        if pending >= LOAD_BATCH {
            flush(&mut batch, &mut pending)?;
        }
    }

    let mut previous_client = None;
    for (client_id, record) in &payload.clients {
        if previous_client.is_some_and(|p| p >= *client_id) {
            return Err(StoreError::Corrupt {
                what: "snapshot",
                detail: "dedup clients are not unique and ascending".into(),
            });
        }
        previous_client = Some(*client_id);
        batch.insert(
            codec::client_key(*client_id).to_vec(),
            codec::encode("dedup record", record)?,
        );
        pending += 1;
        if pending >= LOAD_BATCH {
            flush(&mut batch, &mut pending)?;
        }
    }

    batch.insert(
        codec::META_KEY,
        codec::encode("state-machine metadata", &meta)?,
    );
    pending += 1;
    flush(&mut batch, &mut pending)?;
    Ok(meta)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_is_checked() {
        let payload = SnapshotPayload {
            revision: 5,
            kvs: vec![SnapshotKv {
                key: b"a".to_vec(),
                value: b"1".to_vec(),
                create_revision: 1,
                mod_revision: 5,
                version: 2,
            }],
            ..Default::default()
        };
        let bytes = encode(&payload).unwrap();
        assert_eq!(decode(&bytes).unwrap(), payload);

        let mut newer = bytes.clone();
        newer[7] = 2;
        assert!(matches!(
            decode(&newer),
            Err(StoreError::UnsupportedFormat { found: 2, .. })
        ));
        assert!(matches!(decode(b"nope"), Err(StoreError::Corrupt { .. })));
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn load_refuses_unsorted_keys() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("t").unwrap();
        let kv = |k: &[u8]| SnapshotKv {
            key: k.to_vec(),
            ..Default::default()
        };
        let payload = SnapshotPayload {
            kvs: vec![kv(b"b"), kv(b"a")],
            ..Default::default()
        };
        assert!(matches!(
            load(&tree, payload),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
