//! Durable storage: the Raft log in segment files of its own, and the Raft hard state and the
//! key-value state machine in one sled database.
//!
//! [`Store::open`] gives a [`Store`] with two cloneable handles: a [`LogStore`] (openraft's
//! `RaftLogStorage` and `RaftLogReader`) and a [`StateMachineStore`] (openraft's
//! `RaftStateMachine`, plus the read API the server uses directly: `get`, `range`, `revision`,
//! `state_hash`, …). Clones share one state, so the server can read while openraft applies.
//!
//! # On-disk layout
//!
//! ```text
//! <data_dir>/
//!   sled/                 one sled::Db (sled's own files: conf, db, blobs/, snap.*)
//!     tree "store"        store-level records
//!       format            u32 BE, the layout version (STORE_FORMAT)
//!       sm_generation     u64 BE, which sm.<generation> tree is live
//!     tree "raft"         vote | committed | last_purged -> postcard
//!     tree "sm.<gen>"     the state machine, 16 hex digits of generation; one namespace byte:
//!       k<user key>         -> 0x01, create_revision, mod_revision, version (i64 BE), value
//!                              (0x02 and a fourth i64, the lease, for a key with a lease)
//!       h<rev BE><sub BE>   -> postcard(StoredEvent): one change, its key, record before/after
//!                              (the revision history since the compact revision, history.rs)
//!       l<lease id BE>      -> postcard(LeaseRecord): a lease and its TTL (lease.rs)
//!       a<lease id BE><key> -> empty: the key is attached to the lease
//!       d<client id BE>     -> postcard(ClientRecord): last sequence, its log index, its result
//!       m/state             -> postcard(SmMeta): last applied, membership, revision, counters
//!       m/alarms            -> postcard(list of Alarm): the replicated alarm table (alarm.rs);
//!                              absent when no alarm is raised
//!   raft-log/             the Raft log: <first index>.wal segments of CRC'd records (wal.rs)
//!   snapshot/current      the current snapshot: meta + data + CRC-32, replaced atomically
//! ```
//!
//! Byte layouts are spelled out in `codec.rs`, the snapshot data in `snapshot.rs`, the snapshot
//! file in `snapfile.rs`.
//!
//! # Durability
//!
//! A write is acknowledged by Raft once a quorum has it in its log, so the log is what must
//! survive: power loss included, not only a process crash.
//!
//! - The log store appends a batch of entries with one `write` to the log's active segment and
//!   one `fdatasync` before telling openraft they are flushed (`wal.rs`, `log.rs`). `save_vote`
//!   syncs sled before it returns, and so does a purge when it becomes durable. sled's own `flush()` is not enough for that (no
//!   drive-cache flush, no metadata, and no fsync at all for values over ~128 KiB, which sled
//!   keeps in separate blob files); `durable.rs` explains the gap and closes it with
//!   `fdatasync` of sled's data file and `fsync` of new blob files and their directory.
//! - The state machine applies each batch of entries as one atomic sled batch without a sync
//!   of its own: after a crash it may be behind, and openraft re-applies committed entries
//!   from the log. The state purged entries produced is durable in the snapshot file (written
//!   with fsync + rename + directory fsync when the snapshot is built or installed); opening
//!   rebuilds the state machine from that file if sled's copy is behind it.
//! - Installing a snapshot stores the snapshot file first, then fills a fresh `sm.<gen+1>`
//!   tree, syncs, and switches `sm_generation` atomically. A crash before the switch leaves the
//!   old tree live and the newer snapshot file, which the next open installs again.
//! - Applying is deterministic (`kv.rs`, `dedup.rs`): the same log gives the same bytes on
//!   every replica, so replicas agree without comparing data; `state_hash` lets a checker
//!   verify it.
//!
//! # Invariants on disk (what a crash, power cut included, can and cannot leave)
//!
//! 1. **No purge outruns the state machine.** The durable purge point (`last_purged`) is never
//!    past `max(durable snapshot, durable applied state)`. openraft 0.9 purges on a follower
//!    right after handing `install_snapshot` to the state-machine worker, unordered with it; so
//!    the log store hides purged entries at once but records a purge (and deletes segments)
//!    only up to the coverage watermark the state machine raises once a snapshot file is saved
//!    (`coverage.rs`, `log.rs`). Opening checks the invariant and refuses a store that breaks
//!    it with [`StoreError::Corrupt`], telling the operator to wipe the member (it rejoins from
//!    a snapshot).
//! 2. **The log on disk is a prefix of what was written, above the purge point.** Appends are
//!    fdatasync'ed before they are acknowledged, and the next append is written only after
//!    that. Opening cuts a damaged tail of the last segment only when no valid record follows
//!    the damage (a torn append); a valid record after it means acknowledged entries are
//!    damaged, and opening fails naming the offset (`wal.rs`). Truncate makes each unlink
//!    durable before it cuts the remaining file; segments wholly below the purge point that a
//!    crash brought back are deleted when the log opens.
//! 3. **Every sled flush the store relies on is durable**, blobs included: a blob file is
//!    recorded as synced only if it was listed before the flush (so it was complete), and a
//!    blob sled deleted in the meantime is skipped (`durable.rs`).
//! 4. **The data directory outlives a crash at any point of the first start**: the volume
//!    record's directory is fsynced into its parent, and a temp record left by a crash is
//!    removed instead of making the volume look foreign (`volume.rs`).
//!
//! The crash test (`tests/store_crash.rs`) SIGKILLs a writer going through segment rollovers,
//! truncates, purges and snapshot installs, and one stopped by a failpoint between a purge and
//! the snapshot save it depends on; the unit tests next to each fix check the rest.
//!
//! # Errors
//!
//! [`StoreError`] separates deterministic outcomes from failures (see `error.rs`). A command
//! whose compare fails, or that deletes nothing, is a result, never an error. Any error that
//! reaches openraft is fatal to the node, on purpose: a replica that cannot write must stop
//! rather than diverge.
//!
//! # Left out, deliberately
//!
//! - History is kept as changes beside the current state, not as versions indexed per key
//!   (`history.rs` explains why): a read at a past revision costs the changes since then,
//!   which compaction bounds (by default the last 10,000 revisions are kept).
//! - No compaction of sled's files beyond what sled does itself.
//! - Lease deadlines are not state: the leader keeps them in memory (`node/lessor.rs`), so a
//!   new leader gives every lease a full TTL (no remaining-TTL checkpoints, unlike etcd).
//! - Snapshots are built and installed in memory (openraft 0.9's `SnapshotData` is a
//!   `Cursor<Vec<u8>>`), so a replica needs memory for about twice its data to snapshot. Fine
//!   for the data sizes kvset is for; a streaming format would need openraft's newer API.
//! - Range `count` scans the whole range (except for the range of all keys, whose count is
//!   kept), so paging through a huge range costs a scan per page.
//! - The dedup table stores whole results; a client whose last write returned a large Txn
//!   range keeps that answer until its next write.
//! - sled 0.34's own internal crash-consistency (segment reuse, its `snap.*` files) is trusted
//!   as it is; only its missing fsyncs are filled in.

mod alarm;
mod codec;
mod coverage;
mod cursor;
mod dedup;
mod digest;
mod durable;
mod error;
#[cfg(any(test, feature = "fuzzing"))]
pub mod fuzzing;
mod history;
pub(crate) mod io_trace;
mod keyrange;
mod kv;
mod lease;
mod log;
mod meta;
mod restore;
mod snapfile;
mod snapshot;
mod state_machine;
mod view;
mod wal;

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use dedup::MAX_CLIENTS as MAX_DEDUP_CLIENTS;
pub use error::StoreError;
pub use kv::{KeyRange, TXN_RANGE_DEFAULT_LIMIT};
pub use log::LogStore;
pub use restore::{describe_snapshot, SnapshotSummary};
pub use snapshot::SNAPSHOT_FORMAT;
pub use state_machine::{
    Changes, LeaseInfo, SnapshotBuilder, StateDigest, StateMachineStore,
    FAILPOINT_BEFORE_SNAPSHOT_SAVE,
};

use durable::Durability;

/// The layout version of the data directory this build reads and writes.
///
/// - 1: the first layout.
/// - 2: the dedup eviction order moved out of the tree into memory (`dedup.rs`), and log entries
///   may hold command batches (group commit). A format-1 directory is upgraded when it opens;
///   a build that only knows format 1 refuses a format-2 directory instead of misreading it.
/// - 3: the revision history, leases, and the compact revision and lease counter in the
///   metadata record (`meta.rs`). A format-2 directory opens as if compacted at its revision.
pub const STORE_FORMAT: u32 = 3;

/// Older layouts this build upgrades in place when it opens them.
const UPGRADABLE_FORMATS: [u32; 2] = [1, 2];

const FORMAT_KEY: &[u8] = b"format";
/// Key in the `store` tree naming the live state-machine generation.
const GENERATION_KEY: &[u8] = b"sm_generation";

/// What the space quota counts, in bytes (see [`Store::quota_usage`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QuotaUsage {
    /// The logical size of the live state (keys, values, dedup table, metadata).
    pub state: u64,
    /// The Raft log's entries not purged (with their framing).
    pub log: u64,
    /// The snapshot file.
    pub snapshot: u64,
}

impl QuotaUsage {
    /// The sum the quota is compared with.
    pub fn total(&self) -> u64 {
        self.state + self.log + self.snapshot
    }
}

/// An opened store: the two handles openraft needs. Everything in it is cheap to clone.
#[derive(Clone)]
pub struct Store {
    log: LogStore,
    state_machine: StateMachineStore,
    db: sled::Db,
    durable: Arc<Durability>,
    data_dir: PathBuf,
}

impl Store {
    /// Opens (creating if needed) the store in `data_dir`; see [`open`].
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        open(data_dir)
    }

    /// Like [`Store::open`], with sled's page cache limited to `cache_bytes` (sled's default is
    /// 1 GiB, too much for a small pod: size it to the memory limit minus headroom).
    pub fn open_with_cache(data_dir: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        open_with(data_dir, sled::Config::new().cache_capacity(cache_bytes))
    }

    /// The Raft log and hard state, for `openraft::Raft::new`.
    pub fn log_store(&self) -> LogStore {
        self.log.clone()
    }

    /// The state machine, for `openraft::Raft::new` and for the server's reads.
    pub fn state_machine(&self) -> StateMachineStore {
        self.state_machine.clone()
    }

    /// The directory the store lives in.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Bytes on disk (sled's files, the raft log and the snapshot file).
    pub fn disk_size(&self) -> Result<u64, StoreError> {
        Ok(self.state_machine.disk_size()? + self.log.disk_size())
    }

    /// What the space quota counts (`node/quota.rs`): the logical size of the live state, plus
    /// the Raft log's entries above the purge point, plus the snapshot file, in bytes. O(data
    /// size).
    pub fn quota_usage(&self) -> Result<QuotaUsage, StoreError> {
        Ok(QuotaUsage {
            state: self.state_machine.logical_size()?,
            log: self.log.live_size(),
            snapshot: self.state_machine.snapshot_file_size(),
        })
    }

    /// Makes everything written so far durable (for a clean shutdown).
    pub fn sync(&self) -> Result<(), StoreError> {
        self.durable.sync(&self.db)
    }
}

/// Opens (creating if needed) the store in `data_dir`.
///
/// Fails if another process (or another `Store` in this process) has it open: sled holds an
/// exclusive lock until every clone of every handle is dropped.
pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
    open_with(data_dir, sled::Config::new())
}

fn open_with(data_dir: &Path, config: sled::Config) -> Result<Store, StoreError> {
    std::fs::create_dir_all(data_dir).map_err(|e| StoreError::io("create", data_dir, e))?;
    let sled_dir = data_dir.join("sled");
    let db = config
        .path(&sled_dir)
        .mode(sled::Mode::HighThroughput)
        .open()?;
    let durable = Arc::new(Durability::open(data_dir, &sled_dir)?);

    let store_tree = db.open_tree("store")?;
    let upgrade_from = match store_tree.get(FORMAT_KEY)? {
        None => {
            store_tree.insert(FORMAT_KEY, &STORE_FORMAT.to_be_bytes())?;
            durable.sync(&db)?;
            None
        }
        Some(found) => {
            let found = <[u8; 4]>::try_from(found.as_ref())
                .map(u32::from_be_bytes)
                .map_err(|_| StoreError::Corrupt {
                    what: "store format record",
                    detail: format!("{} bytes, expected 4", found.len()),
                })?;
            if found != STORE_FORMAT && !UPGRADABLE_FORMATS.contains(&found) {
                return Err(StoreError::UnsupportedFormat {
                    what: "data directory",
                    found,
                    supported: STORE_FORMAT,
                });
            }
            (found != STORE_FORMAT).then_some(found)
        }
    };

    let coverage = Arc::new(coverage::Coverage::new());
    let log = LogStore::open(db.clone(), durable.clone(), coverage.clone(), data_dir)?;
    let state_machine = StateMachineStore::open(
        db.clone(),
        store_tree.clone(),
        durable.clone(),
        coverage.clone(),
        &data_dir.join("snapshot"),
    )?;
    check_purge_is_covered(&log, &state_machine)?;
    if let Some(old) = upgrade_from {
        // Opening the state machine converted the layout (format 1 -> 2: it dropped the
        // eviction keys); record the new format only once that is durable.
        durable.sync(&db)?;
        store_tree.insert(FORMAT_KEY, &STORE_FORMAT.to_be_bytes())?;
        durable.sync(&db)?;
        tracing::info!(
            from = old,
            to = STORE_FORMAT,
            "upgraded the data directory's format"
        );
    }
    Ok(Store {
        log,
        state_machine,
        db,
        durable,
        data_dir: data_dir.to_path_buf(),
    })
}

/// The entries up to the durable purge point must live on in the snapshot file or the applied
/// state; otherwise they exist nowhere on this member and openraft would fail to start it (it
/// re-applies committed entries from the log). Only a build with the purge-before-snapshot race
/// (kvset issue #21) could leave such a store.
fn check_purge_is_covered(log: &LogStore, sm: &StateMachineStore) -> Result<(), StoreError> {
    let Some(purged) = log.durable_last_purged() else {
        return Ok(());
    };
    let snapshot = sm
        .snapshot_meta()
        .and_then(|m| m.last_log_id)
        .map(|l| l.index);
    let applied = sm.last_applied().map(|l| l.index);
    if Some(purged.index) <= snapshot.max(applied) {
        return Ok(());
    }
    Err(StoreError::Corrupt {
        what: "data directory",
        detail: format!(
            "the raft log is purged up to {}, but the state machine has applied only up to \
             {applied:?} and the snapshot file covers only up to {snapshot:?}: the entries in \
             between exist nowhere on this member. Wipe this member's data directory so that it \
             rejoins the cluster from a snapshot",
            purged.index
        ),
    })
}

/// Runs blocking storage work (fsync, big scans) off the async runtime's worker threads.
async fn blocking<T, F>(work: F) -> Result<T, StoreError>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, StoreError> + Send + 'static,
{
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| StoreError::Task(e.to_string()))?
}

/// Helpers for tests (this crate's and the integration tests) that close a store and open it
/// again in the same process. Not part of the API.
#[doc(hidden)]
pub mod test_support {
    /// Makes the raft logs of this process start a new segment file past `bytes` (instead of
    /// 64 MiB), so that crash tests go through segment rollovers.
    pub fn set_wal_segment_bytes(bytes: u64) {
        super::wal::set_segment_bytes_for_tests(bytes);
    }

    /// Calls `open` until it no longer fails because sled's directory lock is still held. sled
    /// finishes writing its buffers on background threads after the last handle is dropped and
    /// keeps the lock until they are done, so an immediate reopen can find it locked for a moment.
    pub fn when_released<T, E: std::fmt::Display>(mut open: impl FnMut() -> Result<T, E>) -> T {
        for _ in 0..100 {
            match open() {
                Ok(t) => return t,
                Err(e) if e.to_string().contains("could not acquire lock") => {
                    std::thread::sleep(std::time::Duration::from_millis(50))
                }
                Err(e) => panic!("reopen: {e}"),
            }
        }
        panic!("the store stayed locked for 5 s after it was closed")
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::when_released;
    use super::*;

    /// Writes a format-1 directory by hand: the format record says 1 and the live tree holds
    /// eviction keys next to the dedup records.
    fn make_format_1(dir: &Path) {
        let store = open(dir).expect("open");
        let tree = store.state_machine.live_tree_for_tests();
        tree.insert(
            [codec::LEGACY_NS_EVICT, 0, 0, 0, 0, 0, 0, 0, 7],
            b"".to_vec(),
        )
        .unwrap();
        store
            .db
            .open_tree("store")
            .unwrap()
            .insert(FORMAT_KEY, &1u32.to_be_bytes())
            .unwrap();
        store.sync().unwrap();
    }

    fn format_of(dir: &Path) -> u32 {
        let db = when_released(|| sled::Config::new().path(dir.join("sled")).open());
        let raw = db
            .open_tree("store")
            .unwrap()
            .get(FORMAT_KEY)
            .unwrap()
            .unwrap();
        u32::from_be_bytes(raw.as_ref().try_into().unwrap())
    }

    #[test]
    fn a_format_1_directory_is_upgraded_when_it_opens() {
        let dir = tempfile::tempdir().unwrap();
        make_format_1(dir.path());
        assert_eq!(format_of(dir.path()), 1);

        let store = when_released(|| open(dir.path()));
        let tree = store.state_machine.live_tree_for_tests();
        let legacy = [codec::LEGACY_NS_EVICT];
        let upper = [codec::LEGACY_NS_EVICT + 1];
        assert_eq!(
            tree.range(legacy..upper).count(),
            0,
            "eviction keys dropped"
        );
        drop((tree, store));
        assert_eq!(format_of(dir.path()), STORE_FORMAT);
    }

    #[test]
    fn a_directory_of_an_unknown_format_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path()).unwrap());
        {
            let db = when_released(|| sled::Config::new().path(dir.path().join("sled")).open());
            db.open_tree("store")
                .unwrap()
                .insert(FORMAT_KEY, &(STORE_FORMAT + 1).to_be_bytes())
                .unwrap();
            db.flush().unwrap();
        }
        let opened = when_released(|| match open(dir.path()) {
            Err(StoreError::Sled(e)) => Err(e),
            other => Ok(other),
        });
        match opened {
            Err(e @ StoreError::UnsupportedFormat { .. }) => {
                assert!(
                    e.to_string().contains("matching kvset-server version"),
                    "{e}"
                )
            }
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("a directory of format {} opened", STORE_FORMAT + 1),
        }
    }

    /// Issue #21, item 2: a store whose durable purge point is past both the snapshot and the
    /// applied state (left by the purge-before-snapshot race) holds entries nowhere. Opening it
    /// must fail and say what to do, not start a member that fails later in openraft.
    #[test]
    fn a_purge_past_the_state_machine_is_refused_on_open() {
        let dir = tempfile::tempdir().unwrap();
        drop(open(dir.path()).unwrap());
        {
            let db = when_released(|| sled::Config::new().path(dir.path().join("sled")).open());
            let purged = crate::raft::types::LogId::new(openraft::CommittedLeaderId::new(1, 0), 8);
            db.open_tree("raft")
                .unwrap()
                .insert(
                    b"last_purged",
                    codec::encode("last purged", &purged).unwrap(),
                )
                .unwrap();
            db.flush().unwrap();
        }
        let opened = when_released(|| match open(dir.path()) {
            Err(StoreError::Sled(e)) => Err(e),
            other => Ok(other),
        });
        match opened {
            Err(e @ StoreError::Corrupt { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains("purged up to 8"), "{msg}");
                assert!(msg.contains("Wipe this member's data directory"), "{msg}");
            }
            Err(e) => panic!("wrong error: {e}"),
            Ok(_) => panic!("a store missing entries 1..=8 opened"),
        }
    }
}
