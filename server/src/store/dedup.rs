//! Exactly-once writes: the per-client table of the last applied request.
//!
//! A client numbers its writes 1, 2, 3, … under a random `client_id` and reuses the pair when it
//! retries (`LogCommand.request_id`). A retry can reach the log twice (the first attempt did
//! commit, but the answer was lost), so the state machine, not the server, decides: for each
//! client it remembers the highest applied `sequence`, the log index of that write and the
//! encoded [`CommandResult`] it produced.
//!
//! For an incoming command with request id `(client, seq)` and remembered `(S, result)`:
//!
//! - no record, or `seq > S`: apply the command and remember `(seq, its result)`;
//! - `seq == S`: a retry of the last write: apply nothing, answer the remembered result;
//! - `seq < S`: a retry of an older write whose result is gone: apply nothing, answer a
//!   `CommandResult` with the current revision and **no `result`** ([`Check::Stale`]). The server
//!   should tell the client its request was already applied and its response is no longer
//!   known. (A client with one write in flight at a time never sees this.)
//!
//! Commands without a request id, or with `client_id == 0` or `sequence == 0`, are applied
//! every time (at-least-once).
//!
//! The table is bounded: when a new client would exceed [`MAX_CLIENTS`], the client whose last
//! write has the **lowest log index** is forgotten. That order is a function of the log alone,
//! so every replica evicts the same client; an evicted client that retries gets at-least-once
//! semantics for that retry. The table lives in the state-machine tree (namespaces `d` and `e`,
//! see `codec.rs`), is written in the same atomic batch as the command it records, and is part
//! of snapshots. It is not part of `state_hash`.
//!
//! Results are stored whole. A client whose last write was a Txn with large ranges, or a
//! prefix delete with `prev_kv`, keeps that response here until its next write.

use kvset_proto::raft::CommandResult;
use kvset_proto::v1::RequestId;
use prost::Message;
use serde::{Deserialize, Serialize};

use super::codec;
use super::error::StoreError;
use super::view::{Overlay, Scan, View};

/// Most clients remembered at once. Part of the replicated semantics: every replica must use
/// the same number, so it is a constant and not a flag.
pub const MAX_CLIENTS: u64 = 65_536;

/// What the table remembers about one client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ClientRecord {
    /// Highest applied sequence.
    pub sequence: u64,
    /// Log index of that write (the eviction order).
    pub log_index: u64,
    /// Its protobuf-encoded `CommandResult`.
    pub result: Vec<u8>,
}

/// The request id to deduplicate on, if the command has a usable one.
pub(crate) fn token(request_id: Option<&RequestId>) -> Option<(u64, u64)> {
    request_id
        .filter(|r| r.client_id != 0 && r.sequence != 0)
        .map(|r| (r.client_id, r.sequence))
}

/// How an incoming request id relates to what the table remembers.
#[derive(Debug, PartialEq)]
pub(crate) enum Check {
    /// Not seen: apply it.
    Fresh,
    /// The client's last write again: answer this result.
    Repeat(CommandResult),
    /// Older than the client's last write: answer that it was applied, result unknown.
    Stale,
}

/// Looks a request id up.
pub(crate) fn check(view: &dyn View, client_id: u64, sequence: u64) -> Result<Check, StoreError> {
    let Some(record) = load(view, client_id)? else {
        return Ok(Check::Fresh);
    };
    Ok(match sequence.cmp(&record.sequence) {
        std::cmp::Ordering::Greater => Check::Fresh,
        std::cmp::Ordering::Equal => Check::Repeat(
            CommandResult::decode(record.result.as_slice()).map_err(|e| StoreError::Corrupt {
                what: "dedup result",
                detail: e.to_string(),
            })?,
        ),
        std::cmp::Ordering::Less => Check::Stale,
    })
}

/// Remembers `(sequence, result)` as `client_id`'s last write at `log_index`, evicting the
/// least recently written client if the table would grow beyond `max_clients`.
/// `client_count` is the state machine's counter of remembered clients.
pub(crate) fn record(
    ov: &mut Overlay<'_>,
    client_count: &mut u64,
    max_clients: u64,
    client_id: u64,
    record: ClientRecord,
) -> Result<(), StoreError> {
    match load(ov, client_id)? {
        Some(old) => ov.remove(codec::evict_key(old.log_index, client_id).to_vec()),
        None => {
            while *client_count >= max_clients.max(1) {
                if !evict_oldest(ov)? {
                    break;
                }
                *client_count -= 1;
            }
            *client_count += 1;
        }
    }
    ov.put(
        codec::evict_key(record.log_index, client_id).to_vec(),
        Vec::new(),
    );
    ov.put(
        codec::client_key(client_id).to_vec(),
        codec::encode("dedup record", &record)?,
    );
    Ok(())
}

/// Every remembered client in id order (for snapshots).
pub(crate) fn all(view: &dyn View) -> Result<Vec<(u64, ClientRecord)>, StoreError> {
    let mut out = Vec::new();
    view.scan(&[codec::NS_CLIENT], &[codec::NS_CLIENT + 1], &mut |k, v| {
        let id = k
            .get(1..)
            .and_then(|b| <[u8; 8]>::try_from(b).ok())
            .map(u64::from_be_bytes)
            .ok_or_else(|| StoreError::Corrupt {
                what: "dedup key",
                detail: format!("{} bytes", k.len()),
            })?;
        out.push((id, codec::decode("dedup record", v)?));
        Ok(Scan::Continue)
    })?;
    Ok(out)
}

fn load(view: &dyn View, client_id: u64) -> Result<Option<ClientRecord>, StoreError> {
    view.get(&codec::client_key(client_id))?
        .map(|b| codec::decode("dedup record", &b))
        .transpose()
}

/// Forgets the client with the lowest last-write log index. False if the table is empty.
fn evict_oldest(ov: &mut Overlay<'_>) -> Result<bool, StoreError> {
    let mut oldest = None;
    ov.scan(&[codec::NS_EVICT], &[codec::NS_EVICT + 1], &mut |k, _| {
        oldest = Some(k.to_vec());
        Ok(Scan::Stop)
    })?;
    let Some(key) = oldest else {
        return Ok(false);
    };
    let (_, client_id) = codec::parse_evict_key(&key)?;
    ov.remove(key);
    ov.remove(codec::client_key(client_id).to_vec());
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(revision: i64) -> ClientRecord {
        ClientRecord {
            sequence: 0,
            log_index: 0,
            result: CommandResult {
                revision,
                result: None,
            }
            .encode_to_vec(),
        }
    }

    #[test]
    fn token_requires_client_and_sequence() {
        assert_eq!(token(None), None);
        let id = |client_id, sequence| RequestId {
            client_id,
            sequence,
        };
        assert_eq!(token(Some(&id(0, 5))), None);
        assert_eq!(token(Some(&id(5, 0))), None);
        assert_eq!(token(Some(&id(5, 1))), Some((5, 1)));
    }

    #[test]
    fn check_and_record() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("sm").unwrap();
        let mut ov = Overlay::new(&tree);
        let mut count = 0;
        assert_eq!(check(&ov, 7, 1).unwrap(), Check::Fresh);
        let rec = ClientRecord {
            sequence: 2,
            log_index: 10,
            ..result(4)
        };
        record(&mut ov, &mut count, 10, 7, rec).unwrap();
        assert_eq!(count, 1);
        assert_eq!(check(&ov, 7, 3).unwrap(), Check::Fresh);
        assert_eq!(check(&ov, 7, 1).unwrap(), Check::Stale);
        match check(&ov, 7, 2).unwrap() {
            Check::Repeat(r) => assert_eq!(r.revision, 4),
            other => panic!("expected a repeat, got {other:?}"),
        }
    }

    #[test]
    fn eviction_forgets_the_least_recently_written_client() {
        let db = sled::Config::new().temporary(true).open().unwrap();
        let tree = db.open_tree("sm").unwrap();
        let mut ov = Overlay::new(&tree);
        let mut count = 0;
        let at = |log_index| ClientRecord {
            sequence: 1,
            log_index,
            ..result(1)
        };
        record(&mut ov, &mut count, 3, 100, at(1)).unwrap();
        record(&mut ov, &mut count, 3, 200, at(2)).unwrap();
        record(&mut ov, &mut count, 3, 300, at(3)).unwrap();
        // client 100 writes again: it is now the most recent
        record(&mut ov, &mut count, 3, 100, at(4)).unwrap();
        assert_eq!(count, 3);
        // a fourth client evicts 200, whose last write (index 2) is the oldest
        record(&mut ov, &mut count, 3, 400, at(5)).unwrap();
        assert_eq!(count, 3);
        let ids: Vec<u64> = all(&ov).unwrap().into_iter().map(|(id, _)| id).collect();
        assert_eq!(ids, vec![100, 300, 400]);
        assert_eq!(check(&ov, 200, 1).unwrap(), Check::Fresh);
    }
}
