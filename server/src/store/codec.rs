//! Byte layouts: how keys and records are spelled inside sled.
//!
//! Everything that reaches the disk goes through this file, so the on-disk format can be read in
//! one place (the module essay in `mod.rs` has the overview):
//!
//! - The Raft log's entries live in segment files, not in sled (`wal.rs`).
//! - State-machine keys: one namespace byte, then the rest. `k` + user key for key-values,
//!   `d` + client id (8 bytes BE) for the dedup table, `h` + revision (8 bytes BE) + sub
//!   (4 bytes BE) for the revision history (`history.rs`), `l` + lease id (8 bytes BE) for
//!   leases and `a` + lease id + user key for the keys attached to a lease (`lease.rs`), and
//!   `m` + name for state-machine metadata. (`e` held the dedup eviction order in store
//!   format 1; see `dedup.rs`.)
//! - A key-value record: format byte `1`, `create_revision`, `mod_revision`, `version` as
//!   8-byte big-endian signed integers, then the value bytes (no copy of the key). A key
//!   attached to a lease uses format byte `2`, with the lease id as a fourth integer before the
//!   value; a key without a lease keeps format 1, byte for byte what earlier builds wrote.
//! - Structured records (log entries, vote, metadata, dedup records): postcard.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::error::StoreError;
use kvset_proto::v1::KeyValue;

/// Encodes a value with postcard; `what` names it in errors.
pub(crate) fn encode<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_allocvec(value).map_err(StoreError::codec(what))
}

/// Decodes a postcard value; `what` names it in errors.
pub(crate) fn decode<T: DeserializeOwned>(
    what: &'static str,
    bytes: &[u8],
) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).map_err(StoreError::codec(what))
}

/// Reads an 8-byte big-endian integer at `at`, or reports `what` as corrupt.
fn be_u64(what: &'static str, bytes: &[u8], at: usize) -> Result<u64, StoreError> {
    bytes
        .get(at..at + 8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map(u64::from_be_bytes)
        .ok_or_else(|| StoreError::Corrupt {
            what,
            detail: format!("{} bytes, expected an integer at offset {at}", bytes.len()),
        })
}

/// Decodes a stored 8-byte big-endian integer (a counter or pointer record).
pub(crate) fn decode_u64(what: &'static str, bytes: &[u8]) -> Result<u64, StoreError> {
    if bytes.len() != 8 {
        return Err(StoreError::Corrupt {
            what,
            detail: format!("{} bytes, expected 8", bytes.len()),
        });
    }
    be_u64(what, bytes, 0)
}

// ---------------------------------------------------------------------------------------------
// Raft log

// ---------------------------------------------------------------------------------------------
// State-machine namespaces

/// Namespace of key-value records.
pub(crate) const NS_KV: u8 = b'k';
/// Namespace of dedup records, keyed by client id.
pub(crate) const NS_CLIENT: u8 = b'd';
/// Namespace of the dedup eviction order in store format 1: (log index, client id) -> empty.
/// Format 2 keeps that order in memory; opening a format-1 store deletes these keys.
pub(crate) const LEGACY_NS_EVICT: u8 = b'e';
/// The state-machine metadata record.
pub(crate) const META_KEY: &[u8] = b"m/state";

/// Namespace of the revision history: (revision, sub) -> one event (`history.rs`).
pub(crate) const NS_HISTORY: u8 = b'h';
/// Namespace of the lease table: lease id -> its record (`lease.rs`).
pub(crate) const NS_LEASE: u8 = b'l';
/// Namespace of lease attachments: lease id + user key -> empty (`lease.rs`).
pub(crate) const NS_ATTACHED: u8 = b'a';

// a < d < e < h < k < (end of k) <= l < m: every namespace is a contiguous range of its own.
const _: () = assert!(
    NS_ATTACHED < NS_CLIENT
        && NS_CLIENT < LEGACY_NS_EVICT
        && LEGACY_NS_EVICT < NS_HISTORY
        && NS_HISTORY < NS_KV
        && NS_KV < NS_LEASE
        && NS_LEASE < b'm'
);

/// The sled key of a user key.
pub(crate) fn kv_key(user_key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(1 + user_key.len());
    k.push(NS_KV);
    k.extend_from_slice(user_key);
    k
}

/// Whether a sled key of the state-machine tree is a key-value record's.
pub(crate) fn is_kv_key(raw_key: &[u8]) -> bool {
    raw_key.first() == Some(&NS_KV)
}

/// The user key of a key-value sled key (the inverse of [`kv_key`]).
pub(crate) fn user_key(kv_key: &[u8]) -> &[u8] {
    kv_key.get(1..).unwrap_or_default()
}

/// The exclusive sled upper bound for user keys below `end` (`None`: every key).
pub(crate) fn kv_upper(end: Option<&[u8]>) -> Vec<u8> {
    match end {
        Some(end) => kv_key(end),
        None => vec![NS_KV + 1],
    }
}

/// The sled key of a client's dedup record.
pub(crate) fn client_key(client_id: u64) -> [u8; 9] {
    let mut k = [0; 9];
    k[0] = NS_CLIENT;
    k[1..].copy_from_slice(&client_id.to_be_bytes());
    k
}

// ---------------------------------------------------------------------------------------------
// Key-value records

/// Format byte of a record without a lease.
const KV_FORMAT: u8 = 1;
/// Format byte of a record attached to a lease.
const KV_FORMAT_LEASED: u8 = 2;
const KV_HEADER: usize = 1 + 3 * 8;
const KV_HEADER_LEASED: usize = 1 + 4 * 8;

/// A stored key's metadata and value.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct KvRecord {
    /// Revision of the put that created the key (after it was absent).
    pub create_revision: i64,
    /// Revision of the last write.
    pub mod_revision: i64,
    /// Writes since creation; 1 after the first put.
    pub version: i64,
    /// The lease the key is attached to (0: none).
    pub lease: i64,
    /// The value.
    pub value: Vec<u8>,
}

impl KvRecord {
    /// The record's bytes.
    pub(crate) fn encode(&self) -> Vec<u8> {
        let leased = self.lease != 0;
        let header = if leased { KV_HEADER_LEASED } else { KV_HEADER };
        let mut b = Vec::with_capacity(header + self.value.len());
        b.push(if leased { KV_FORMAT_LEASED } else { KV_FORMAT });
        b.extend_from_slice(&self.create_revision.to_be_bytes());
        b.extend_from_slice(&self.mod_revision.to_be_bytes());
        b.extend_from_slice(&self.version.to_be_bytes());
        if leased {
            b.extend_from_slice(&self.lease.to_be_bytes());
        }
        b.extend_from_slice(&self.value);
        b
    }

    /// Parses a record's bytes.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        let header = KvHeader::decode(bytes)?;
        Ok(Self {
            create_revision: header.create_revision,
            mod_revision: header.mod_revision,
            version: header.version,
            lease: header.lease,
            value: KvHeader::value(bytes).to_vec(),
        })
    }

    /// The API's view of this record under `key`.
    pub(crate) fn to_key_value(&self, key: &[u8], keys_only: bool) -> KeyValue {
        KeyValue {
            key: key.to_vec(),
            value: if keys_only {
                Vec::new()
            } else {
                self.value.clone()
            },
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
            lease: self.lease,
        }
    }
}

/// The fixed-size front of a record, for reads that do not need the value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct KvHeader {
    pub create_revision: i64,
    pub mod_revision: i64,
    pub version: i64,
    pub lease: i64,
}

impl KvHeader {
    /// The header length of a record starting with `format`, if the format is known.
    fn len_of(format: Option<&u8>) -> Option<usize> {
        match format {
            Some(&KV_FORMAT) => Some(KV_HEADER),
            Some(&KV_FORMAT_LEASED) => Some(KV_HEADER_LEASED),
            _ => None,
        }
    }

    /// Parses the header of a record's bytes.
    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        let header = Self::len_of(bytes.first()).filter(|&len| bytes.len() >= len);
        if header.is_none() {
            return Err(StoreError::Corrupt {
                what: "key-value record",
                detail: format!(
                    "{} bytes starting with {:?}, expected a record of format {KV_FORMAT} or \
                     {KV_FORMAT_LEASED} with its whole header",
                    bytes.len(),
                    bytes.first()
                ),
            });
        }
        let int = |at| be_u64("key-value record", bytes, at).map(|v| v as i64);
        Ok(Self {
            create_revision: int(1)?,
            mod_revision: int(9)?,
            version: int(17)?,
            lease: if bytes[0] == KV_FORMAT_LEASED {
                int(25)?
            } else {
                0
            },
        })
    }

    /// The value part of a record's bytes whose header decoded.
    pub(crate) fn value(bytes: &[u8]) -> &[u8] {
        let header = Self::len_of(bytes.first()).unwrap_or(bytes.len());
        bytes.get(header..).unwrap_or_default()
    }
}

/// Decodes a stored record straight into the API's `KeyValue`.
pub(crate) fn key_value(key: &[u8], bytes: &[u8], keys_only: bool) -> Result<KeyValue, StoreError> {
    let h = KvHeader::decode(bytes)?;
    Ok(KeyValue {
        key: key.to_vec(),
        value: if keys_only {
            Vec::new()
        } else {
            KvHeader::value(bytes).to_vec()
        },
        create_revision: h.create_revision,
        mod_revision: h.mod_revision,
        version: h.version,
        lease: h.lease,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_integers_round_trip() {
        assert_eq!(
            decode_u64("generation", &u64::MAX.to_be_bytes()).unwrap(),
            u64::MAX
        );
        assert!(decode_u64("generation", &[1, 2, 3]).is_err());
    }

    #[test]
    fn kv_record_round_trips() {
        let r = KvRecord {
            create_revision: 3,
            mod_revision: 9,
            version: 4,
            lease: 0,
            value: vec![0, 255, 1],
        };
        let b = r.encode();
        assert_eq!(b[0], KV_FORMAT, "a record without a lease keeps format 1");
        let leased = KvRecord {
            lease: 77,
            ..r.clone()
        };
        let lb = leased.encode();
        assert_eq!(lb[0], KV_FORMAT_LEASED);
        assert_eq!(KvRecord::decode(&lb).unwrap(), leased);
        assert_eq!(key_value(b"key", &lb, false).unwrap().lease, 77);
        assert_eq!(
            key_value(b"key", &lb, false).unwrap().value,
            vec![0, 255, 1]
        );
        assert_eq!(KvRecord::decode(&b).unwrap(), r);
        let kv = key_value(b"key", &b, true).unwrap();
        assert_eq!(kv.value, Vec::<u8>::new());
        assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (3, 9, 4));
        assert!(KvRecord::decode(&b[..10]).is_err());
        let mut wrong_format = b.clone();
        wrong_format[0] = 7;
        assert!(KvRecord::decode(&wrong_format).is_err());
    }

    #[test]
    fn namespaces_do_not_overlap() {
        assert!(kv_key(&[0xff; 8]) < kv_upper(None));
        assert!(kv_upper(None).as_slice() <= META_KEY);
        assert!(kv_upper(None).as_slice() <= [NS_LEASE].as_slice());
        assert_eq!(user_key(&kv_key(b"abc")), b"abc");
    }
}
