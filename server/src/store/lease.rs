//! The replicated lease table: which leases exist, their granted TTL, and which keys each one
//! carries.
//!
//! Only what every replica must agree on lives here: a lease's id and TTL (`l` + id), and its
//! attached keys (`a` + id + user key, kept in step with the `lease` field of each key's
//! record, so revoking finds the keys without a scan of the whole store). When a lease
//! *expires* is not state: the leader alone keeps the deadlines in memory (`node/lessor.rs`)
//! and turns an expiry into a revoke command through the log, so followers never act on their
//! own clocks and a lease ends at the same revision everywhere.
//!
//! Ids: a grant with id 0 gets `max_lease_id + 1` from the metadata record, and every grant
//! raises `max_lease_id`, so an id the cluster picks was never used before, whatever was revoked
//! since.

use serde::{Deserialize, Serialize};

use super::codec::{self, NS_ATTACHED, NS_LEASE};
use super::error::StoreError;
use super::view::{Overlay, Scan, View};

/// A lease as the table holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LeaseRecord {
    /// The TTL it was granted with, in seconds.
    pub ttl: i64,
}

/// A lease with its id, as snapshots and listings carry it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LeaseEntry {
    /// The lease id.
    pub id: i64,
    /// The TTL it was granted with, in seconds.
    pub ttl: i64,
    /// The attached keys, ascending.
    pub keys: Vec<Vec<u8>>,
}

/// The sled key of lease `id`'s record.
fn lease_key(id: i64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(NS_LEASE);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// The prefix of lease `id`'s attachments.
fn attached_prefix(id: i64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(NS_ATTACHED);
    k.extend_from_slice(&id.to_be_bytes());
    k
}

/// The sled key recording that `key` is attached to lease `id`.
fn attached_key(id: i64, key: &[u8]) -> Vec<u8> {
    let mut k = attached_prefix(id);
    k.extend_from_slice(key);
    k
}

/// The end of the attachments of lease `id` (exclusive).
fn attached_end(id: i64) -> Vec<u8> {
    let mut k = Vec::with_capacity(9);
    k.push(NS_ATTACHED);
    match id.checked_add(1) {
        Some(next) => k.extend_from_slice(&next.to_be_bytes()),
        None => k[0] = NS_ATTACHED + 1,
    }
    k
}

/// Lease `id`'s record, if it exists.
pub(crate) fn get(view: &dyn View, id: i64) -> Result<Option<LeaseRecord>, StoreError> {
    view.get(&lease_key(id))?
        .map(|b| codec::decode("lease record", &b))
        .transpose()
}

/// Creates lease `id`.
pub(crate) fn put(ov: &mut Overlay<'_>, id: i64, record: LeaseRecord) -> Result<(), StoreError> {
    ov.put(lease_key(id), codec::encode("lease record", &record)?);
    Ok(())
}

/// Removes lease `id`'s record (its attachments go with its keys, see [`detach`]).
pub(crate) fn remove(ov: &mut Overlay<'_>, id: i64) {
    ov.remove(lease_key(id));
}

/// Records that `key` now carries lease `id`.
pub(crate) fn attach(ov: &mut Overlay<'_>, id: i64, key: &[u8]) {
    ov.put(attached_key(id, key), Vec::new());
}

/// Records that `key` no longer carries lease `id`.
pub(crate) fn detach(ov: &mut Overlay<'_>, id: i64, key: &[u8]) {
    ov.remove(attached_key(id, key));
}

/// The keys attached to lease `id`, ascending.
pub(crate) fn keys(view: &dyn View, id: i64) -> Result<Vec<Vec<u8>>, StoreError> {
    let prefix = attached_prefix(id);
    let mut out = Vec::new();
    view.scan(&prefix, &attached_end(id), &mut |k, _| {
        out.push(k[prefix.len()..].to_vec());
        Ok(Scan::Continue)
    })?;
    Ok(out)
}

/// Every lease with its TTL, by id.
pub(crate) fn all(view: &dyn View) -> Result<Vec<(i64, LeaseRecord)>, StoreError> {
    let mut out = Vec::new();
    view.scan(&[NS_LEASE], &[NS_LEASE + 1], &mut |k, v| {
        let id = codec::decode_u64("lease key", &k[1..])? as i64;
        out.push((id, codec::decode("lease record", v)?));
        Ok(Scan::Continue)
    })?;
    Ok(out)
}

/// Every lease with its keys, for a snapshot.
pub(crate) fn entries(view: &dyn View) -> Result<Vec<LeaseEntry>, StoreError> {
    all(view)?
        .into_iter()
        .map(|(id, r)| {
            Ok(LeaseEntry {
                id,
                ttl: r.ttl,
                keys: keys(view, id)?,
            })
        })
        .collect()
}

/// The sled pairs that hold `entry` (its record and attachments), for loading a snapshot.
pub(crate) fn stored(entry: &LeaseEntry) -> Result<Vec<(Vec<u8>, Vec<u8>)>, StoreError> {
    let mut out = vec![(
        lease_key(entry.id),
        codec::encode("lease record", &LeaseRecord { ttl: entry.ttl })?,
    )];
    out.extend(
        entry
            .keys
            .iter()
            .map(|k| (attached_key(entry.id, k), Vec::new())),
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attachments_of_neighbouring_leases_stay_apart() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("t").unwrap();
        let mut ov = Overlay::new(&tree);
        put(&mut ov, 1, LeaseRecord { ttl: 5 }).unwrap();
        put(&mut ov, 2, LeaseRecord { ttl: 9 }).unwrap();
        put(&mut ov, i64::MAX, LeaseRecord { ttl: 1 }).unwrap();
        attach(&mut ov, 1, b"a");
        attach(&mut ov, 1, b"b");
        attach(&mut ov, 2, b"c");
        attach(&mut ov, i64::MAX, b"z");
        tree.apply_batch(ov.into_batch()).unwrap();
        assert_eq!(keys(&tree, 1).unwrap(), vec![b"a".to_vec(), b"b".to_vec()]);
        assert_eq!(keys(&tree, 2).unwrap(), vec![b"c".to_vec()]);
        assert_eq!(keys(&tree, i64::MAX).unwrap(), vec![b"z".to_vec()]);
        assert_eq!(
            all(&tree)
                .unwrap()
                .iter()
                .map(|(id, _)| *id)
                .collect::<Vec<_>>(),
            vec![1, 2, i64::MAX]
        );
        let mut ov = Overlay::new(&tree);
        detach(&mut ov, 1, b"a");
        remove(&mut ov, 2);
        tree.apply_batch(ov.into_batch()).unwrap();
        assert_eq!(keys(&tree, 1).unwrap(), vec![b"b".to_vec()]);
        assert_eq!(get(&tree, 2).unwrap(), None);
        assert_eq!(get(&tree, 1).unwrap(), Some(LeaseRecord { ttl: 5 }));
    }
}
