//! Key ranges: which user keys a read, delete or watch covers, and their bounds in sled.
//!
//! Its own module because the key-value executor (`kv.rs`) and the revision history
//! (`history.rs`) both need it, and each of them uses the other's results: with the type here,
//! both look down at it instead of at each other.

use kvset_proto::v1::{DeleteRequest, RangeRequest};

use super::codec;

/// A half-open range of user keys, `[start, end)`; `end == None` means "to the last key".
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRange {
    /// The first key (inclusive).
    pub start: Vec<u8>,
    /// The end (exclusive); `None`: no upper bound.
    pub end: Option<Vec<u8>>,
}

impl KeyRange {
    /// Exactly one key.
    pub fn single(key: &[u8]) -> Self {
        let mut end = key.to_vec();
        end.push(0);
        Self {
            start: key.to_vec(),
            end: Some(end),
        }
    }

    /// Every key that starts with `prefix` (every key at all for an empty prefix).
    pub fn prefix(prefix: &[u8]) -> Self {
        Self {
            start: prefix.to_vec(),
            end: prefix_end(prefix),
        }
    }

    /// `[start, end)`, where an empty `end` means no upper bound.
    pub fn span(start: &[u8], end: &[u8]) -> Self {
        Self {
            start: start.to_vec(),
            end: (!end.is_empty()).then(|| end.to_vec()),
        }
    }

    /// The range a RangeRequest reads (`prefix` wins over `end`).
    pub(crate) fn of_range(req: &RangeRequest) -> Self {
        if req.prefix {
            Self::prefix(&req.start)
        } else {
            Self::span(&req.start, &req.end)
        }
    }

    /// The range a DeleteRequest removes, `None` when it names no key (empty key, no prefix).
    pub(crate) fn of_delete(req: &DeleteRequest) -> Option<Self> {
        if req.prefix {
            Some(Self::prefix(&req.key))
        } else if req.range_end == [0] {
            // etcd's "every key from `key` on"
            Some(Self::span(&req.key, b""))
        } else if !req.range_end.is_empty() {
            Some(Self::span(&req.key, &req.range_end))
        } else if req.key.is_empty() {
            None
        } else {
            Some(Self::single(&req.key))
        }
    }

    /// Whether `key` is in the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && self.end.as_deref().is_none_or(|end| key < end)
    }

    /// True for the range of all keys.
    pub(crate) fn is_everything(&self) -> bool {
        self.start.is_empty() && self.end.is_none()
    }

    /// The range as sled keys `[lo, hi)` in the key-value namespace.
    pub(crate) fn sled_bounds(&self) -> (Vec<u8>, Vec<u8>) {
        (
            codec::kv_key(&self.start),
            codec::kv_upper(self.end.as_deref()),
        )
    }
}

/// The smallest key greater than every key that starts with `prefix`: drop trailing `0xff`
/// bytes and increment the last remaining one. `None` when there is none (the prefix is empty
/// or all `0xff`), meaning "to the last key".
pub(crate) fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let keep = prefix.iter().rposition(|&b| b != 0xff)?;
    let mut end = prefix[..=keep].to_vec();
    end[keep] += 1;
    Some(end)
}
