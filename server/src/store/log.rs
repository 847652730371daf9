//! The Raft log and the Raft hard state: entries in segment files (`wal.rs`), the hard state
//! (vote, committed, last purged) in sled's `raft` tree (postcard each).
//!
//! What is durable when:
//! - `append` writes the entries with one `write` to the log's active segment and `fdatasync`s
//!   it once for all of them (group commit), and only then reports them flushed to openraft. An
//!   entry openraft counts as persisted survives power loss.
//! - `save_vote` returns only once the vote is durable (sled flush + `fdatasync`, see
//!   `durable.rs`).
//! - `purge` hides the entries at once (openraft sees them gone), but makes the purge durable
//!   only as far as the state machine has durably covered (`coverage.rs`): openraft 0.9 purges
//!   right after it hands a snapshot to the state machine, before the snapshot file is saved.
//!   The rest stays pending and is made durable by a later `purge` or `append` once the
//!   coverage has caught up. Making it durable records the purge point first (sled sync), then
//!   deletes the segments below it; a crash in between leaves segments that opening deletes.
//!   So the durable purge point never passes the durable snapshot or the durable applied
//!   state, which opening checks (`Store::open`). A purge lost in a crash comes back as
//!   entries that are already applied; openraft purges them again when it starts.
//! - `truncate` deletes later segments and cuts the file in place (what remains is a prefix);
//!   losing it in a crash brings back entries that were never acknowledged to the new leader,
//!   and the next append from it replaces them.
//! - An `append` after every stored entry was purged starts the log over at the new entry and
//!   deletes the old segments; it first waits for the pending purge to become durable (the
//!   snapshot it depends on is saved by then in practice: openraft only sends further entries
//!   once the install is done), so the log on disk never has a gap below its first entry that
//!   the durable purge point does not explain.
//! - `save_committed` is written to sled without a sync of its own: it becomes durable with the
//!   next sled sync (`save_vote`, a purge, a snapshot) or sled's background flush (every
//!   500 ms); losing it makes openraft re-apply less on restart and learn the commit index from
//!   the leader again.
//!
//! Stores made before the log moved out of sled (its `log` tree) are converted when they open:
//! the entries are copied into `raft-log.tmp/`, synced, and the directory renamed to
//! `raft-log/`; only then is the sled tree cleared.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::Duration;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::blocking;
use super::codec;
use super::coverage::Coverage;
use super::durable::{fsync_path, Durability};
use super::error::StoreError;
use super::wal::Wal;
use crate::raft::types::{Entry, LogId, StorageError, TypeConfig, Vote};

const VOTE: &[u8] = b"vote";
const COMMITTED: &[u8] = b"committed";
const LAST_PURGED: &[u8] = b"last_purged";

/// A cloneable handle on the Raft log; openraft's log storage and its log readers.
#[derive(Clone)]
pub struct LogStore {
    inner: Arc<Inner>,
}

struct Inner {
    db: sled::Db,
    raft: sled::Tree,
    wal: RwLock<Wal>,
    durable: Arc<Durability>,
    /// How far the state machine is durable; no purge becomes durable past it.
    coverage: Arc<Coverage>,
    purges: Mutex<Purges>,
}

/// The purges openraft asked for, and how far they are durable.
#[derive(Debug, Default)]
struct Purges {
    /// The purge point recorded in sled; the segments wholly below it are deleted.
    durable: Option<LogId>,
    /// Purges asked for beyond `durable`, in order; they wait for the state machine's coverage.
    pending: Vec<LogId>,
}

impl Purges {
    /// The purge point openraft sees.
    fn logical(&self) -> Option<LogId> {
        self.pending.last().copied().or(self.durable)
    }

    /// The furthest pending purge that `covered` allows to become durable.
    fn due(&self, covered: Option<u64>) -> Option<LogId> {
        self.pending
            .iter()
            .rev()
            .find(|p| Some(p.index) <= covered)
            .copied()
    }
}

/// How long an append that starts the log over waits for the state machine to cover the
/// purge before it (see the module docs) before it fails.
const START_OVER_WAIT: Duration = Duration::from_secs(60);

/// The log's directory inside the data directory.
const WAL_DIR: &str = "raft-log";

/// The sled tree that held the log before it moved to [`WAL_DIR`].
const SLED_LOG_TREE: &[u8] = b"log";

impl LogStore {
    /// Opens the log in `<data_dir>/raft-log` and the hard state in `db`, converting a log
    /// kept in sled's `log` tree (older stores) first.
    pub(crate) fn open(
        db: sled::Db,
        durable: Arc<Durability>,
        coverage: Arc<Coverage>,
        data_dir: &Path,
    ) -> Result<Self, StoreError> {
        let raft = db.open_tree("raft")?;
        let wal_dir = data_dir.join(WAL_DIR);
        let had_sled_log = db.tree_names().iter().any(|n| n.as_ref() == SLED_LOG_TREE);
        if had_sled_log && !wal_dir.exists() {
            let sled_log = db.open_tree(SLED_LOG_TREE)?;
            move_log_out_of_sled(&sled_log, data_dir, &wal_dir)?;
        }
        if had_sled_log {
            // Only once the segment files are durably in place.
            db.drop_tree(SLED_LOG_TREE)?;
            durable.sync(&db)?;
        }

        let last_purged: Option<LogId> = raft
            .get(LAST_PURGED)?
            .map(|b| codec::decode("last purged log id", &b))
            .transpose()?;
        let wal = Wal::open(&wal_dir, last_purged.map_or(0, |p| p.index + 1))?;
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                raft,
                wal: RwLock::new(wal),
                durable,
                coverage,
                purges: Mutex::new(Purges {
                    durable: last_purged,
                    pending: Vec::new(),
                }),
            }),
        })
    }

    fn wal(&self) -> RwLockReadGuard<'_, Wal> {
        // Nothing panics while holding the lock with the log half-changed.
        self.inner
            .wal
            .read()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn wal_mut(&self) -> RwLockWriteGuard<'_, Wal> {
        self.inner
            .wal
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Bytes of the log's segment files.
    pub fn disk_size(&self) -> u64 {
        self.wal().disk_size()
    }

    /// Bytes of the entries not purged, with their framing (see [`Wal::live_size`]).
    pub fn live_size(&self) -> u64 {
        self.wal().live_size()
    }

    /// The log id of the last entry, or of the last purged one when the log is empty.
    pub fn last_log_id(&self) -> Result<Option<LogId>, StoreError> {
        let last = {
            let wal = self.wal();
            match wal.bounds() {
                Some((_, last)) => wal.read(last, None)?.pop(),
                None => None,
            }
        };
        match last {
            Some(bytes) => Ok(Some(decode_entry(&bytes)?.log_id)),
            None => self.last_purged(),
        }
    }

    /// The last purged log id: entries up to it are gone (they are in a snapshot).
    pub fn last_purged(&self) -> Result<Option<LogId>, StoreError> {
        Ok(self.inner.purges().logical())
    }

    /// The purge point recorded durably (at most [`Self::last_purged`]).
    pub(crate) fn durable_last_purged(&self) -> Option<LogId> {
        self.inner.purges().durable
    }

    /// Makes the pending purges durable as far as the state machine's coverage allows.
    async fn settle(&self) -> Result<(), StoreError> {
        if self.inner.due().is_none() {
            return Ok(());
        }
        let inner = self.inner.clone();
        blocking(move || inner.settle()).await
    }

    /// Before an append that starts the log over (every stored entry is purged, the old
    /// segments will be deleted): waits until the purge is covered, and makes it durable.
    async fn settle_before_starting_over(&self) -> Result<(), StoreError> {
        let starts_over = {
            let wal = self.wal();
            wal.bounds().is_none() && wal.has_segments()
        };
        let pending = {
            let purges = self.inner.purges();
            purges.pending.last().copied()
        };
        if let (true, Some(purged)) = (starts_over, pending) {
            let covered = self
                .inner
                .coverage
                .wait_for(purged.index, START_OVER_WAIT)
                .await;
            if covered < Some(purged.index) {
                return Err(StoreError::Corrupt {
                    what: "raft log purge",
                    detail: format!(
                        "entries up to {} are purged, but after {START_OVER_WAIT:?} the state \
                         machine has made only up to {covered:?} durable; refusing to start the \
                         log over and lose them",
                        purged.index
                    ),
                });
            }
        }
        self.settle().await
    }

    fn read_meta<T: DeserializeOwned>(
        &self,
        key: &[u8],
        what: &'static str,
    ) -> Result<Option<T>, StoreError> {
        self.inner
            .raft
            .get(key)?
            .map(|b| codec::decode(what, &b))
            .transpose()
    }

    fn write_meta<T: Serialize>(
        &self,
        key: &[u8],
        what: &'static str,
        value: &T,
    ) -> Result<(), StoreError> {
        self.inner.raft.insert(key, codec::encode(what, value)?)?;
        Ok(())
    }

    fn entries(&self, range: impl RangeBounds<u64>) -> Result<Vec<Entry>, StoreError> {
        let Some((start, end)) = index_bounds(&range) else {
            return Ok(Vec::new());
        };
        let raw = self.wal().read(start, end)?;
        raw.iter().map(|bytes| decode_entry(bytes)).collect()
    }

    /// Durably syncs sled on a blocking thread.
    async fn sync(&self) -> Result<(), StoreError> {
        let inner = self.inner.clone();
        blocking(move || inner.durable.sync(&inner.db)).await
    }
}

impl Inner {
    fn purges(&self) -> MutexGuard<'_, Purges> {
        // Nothing panics while holding the lock with the purge state half-changed.
        self.purges.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The pending purge that can become durable now, if any.
    fn due(&self) -> Option<LogId> {
        self.purges().due(self.coverage.get())
    }

    /// Records the furthest covered pending purge durably, then deletes the segments below it.
    fn settle(&self) -> Result<(), StoreError> {
        let mut purges = self.purges();
        let Some(target) = purges.due(self.coverage.get()) else {
            return Ok(());
        };
        // The purge point first, durably: the files below it go only after.
        self.raft
            .insert(LAST_PURGED, codec::encode("last purged log id", &target)?)?;
        self.durable.sync(&self.db)?;
        purges.durable = Some(target);
        purges.pending.retain(|p| p.index > target.index);
        self.wal
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .purge(target.index)
    }
}

pub(super) fn decode_entry(bytes: &[u8]) -> Result<Entry, StoreError> {
    codec::decode("log entry", bytes)
}

/// An index range as `[start, end)` with `end == None` for "no upper bound"; `None` if empty.
fn index_bounds(range: &impl RangeBounds<u64>) -> Option<(u64, Option<u64>)> {
    let start = match range.start_bound() {
        Bound::Included(&s) => s,
        Bound::Excluded(&s) => s.checked_add(1)?,
        Bound::Unbounded => 0,
    };
    let end = match range.end_bound() {
        Bound::Included(&e) => e.checked_add(1),
        Bound::Excluded(&e) => Some(e),
        Bound::Unbounded => None,
    };
    match end {
        Some(end) if end <= start => None,
        _ => Some((start, end)),
    }
}

fn logs_error(e: StoreError, verb: ErrorVerb) -> StorageError {
    e.into_raft(ErrorSubject::Logs, verb)
}

fn vote_error(e: StoreError, verb: ErrorVerb) -> StorageError {
    e.into_raft(ErrorSubject::Vote, verb)
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        crate::faults::panic_if_triggered("a Raft log read");
        self.entries(range)
            .map_err(|e| logs_error(e, ErrorVerb::Read))
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let read = || -> Result<_, StoreError> {
            Ok(LogState {
                last_purged_log_id: self.last_purged()?,
                last_log_id: self.last_log_id()?,
            })
        };
        read().map_err(|e| logs_error(e, ErrorVerb::Read))
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.write_meta(VOTE, "vote", vote)
            .map_err(|e| vote_error(e, ErrorVerb::Write))?;
        self.sync()
            .await
            .map_err(|e| vote_error(e, ErrorVerb::Write))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.read_meta(VOTE, "vote")
            .map_err(|e| vote_error(e, ErrorVerb::Read))
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        let write = || -> Result<(), StoreError> {
            match committed {
                Some(c) => self.write_meta(COMMITTED, "committed log id", &c),
                None => self
                    .inner
                    .raft
                    .remove(COMMITTED)
                    .map(drop)
                    .map_err(Into::into),
            }
        };
        write().map_err(|e| e.into_raft(ErrorSubject::Store, ErrorVerb::Write))
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        self.read_meta(COMMITTED, "committed log id")
            .map_err(|e| e.into_raft(ErrorSubject::Store, ErrorVerb::Read))
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut records = Vec::new();
        for entry in entries {
            let bytes =
                codec::encode("log entry", &entry).map_err(|e| logs_error(e, ErrorVerb::Write))?;
            records.push((entry.log_id.index, bytes));
        }
        self.settle_before_starting_over()
            .await
            .map_err(|e| logs_error(e, ErrorVerb::Write))?;
        let written = self
            .wal_mut()
            .append(&records)
            .map_err(|e| logs_error(e, ErrorVerb::Write))?;
        // Readable now; reported flushed only once durable.
        match blocking(move || written.sync()).await {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(logs_error(e, ErrorVerb::Write))
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.wal_mut()
            .truncate(log_id.index)
            .map_err(|e| logs_error(e, ErrorVerb::Delete))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        {
            let mut purges = self.inner.purges();
            if Some(log_id) <= purges.logical() {
                return Ok(());
            }
            purges.pending.push(log_id);
        }
        // Gone for openraft at once; durable only once the state machine covers it.
        self.wal_mut().hide(log_id.index);
        self.settle()
            .await
            .map_err(|e| logs_error(e, ErrorVerb::Delete))
    }
}

/// Copies the entries of sled's `log` tree (stores made before the log moved out of sled) into
/// a new log directory, durably, then puts the directory in place.
fn move_log_out_of_sled(
    sled_log: &sled::Tree,
    data_dir: &Path,
    wal_dir: &Path,
) -> Result<(), StoreError> {
    let tmp = data_dir.join(format!("{WAL_DIR}.tmp"));
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| StoreError::io("remove", &tmp, e))?;
    }
    let mut wal = Wal::open(&tmp, 0)?;
    let mut chunk = Vec::new();
    let mut moved = 0u64;
    for item in sled_log.iter() {
        let (_, bytes) = item?;
        let entry = decode_entry(&bytes)?;
        chunk.push((entry.log_id.index, bytes.to_vec()));
        if chunk.len() == 1024 {
            wal.append(&chunk)?.sync()?;
            moved += chunk.len() as u64;
            chunk.clear();
        }
    }
    moved += chunk.len() as u64;
    wal.append(&chunk)?.sync()?;
    drop(wal);
    std::fs::rename(&tmp, wal_dir).map_err(|e| StoreError::io("rename", &tmp, e))?;
    fsync_path(data_dir)?;
    if moved > 0 {
        tracing::info!(
            entries = moved,
            "moved the raft log out of sled into {}",
            wal_dir.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload};

    fn blank(index: u64) -> Entry {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(2, 0), index),
            payload: EntryPayload::Blank,
        }
    }

    /// A store made when the log lived in sled's `log` tree opens with the same log.
    #[tokio::test]
    async fn a_log_kept_in_sled_moves_into_the_segment_files() {
        let dir = tempfile::tempdir().unwrap();
        let sled_dir = dir.path().join("sled");
        {
            let db = sled::Config::new().path(&sled_dir).open().unwrap();
            let tree = db.open_tree("log").unwrap();
            for i in 5..=9 {
                let bytes = codec::encode("log entry", &blank(i)).unwrap();
                tree.insert(i.to_be_bytes(), bytes).unwrap();
            }
            let purged = LogId::new(CommittedLeaderId::new(1, 0), 4);
            db.open_tree("raft")
                .unwrap()
                .insert(LAST_PURGED, codec::encode("last purged", &purged).unwrap())
                .unwrap();
            db.flush().unwrap();
        }
        let open = || {
            let db = super::super::test_support::when_released(|| {
                sled::Config::new().path(&sled_dir).open()
            });
            let durable = Arc::new(Durability::open(dir.path(), &sled_dir).unwrap());
            let coverage = Arc::new(Coverage::new());
            (
                LogStore::open(db.clone(), durable, coverage, dir.path()).unwrap(),
                db,
            )
        };
        let (mut log, db) = open();
        assert!(!db.tree_names().iter().any(|n| n.as_ref() == b"log"));
        assert!(dir.path().join(WAL_DIR).is_dir());
        assert!(!dir.path().join(format!("{WAL_DIR}.tmp")).exists());
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id.map(|l| l.index), Some(4));
        assert_eq!(state.last_log_id, Some(blank(9).log_id));
        let got = log.try_get_log_entries(5..).await.unwrap();
        assert_eq!(got, (5..=9).map(blank).collect::<Vec<_>>());
        drop((log, db));

        // Opening again finds the moved log and leaves it as it is.
        let (mut log, db) = open();
        assert_eq!(log.try_get_log_entries(..).await.unwrap().len(), 5);
        assert!(!db.tree_names().iter().any(|n| n.as_ref() == SLED_LOG_TREE));
    }

    #[test]
    #[allow(clippy::reversed_empty_ranges)] // empty ranges are part of what is tested
    fn index_bounds_cover_every_bound_kind() {
        assert_eq!(index_bounds(&(..)), Some((0, None)));
        assert_eq!(index_bounds(&(3..7)), Some((3, Some(7))));
        assert_eq!(index_bounds(&(3..=7)), Some((3, Some(8))));
        assert_eq!(index_bounds(&(3..=u64::MAX)), Some((3, None)));
        assert_eq!(index_bounds(&(5..5)), None);
        assert_eq!(index_bounds(&(6..5)), None);
        assert_eq!(
            index_bounds(&(Bound::Excluded(u64::MAX), Bound::Unbounded)),
            None
        );
        assert_eq!(
            index_bounds(&(Bound::Excluded(4), Bound::Included(4))),
            None
        );
    }

    /// A purge past the state machine's coverage is visible at once but becomes durable only
    /// once the coverage reaches it (then at the next append); an append that starts the log
    /// over waits for it.
    #[tokio::test]
    async fn a_purge_becomes_durable_only_once_covered() {
        use openraft::storage::RaftLogStorageExt;
        let dir = tempfile::tempdir().unwrap();
        let sled_dir = dir.path().join("sled");
        let db = sled::Config::new().path(&sled_dir).open().unwrap();
        let durable = Arc::new(Durability::open(dir.path(), &sled_dir).unwrap());
        let coverage = Arc::new(Coverage::new());
        let mut log = LogStore::open(db, durable, coverage.clone(), dir.path()).unwrap();
        log.blocking_append((1..=10).map(blank)).await.unwrap();

        log.purge(blank(6).log_id).await.unwrap();
        let state = log.get_log_state().await.unwrap();
        assert_eq!(state.last_purged_log_id, Some(blank(6).log_id));
        assert_eq!(log.try_get_log_entries(..).await.unwrap().len(), 4);
        assert_eq!(log.durable_last_purged(), None, "not covered yet");

        coverage.raise(Some(4));
        log.purge(blank(8).log_id).await.unwrap();
        assert_eq!(log.durable_last_purged(), None, "4 covers neither 6 nor 8");
        coverage.raise(Some(7));
        log.blocking_append([blank(11)]).await.unwrap();
        assert_eq!(log.durable_last_purged(), Some(blank(6).log_id));

        // Everything purged: the next append starts the log over once the purge is covered.
        log.purge(blank(20).log_id).await.unwrap();
        let raiser = coverage.clone();
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            raiser.raise(Some(20));
        });
        log.blocking_append([blank(21)]).await.unwrap();
        assert_eq!(log.durable_last_purged(), Some(blank(20).log_id));
        assert_eq!(log.try_get_log_entries(..).await.unwrap(), vec![blank(21)]);
    }
}
