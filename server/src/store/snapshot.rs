//! The snapshot data format: the whole state machine as one versioned byte string.
//!
//! Layout: the magic `KVSS`, the format version as a big-endian `u32` ([`SNAPSHOT_FORMAT`]),
//! then postcard of [`SnapshotPayload`]: last applied log id, membership, revision, every key
//! with its metadata in key order, and the dedup table in client-id order; format 2 appends the
//! alarm table (`alarm.rs`). The payload is typed rather than a dump of sled's pairs, so the
//! internal key layout can change without breaking snapshots sent between versions; a change of
//! the payload bumps the format.
//!
//! Formats: 1 (no alarms), 2 (with the alarm table) and 3 (with the revision history since the
//! compact revision, the lease table with each lease's keys, the compact revision and the lease
//! id counter). A snapshot is written in the oldest format that holds it — format 1, byte for
//! byte what earlier builds wrote, when there is no alarm, history or lease — so backups stay
//! readable by older builds where they can be; all three are read. A format 1 or 2 snapshot
//! carries no history: loading it sets the compact revision to its revision.
//!
//! [`capture`] reads a state-machine tree into a payload (the state machine calls it where no
//! apply can run concurrently); [`load`] writes a payload into an empty tree and returns the
//! metadata the tree then holds.

use serde::{Deserialize, Serialize};

use super::alarm::{self, Alarm, ALARMS_KEY};
use super::codec::{self, KvRecord};
use super::dedup::{self, ClientRecord};
use super::error::StoreError;
use super::history::{self, StoredEvent};
use super::lease::{self, LeaseEntry};
use super::meta::SmMeta;
use super::view::Scan;
use super::view::View;
use crate::raft::types::{LogId, StoredMembership};

/// The newest snapshot format this build writes and reads (it reads every one up to this).
pub const SNAPSHOT_FORMAT: u32 = 3;
/// The format of a snapshot without alarms (see the module docs).
const FORMAT_WITHOUT_ALARMS: u32 = 1;
/// The format of a snapshot with alarms but without history or leases.
const FORMAT_WITH_ALARMS: u32 = 2;
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
    /// The alarm table (format 2; empty in format 1).
    pub alarms: Vec<Alarm>,
    /// History at and below this revision is forgotten (format 3; else the revision).
    pub compact_revision: i64,
    /// The highest lease id ever granted (format 3).
    pub max_lease_id: i64,
    /// Every change after the compact revision: revision, sub, change (format 3).
    pub history: Vec<(i64, u32, StoredEvent)>,
    /// Every lease with its attached keys, by id (format 3).
    pub leases: Vec<LeaseEntry>,
}

impl SnapshotPayload {
    /// True when format 1 or 2 can hold the payload: nothing of format 3 in it.
    fn fits_format_2(&self) -> bool {
        self.history.is_empty()
            && self.leases.is_empty()
            && self.max_lease_id == 0
            && self.compact_revision == self.revision
    }
}

/// Format 2's payload: [`SnapshotPayload`] up to the alarm table.
#[derive(Serialize, Deserialize)]
struct PayloadV2 {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    revision: i64,
    kvs: Vec<SnapshotKv>,
    clients: Vec<(u64, ClientRecord)>,
    alarms: Vec<Alarm>,
}

/// Format 1's payload: [`SnapshotPayload`] without the alarm table.
#[derive(Serialize, Deserialize)]
struct PayloadV1 {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    revision: i64,
    kvs: Vec<SnapshotKv>,
    clients: Vec<(u64, ClientRecord)>,
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

/// The snapshot's bytes: format 1 when there is no alarm, else format 2.
pub(crate) fn encode(payload: &SnapshotPayload) -> Result<Vec<u8>, StoreError> {
    let format = match (payload.fits_format_2(), payload.alarms.is_empty()) {
        (true, true) => FORMAT_WITHOUT_ALARMS,
        (true, false) => FORMAT_WITH_ALARMS,
        (false, _) => SNAPSHOT_FORMAT,
    };
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&format.to_be_bytes());
    if format == FORMAT_WITHOUT_ALARMS {
        // The same fields in the same order: postcard writes the bytes format 1 always had.
        let v1 = (
            &payload.last_applied,
            &payload.membership,
            &payload.revision,
            &payload.kvs,
            &payload.clients,
        );
        return postcard::to_extend(&v1, out).map_err(StoreError::codec("snapshot"));
    }
    if format == FORMAT_WITH_ALARMS {
        let v2 = (
            &payload.last_applied,
            &payload.membership,
            &payload.revision,
            &payload.kvs,
            &payload.clients,
            &payload.alarms,
        );
        return postcard::to_extend(&v2, out).map_err(StoreError::codec("snapshot"));
    }
    postcard::to_extend(payload, out).map_err(StoreError::codec("snapshot"))
}

/// The format number in a snapshot's header (0 when there is no header); [`decode`] checks it.
pub(crate) fn format_of(bytes: &[u8]) -> u32 {
    bytes
        .get(4..8)
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(0, u32::from_be_bytes)
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
    match found {
        FORMAT_WITHOUT_ALARMS => {
            let v1: PayloadV1 = codec::decode("snapshot", &bytes[8..])?;
            Ok(SnapshotPayload {
                last_applied: v1.last_applied,
                membership: v1.membership,
                revision: v1.revision,
                kvs: v1.kvs,
                clients: v1.clients,
                alarms: Vec::new(),
                compact_revision: v1.revision,
                ..Default::default()
            })
        }
        FORMAT_WITH_ALARMS => {
            let v2: PayloadV2 = codec::decode("snapshot", &bytes[8..])?;
            Ok(SnapshotPayload {
                last_applied: v2.last_applied,
                membership: v2.membership,
                revision: v2.revision,
                kvs: v2.kvs,
                clients: v2.clients,
                alarms: v2.alarms,
                compact_revision: v2.revision,
                ..Default::default()
            })
        }
        SNAPSHOT_FORMAT => codec::decode("snapshot", &bytes[8..]),
        _ => Err(StoreError::UnsupportedFormat {
            what: "snapshot",
            found,
            supported: SNAPSHOT_FORMAT,
        }),
    }
}

/// Reads the whole state machine held by `tree` (whose metadata is `meta`).
pub(crate) fn capture(tree: &sled::Tree, meta: &SmMeta) -> Result<SnapshotPayload, StoreError> {
    let alarms = alarm::decode(tree.get(ALARMS_KEY)?.as_deref())?;
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
        alarms,
        compact_revision: meta.compact_revision,
        max_lease_id: meta.max_lease_id,
        history: history::all(tree)?,
        leases: lease::entries(tree)?,
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
        compact_revision: payload.compact_revision,
        max_lease_id: payload.max_lease_id,
    };
    let mut key_lease = std::collections::HashMap::new();
    for entry in &payload.leases {
        for key in &entry.keys {
            key_lease.insert(key.as_slice(), entry.id);
        }
    }
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
            lease: key_lease.get(kv.key.as_slice()).copied().unwrap_or(0),
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

    for (revision, sub, event) in &payload.history {
        let (k, v) = history::stored(*revision, *sub, event)?;
        batch.insert(k, v);
        pending += 1;
        if pending >= LOAD_BATCH {
            flush(&mut batch, &mut pending)?;
        }
    }
    for entry in &payload.leases {
        for (k, v) in lease::stored(entry)? {
            batch.insert(k, v);
            pending += 1;
        }
        if pending >= LOAD_BATCH {
            flush(&mut batch, &mut pending)?;
        }
    }

    if let Some(alarms) = alarm::encode(&payload.alarms)? {
        batch.insert(ALARMS_KEY, alarms);
    }
    batch.insert(codec::META_KEY, meta.encode()?);
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
            compact_revision: 5,
            ..Default::default()
        };
        let bytes = encode(&payload).unwrap();
        assert_eq!(decode(&bytes).unwrap(), payload);

        assert_eq!(bytes[7], 1, "no alarms, no history: written as format 1");

        let mut newer = bytes.clone();
        newer[7] = 4;
        assert!(matches!(
            decode(&newer),
            Err(StoreError::UnsupportedFormat { found: 4, .. })
        ));
        assert!(matches!(decode(b"nope"), Err(StoreError::Corrupt { .. })));
        assert!(decode(&bytes[..bytes.len() - 1]).is_err());
    }

    /// History, leases and the counters ride in format 3 and come back when loaded: a key keeps
    /// its lease, the lease its keys, reads at past revisions their answers.
    #[test]
    fn history_and_leases_ride_in_format_3() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("t").unwrap();
        let event = StoredEvent {
            key: b"k".to_vec(),
            after: Some(
                KvRecord {
                    create_revision: 7,
                    mod_revision: 7,
                    version: 1,
                    lease: 3,
                    value: b"v".to_vec(),
                }
                .encode(),
            ),
            before: None,
        };
        let payload = SnapshotPayload {
            revision: 7,
            kvs: vec![SnapshotKv {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
                create_revision: 7,
                mod_revision: 7,
                version: 1,
            }],
            compact_revision: 6,
            max_lease_id: 3,
            history: vec![(7, 0, event)],
            leases: vec![LeaseEntry {
                id: 3,
                ttl: 10,
                keys: vec![b"k".to_vec()],
            }],
            ..Default::default()
        };
        let bytes = encode(&payload).unwrap();
        assert_eq!(format_of(&bytes), SNAPSHOT_FORMAT);
        assert_eq!(decode(&bytes).unwrap(), payload);
        let meta = load(&tree, payload.clone()).unwrap();
        assert_eq!((meta.compact_revision, meta.max_lease_id), (6, 3));
        let stored = KvRecord::decode(&tree.get(codec::kv_key(b"k")).unwrap().unwrap()).unwrap();
        assert_eq!(stored.lease, 3, "the key keeps its lease");
        let again = capture(&tree, &meta).unwrap();
        assert_eq!(again, payload, "capture gives back what was loaded");
    }

    /// With alarms the snapshot is format 2 and keeps them; without, it is exactly format 1.
    #[test]
    fn alarms_ride_in_format_2_and_format_1_stays_as_it_was() {
        let v1 = PayloadV1 {
            last_applied: None,
            membership: StoredMembership::default(),
            revision: 3,
            kvs: vec![SnapshotKv {
                key: b"k".to_vec(),
                ..Default::default()
            }],
            clients: Vec::new(),
        };
        let mut old = MAGIC.to_vec();
        old.extend_from_slice(&1u32.to_be_bytes());
        old.extend(postcard::to_allocvec(&v1).unwrap());
        let payload = decode(&old).unwrap();
        assert!(payload.alarms.is_empty());
        assert_eq!(
            encode(&payload).unwrap(),
            old,
            "format 1 is written unchanged"
        );

        let mut with = payload.clone();
        with.alarms.push(Alarm {
            member_id: 1,
            alarm: 1,
            member_name: "kv-1".into(),
            usage_bytes: 10,
            quota_bytes: 9,
        });
        let bytes = encode(&with).unwrap();
        assert_eq!(bytes[7], 2);
        assert_eq!((format_of(&bytes), format_of(&old)), (2, 1));
        assert_eq!(decode(&bytes).unwrap(), with);

        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("t").unwrap();
        let meta = load(&tree, with.clone()).unwrap();
        assert_eq!(capture(&tree, &meta).unwrap().alarms, with.alarms);
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
