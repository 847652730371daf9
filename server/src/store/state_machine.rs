//! The replicated state machine: applies committed log entries to a sled tree, serves the
//! server's reads, and builds and installs snapshots.
//!
//! **One tree per generation.** The state lives in the tree `sm.<generation>` (16 hex digits);
//! the `store` tree's key `sm_generation` names the live one. Installing a snapshot fills a
//! fresh tree `sm.<generation + 1>`, makes it durable, and only then switches the pointer (one
//! sled write, made durable) — a crash at any point leaves either the old state or the new one,
//! never a mix. Opening drops any other `sm.*` tree, the remains of an interrupted install.
//!
//! **One batch per apply.** `apply` computes the writes of all its entries in an [`Overlay`]
//! (so each command sees the ones before it) and writes them, together with the metadata
//! record (last applied log id, membership, revision, counters), as one `sled::Batch`, which
//! sled recovers atomically. A crash never leaves half a command, or half a batch, applied.
//! Applying does not fsync: after a crash the state machine may be behind the log, and
//! openraft re-applies the committed entries the log still holds.
//!
//! **Purged entries stay covered.** openraft purges log entries only once a snapshot includes
//! them, but on a follower it does not wait for `install_snapshot` to save that snapshot. So
//! the log store makes a purge durable only up to the [`Coverage`] watermark, which this module
//! raises once a snapshot file is saved (built or installed) and, when opening, to what the
//! tree holds. `build_snapshot` writes the snapshot durably to the snapshot file
//! (`snapfile.rs`) before it returns (and also syncs sled, so the tree is durable up to that
//! point); `install_snapshot` saves the file before it touches the tree. Should the
//! tree still be behind the snapshot file when the store opens (an interrupted install, or a
//! power cut that lost unsynced applies whose log entries were purged since), opening rebuilds
//! the state machine from the snapshot file. So the state covered by a purged entry always
//! survives in one of the two.
//!
//! **Reads and snapshots.** The server reads through clones of [`StateMachineStore`] while
//! openraft applies. A reader holds a read lock for the duration of one read, and apply takes
//! the write lock only to write its batch and publish the new metadata, so a read sees one
//! whole revision (page, count and revision agree). openraft builds snapshots concurrently with
//! apply, and sled has no point-in-time view, so `get_snapshot_builder` (which openraft calls
//! in order with `apply`) copies the state into memory, and `build_snapshot` only encodes and
//! writes that copy.

use std::io::Cursor as IoCursor;
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use kvset_proto::raft::log_command::Command;
use kvset_proto::raft::{command_result, CommandResult, LogCommand, ResultBatch};
use kvset_proto::v1::{AlarmMember, AlarmResponse, Event, KeyValue, RangeRequest, RangeResponse};
use openraft::storage::{RaftSnapshotBuilder, RaftStateMachine};
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, OptionalSend};
use prost::Message;
use tracing::{info, warn};

use super::alarm::{self, Alarm, ALARMS_KEY};
use super::codec;
use super::coverage::Coverage;
use super::cursor::{self, Cursor};
use super::dedup::{self, Check, ClientRecord, EvictionOrder, OrderTxn, MAX_CLIENTS};
use super::digest::{Accumulator, Delta};
use super::durable::Durability;
use super::error::StoreError;
use super::history;
use super::kv::{self, KeyRange};
use super::lease;
use super::meta::SmMeta;
use super::snapfile::SnapshotFile;
use super::snapshot::{self, SnapshotPayload};
use super::view::{Overlay, Scan, View};
use super::{blocking, GENERATION_KEY};
use crate::raft::types::{
    Entry, LogId, Proto, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};

/// Failpoint (see `faults.rs`) in `install_snapshot` just before the snapshot file is saved.
pub const FAILPOINT_BEFORE_SNAPSHOT_SAVE: &str = "install-snapshot-before-save";

/// A content hash of the key-value state, with the position it was taken at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateDigest {
    /// The revision of the hashed state.
    pub revision: i64,
    /// The last applied log id of the hashed state.
    pub last_applied: Option<LogId>,
    /// Number of keys hashed.
    pub key_count: u64,
    /// Hex multiset hash (`digest.rs`) of every key, value, `create_revision`, `mod_revision`
    /// and `version`. The dedup table and the metadata are left out, so replicas at the same
    /// revision have the same hash whatever their log positions.
    pub hash: String,
}

impl StateDigest {
    fn of(meta: &SmMeta, acc: &Accumulator) -> Self {
        Self {
            revision: meta.revision,
            last_applied: meta.last_applied,
            key_count: acc.count(),
            hash: acc.hex(),
        }
    }
}

/// The digest of a tree's key-value records, by reading every one of them.
fn full_digest(tree: &sled::Tree) -> Result<Accumulator, StoreError> {
    let mut acc = Accumulator::default();
    let (lo, hi) = (codec::kv_key(b""), codec::kv_upper(None));
    tree.scan(&lo, &hi, &mut |k, v| {
        acc.add(k, v)?;
        Ok(Scan::Continue)
    })?;
    Ok(acc)
}

/// What [`StateMachineStore::changes`] found: events by revision, and how far it looked.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Changes {
    /// The revisions with events in the range, ascending, each with all its events there.
    pub revisions: Vec<(i64, Vec<Event>)>,
    /// Every revision up to this one was looked at.
    pub through: i64,
}

/// A lease as the applied state holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseInfo {
    /// The TTL it was granted with, in seconds.
    pub ttl: i64,
    /// The attached keys, ascending.
    pub keys: Vec<Vec<u8>>,
}

/// A cloneable handle on the state machine; see the module docs.
#[derive(Clone)]
pub struct StateMachineStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    /// The store-level tree that holds the generation pointer.
    store_tree: sled::Tree,
    durable: Arc<Durability>,
    /// Raised whenever more of the state becomes durably covered (see `coverage.rs`).
    coverage: Arc<Coverage>,
    snapshots: SnapshotFile,
    state: RwLock<Live>,
    /// The dedup table's eviction order for the live generation (see `dedup.rs`). Only apply and
    /// snapshot installs change it; openraft never runs them at the same time.
    eviction: Mutex<EvictionOrder>,
    /// The applied revision, published after each batch and install for watchers.
    applied: tokio::sync::watch::Sender<i64>,
}

/// The live generation: its tree and its metadata as of the last committed batch.
struct Live {
    generation: u64,
    tree: sled::Tree,
    meta: SmMeta,
    /// The content digest of this state once someone asked for it (`digest.rs`); `apply` keeps
    /// it current, a snapshot install drops it.
    digest: Option<Accumulator>,
    /// The alarm table as stored in `tree` (see `alarm.rs`).
    alarms: Vec<Alarm>,
    /// The logical size of `tree` once someone asked for it (the space quota does, every few
    /// seconds); `apply` keeps it current like the digest, a snapshot install drops it.
    logical_size: Option<u64>,
}

impl Live {
    /// The revision a read at `requested` (0: now) looks at, or why it cannot.
    fn readable(&self, requested: i64) -> Result<i64, StoreError> {
        let (current, compact) = (self.meta.revision, self.meta.compact_revision);
        match requested {
            0 => Ok(current),
            r if r > current => Err(StoreError::FutureRevision {
                requested: r,
                current,
            }),
            r if r < 0 => Err(StoreError::InvalidArgument(format!(
                "revision {r} is negative; use 0 for the current revision"
            ))),
            r if r < compact => Err(StoreError::Compacted {
                requested: r,
                compact_revision: compact,
            }),
            r => Ok(r),
        }
    }
}

/// The name of a generation's tree.
fn tree_name(generation: u64) -> String {
    format!("sm.{generation:016x}")
}

impl StateMachineStore {
    /// Opens the live generation, drops leftovers of interrupted installs, and catches up with
    /// the snapshot file if the tree is behind it.
    pub(crate) fn open(
        db: sled::Db,
        store_tree: sled::Tree,
        durable: Arc<Durability>,
        coverage: Arc<Coverage>,
        snapshot_dir: &Path,
    ) -> Result<Self, StoreError> {
        let generation = match store_tree.get(GENERATION_KEY)? {
            Some(b) => codec::decode_u64("state-machine generation", &b)?,
            None => 0,
        };
        let live_name = tree_name(generation);
        for name in db.tree_names() {
            if name.starts_with(b"sm.") && name != live_name.as_bytes() {
                warn!(
                    tree = %String::from_utf8_lossy(&name),
                    "dropping a state-machine tree left by an interrupted snapshot install"
                );
                db.drop_tree(&name)?;
            }
        }
        let tree = db.open_tree(&live_name)?;
        drop_legacy_eviction_keys(&tree)?;
        let eviction = Mutex::new(EvictionOrder::load(&tree)?);
        let meta = match tree.get(codec::META_KEY)? {
            Some(b) => SmMeta::decode(&b)?,
            None => SmMeta::default(),
        };
        let alarms = alarm::decode(tree.get(ALARMS_KEY)?.as_deref())?;
        let snapshots = SnapshotFile::open(snapshot_dir)?;
        let (applied, _) = tokio::sync::watch::channel(meta.revision);
        let sm = Self {
            inner: Arc::new(Inner {
                db,
                store_tree,
                durable,
                coverage,
                snapshots,
                state: RwLock::new(Live {
                    generation,
                    tree,
                    meta,
                    digest: None,
                    alarms,
                    logical_size: None,
                }),
                eviction,
                applied,
            }),
        };

        let behind =
            sm.inner.snapshots.meta().filter(|snap| {
                snap.last_log_id.map(|l| l.index) > sm.last_applied().map(|l| l.index)
            });
        if let Some(snap) = behind {
            info!(
                snapshot = %snap,
                applied = ?sm.last_applied(),
                "state machine is behind the stored snapshot; rebuilding it from the snapshot"
            );
            let (_, data) = sm
                .inner
                .snapshots
                .load()?
                .ok_or_else(|| StoreError::Corrupt {
                    what: "snapshot file",
                    detail: "disappeared while opening".into(),
                })?;
            sm.inner.install_payload(snapshot::decode(&data)?)?;
        }
        // Every sled file was fsynced when the store opened (`durable.rs`): what is applied now
        // is durable, and so is the snapshot file.
        sm.inner.coverage.raise(sm.last_applied().map(|l| l.index));
        sm.inner.raise_coverage_to_snapshot();
        Ok(sm)
    }

    /// Applies `entries` on the calling thread, as openraft's `apply` does on a blocking one
    /// (for the fuzz targets, `fuzzing.rs`, which have no runtime).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn apply_now(
        &self,
        entries: Vec<Entry>,
    ) -> Result<Vec<Proto<CommandResult>>, StoreError> {
        self.inner.apply(entries)
    }

    /// Builds a snapshot of the current state on the calling thread, as openraft's snapshot
    /// builder does on a blocking one (for the fuzz targets' seeds, `fuzzing.rs`).
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn snapshot_now(&self) -> Result<Snapshot, StoreError> {
        let payload = self.inner.capture()?;
        self.inner.build(payload)
    }

    // ------------------------------------------------------------------------------------------
    // Reads for the server

    /// One key, or `None` when it does not exist.
    pub fn get(&self, key: &[u8]) -> Result<Option<KeyValue>, StoreError> {
        self.get_with_revision(key).map(|(kv, _)| kv)
    }

    /// One key and the current revision of the state it was read from.
    pub fn get_with_revision(&self, key: &[u8]) -> Result<(Option<KeyValue>, i64), StoreError> {
        self.get_at(key, 0)
    }

    /// One key as it was at `revision` (0: now), and the current revision. A revision below the
    /// compact revision, or above the current one, is an error ([`StoreError::is_out_of_range`]).
    pub fn get_at(&self, key: &[u8], revision: i64) -> Result<(Option<KeyValue>, i64), StoreError> {
        let live = self.inner.read();
        let current = live.meta.revision;
        let at = live.readable(revision)?;
        let kv = if at == current {
            kv::get(&live.tree, key)?
        } else {
            let past = history::rewind(&live.tree, at, &KeyRange::single(key))?;
            kv::get(&past, key)?
        };
        Ok((kv, current))
    }

    /// One page of a range read, as kvset.proto's `Range` defines it (`header` left `None`).
    ///
    /// `limit` 0 means `max_limit`; a negative limit, a limit above `max_limit`, `prefix`
    /// together with `end`, and a cursor that is damaged or from another range are
    /// deterministic errors ([`StoreError::is_deterministic`]).
    pub fn range(&self, req: &RangeRequest, max_limit: usize) -> Result<RangeResponse, StoreError> {
        self.range_with_revision(req, max_limit).map(|(r, _)| r)
    }

    /// [`Self::range`], plus the revision the page was read at (for the response header).
    pub fn range_with_revision(
        &self,
        req: &RangeRequest,
        max_limit: usize,
    ) -> Result<(RangeResponse, i64), StoreError> {
        if req.prefix && !req.end.is_empty() {
            return Err(StoreError::InvalidArgument(
                "range: `end` must be empty when `prefix` is set".into(),
            ));
        }
        let max_limit = max_limit.max(1);
        let limit = match req.limit {
            0 => max_limit,
            l if l < 0 => {
                return Err(StoreError::InvalidArgument(format!(
                    "range: limit is {l}; it must be 0 (the server maximum) or positive"
                )))
            }
            l => match usize::try_from(l) {
                Ok(l) if l <= max_limit => l,
                _ => {
                    return Err(StoreError::InvalidArgument(format!(
                        "range: limit is {l}; the maximum is {max_limit}"
                    )))
                }
            },
        };
        let cursor = if req.cursor.is_empty() {
            None
        } else {
            Some(Cursor::decode_for(req)?)
        };

        let pinned = match (&cursor, req.revision) {
            (Some(c), 0) => c.first_page_revision,
            (Some(c), r) if r != c.first_page_revision => {
                return Err(StoreError::InvalidArgument(format!(
                    "range: revision {r} differs from the cursor's revision {}; leave revision \
                     0 when passing a cursor",
                    c.first_page_revision
                )))
            }
            (_, r) => r,
        };
        let live = self.inner.read();
        let revision = live.meta.revision;
        let at = live.readable(pinned)?;
        let range = KeyRange::of_range(req);
        let after = cursor.as_ref().map(|c| c.after.as_slice());
        let page = if at == revision {
            let known = range.is_everything().then_some(live.meta.key_count);
            kv::page(&live.tree, &range, after, limit, req.keys_only, known)?
        } else {
            let past = history::rewind(&live.tree, at, &range)?;
            kv::page(&past, &range, after, limit, req.keys_only, None)?
        };
        drop(live);

        let first_page_revision = at;
        let next_cursor = match page.kvs.last() {
            Some(last) if page.more => Cursor {
                after: last.key.clone(),
                first_page_revision,
                range: cursor::fingerprint(req),
            }
            .encode()?,
            _ => Vec::new(),
        };
        let response = RangeResponse {
            header: None,
            kvs: page.kvs,
            more: page.more,
            next_cursor,
            count: page.count as i64,
            first_page_revision,
        };
        Ok((response, revision))
    }

    /// The global revision of the applied state.
    pub fn revision(&self) -> i64 {
        self.inner.read().meta.revision
    }

    /// The compact revision: history at and below it is forgotten.
    pub fn compact_revision(&self) -> i64 {
        self.inner.read().meta.compact_revision
    }

    /// The current and compact revisions, read together.
    pub fn revisions(&self) -> (i64, i64) {
        let live = self.inner.read();
        (live.meta.revision, live.meta.compact_revision)
    }

    /// A receiver that sees the applied revision change (after every applied batch and snapshot
    /// install): what watchers wait on.
    pub fn subscribe_revision(&self) -> tokio::sync::watch::Receiver<i64> {
        self.inner.applied.subscribe()
    }

    /// The changes to keys in `range` at revisions `from..`, whole revisions at a time, until
    /// at least `max_events` were found; see `history.rs`. A `from` at or below the compact
    /// revision is [`StoreError::Compacted`].
    pub fn changes(
        &self,
        from: i64,
        range: &KeyRange,
        max_events: usize,
        prev_kv: bool,
    ) -> Result<Changes, StoreError> {
        let live = self.inner.read();
        if from <= live.meta.compact_revision {
            return Err(StoreError::Compacted {
                requested: from,
                compact_revision: live.meta.compact_revision,
            });
        }
        let read = history::changes(&live.tree, from, live.meta.revision, range, max_events)?;
        drop(live);
        let mut revisions = Vec::with_capacity(read.revisions.len());
        for r in read.revisions {
            let events = r
                .events
                .iter()
                .map(|e| e.to_proto(r.revision, prev_kv))
                .collect::<Result<Vec<_>, _>>()?;
            revisions.push((r.revision, events));
        }
        Ok(Changes {
            revisions,
            through: read.through,
        })
    }

    /// Every lease with its granted TTL, from the applied state.
    pub fn leases(&self) -> Result<Vec<(i64, i64)>, StoreError> {
        let live = self.inner.read();
        Ok(lease::all(&live.tree)?
            .into_iter()
            .map(|(id, r)| (id, r.ttl))
            .collect())
    }

    /// Lease `id`'s granted TTL and attached keys, if it exists.
    pub fn lease(&self, id: i64) -> Result<Option<LeaseInfo>, StoreError> {
        let live = self.inner.read();
        match lease::get(&live.tree, id)? {
            Some(r) => Ok(Some(LeaseInfo {
                ttl: r.ttl,
                keys: lease::keys(&live.tree, id)?,
            })),
            None => Ok(None),
        }
    }

    /// The last log id applied.
    pub fn last_applied(&self) -> Option<LogId> {
        self.inner.read().meta.last_applied
    }

    /// The last membership applied.
    pub fn membership(&self) -> StoredMembership {
        self.inner.read().meta.membership.clone()
    }

    /// Number of keys.
    pub fn key_count(&self) -> u64 {
        self.inner.read().meta.key_count
    }

    /// Number of clients in the dedup table.
    pub fn dedup_clients(&self) -> u64 {
        self.inner.read().meta.client_count
    }

    /// Metadata of the current snapshot, if one was built or installed.
    pub fn snapshot_meta(&self) -> Option<SnapshotMeta> {
        self.inner.snapshots.meta()
    }

    /// Hex content hash of the key-value state; see [`StateDigest::hash`].
    pub fn state_hash(&self) -> Result<String, StoreError> {
        self.digest().map(|d| d.hash)
    }

    /// Content hash together with the revision it belongs to, read in one consistent step.
    /// The first call reads every key (O(data size)); later ones are O(1), because `apply`
    /// keeps the digest current (`digest.rs`).
    pub fn digest(&self) -> Result<StateDigest, StoreError> {
        let (generation, meta, acc) = {
            let live = self.inner.read();
            if let Some(acc) = live.digest {
                return Ok(StateDigest::of(&live.meta, &acc));
            }
            let acc = full_digest(&live.tree)?;
            (live.generation, live.meta.clone(), acc)
        };
        let mut live = self.inner.write();
        // Keep it only if no batch was applied (nor a snapshot installed) since the scan: such
        // a batch did not know a digest existed, so it could not have updated this one.
        if live.generation == generation
            && live.meta.last_applied == meta.last_applied
            && live.digest.is_none()
        {
            live.digest = Some(acc);
        }
        Ok(StateDigest::of(&meta, &acc))
    }

    /// The live generation's tree, for tests of the on-disk layout.
    #[cfg(test)]
    pub(crate) fn live_tree_for_tests(&self) -> sled::Tree {
        self.inner.read().tree.clone()
    }

    /// The active alarms, as applied (see `alarm.rs`).
    pub fn alarms(&self) -> Vec<AlarmMember> {
        self.inner
            .read()
            .alarms
            .iter()
            .map(Alarm::to_proto)
            .collect()
    }

    /// The logical size of the live state in bytes: every key and value sled holds for the
    /// state machine (key-values, dedup records, metadata), without sled's own overhead. This is
    /// what the space quota counts for the state (`node/quota.rs` explains why not sled's file
    /// size): it shrinks as soon as keys are deleted. The first call reads every key; `apply`
    /// keeps it current after that.
    pub fn logical_size(&self) -> Result<u64, StoreError> {
        // The first call scans (O(data size)) under the read lock, so no batch lands meanwhile;
        // later calls are O(1).
        let (generation, at, bytes) = {
            let live = self.inner.read();
            if let Some(size) = live.logical_size {
                return Ok(size);
            }
            let mut bytes = 0u64;
            for pair in live.tree.iter() {
                let (k, v) = pair?;
                bytes += (k.len() + v.len()) as u64;
            }
            (live.generation, live.meta.last_applied, bytes)
        };
        let mut live = self.inner.write();
        if live.generation == generation
            && live.meta.last_applied == at
            && live.logical_size.is_none()
        {
            live.logical_size = Some(bytes);
        }
        Ok(bytes)
    }

    /// Size of the current snapshot file in bytes (0 without one).
    pub fn snapshot_file_size(&self) -> u64 {
        self.inner.snapshots.size()
    }

    /// Bytes on disk: sled's files plus the snapshot file.
    pub fn disk_size(&self) -> Result<u64, StoreError> {
        Ok(self.inner.db.size_on_disk()? + self.inner.snapshots.size())
    }
}

impl Inner {
    fn read(&self) -> RwLockReadGuard<'_, Live> {
        // Nothing panics while holding the lock with the state half-updated, so a poisoned lock
        // still guards consistent data.
        self.state.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Live> {
        self.state.write().unwrap_or_else(PoisonError::into_inner)
    }

    /// Applies a batch of entries as one atomic sled batch.
    fn apply(&self, entries: Vec<Entry>) -> Result<Vec<Proto<CommandResult>>, StoreError> {
        let (generation, tree, mut meta, mut alarms, tracking, sizing) = {
            let live = self.read();
            let tracking = live.digest.is_some();
            let sizing = live.logical_size.is_some();
            (
                live.generation,
                live.tree.clone(),
                live.meta.clone(),
                live.alarms.clone(),
                tracking,
                sizing,
            )
        };
        let mut alarms_changed = false;
        let mut ov = Overlay::new(&tree);
        let mut eviction = self.eviction.lock().unwrap_or_else(PoisonError::into_inner);
        let mut order = eviction.begin();
        let mut results = Vec::with_capacity(entries.len());
        for entry in entries {
            meta.last_applied = Some(entry.log_id);
            let result = match entry.payload {
                EntryPayload::Blank => unchanged(&meta),
                EntryPayload::Membership(m) => {
                    meta.membership = StoredMembership::new(Some(entry.log_id), m);
                    unchanged(&meta)
                }
                EntryPayload::Normal(Proto(command)) => {
                    let mut applying = Applying {
                        ov: &mut ov,
                        order: &mut order,
                        meta: &mut meta,
                        alarms: &mut alarms,
                        alarms_changed: &mut alarms_changed,
                        log_index: entry.log_id.index,
                    };
                    apply_command(&mut applying, command)?
                }
            };
            results.push(Proto(result));
        }
        if alarms_changed {
            match alarm::encode(&alarms)? {
                Some(bytes) => ov.put(ALARMS_KEY.to_vec(), bytes),
                None => ov.remove(ALARMS_KEY.to_vec()),
            }
        }
        ov.put(codec::META_KEY.to_vec(), meta.encode()?);
        // What the batch changes in the content digest and the logical size, when they are kept:
        // needs the version of every written key before the batch, which the commands above have
        // mostly read already (`Overlay::original` remembers them).
        let mut delta = Delta::default();
        let mut size_change = 0i64;
        if tracking || sizing {
            for (key, new) in ov.writes() {
                let old = ov.original(key)?;
                if tracking {
                    delta.change(key, old.as_deref(), new)?;
                }
                let len = |v: Option<&[u8]>| v.map_or(0, |v| (key.len() + v.len()) as i64);
                size_change += len(new) - len(old.as_deref());
            }
        }
        let batch = ov.into_batch();

        let mut live = self.write();
        if live.generation != generation {
            // openraft never installs a snapshot while applying (both take `&mut self`).
            return Err(StoreError::Task(
                "the state machine was replaced by a snapshot while applying".into(),
            ));
        }
        live.tree.apply_batch(batch)?;
        live.meta = meta;
        live.alarms = alarms;
        match (&mut live.digest, tracking) {
            (Some(acc), true) => acc.merge(&delta),
            // A digest computed while this batch was being prepared describes the state before
            // it: drop it (the next `digest` call scans again).
            (digest, _) => *digest = None,
        }
        match (&mut live.logical_size, sizing) {
            (Some(size), true) => *size = size.saturating_add_signed(size_change),
            (size, _) => *size = None,
        }
        let revision = live.meta.revision;
        drop(live);
        order.commit();
        self.applied.send_replace(revision);
        Ok(results)
    }

    /// Copies the live state for a snapshot.
    fn capture(&self) -> Result<SnapshotPayload, StoreError> {
        let live = self.read();
        snapshot::capture(&live.tree, &live.meta)
    }

    /// Encodes a captured state and stores it durably as the current snapshot.
    fn build(&self, payload: SnapshotPayload) -> Result<Snapshot, StoreError> {
        let meta = SnapshotMeta {
            last_log_id: payload.last_applied,
            last_membership: payload.membership.clone(),
            snapshot_id: snapshot_id(payload.last_applied),
        };
        let data = snapshot::encode(&payload)?;
        // The tree is durable at least up to the snapshot, then the snapshot itself is.
        self.durable.sync(&self.db)?;
        if !self.snapshots.save(&meta, &data)? {
            info!(snapshot = %meta, "a newer snapshot is already stored; keeping it as current");
        }
        self.raise_coverage_to_snapshot();
        Ok(Snapshot {
            meta,
            snapshot: Box::new(IoCursor::new(data)),
        })
    }

    /// The stored snapshot file is durable: log purges may now reach as far as it covers.
    fn raise_coverage_to_snapshot(&self) {
        let covered = self.snapshots.meta().and_then(|m| m.last_log_id);
        self.coverage.raise(covered.map(|l| l.index));
    }

    /// Replaces the whole state with `payload` through a new generation (see module docs).
    fn install_payload(&self, payload: SnapshotPayload) -> Result<(), StoreError> {
        let old_generation = self.read().generation;
        let generation = old_generation + 1;
        let name = tree_name(generation);
        self.db.drop_tree(&name)?;
        let tree = self.db.open_tree(&name)?;
        let eviction = EvictionOrder::of(&payload.clients);
        let alarms = payload.alarms.clone();
        let meta = snapshot::load(&tree, payload)?;
        self.durable.sync(&self.db)?;
        self.store_tree
            .insert(GENERATION_KEY, &generation.to_be_bytes())?;
        self.durable.sync(&self.db)?;

        let old = std::mem::replace(
            &mut *self.write(),
            Live {
                generation,
                tree,
                meta,
                digest: None,
                alarms,
                logical_size: None,
            },
        );
        drop(old);
        *self.eviction.lock().unwrap_or_else(PoisonError::into_inner) = eviction;
        self.applied.send_replace(self.read().meta.revision);
        if let Err(e) = self.db.drop_tree(tree_name(old_generation)) {
            warn!(error = %e, "could not drop the previous state-machine tree; opening will retry");
        }
        Ok(())
    }
}

/// Deletes the dedup eviction keys that store format 1 kept in the tree (format 2 keeps the
/// order in memory). Harmless to repeat; a no-op on a format-2 tree.
fn drop_legacy_eviction_keys(tree: &sled::Tree) -> Result<(), StoreError> {
    let lo = [codec::LEGACY_NS_EVICT];
    let hi = [codec::LEGACY_NS_EVICT + 1];
    let mut batch = sled::Batch::default();
    let mut n = 0u64;
    for key in tree.range(lo..hi).keys() {
        batch.remove(key?);
        n += 1;
    }
    if n > 0 {
        tree.apply_batch(batch)?;
        info!(
            keys = n,
            "dropped the dedup eviction keys of store format 1"
        );
    }
    Ok(())
}

/// The result of an entry that is not a command.
fn unchanged(meta: &SmMeta) -> CommandResult {
    CommandResult {
        revision: meta.revision,
        result: None,
    }
}

/// Applies the command of one log entry: a client command, or a [`CommandBatch`] of them.
///
/// A batch (group commit, see `node/group_commit.rs`) is applied command by command, exactly
/// as if each had its own entry at `log_index`: each gets its own revision and its own
/// exactly-once check, and a later command sees what an earlier one wrote. The entry's result is
/// a [`ResultBatch`] with one result per command, in order.
///
/// An entry without a command this build knows is an error, not a no-op: prost decodes a
/// command added by a newer version as "no command", and skipping it would make this replica
/// diverge from the ones that applied it.
fn apply_command(
    a: &mut Applying<'_, '_, '_>,
    command: LogCommand,
) -> Result<CommandResult, StoreError> {
    let log_index = a.log_index;
    let Some(Command::Batch(batch)) = command.command else {
        return apply_client_command(a, command);
    };
    if command.request_id.is_some() {
        return Err(StoreError::UnappliableCommand {
            log_index,
            detail: "is a command batch with a request id of its own (each command of a batch \
                     carries its own)",
        });
    }
    let mut results = Vec::with_capacity(batch.commands.len());
    for inner in batch.commands {
        if matches!(inner.command, Some(Command::Batch(_))) {
            return Err(StoreError::UnappliableCommand {
                log_index,
                detail: "nests a command batch inside a command batch",
            });
        }
        results.push(apply_client_command(a, inner)?);
    }
    Ok(CommandResult {
        revision: a.meta.revision,
        result: Some(command_result::Result::Batch(ResultBatch { results })),
    })
}

/// What applying one entry's command works on.
struct Applying<'a, 'o, 't> {
    ov: &'a mut Overlay<'t>,
    order: &'a mut OrderTxn<'o>,
    meta: &'a mut SmMeta,
    alarms: &'a mut Vec<Alarm>,
    alarms_changed: &'a mut bool,
    log_index: u64,
}

/// Applies one client command with exactly-once deduplication (see `dedup.rs`), or an alarm
/// command (`alarm.rs`; not deduplicated, it is idempotent).
fn apply_client_command(
    a: &mut Applying<'_, '_, '_>,
    command: LogCommand,
) -> Result<CommandResult, StoreError> {
    let log_index = a.log_index;
    if let Some(Command::Alarm(req)) = command.command.as_ref() {
        *a.alarms_changed |= alarm::apply(a.alarms, log_index, req)?;
        return Ok(CommandResult {
            revision: a.meta.revision,
            result: Some(command_result::Result::Alarm(AlarmResponse {
                header: None,
                alarms: a.alarms.iter().map(Alarm::to_proto).collect(),
            })),
        });
    }
    let (ov, order, meta) = (&mut *a.ov, &mut *a.order, &mut *a.meta);
    let Some(body) = command.command.as_ref() else {
        return Err(StoreError::UnappliableCommand {
            log_index,
            detail: "holds no command this kvset-server knows (written by a newer version?); \
                     run the same kvset-server version on every member",
        });
    };
    let token = dedup::token(command.request_id.as_ref());
    let mut remembered_at = None;
    if let Some((client_id, sequence)) = token {
        let seen = dedup::check(ov, client_id, sequence)?;
        match seen.check {
            Check::Fresh => remembered_at = seen.remembered_at,
            Check::Repeat(result) => return Ok(result),
            Check::Stale => return Ok(unchanged(meta)),
        }
    }
    let result = kv::execute(ov, meta, body)?;
    if let Some((client_id, sequence)) = token {
        let record = ClientRecord {
            sequence,
            log_index,
            result: result.encode_to_vec(),
        };
        dedup::record(
            ov,
            order,
            &mut meta.client_count,
            MAX_CLIENTS,
            client_id,
            remembered_at,
            record,
        )?;
    }
    Ok(result)
}

/// A snapshot id: unique per build, readable in logs.
fn snapshot_id(last: Option<LogId>) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    match last {
        Some(l) => format!("{}-{}-{nanos:x}", l.leader_id, l.index),
        None => format!("none-{nanos:x}"),
    }
}

fn sm_error(e: StoreError, verb: ErrorVerb) -> StorageError {
    e.into_raft(ErrorSubject::StateMachine, verb)
}

fn snapshot_error(e: StoreError, verb: ErrorVerb) -> StorageError {
    e.into_raft(ErrorSubject::Snapshot(None), verb)
}

impl RaftStateMachine<TypeConfig> for StateMachineStore {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let live = self.inner.read();
        Ok((live.meta.last_applied, live.meta.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Proto<CommandResult>>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        if entries.is_empty() {
            return Ok(Vec::new());
        }
        let inner = self.inner.clone();
        blocking(move || inner.apply(entries))
            .await
            .map_err(|e| sm_error(e, ErrorVerb::Write))
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        let inner = self.inner.clone();
        let captured = blocking(move || inner.capture()).await;
        SnapshotBuilder {
            inner: self.inner.clone(),
            captured: Some(captured),
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<IoCursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(IoCursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<IoCursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        let inner = self.inner.clone();
        let meta = meta.clone();
        blocking(move || {
            let payload = snapshot::decode(&data)?;
            if payload.last_applied != meta.last_log_id {
                return Err(StoreError::Corrupt {
                    what: "snapshot",
                    detail: format!(
                        "data ends at {:?} but its metadata says {:?}",
                        payload.last_applied, meta.last_log_id
                    ),
                });
            }
            crate::faults::failpoint(FAILPOINT_BEFORE_SNAPSHOT_SAVE);
            // Store the snapshot first: from here on a crash finishes the install on opening.
            inner.snapshots.save(&meta, &data)?;
            inner.raise_coverage_to_snapshot();
            inner.install_payload(payload)
        })
        .await
        .map_err(|e| snapshot_error(e, ErrorVerb::Write))
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let inner = self.inner.clone();
        let loaded = blocking(move || inner.snapshots.load())
            .await
            .map_err(|e| snapshot_error(e, ErrorVerb::Read))?;
        Ok(loaded.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(IoCursor::new(data)),
        }))
    }
}

/// Builds a snapshot from the state captured when openraft asked for the builder.
pub struct SnapshotBuilder {
    inner: Arc<Inner>,
    captured: Option<Result<SnapshotPayload, StoreError>>,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let payload = self
            .captured
            .take()
            .unwrap_or_else(|| Err(StoreError::Task("snapshot builder used twice".into())))
            .map_err(|e| snapshot_error(e, ErrorVerb::Read))?;
        let inner = self.inner.clone();
        blocking(move || inner.build(payload))
            .await
            .map_err(|e| snapshot_error(e, ErrorVerb::Write))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store;
    use kvset_proto::raft::log_command::Command;
    use kvset_proto::v1::PutRequest;
    use openraft::CommittedLeaderId;

    fn put(index: u64, key: &str) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 0), index),
            payload: EntryPayload::Normal(Proto(LogCommand {
                request_id: None,
                command: Some(Command::Put(PutRequest {
                    key: key.as_bytes().to_vec(),
                    value: b"v".to_vec(),
                    ..Default::default()
                })),
            })),
        }
    }

    /// A snapshot file newer than the tree (an install interrupted after storing the snapshot,
    /// or unsynced applies lost after their log entries were purged) is caught up on opening.
    #[test]
    fn opening_finishes_an_interrupted_install() {
        let source_dir = tempfile::tempdir().unwrap();
        let target_dir = tempfile::tempdir().unwrap();

        let source = store::open(source_dir.path()).unwrap().state_machine();
        source
            .inner
            .apply((1..=5).map(|i| put(i, &format!("k{i}"))).collect())
            .unwrap();
        let payload = source.inner.capture().unwrap();
        let snap = source.inner.build(payload).unwrap();
        let want = source.digest().unwrap();

        // Target: only the first half of an install happened (snapshot file stored).
        let target = store::open(target_dir.path()).unwrap().state_machine();
        target.inner.apply(vec![put(1, "old")]).unwrap();
        target
            .inner
            .snapshots
            .save(&snap.meta, snap.snapshot.get_ref())
            .unwrap();
        // A leftover tree of an even later, interrupted generation must be dropped.
        target.inner.db.open_tree(tree_name(7)).unwrap();
        drop(target);

        let target = reopen(target_dir.path()).state_machine();
        assert_eq!(target.digest().unwrap(), want);
        assert_eq!(target.get(b"old").unwrap(), None);
        let names: Vec<_> = target
            .inner
            .db
            .tree_names()
            .into_iter()
            .filter(|n| n.starts_with(b"sm."))
            .collect();
        assert_eq!(
            names.len(),
            1,
            "only the live generation remains: {names:?}"
        );
    }

    fn command(index: u64, command: Command) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 0), index),
            payload: EntryPayload::Normal(Proto(LogCommand {
                request_id: None,
                command: Some(command),
            })),
        }
    }

    /// What a full scan of the live tree says the logical size is.
    fn scanned_size(sm: &StateMachineStore) -> u64 {
        let live = sm.inner.read();
        live.tree
            .iter()
            .map(|p| p.map(|(k, v)| (k.len() + v.len()) as u64).unwrap())
            .sum()
    }

    /// What a full scan of the live tree says the digest is.
    fn scanned(sm: &StateMachineStore) -> String {
        full_digest(&sm.inner.read().tree).unwrap().hex()
    }

    /// Once asked for, the digest and the logical size are kept current by every apply (puts, overwrites, deletes of
    /// a key and of a range, in one batch and across batches) and always equals what a full scan
    /// of the state gives; an install replaces it.
    #[test]
    fn the_kept_digest_always_equals_a_full_scan() {
        use kvset_proto::v1::DeleteRequest;
        let dir = tempfile::tempdir().unwrap();
        let sm = store::open(dir.path()).unwrap().state_machine();
        let empty = sm.digest().unwrap();
        assert_eq!((empty.key_count, empty.hash.clone()), (0, scanned(&sm)));
        assert!(
            sm.inner.read().digest.is_some(),
            "kept after the first call"
        );

        sm.inner
            .apply((1..=6).map(|i| put(i, &format!("k{i}"))).collect())
            .unwrap();
        let d = sm.digest().unwrap();
        assert_eq!((d.key_count, d.revision), (6, 6));
        assert_eq!(d.hash, scanned(&sm));
        let size = sm.logical_size().unwrap();
        assert!(
            sm.inner.read().logical_size.is_some(),
            "kept after the first call"
        );
        assert_eq!(size, scanned_size(&sm));

        // Overwrite, delete one key, delete a range, and re-create a deleted key, in one batch.
        sm.inner
            .apply(vec![
                put(7, "k1"),
                command(
                    8,
                    Command::Delete(DeleteRequest {
                        key: b"k2".to_vec(),
                        ..Default::default()
                    }),
                ),
                command(
                    9,
                    Command::Delete(DeleteRequest {
                        key: b"k4".to_vec(),
                        range_end: b"k6".to_vec(),
                        ..Default::default()
                    }),
                ),
                put(10, "k2"),
            ])
            .unwrap();
        let d = sm.digest().unwrap();
        assert_eq!(d.key_count, 4, "k1 k2 k3 k6");
        assert_eq!(d.hash, scanned(&sm));
        assert_eq!(sm.logical_size().unwrap(), scanned_size(&sm));
        assert_ne!(d.hash, empty.hash);

        // A batch applied with no digest kept (the first call not made yet) must not leave a
        // stale one behind.
        let other_dir = tempfile::tempdir().unwrap();
        let other = store::open(other_dir.path()).unwrap().state_machine();
        let payload = sm.inner.capture().unwrap();
        other.inner.apply(vec![put(1, "gone")]).unwrap();
        other.digest().unwrap();
        other.inner.install_payload(payload).unwrap();
        assert!(other.inner.read().digest.is_none(), "an install drops it");
        assert_eq!(
            other.digest().unwrap().hash,
            d.hash,
            "same state, same hash"
        );
    }

    /// A put by `client` with sequence `seq` at `index`.
    fn put_by(index: u64, client: u64, seq: u64) -> Entry {
        let mut e = put(index, &format!("c{client}"));
        if let EntryPayload::Normal(Proto(c)) = &mut e.payload {
            c.request_id = Some(kvset_proto::v1::RequestId {
                client_id: client,
                sequence: seq,
            });
        }
        e
    }

    fn reopen(path: &std::path::Path) -> store::Store {
        store::test_support::when_released(|| store::open(path))
    }

    fn eviction_of(sm: &StateMachineStore) -> EvictionOrder {
        sm.inner.eviction.lock().unwrap().clone()
    }

    /// The in-memory eviction order always equals the one the stored records imply: after
    /// applies that add and move clients, after a restart, and after a snapshot install.
    #[test]
    fn the_eviction_order_follows_the_records() {
        let dir = tempfile::tempdir().unwrap();
        let sm = store::open(dir.path()).unwrap().state_machine();
        sm.inner
            .apply(vec![put_by(1, 10, 1), put_by(2, 20, 1), put_by(3, 10, 2)])
            .unwrap();
        sm.inner.apply(vec![put_by(4, 30, 1)]).unwrap();
        let order = eviction_of(&sm);
        let stored = EvictionOrder::load(&sm.inner.read().tree).unwrap();
        assert_eq!(order, stored);
        assert_eq!(
            order,
            EvictionOrder::of(&[
                (
                    20,
                    ClientRecord {
                        sequence: 1,
                        log_index: 2,
                        result: vec![]
                    }
                ),
                (
                    10,
                    ClientRecord {
                        sequence: 2,
                        log_index: 3,
                        result: vec![]
                    }
                ),
                (
                    30,
                    ClientRecord {
                        sequence: 1,
                        log_index: 4,
                        result: vec![]
                    }
                ),
            ])
        );

        let payload = sm.inner.capture().unwrap();
        drop(sm);
        let sm = reopen(dir.path()).state_machine();
        assert_eq!(eviction_of(&sm), order, "rebuilt on open");

        let other = tempfile::tempdir().unwrap();
        let target = store::open(other.path()).unwrap().state_machine();
        target.inner.apply(vec![put_by(1, 99, 1)]).unwrap();
        target.inner.install_payload(payload).unwrap();
        assert_eq!(eviction_of(&target), order, "replaced by an install");
    }
}
