//! The store's one error type, and how it crosses into openraft.
//!
//! Two kinds of failure must never be confused (the toydb rule):
//!
//! - **Deterministic** outcomes depend only on the input, so every replica reaches the same one.
//!   A failed compare, a delete that finds nothing, a malformed command that slipped past the
//!   API's validation: the state machine turns these into a [`CommandResult`] and moves on. They
//!   are never an `Err` from `apply`, because an error there stops the node and a result that
//!   differed between replicas would fork them. The only deterministic *errors* are the read
//!   path's argument errors ([`StoreError::InvalidArgument`], [`StoreError::InvalidCursor`]),
//!   which the server maps to `INVALID_ARGUMENT`, and the revisions a read cannot see
//!   ([`StoreError::Compacted`], [`StoreError::FutureRevision`]), mapped to `OUT_OF_RANGE`.
//! - **Non-deterministic** failures (I/O, a corrupt record, a crashed blocking task) say nothing
//!   about the command. Retrying elsewhere could succeed, so the node must stop rather than
//!   record a different outcome than its peers: openraft treats every [`StorageError`] as fatal.
//!
//! [`CommandResult`]: kvset_proto::raft::CommandResult

use std::io;
use std::path::Path;

use openraft::{ErrorSubject, ErrorVerb, StorageIOError};

use crate::raft::types::{NodeId, StorageError};

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// sled reported an error (usually I/O underneath).
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),

    /// A file-system operation outside sled failed (fsync, snapshot file, directories).
    #[error("{op}: {source}")]
    Io {
        /// What was being done, with the path, e.g. `fsync /data/sled/db`.
        op: String,
        /// The OS error.
        #[source]
        source: io::Error,
    },

    /// A value could not be encoded or decoded with postcard.
    #[error("postcard {what}: {source}")]
    Codec {
        /// Which record, e.g. `log entry`.
        what: &'static str,
        /// The codec's error.
        #[source]
        source: postcard::Error,
    },

    /// Stored bytes do not have the expected shape or checksum.
    #[error("corrupt {what}: {detail}")]
    Corrupt {
        /// Which record or file.
        what: &'static str,
        /// What is wrong with it.
        detail: String,
    },

    /// A log entry holds a command this build cannot apply. Applying it as a no-op would make
    /// this replica diverge from the others, so the state machine stops instead.
    #[error(
        "log entry {log_index} {detail}; refusing to skip it, which would make this replica \
         diverge from the others"
    )]
    UnappliableCommand {
        /// Index of the entry.
        log_index: u64,
        /// What is wrong, with what to do about it.
        detail: &'static str,
    },

    /// The data directory was written by an incompatible version of kvset.
    #[error(
        "{what} has format version {found}, but this build only reads version {supported}; \
         use a matching kvset-server version or start from an empty data directory"
    )]
    UnsupportedFormat {
        /// The store or the snapshot.
        what: &'static str,
        /// Version found on disk.
        found: u32,
        /// Version this build understands.
        supported: u32,
    },

    /// A range cursor that is malformed or belongs to another range.
    #[error("invalid cursor: {0}")]
    InvalidCursor(String),

    /// A read request that the store cannot serve as asked (for example a negative limit).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// A read or watch asked for a revision whose history was compacted.
    #[error(
        "revision {requested} is compacted; the compact revision is {compact_revision}: read at \
         or above it (or at the current revision)"
    )]
    Compacted {
        /// The revision asked for.
        requested: i64,
        /// The store's compact revision.
        compact_revision: i64,
    },

    /// A read asked for a revision the store has not reached.
    #[error("revision {requested} is in the future; the current revision is {current}")]
    FutureRevision {
        /// The revision asked for.
        requested: i64,
        /// The store's current revision.
        current: i64,
    },

    /// A blocking storage task panicked or was cancelled.
    #[error("storage task failed: {0}")]
    Task(String),
}

impl StoreError {
    /// True when the error follows from the request alone, so every replica (and every retry)
    /// would see the same one. Such errors are the caller's to fix (`INVALID_ARGUMENT`); all
    /// others are failures of this node.
    pub fn is_deterministic(&self) -> bool {
        matches!(
            self,
            Self::InvalidCursor(_)
                | Self::InvalidArgument(_)
                | Self::Compacted { .. }
                | Self::FutureRevision { .. }
        )
    }

    /// True for a revision the store does not hold (compacted or not reached yet): the API
    /// answers OUT_OF_RANGE.
    pub fn is_out_of_range(&self) -> bool {
        matches!(self, Self::Compacted { .. } | Self::FutureRevision { .. })
    }

    /// Wraps an `io::Error` with the operation and path it came from.
    pub(crate) fn io(op: &str, path: &Path, source: io::Error) -> Self {
        Self::Io {
            op: format!("{op} {}", path.display()),
            source,
        }
    }

    /// A closure for `map_err` that decorates a postcard error with the record it concerns.
    pub(crate) fn codec(what: &'static str) -> impl FnOnce(postcard::Error) -> Self {
        move |source| Self::Codec { what, source }
    }

    /// Converts into openraft's error, naming what was being done when it happened.
    pub(crate) fn into_raft(self, subject: ErrorSubject<NodeId>, verb: ErrorVerb) -> StorageError {
        StorageIOError::new(subject, verb, &self).into()
    }
}

/// Without more context, a store error is a failed write to the store as a whole.
impl From<StoreError> for StorageError {
    fn from(e: StoreError) -> Self {
        e.into_raft(ErrorSubject::Store, ErrorVerb::Write)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_argument_errors_are_deterministic() {
        assert!(StoreError::InvalidCursor("x".into()).is_deterministic());
        assert!(StoreError::InvalidArgument("x".into()).is_deterministic());
        let io = StoreError::io("fsync", Path::new("/x"), io::Error::other("boom"));
        assert!(!io.is_deterministic());
        assert_eq!(io.to_string(), "fsync /x: boom");
        let corrupt = StoreError::Corrupt {
            what: "kv record",
            detail: "too short".into(),
        };
        assert!(!corrupt.is_deterministic());
        let raft: StorageError = corrupt.into();
        assert!(
            raft.to_string().contains("corrupt kv record: too short"),
            "{raft}"
        );
    }
}
