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
//! semantics for that retry. The records live in the state-machine tree (namespace `d`, see
//! `codec.rs`), are written in the same atomic batch as the command they record, and are part
//! of snapshots. They are not part of `state_hash`.
//!
//! The eviction order is kept in memory ([`EvictionOrder`]), not in sled: it is a function of the
//! records (each holds its log index), rebuilt from them when the store opens or installs a
//! snapshot. Keeping it in sled cost two more sled writes per write (remove the old position,
//! insert the new one), which was half of the state machine's sled work under write load.
//! `apply` changes it through an [`OrderTxn`], which undoes its changes unless the batch they
//! belong to was written.
//!
//! Results are stored whole. A client whose last write was a Txn with large ranges, or a
//! prefix delete with `prev_kv`, keeps that response here until its next write.

use std::collections::BTreeSet;

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

/// What the table says about an incoming request id.
#[derive(Debug, PartialEq)]
pub(crate) struct Lookup {
    /// How the request relates to the client's last write.
    pub check: Check,
    /// The log index of the client's remembered write, if it has one (its eviction position).
    pub remembered_at: Option<u64>,
}

/// Looks a request id up.
pub(crate) fn check(view: &dyn View, client_id: u64, sequence: u64) -> Result<Lookup, StoreError> {
    let Some(record) = load(view, client_id)? else {
        return Ok(Lookup {
            check: Check::Fresh,
            remembered_at: None,
        });
    };
    let check = match sequence.cmp(&record.sequence) {
        std::cmp::Ordering::Greater => Check::Fresh,
        std::cmp::Ordering::Equal => Check::Repeat(
            CommandResult::decode(record.result.as_slice()).map_err(|e| StoreError::Corrupt {
                what: "dedup result",
                detail: e.to_string(),
            })?,
        ),
        std::cmp::Ordering::Less => Check::Stale,
    };
    Ok(Lookup {
        check,
        remembered_at: Some(record.log_index),
    })
}

/// Remembers `(sequence, result)` as `client_id`'s last write at `record.log_index`, evicting
/// the least recently written clients while the table would grow beyond `max_clients`.
/// `remembered_at` is what [`check`] said about this client; `client_count` is the state
/// machine's counter of remembered clients.
pub(crate) fn record(
    ov: &mut Overlay<'_>,
    order: &mut OrderTxn<'_>,
    client_count: &mut u64,
    max_clients: u64,
    client_id: u64,
    remembered_at: Option<u64>,
    record: ClientRecord,
) -> Result<(), StoreError> {
    match remembered_at {
        Some(at) => order.remove(at, client_id),
        None => {
            while *client_count >= max_clients.max(1) {
                let Some((_, evicted)) = order.pop_oldest() else {
                    break;
                };
                ov.remove(codec::client_key(evicted).to_vec());
                *client_count -= 1;
            }
            *client_count += 1;
        }
    }
    order.insert(record.log_index, client_id);
    ov.put(
        codec::client_key(client_id).to_vec(),
        codec::encode("dedup record", &record)?,
    );
    Ok(())
}

/// Clients ordered by the log index of their last write: who is evicted next.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct EvictionOrder {
    by_index: BTreeSet<(u64, u64)>,
}

impl EvictionOrder {
    /// The order of every client in `view`'s table.
    pub(crate) fn load(view: &dyn View) -> Result<Self, StoreError> {
        Ok(Self::of(&all(view)?))
    }

    /// The order of these records.
    pub(crate) fn of(clients: &[(u64, ClientRecord)]) -> Self {
        Self {
            by_index: clients.iter().map(|(id, r)| (r.log_index, *id)).collect(),
        }
    }

    /// Starts a set of changes that is undone unless committed.
    pub(crate) fn begin(&mut self) -> OrderTxn<'_> {
        OrderTxn {
            order: self,
            undo: Vec::new(),
        }
    }
}

/// Changes to an [`EvictionOrder`] that belong to one apply batch. Dropped without
/// [`OrderTxn::commit`], it puts the order back as it was.
pub(crate) struct OrderTxn<'a> {
    order: &'a mut EvictionOrder,
    /// (inserted?, entry) for every change, in order.
    undo: Vec<(bool, (u64, u64))>,
}

impl OrderTxn<'_> {
    fn insert(&mut self, log_index: u64, client_id: u64) {
        if self.order.by_index.insert((log_index, client_id)) {
            self.undo.push((true, (log_index, client_id)));
        }
    }

    fn remove(&mut self, log_index: u64, client_id: u64) {
        if self.order.by_index.remove(&(log_index, client_id)) {
            self.undo.push((false, (log_index, client_id)));
        }
    }

    fn pop_oldest(&mut self) -> Option<(u64, u64)> {
        let oldest = self.order.by_index.pop_first()?;
        self.undo.push((false, oldest));
        Some(oldest)
    }

    /// Keeps the changes.
    pub(crate) fn commit(mut self) {
        self.undo.clear();
    }
}

impl Drop for OrderTxn<'_> {
    fn drop(&mut self) {
        for (inserted, entry) in self.undo.drain(..).rev() {
            if inserted {
                self.order.by_index.remove(&entry);
            } else {
                self.order.by_index.insert(entry);
            }
        }
    }
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

    fn sm_tree() -> sled::Tree {
        let db = sled::Config::new().temporary(true).open().unwrap();
        db.open_tree("sm").unwrap()
    }

    /// Records a write of `client_id` at `log_index`, the way apply does.
    fn write(
        ov: &mut Overlay<'_>,
        order: &mut EvictionOrder,
        count: &mut u64,
        max: u64,
        client_id: u64,
        log_index: u64,
    ) {
        let seen = check(ov, client_id, log_index).unwrap();
        let mut txn = order.begin();
        let rec = ClientRecord {
            sequence: log_index,
            log_index,
            ..result(1)
        };
        record(ov, &mut txn, count, max, client_id, seen.remembered_at, rec).unwrap();
        txn.commit();
    }

    #[test]
    fn check_and_record() {
        let tree = sm_tree();
        let mut ov = Overlay::new(&tree);
        let mut order = EvictionOrder::default();
        let mut count = 0;
        assert_eq!(
            check(&ov, 7, 1).unwrap(),
            Lookup {
                check: Check::Fresh,
                remembered_at: None
            }
        );
        let rec = ClientRecord {
            sequence: 2,
            log_index: 10,
            ..result(4)
        };
        let mut txn = order.begin();
        record(&mut ov, &mut txn, &mut count, 10, 7, None, rec).unwrap();
        txn.commit();
        assert_eq!(count, 1);
        assert_eq!(check(&ov, 7, 3).unwrap().check, Check::Fresh);
        assert_eq!(check(&ov, 7, 3).unwrap().remembered_at, Some(10));
        assert_eq!(check(&ov, 7, 1).unwrap().check, Check::Stale);
        match check(&ov, 7, 2).unwrap().check {
            Check::Repeat(r) => assert_eq!(r.revision, 4),
            other => panic!("expected a repeat, got {other:?}"),
        }
    }

    #[test]
    fn eviction_forgets_the_least_recently_written_client() {
        let tree = sm_tree();
        let mut ov = Overlay::new(&tree);
        let mut order = EvictionOrder::default();
        let mut count = 0;
        write(&mut ov, &mut order, &mut count, 3, 100, 1);
        write(&mut ov, &mut order, &mut count, 3, 200, 2);
        write(&mut ov, &mut order, &mut count, 3, 300, 3);
        // client 100 writes again: it is now the most recent
        write(&mut ov, &mut order, &mut count, 3, 100, 4);
        assert_eq!(count, 3);
        // a fourth client evicts 200, whose last write (index 2) is the oldest
        write(&mut ov, &mut order, &mut count, 3, 400, 5);
        assert_eq!(count, 3);
        let ids: Vec<u64> = all(&ov).unwrap().into_iter().map(|(id, _)| id).collect();
        assert_eq!(ids, vec![100, 300, 400]);
        assert_eq!(check(&ov, 200, 1).unwrap().check, Check::Fresh);
        // The in-memory order is exactly the order rebuilt from the records.
        assert_eq!(order, EvictionOrder::load(&ov).unwrap());
    }

    #[test]
    fn uncommitted_changes_to_the_order_are_undone() {
        let tree = sm_tree();
        let mut ov = Overlay::new(&tree);
        let mut order = EvictionOrder::default();
        let mut count = 0;
        write(&mut ov, &mut order, &mut count, 2, 1, 1);
        write(&mut ov, &mut order, &mut count, 2, 2, 2);
        let before = order.clone();
        {
            // a batch that evicts, moves and adds, then fails before it is written
            let mut txn = order.begin();
            let rec = |log_index| ClientRecord {
                sequence: 1,
                log_index,
                ..result(1)
            };
            let mut scratch = Overlay::new(&tree);
            let mut c = count;
            record(&mut scratch, &mut txn, &mut c, 2, 3, None, rec(3)).unwrap();
            record(&mut scratch, &mut txn, &mut c, 2, 2, Some(2), rec(4)).unwrap();
        }
        assert_eq!(order, before);
    }
}
