//! Opaque range cursors.
//!
//! A cursor says where the next page starts (right after the last key of the previous page)
//! and remembers the revision of the first page, so every later page is read at that same
//! revision (one consistent snapshot of the range, from the history) and reports it as
//! `first_page_revision`. It also carries a 64-bit fingerprint of the range it belongs to
//! (`start`, `end`, `prefix`), so a cursor passed with a different range is refused instead of
//! silently skipping keys. Clients must treat the bytes as opaque; the leading format byte
//! leaves room to change them.
//!
//! Layout: format byte `1`, then postcard of [`Cursor`].

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use kvset_proto::v1::RangeRequest;

use super::codec;
use super::error::StoreError;

const CURSOR_FORMAT: u8 = 1;

/// Where a pagination stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Cursor {
    /// The last key of the previous page; the next page starts after it.
    pub after: Vec<u8>,
    /// The revision of the first page.
    pub first_page_revision: i64,
    /// Fingerprint of the range's start / end / prefix.
    pub range: u64,
}

impl Cursor {
    /// The bytes handed to the client.
    pub(crate) fn encode(&self) -> Result<Vec<u8>, StoreError> {
        let mut out = vec![CURSOR_FORMAT];
        out.extend(codec::encode("range cursor", self)?);
        Ok(out)
    }

    /// Parses a cursor and checks that it belongs to `req`'s range.
    pub(crate) fn decode_for(req: &RangeRequest) -> Result<Self, StoreError> {
        let bytes = req.cursor.as_slice();
        let (&format, body) = bytes
            .split_first()
            .ok_or_else(|| StoreError::InvalidCursor("the cursor is empty".into()))?;
        if format != CURSOR_FORMAT {
            return Err(StoreError::InvalidCursor(
                "not a cursor returned by this server (unknown format); pass back next_cursor \
                 unchanged"
                    .into(),
            ));
        }
        let cursor: Cursor = postcard::from_bytes(body).map_err(|_| {
            StoreError::InvalidCursor(
                "the cursor is damaged; pass back next_cursor unchanged".into(),
            )
        })?;
        if cursor.range != fingerprint(req) {
            return Err(StoreError::InvalidCursor(
                "the cursor belongs to another range; a cursor is only valid with the same \
                 start, end and prefix as the request that returned it"
                    .into(),
            ));
        }
        Ok(cursor)
    }
}

/// A 64-bit fingerprint of the range a request names.
pub(crate) fn fingerprint(req: &RangeRequest) -> u64 {
    let mut h = Sha256::new();
    h.update((req.start.len() as u64).to_be_bytes());
    h.update(&req.start);
    h.update((req.end.len() as u64).to_be_bytes());
    h.update(&req.end);
    h.update([u8::from(req.prefix)]);
    let digest = h.finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_are_bound_to_their_range() {
        let mut req = RangeRequest {
            start: b"a".to_vec(),
            prefix: true,
            ..Default::default()
        };
        let c = Cursor {
            after: b"ab".to_vec(),
            first_page_revision: 12,
            range: fingerprint(&req),
        };
        req.cursor = c.encode().unwrap();
        assert_eq!(Cursor::decode_for(&req).unwrap(), c);

        let mut other = req.clone();
        other.prefix = false;
        assert!(matches!(
            Cursor::decode_for(&other),
            Err(StoreError::InvalidCursor(_))
        ));
        let mut damaged = req.clone();
        damaged.cursor.truncate(3);
        assert!(matches!(
            Cursor::decode_for(&damaged),
            Err(StoreError::InvalidCursor(_))
        ));
        damaged.cursor = vec![9, 9];
        assert!(matches!(
            Cursor::decode_for(&damaged),
            Err(StoreError::InvalidCursor(_))
        ));
        // start "ab" + end "" vs start "a" + end "b" must differ (length-prefixed)
        let a = RangeRequest {
            start: b"ab".to_vec(),
            ..Default::default()
        };
        let b = RangeRequest {
            start: b"a".to_vec(),
            end: b"b".to_vec(),
            ..Default::default()
        };
        assert_ne!(fingerprint(&a), fingerprint(&b));
    }
}
