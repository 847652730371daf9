//! The content digest of the key-value state (`state_hash` in `Status`), kept up to date as
//! batches are applied instead of recomputed by reading every key.
//!
//! Why: `Status` reports a hash of the state so that a checker (the chaos harness, the cluster
//! tests, an operator comparing members) can see that replicas at one revision hold the same
//! data. Hashing the keys in order means reading all of them, so every `Status` call cost
//! O(data size): with tens of megabytes a debug build took seconds, a loaded machine timed the
//! call out, and a gigabyte store would make `kvsetctl status` a full scan of every member.
//!
//! How: the digest is a *multiset hash* (an additive one, "AdHash"). Each live key contributes
//! `H(entry) = SHA-256(key, value, create_revision, mod_revision, version)`, read as a 256-bit
//! number; the accumulator is their sum modulo 2^256 together with the key count. The sum does
//! not depend on order, so a write is accounted for by subtracting the old entry's hash and
//! adding the new one: O(bytes written), not O(data). The reported hash is
//! `SHA-256(tag, sum, count)`. Equal states give equal hashes on every replica; different states
//! collide only with negligible probability (the hash guards against bugs, not an adversary
//! choosing keys, which is all a convergence check needs).
//!
//! The accumulator lives in memory only: no store-format change, and nothing to get wrong
//! across crashes. It is computed by one full scan the first time a digest is asked for (and
//! again after a snapshot install replaces the state), then maintained by `apply`. See
//! `state_machine.rs` for how a scan and a concurrent apply are kept consistent.

use sha2::{Digest, Sha256};

use super::codec::{self, KvHeader};
use super::error::StoreError;

/// Domain tag of the reported hash (bumped if what an entry contributes ever changes).
const TAG: &[u8] = b"kvset-state-digest-v2";

/// The order-independent accumulator: sum of entry hashes mod 2^256 (little-endian limbs) and
/// the number of entries summed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Accumulator {
    sum: [u64; 4],
    count: u64,
}

impl Accumulator {
    /// Accounts for a stored key-value record (`raw_key` in the KV namespace, `record` as
    /// stored) entering the state.
    pub(crate) fn add(&mut self, raw_key: &[u8], record: &[u8]) -> Result<(), StoreError> {
        let h = entry_hash(raw_key, record)?;
        self.sum = add(self.sum, h);
        self.count += 1;
        Ok(())
    }

    /// Accounts for a stored record leaving the state (deleted, or replaced by a new version).
    #[cfg(test)]
    pub(crate) fn remove(&mut self, raw_key: &[u8], record: &[u8]) -> Result<(), StoreError> {
        let h = entry_hash(raw_key, record)?;
        self.sum = sub(self.sum, h);
        self.count = self.count.wrapping_sub(1);
        Ok(())
    }

    /// Number of keys accounted for.
    pub(crate) fn count(&self) -> u64 {
        self.count
    }

    /// Adds another accumulator (a batch's delta) to this one.
    pub(crate) fn merge(&mut self, delta: &Delta) {
        self.sum = sub(add(self.sum, delta.added.sum), delta.removed.sum);
        self.count = self
            .count
            .wrapping_add(delta.added.count)
            .wrapping_sub(delta.removed.count);
    }

    /// The reported hash: lowercase hex SHA-256 of the tag, the sum and the count.
    pub(crate) fn hex(&self) -> String {
        let mut h = Sha256::new();
        h.update(TAG);
        for limb in self.sum {
            h.update(limb.to_le_bytes());
        }
        h.update(self.count.to_le_bytes());
        h.finalize().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// What one applied batch changes: the records that entered and those that left. Kept as two
/// sums so that it can be computed before knowing whether a base accumulator exists.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Delta {
    added: Accumulator,
    removed: Accumulator,
}

impl Delta {
    /// Records the change of one KV-namespace key from `old` to `new` (either may be absent).
    /// Keys outside the KV namespace (metadata, dedup records) are not part of the digest.
    pub(crate) fn change(
        &mut self,
        raw_key: &[u8],
        old: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<(), StoreError> {
        if !codec::is_kv_key(raw_key) || old == new {
            return Ok(());
        }
        if let Some(old) = old {
            self.removed.add(raw_key, old)?;
        }
        if let Some(new) = new {
            self.added.add(raw_key, new)?;
        }
        Ok(())
    }
}

/// SHA-256 of one entry (the same fields the ordered hash used), as four little-endian limbs.
fn entry_hash(raw_key: &[u8], record: &[u8]) -> Result<[u64; 4], StoreError> {
    let header = KvHeader::decode(record)?;
    let key = codec::user_key(raw_key);
    let value = KvHeader::value(record);
    let mut h = Sha256::new();
    h.update((key.len() as u64).to_be_bytes());
    h.update(key);
    h.update((value.len() as u64).to_be_bytes());
    h.update(value);
    h.update(header.create_revision.to_be_bytes());
    h.update(header.mod_revision.to_be_bytes());
    h.update(header.version.to_be_bytes());
    let bytes = h.finalize();
    let mut limbs = [0u64; 4];
    for (i, limb) in limbs.iter_mut().enumerate() {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
        *limb = u64::from_le_bytes(b);
    }
    Ok(limbs)
}

fn add(a: [u64; 4], b: [u64; 4]) -> [u64; 4] {
    let mut out = [0u64; 4];
    let mut carry = false;
    for i in 0..4 {
        let (s1, c1) = a[i].overflowing_add(b[i]);
        let (s2, c2) = s1.overflowing_add(carry as u64);
        out[i] = s2;
        carry = c1 || c2;
    }
    out
}

fn sub(a: [u64; 4], b: [u64; 4]) -> [u64; 4] {
    let mut out = [0u64; 4];
    let mut borrow = false;
    for i in 0..4 {
        let (d1, b1) = a[i].overflowing_sub(b[i]);
        let (d2, b2) = d1.overflowing_sub(borrow as u64);
        out[i] = d2;
        borrow = b1 || b2;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(value: &[u8], create: i64, modr: i64, version: i64) -> Vec<u8> {
        codec::KvRecord {
            create_revision: create,
            mod_revision: modr,
            version,
            value: value.to_vec(),
            lease: 0,
        }
        .encode()
    }

    #[test]
    fn order_does_not_matter_and_removal_undoes_addition() {
        let a = (codec::kv_key(b"a"), record(b"1", 1, 1, 1));
        let b = (codec::kv_key(b"b"), record(b"2", 2, 2, 1));
        let mut x = Accumulator::default();
        x.add(&a.0, &a.1).unwrap();
        x.add(&b.0, &b.1).unwrap();
        let mut y = Accumulator::default();
        y.add(&b.0, &b.1).unwrap();
        y.add(&a.0, &a.1).unwrap();
        assert_eq!(x, y);
        assert_eq!(x.hex(), y.hex());
        assert_eq!(x.count(), 2);

        x.remove(&b.0, &b.1).unwrap();
        let mut only_a = Accumulator::default();
        only_a.add(&a.0, &a.1).unwrap();
        assert_eq!(x, only_a);
        x.remove(&a.0, &a.1).unwrap();
        assert_eq!(x, Accumulator::default());
    }

    #[test]
    fn every_field_of_an_entry_changes_the_hash() {
        let base = Accumulator::default();
        let hex = |k: &[u8], r: Vec<u8>| {
            let mut acc = base;
            acc.add(&codec::kv_key(k), &r).unwrap();
            acc.hex()
        };
        let reference = hex(b"k", record(b"v", 1, 2, 3));
        for other in [
            hex(b"j", record(b"v", 1, 2, 3)),
            hex(b"k", record(b"w", 1, 2, 3)),
            hex(b"k", record(b"v", 9, 2, 3)),
            hex(b"k", record(b"v", 1, 9, 3)),
            hex(b"k", record(b"v", 1, 2, 9)),
        ] {
            assert_ne!(other, reference);
        }
        assert_ne!(base.hex(), reference, "the empty state hashes differently");
    }

    #[test]
    fn a_delta_replays_a_batch_of_changes() {
        let k1 = codec::kv_key(b"one");
        let (v1, v1b) = (record(b"x", 1, 1, 1), record(b"y", 1, 2, 2));
        let k2 = codec::kv_key(b"two");
        let v2 = record(b"z", 2, 2, 1);
        let mut state = Accumulator::default();
        state.add(&k1, &v1).unwrap();

        // One batch: overwrite k1, create k2, then a second batch deletes k1.
        let mut delta = Delta::default();
        delta.change(&k1, Some(&v1), Some(&v1b)).unwrap();
        delta.change(&k2, None, Some(&v2)).unwrap();
        delta.change(codec::META_KEY, None, Some(b"meta")).unwrap();
        state.merge(&delta);
        let mut expected = Accumulator::default();
        expected.add(&k1, &v1b).unwrap();
        expected.add(&k2, &v2).unwrap();
        assert_eq!(state, expected);

        let mut delta = Delta::default();
        delta.change(&k1, Some(&v1b), None).unwrap();
        state.merge(&delta);
        let mut expected = Accumulator::default();
        expected.add(&k2, &v2).unwrap();
        assert_eq!(state, expected);
    }

    #[test]
    fn carries_and_borrows_cross_limbs() {
        let max = [u64::MAX, u64::MAX, 0, 0];
        let one = [1, 0, 0, 0];
        assert_eq!(add(max, one), [0, 0, 1, 0]);
        assert_eq!(sub([0, 0, 1, 0], one), max);
        assert_eq!(sub([0; 4], one), [u64::MAX; 4], "wraps modulo 2^256");
    }
}
