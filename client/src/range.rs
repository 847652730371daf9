//! Key ranges and pagination.
//!
//! A [`KeyRange`] names a set of keys in one of three ways: one key, a half-open interval
//! `[start, end)` (an empty `end` means "to the last key"), or every key under a prefix (the
//! empty prefix is every key). The same value drives `Range`, `Delete` and the operations of a
//! transaction, so "what does this cover" is decided in one place.
//!
//! # Pagination
//!
//! The server returns a range a page at a time: at most `limit` keys, `more` when keys follow,
//! and an opaque `next_cursor` to pass back for the next page. [`crate::Client::pages`] turns
//! that into a `Stream` of [`RangePage`]s and [`crate::Client::range`] into a `Stream` of
//! [`KeyValue`]s; both stop at the end of the range or after [`RangeOptions::limit`] keys. Every
//! page is a separate read with its own retries and deadline, but the server reads every page at
//! the first page's revision (the cursor carries it), so the pages together are one consistent
//! snapshot of the range. [`ReadOptions::revision`] picks that revision (a past one, within the
//! retention window); if it is compacted before the last page is read, the next page fails
//! with [`crate::Error::Compacted`]. [`RangePage::store_changed`] tells whether the store moved
//! since the first page (a server without history served each page at its own revision). The
//! stream fails with [`crate::Error::Protocol`] rather than loop
//! forever if a server hands back a cursor that does not advance.

use std::pin::Pin;

use futures::Stream;
use kvset_proto::v1 as pb;

use crate::config::ReadOptions;
use crate::error::{Error, Result};
use crate::types::{Header, KeyValue};

/// Keys per page when [`RangeOptions::page_size`] is not set.
pub const DEFAULT_PAGE_SIZE: u32 = 1000;

/// A set of keys: one key, `[start, end)`, or a prefix.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyRange {
    span: Span,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Span {
    Key(Vec<u8>),
    Between { start: Vec<u8>, end: Vec<u8> },
    Prefix(Vec<u8>),
}

impl KeyRange {
    /// Exactly one key.
    pub fn key(key: impl AsRef<[u8]>) -> KeyRange {
        KeyRange {
            span: Span::Key(key.as_ref().to_vec()),
        }
    }

    /// Every key in `[start, end)`. An empty `start` means from the first key, an empty `end`
    /// to the last key (ranges only; a delete needs an end).
    pub fn range(start: impl AsRef<[u8]>, end: impl AsRef<[u8]>) -> KeyRange {
        KeyRange {
            span: Span::Between {
                start: start.as_ref().to_vec(),
                end: end.as_ref().to_vec(),
            },
        }
    }

    /// Every key from `start` to the last key.
    pub fn starting_at(start: impl AsRef<[u8]>) -> KeyRange {
        KeyRange::range(start, [])
    }

    /// Every key that starts with `prefix`.
    pub fn prefix(prefix: impl AsRef<[u8]>) -> KeyRange {
        KeyRange {
            span: Span::Prefix(prefix.as_ref().to_vec()),
        }
    }

    /// Every key.
    pub fn all() -> KeyRange {
        KeyRange::prefix([])
    }

    /// The fields of a `RangeRequest` that select the keys.
    pub(crate) fn range_request(&self) -> pb::RangeRequest {
        let (start, end, prefix) = match &self.span {
            Span::Key(k) => {
                // The single key k is the interval [k, k\0).
                let mut end = k.clone();
                end.push(0);
                (k.clone(), end, false)
            }
            Span::Between { start, end } => (start.clone(), end.clone(), false),
            Span::Prefix(p) => (p.clone(), Vec::new(), true),
        };
        pb::RangeRequest {
            start,
            end,
            prefix,
            ..Default::default()
        }
    }

    /// The fields of a `WatchCreateRequest` that select the keys: (key, range_end, prefix).
    pub(crate) fn watch_fields(&self) -> Result<(Vec<u8>, Vec<u8>, bool)> {
        Ok(match &self.span {
            Span::Key(k) if k.is_empty() => {
                return Err(Error::InvalidArgument(
                    "the key to watch is empty; give a key, or watch a prefix (the empty prefix \
                     watches every key)"
                        .into(),
                ))
            }
            Span::Key(k) => (k.clone(), Vec::new(), false),
            Span::Between { start, end } if end.is_empty() && start.is_empty() => {
                (Vec::new(), Vec::new(), true)
            }
            // "To the last key" is the range end "\0" (etcd's convention).
            Span::Between { start, end } if end.is_empty() => (start.clone(), vec![0], false),
            Span::Between { start, end } => (start.clone(), end.clone(), false),
            Span::Prefix(p) => (p.clone(), Vec::new(), true),
        })
    }

    /// The fields of a `DeleteRequest` that select the keys.
    pub(crate) fn delete_request(&self) -> Result<pb::DeleteRequest> {
        let (key, range_end, prefix) = match &self.span {
            Span::Key(k) if k.is_empty() => {
                return Err(Error::InvalidArgument("the key to delete is empty".into()))
            }
            Span::Key(k) => (k.clone(), Vec::new(), false),
            Span::Between { end, .. } if end.is_empty() => {
                return Err(Error::InvalidArgument(
                    "a delete needs the end of the range; to delete everything from a key on, \
                     delete by prefix or give an end key"
                        .into(),
                ))
            }
            Span::Between { start, end } => (start.clone(), end.clone(), false),
            Span::Prefix(p) => (p.clone(), Vec::new(), true),
        };
        Ok(pb::DeleteRequest {
            key,
            range_end,
            prefix,
            ..Default::default()
        })
    }
}

/// Options of a range read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RangeOptions {
    /// Consistency, member pin and per-page timeout.
    pub read: ReadOptions,
    /// Keys per page (0 lets the server use its maximum). Default [`DEFAULT_PAGE_SIZE`].
    pub page_size: u32,
    /// Stop after this many keys in total.
    pub limit: Option<u64>,
    /// Leave values out.
    pub keys_only: bool,
}

impl Default for RangeOptions {
    fn default() -> RangeOptions {
        RangeOptions {
            read: ReadOptions::default(),
            page_size: DEFAULT_PAGE_SIZE,
            limit: None,
            keys_only: false,
        }
    }
}

impl RangeOptions {
    /// Defaults: linearizable, pages of [`DEFAULT_PAGE_SIZE`], no limit, with values.
    pub fn new() -> RangeOptions {
        RangeOptions::default()
    }

    /// Sets the read options (consistency, pin, per-page timeout).
    pub fn read(mut self, read: ReadOptions) -> RangeOptions {
        self.read = read;
        self
    }

    /// Sets the page size.
    pub fn page_size(mut self, page_size: u32) -> RangeOptions {
        self.page_size = page_size;
        self
    }

    /// Caps the total number of keys.
    pub fn limit(mut self, limit: u64) -> RangeOptions {
        self.limit = Some(limit);
        self
    }

    /// Leaves values out.
    pub fn keys_only(mut self) -> RangeOptions {
        self.keys_only = true;
        self
    }
}

/// One page of a range.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangePage {
    /// Who served the page and at which revision.
    pub header: Header,
    /// The keys of this page, ascending.
    pub kvs: Vec<KeyValue>,
    /// True when more keys follow in the range (whether or not the stream will fetch them).
    pub more: bool,
    /// The cursor of the next page; empty when `more` is false.
    pub next_cursor: Vec<u8>,
    /// Keys in the whole range at this page's revision.
    pub count: i64,
    /// The revision of the first page of this listing.
    pub first_page_revision: i64,
}

impl RangePage {
    /// True when the store changed between the first page and this one.
    pub fn store_changed(&self) -> bool {
        self.first_page_revision != 0 && self.first_page_revision != self.header.revision
    }

    pub(crate) fn from_pb(r: pb::RangeResponse) -> RangePage {
        RangePage {
            header: Header::from_pb(r.header),
            kvs: r.kvs.into_iter().map(KeyValue::from).collect(),
            more: r.more,
            next_cursor: r.next_cursor,
            count: r.count,
            first_page_revision: r.first_page_revision,
        }
    }
}

/// A stream of range pages.
pub type PageStream = Pin<Box<dyn Stream<Item = Result<RangePage>> + Send>>;

/// A stream of keys.
pub type KvStream = Pin<Box<dyn Stream<Item = Result<KeyValue>> + Send>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_map_to_requests() {
        let r = KeyRange::key("a").range_request();
        assert_eq!(
            (r.start, r.end, r.prefix),
            (b"a".to_vec(), b"a\0".to_vec(), false)
        );
        let r = KeyRange::prefix("p/").range_request();
        assert_eq!((r.start, r.end, r.prefix), (b"p/".to_vec(), vec![], true));
        let r = KeyRange::starting_at("m").range_request();
        assert_eq!((r.start, r.end), (b"m".to_vec(), vec![]));
        let d = KeyRange::range("a", "c").delete_request().unwrap();
        assert_eq!(
            (d.key, d.range_end, d.prefix),
            (b"a".to_vec(), b"c".to_vec(), false)
        );
        let d = KeyRange::all().delete_request().unwrap();
        assert!(d.prefix && d.key.is_empty());
        assert!(KeyRange::starting_at("a").delete_request().is_err());
        assert!(KeyRange::key("").delete_request().is_err());
    }
}
