//! The Raft log and the Raft hard state (vote, committed, last purged) on sled.
//!
//! Trees: `log` maps the index (8 bytes BE) to the postcard of the openraft `Entry`; `raft`
//! holds `vote`, `committed` and `last_purged` (postcard each).
//!
//! What is durable when:
//! - `append` writes the entries in one sled batch, then makes sled durable once
//!   ([`Durability::sync`]) for all of them (group commit), and only then reports them flushed
//!   to openraft. An entry openraft counts as persisted survives power loss.
//! - `save_vote` returns only once the vote is durable the same way.
//! - `truncate`, `purge` and `save_committed` are written without a sync of their own. sled's
//!   log is ordered and recovers a prefix, so they become durable with the next sync (the next
//!   append or vote) at the latest. Losing one is safe: a lost truncate brings back entries that
//!   were never acknowledged to the new leader and that the next append overwrites; a lost purge
//!   only keeps entries longer; a lost committed id makes openraft re-apply less on restart and
//!   learn the commit index from the leader again.
//! - `truncate` is one batch and `purge` one transaction over both trees, so a crash never
//!   leaves a hole in the log or a purge marker without its purge.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::Transactional;

use super::blocking;
use super::codec;
use super::durable::Durability;
use super::error::StoreError;
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
    log: sled::Tree,
    raft: sled::Tree,
    durable: Arc<Durability>,
}

impl LogStore {
    /// Opens the log trees of `db`.
    pub(crate) fn open(db: sled::Db, durable: Arc<Durability>) -> Result<Self, StoreError> {
        Ok(Self {
            inner: Arc::new(Inner {
                log: db.open_tree("log")?,
                raft: db.open_tree("raft")?,
                db,
                durable,
            }),
        })
    }

    /// The log id of the last entry, or of the last purged one when the log is empty.
    pub fn last_log_id(&self) -> Result<Option<LogId>, StoreError> {
        match self.inner.log.last()? {
            Some((_, bytes)) => Ok(Some(decode_entry(&bytes)?.log_id)),
            None => self.last_purged(),
        }
    }

    /// The last purged log id: entries up to it are gone (they are in a snapshot).
    pub fn last_purged(&self) -> Result<Option<LogId>, StoreError> {
        self.read_meta(LAST_PURGED, "last purged log id")
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
        let start = codec::log_key(start);
        let iter = match end {
            Some(end) => self.inner.log.range(start..codec::log_key(end)),
            None => self.inner.log.range(start..),
        };
        iter.map(|item| decode_entry(&item?.1)).collect()
    }

    /// Durably syncs sled on a blocking thread.
    async fn sync(&self) -> Result<(), StoreError> {
        let inner = self.inner.clone();
        blocking(move || inner.durable.sync(&inner.db)).await
    }
}

fn decode_entry(bytes: &[u8]) -> Result<Entry, StoreError> {
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
        let mut batch = sled::Batch::default();
        for entry in entries {
            let bytes =
                codec::encode("log entry", &entry).map_err(|e| logs_error(e, ErrorVerb::Write))?;
            batch.insert(&codec::log_key(entry.log_id.index), bytes);
        }
        self.inner
            .log
            .apply_batch(batch)
            .map_err(|e| logs_error(e.into(), ErrorVerb::Write))?;
        // Readable now; reported flushed only once durable.
        match self.sync().await {
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
        let truncate = || -> Result<(), StoreError> {
            let mut batch = sled::Batch::default();
            for item in self.inner.log.range(codec::log_key(log_id.index)..) {
                batch.remove(item?.0);
            }
            self.inner.log.apply_batch(batch)?;
            Ok(())
        };
        truncate().map_err(|e| logs_error(e, ErrorVerb::Delete))
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let purge = || -> Result<(), StoreError> {
            let doomed = self
                .inner
                .log
                .range(..=codec::log_key(log_id.index))
                .keys()
                .collect::<Result<Vec<_>, _>>()?;
            let marker = codec::encode("last purged log id", &log_id)?;
            (&self.inner.log, &self.inner.raft)
                .transaction(|(log, raft)| {
                    raft.insert(LAST_PURGED, marker.as_slice())?;
                    for key in &doomed {
                        log.remove(key)?;
                    }
                    Ok::<(), ConflictableTransactionError<StoreError>>(())
                })
                .map_err(|e| match e {
                    TransactionError::Abort(e) => e,
                    TransactionError::Storage(e) => e.into(),
                })
        };
        purge().map_err(|e| logs_error(e, ErrorVerb::Delete))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
