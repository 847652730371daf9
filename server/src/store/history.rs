//! The revision history: every change to every key since the compact revision, in revision
//! order, so that reads can look at a past revision and watches can catch up.
//!
//! # Shape
//!
//! etcd keeps every version of every key in a tree keyed by revision and finds a key's version
//! at a revision through an in-memory index of its revisions. kvset keeps the current state as
//! it always did (`k` + user key, one record per live key) and adds the changes beside it,
//! keyed by revision: `h` + revision (8 bytes BE) + sub (4 bytes BE), where `sub` numbers the
//! changes of one revision (a Txn or a range delete changes several keys in one revision). Each
//! change stores the key, its record after the change (absent for a delete) and its record
//! before (absent when the key did not exist). So:
//!
//! - **A write appends** at the right end of the history namespace: sequential inserts, which
//!   sled does cheaply, in the same atomic batch as the state they describe.
//! - **A watch** reads the changes after its last delivered revision straight from here, in
//!   order; all changes of one revision are adjacent.
//! - **A read at revision R** is the current state with the changes after R undone: for every
//!   key changed after R, its record before the oldest such change is what it was at R
//!   ([`rewind`]). The cost is the number of changes since R, which compaction bounds; reads at
//!   the current revision (the common case) cost nothing extra. No in-memory index to rebuild
//!   on start, and nothing to keep in step with snapshots.
//! - **Compaction to C** deletes the changes at and below C ([`compact`]). The state at C stays
//!   readable, because rewinding to any R ≥ C only needs changes after R. Storing the previous
//!   record inside each change (rather than pointing at an older change) is what lets
//!   compaction drop a prefix without looking at keys: the price is space until compaction — a
//!   put stores its value twice (live and in its change) and the value it replaced once more, a
//!   delete stores the deleted value. etcd stores each version once; doing the same here needs
//!   a per-key version index (to find a change's neighbours), which is the next step if the
//!   space matters more than the simplicity.
//!
//! Everything here is deterministic and runs inside apply (writes) or under the state
//! machine's read lock (reads), so a reader never sees half a revision.

use serde::{Deserialize, Serialize};

use kvset_proto::v1::{event::EventType, Event, KeyValue};

use super::codec::{self, NS_HISTORY};
use super::error::StoreError;
use super::keyrange::KeyRange;
use super::view::{Overlay, Scan, View};

/// Length of a history key: namespace, revision, sub.
const EVENT_KEY_LEN: usize = 1 + 8 + 4;

/// One change to one key, as stored. Records are kept in their stored byte form
/// (`codec::KvRecord`), so turning a change back into state is a copy.
///
/// The byte fields go through `serde_bytes`: postcard writes a byte string exactly as it writes
/// a sequence of `u8` (a varint length, then the bytes), so the stored form is unchanged, but
/// one copy replaces a serializer call per byte (that loop was a twelfth of the apply path's
/// instructions per put; see docs/BENCHMARKS.md, "CPU per put").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StoredEvent {
    /// The user key.
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    /// The key's record after the change; `None` for a delete.
    #[serde(with = "serde_bytes")]
    pub after: Option<Vec<u8>>,
    /// The key's record before the change; `None` when it did not exist.
    #[serde(with = "serde_bytes")]
    pub before: Option<Vec<u8>>,
}

impl StoredEvent {
    fn encode(&self) -> Result<Vec<u8>, StoreError> {
        codec::encode("history event", self)
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<Self, StoreError> {
        codec::decode("history event", bytes)
    }

    /// The API's event at `revision`; `prev_kv` attaches the record before.
    pub(crate) fn to_proto(&self, revision: i64, prev_kv: bool) -> Result<Event, StoreError> {
        let (kind, kv) = match &self.after {
            Some(after) => (EventType::Put, codec::key_value(&self.key, after, false)?),
            None => (
                EventType::Delete,
                KeyValue {
                    key: self.key.clone(),
                    mod_revision: revision,
                    ..Default::default()
                },
            ),
        };
        let prev_kv = match (&self.before, prev_kv) {
            (Some(before), true) => Some(codec::key_value(&self.key, before, false)?),
            _ => None,
        };
        Ok(Event {
            r#type: kind as i32,
            kv: Some(kv),
            prev_kv,
        })
    }
}

/// The sled key of change `sub` of `revision`.
pub(crate) fn event_key(revision: i64, sub: u32) -> [u8; EVENT_KEY_LEN] {
    let mut k = [0; EVENT_KEY_LEN];
    k[0] = NS_HISTORY;
    k[1..9].copy_from_slice(&revision.to_be_bytes());
    k[9..].copy_from_slice(&sub.to_be_bytes());
    k
}

/// The revision and sub of a history key.
pub(crate) fn parse_event_key(key: &[u8]) -> Result<(i64, u32), StoreError> {
    if key.len() != EVENT_KEY_LEN || key[0] != NS_HISTORY {
        return Err(StoreError::Corrupt {
            what: "history key",
            detail: format!(
                "{} bytes, expected {EVENT_KEY_LEN} starting with 'h'",
                key.len()
            ),
        });
    }
    let mut rev = [0; 8];
    rev.copy_from_slice(&key[1..9]);
    let mut sub = [0; 4];
    sub.copy_from_slice(&key[9..]);
    Ok((i64::from_be_bytes(rev), u32::from_be_bytes(sub)))
}

/// The first history key of `revision` (revisions are positive, so this sorts right).
fn first_of(revision: i64) -> Vec<u8> {
    event_key(revision.max(0), 0).to_vec()
}

/// The end of the history namespace.
fn history_end() -> Vec<u8> {
    vec![NS_HISTORY + 1]
}

/// Records change `sub` of `revision` in the batch being applied.
pub(crate) fn record(
    ov: &mut Overlay<'_>,
    revision: i64,
    sub: u32,
    event: &StoredEvent,
) -> Result<(), StoreError> {
    ov.put(event_key(revision, sub).to_vec(), event.encode()?);
    Ok(())
}

/// The changes of one revision that a reader asked for.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct RevisionChanges {
    /// The revision.
    pub revision: i64,
    /// Its changes in the requested range, in the order they were made.
    pub events: Vec<StoredEvent>,
}

/// What [`changes`] found.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct ChangesRead {
    /// The revisions with changes in the range, ascending; each complete.
    pub revisions: Vec<RevisionChanges>,
    /// Every revision up to this one was looked at: the next read starts right after it.
    pub through: i64,
}

/// The changes to keys in `range` at revisions `from..=upto`, whole revisions at a time, until
/// at least `max_events` changes were found (the last revision is always complete, so a
/// revision is never split between two reads).
pub(crate) fn changes(
    view: &dyn View,
    from: i64,
    upto: i64,
    range: &KeyRange,
    max_events: usize,
) -> Result<ChangesRead, StoreError> {
    let mut read = ChangesRead {
        revisions: Vec::new(),
        through: upto,
    };
    if from > upto {
        read.through = from - 1;
        return Ok(read);
    }
    let mut found = 0usize;
    view.scan(&first_of(from), &first_of(upto + 1), &mut |k, v| {
        let (revision, _) = parse_event_key(k)?;
        let last = read.revisions.last().map(|r| r.revision);
        if found >= max_events && last.is_some_and(|l| l != revision) {
            // The revision before this one was the last complete one wanted.
            read.through = revision - 1;
            return Ok(Scan::Stop);
        }
        let event = StoredEvent::decode(v)?;
        if !range.contains(&event.key) {
            return Ok(Scan::Continue);
        }
        found += 1;
        match read.revisions.last_mut() {
            Some(r) if r.revision == revision => r.events.push(event),
            _ => read.revisions.push(RevisionChanges {
                revision,
                events: vec![event],
            }),
        }
        Ok(Scan::Continue)
    })?;
    Ok(read)
}

/// An overlay on `tree` that shows the keys in `range` as they were at revision `at`: for each
/// key changed after `at`, the record before its oldest such change (see the module docs).
/// `tree` must hold every change after `at` (the caller checks `at` against the compact
/// revision).
pub(crate) fn rewind<'t>(
    tree: &'t sled::Tree,
    at: i64,
    range: &KeyRange,
) -> Result<Overlay<'t>, StoreError> {
    let mut ov = Overlay::new(tree);
    let mut seen = std::collections::HashSet::new();
    View::scan(tree, &first_of(at + 1), &history_end(), &mut |_, v| {
        let event = StoredEvent::decode(v)?;
        if range.contains(&event.key) && seen.insert(event.key.clone()) {
            let key = codec::kv_key(&event.key);
            match event.before {
                Some(before) => ov.put(key, before),
                None => ov.remove(key),
            }
        }
        Ok(Scan::Continue)
    })?;
    Ok(ov)
}

/// Deletes the changes at revisions `after + 1 ..= to` (the ones a compaction from `after` to
/// `to` forgets), including any staged in `ov` by the batch being applied. Returns how many.
pub(crate) fn compact(ov: &mut Overlay<'_>, after: i64, to: i64) -> Result<u64, StoreError> {
    let mut doomed = Vec::new();
    ov.scan(&first_of(after + 1), &first_of(to + 1), &mut |k, _| {
        doomed.push(k.to_vec());
        Ok(Scan::Continue)
    })?;
    let n = doomed.len() as u64;
    for k in doomed {
        ov.remove(k);
    }
    Ok(n)
}

/// Every change held, in order, for a snapshot.
pub(crate) fn all(tree: &sled::Tree) -> Result<Vec<(i64, u32, StoredEvent)>, StoreError> {
    let mut out = Vec::new();
    View::scan(tree, &first_of(0), &history_end(), &mut |k, v| {
        let (revision, sub) = parse_event_key(k)?;
        out.push((revision, sub, StoredEvent::decode(v)?));
        Ok(Scan::Continue)
    })?;
    Ok(out)
}

/// The stored bytes of a snapshot's change, for loading it into a tree.
pub(crate) fn stored(
    revision: i64,
    sub: u32,
    event: &StoredEvent,
) -> Result<(Vec<u8>, Vec<u8>), StoreError> {
    Ok((event_key(revision, sub).to_vec(), event.encode()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::codec::KvRecord;

    /// The layout events were stored in before their byte fields went through `serde_bytes`.
    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct StoredEventAsSequences {
        key: Vec<u8>,
        after: Option<Vec<u8>>,
        before: Option<Vec<u8>>,
    }

    #[test]
    fn events_keep_their_stored_bytes() {
        let long = vec![0xa5; 300];
        for (key, after, before) in [
            (b"k".to_vec(), Some(long.clone()), None),
            (Vec::new(), None, Some(vec![1, 2, 3])),
            (long.clone(), Some(Vec::new()), Some(long.clone())),
        ] {
            let event = StoredEvent {
                key: key.clone(),
                after: after.clone(),
                before: before.clone(),
            };
            let old = StoredEventAsSequences { key, after, before };
            let bytes = event.encode().unwrap();
            assert_eq!(bytes, codec::encode("old event", &old).unwrap());
            assert_eq!(StoredEvent::decode(&bytes).unwrap(), event);
            assert_eq!(
                codec::decode::<StoredEventAsSequences>("old event", &bytes).unwrap(),
                old
            );
        }
    }

    fn rec(value: &str, create: i64, modr: i64, version: i64) -> Vec<u8> {
        KvRecord {
            create_revision: create,
            mod_revision: modr,
            version,
            lease: 0,
            value: value.as_bytes().to_vec(),
        }
        .encode()
    }

    fn tree() -> sled::Tree {
        let db = sled::Config::new().temporary(true).open().unwrap();
        db.open_tree("t").unwrap()
    }

    /// Applies `changes` (revision, key, value or None for delete) to `tree`, recording history
    /// the way the key-value executor does.
    fn apply(tree: &sled::Tree, changes: &[(i64, &str, Option<&str>)]) {
        let mut ov = Overlay::new(tree);
        let mut sub = 0;
        let mut last_rev = 0;
        for &(rev, key, value) in changes {
            if rev != last_rev {
                sub = 0;
                last_rev = rev;
            }
            let k = codec::kv_key(key.as_bytes());
            let before = ov.get(&k).unwrap();
            let old = before.as_deref().map(|b| KvRecord::decode(b).unwrap());
            let after = value.map(|v| {
                rec(
                    v,
                    old.as_ref().map_or(rev, |o| o.create_revision),
                    rev,
                    old.as_ref().map_or(1, |o| o.version + 1),
                )
            });
            match &after {
                Some(a) => ov.put(k, a.clone()),
                None => ov.remove(k),
            }
            let event = StoredEvent {
                key: key.as_bytes().to_vec(),
                after,
                before,
            };
            record(&mut ov, rev, sub, &event).unwrap();
            sub += 1;
        }
        tree.apply_batch(ov.into_batch()).unwrap();
    }

    fn value_at(tree: &sled::Tree, at: i64, key: &str) -> Option<String> {
        let ov = rewind(tree, at, &KeyRange::prefix(b"")).unwrap();
        ov.get(&codec::kv_key(key.as_bytes()))
            .unwrap()
            .map(|b| String::from_utf8(KvRecord::decode(&b).unwrap().value).unwrap())
    }

    #[test]
    fn rewinding_shows_each_past_revision() {
        let t = tree();
        apply(
            &t,
            &[
                (1, "a", Some("a1")),
                (2, "b", Some("b2")),
                (3, "a", Some("a3")),
                (4, "a", None),
                (4, "b", Some("b4")),
                (5, "a", Some("a5")),
            ],
        );
        assert_eq!(value_at(&t, 0, "a"), None);
        assert_eq!(value_at(&t, 1, "a").as_deref(), Some("a1"));
        assert_eq!(value_at(&t, 2, "b").as_deref(), Some("b2"));
        assert_eq!(value_at(&t, 3, "a").as_deref(), Some("a3"));
        assert_eq!(value_at(&t, 4, "a"), None);
        assert_eq!(value_at(&t, 4, "b").as_deref(), Some("b4"));
        assert_eq!(value_at(&t, 5, "a").as_deref(), Some("a5"));
        // a rewind limited to a range leaves other keys at their current state
        let ov = rewind(&t, 1, &KeyRange::single(b"b")).unwrap();
        assert!(ov.get(&codec::kv_key(b"b")).unwrap().is_none());
        assert!(ov.get(&codec::kv_key(b"a")).unwrap().is_some());
    }

    #[test]
    fn changes_come_in_whole_revisions_and_filter_by_range() {
        let t = tree();
        apply(
            &t,
            &[
                (1, "a", Some("1")),
                (2, "a", Some("2")),
                (2, "b", Some("2")),
                (2, "c", Some("2")),
                (3, "x", Some("3")),
                (4, "a", None),
            ],
        );
        let all = KeyRange::prefix(b"");
        let read = changes(&t, 1, 4, &all, 2).unwrap();
        // the limit is reached inside revision 2, which is still delivered whole
        let revs: Vec<_> = read.revisions.iter().map(|r| r.revision).collect();
        assert_eq!(revs, vec![1, 2]);
        assert_eq!(read.revisions[1].events.len(), 3);
        assert_eq!(read.through, 2);
        let rest = changes(&t, read.through + 1, 4, &all, 100).unwrap();
        assert_eq!(
            rest.revisions
                .iter()
                .map(|r| r.revision)
                .collect::<Vec<_>>(),
            vec![3, 4]
        );
        assert_eq!(rest.through, 4);
        let only_a = changes(&t, 1, 4, &KeyRange::single(b"a"), 100).unwrap();
        assert_eq!(
            only_a
                .revisions
                .iter()
                .map(|r| r.revision)
                .collect::<Vec<_>>(),
            vec![1, 2, 4]
        );
        let delete = only_a.revisions[2].events[0].to_proto(4, true).unwrap();
        assert_eq!(delete.r#type, EventType::Delete as i32);
        assert_eq!(delete.kv.unwrap().mod_revision, 4);
        assert_eq!(delete.prev_kv.unwrap().value, b"2".to_vec());
        // nothing to read yet
        assert_eq!(changes(&t, 5, 4, &all, 10).unwrap().through, 4);
    }

    #[test]
    fn compaction_keeps_the_compacted_revision_readable() {
        let t = tree();
        apply(
            &t,
            &[
                (1, "a", Some("1")),
                (2, "a", Some("2")),
                (3, "a", Some("3")),
            ],
        );
        let mut ov = Overlay::new(&t);
        assert_eq!(compact(&mut ov, 0, 2).unwrap(), 2);
        t.apply_batch(ov.into_batch()).unwrap();
        assert_eq!(value_at(&t, 2, "a").as_deref(), Some("2"));
        assert_eq!(value_at(&t, 3, "a").as_deref(), Some("3"));
        assert_eq!(all(&t).unwrap().len(), 1);
    }
}
