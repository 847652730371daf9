//! The key-value semantics: what a Put, Delete, Range and Txn mean (kvset.proto is the contract).
//!
//! Everything here is a pure function of a [`View`] and the command, so the result is the same
//! on every replica that applied the same log (the state machine's determinism rests on it):
//! no clocks, no randomness, no node configuration. Writes go to an [`Overlay`], never to sled.
//!
//! Revisions: the store has one global revision. A command that writes anything bumps it by
//! exactly one, and all its writes carry that revision as `mod_revision` (a Txn with ten puts is
//! one revision). A command that writes nothing (a delete that matched no key, a Txn whose
//! branch only reads or is empty) leaves it unchanged. Per key: `create_revision` is the revision
//! of the put that created it after it was absent, `version` counts puts since then (1 after
//! the first), and a delete forgets the key entirely, so a later put starts over with a new
//! `create_revision` and version 1.
//!
//! History: every change a command makes is also recorded at its revision (`history.rs`), with
//! the key's record before and after, in the same overlay, so history and state never disagree.
//! Leases: a put that names a lease attaches the key to it (`lease.rs`); a command that names a
//! lease that does not exist is refused as a whole before it writes anything (for a Txn, the
//! leases of both branches are checked, so the refusal does not depend on the compares).
//!
//! Commands that the API layer should have refused (empty put key, a compare whose operand
//! does not match its target, unknown enum values, `prefix` together with `range_end`) still get
//! a deterministic meaning here instead of an error, because an error while applying would stop
//! the node: such a put writes nothing, such a compare is false, and `prefix` wins over
//! `range_end`.

use std::cmp::Ordering;

use kvset_proto::raft::{command_refusal, log_command::Command, CommandRefusal, CommandResult};
use kvset_proto::v1::{
    compare, request_op, response_op, CompactRequest, CompactResponse, Compare, DeleteRequest,
    DeleteResponse, KeyValue, LeaseGrantRequest, LeaseGrantResponse, LeaseRevokeResponse,
    PutRequest, PutResponse, RangeRequest, RangeResponse, ResponseOp, TxnRequest, TxnResponse,
};

use super::codec::{self, KvRecord};
use super::error::StoreError;
use super::history::{self, StoredEvent};
#[cfg(test)]
use super::keyrange::prefix_end;
pub use super::keyrange::KeyRange;
use super::lease::{self, LeaseRecord};
use super::meta::SmMeta;
use super::view::{Overlay, Scan, View};

/// Page size of a Range inside a Txn whose `limit` is 0. A constant, not the server's
/// `--max-range-limit`: the result of applying a command must not depend on a node's flags.
pub const TXN_RANGE_DEFAULT_LIMIT: usize = 10_000;

// ---------------------------------------------------------------------------------------------
// Reads

/// One key, or `None` when it is absent.
pub(crate) fn get(view: &dyn View, key: &[u8]) -> Result<Option<KeyValue>, StoreError> {
    if key.is_empty() {
        return Ok(None);
    }
    view.get(&codec::kv_key(key))?
        .map(|bytes| codec::key_value(key, &bytes, false))
        .transpose()
}

/// A page of a range read.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Page {
    /// At most `limit` keys, ascending.
    pub kvs: Vec<KeyValue>,
    /// True when keys follow the page.
    pub more: bool,
    /// Number of keys in the whole range (before and after the page too).
    pub count: u64,
}

/// Reads up to `limit` keys of `range` that sort after `after` (the previous page's last key).
///
/// `count` needs a scan of the whole range; `known_count` skips it when the caller already
/// knows the answer (the number of all keys, for the range of everything).
pub(crate) fn page(
    view: &dyn View,
    range: &KeyRange,
    after: Option<&[u8]>,
    limit: usize,
    keys_only: bool,
    known_count: Option<u64>,
) -> Result<Page, StoreError> {
    let (lo, hi) = range.sled_bounds();
    // The first sled key the page may contain: right after the cursor's key.
    let page_lo = match after {
        Some(after) => {
            let mut k = codec::kv_key(after);
            k.push(0);
            k.max(lo.clone())
        }
        None => lo.clone(),
    };
    let mut page = Page::default();
    let push = |page: &mut Page, k: &[u8], v: &[u8]| -> Result<Scan, StoreError> {
        if page.kvs.len() < limit {
            page.kvs
                .push(codec::key_value(codec::user_key(k), v, keys_only)?);
        } else {
            page.more = true;
        }
        Ok(Scan::Continue)
    };
    match known_count {
        Some(count) => {
            page.count = count;
            view.scan(&page_lo, &hi, &mut |k, v| {
                push(&mut page, k, v)?;
                Ok(if page.more {
                    Scan::Stop
                } else {
                    Scan::Continue
                })
            })?;
        }
        None => view.scan(&lo, &hi, &mut |k, v| {
            page.count += 1;
            if k >= page_lo.as_slice() {
                push(&mut page, k, v)?;
            }
            Ok(Scan::Continue)
        })?,
    }
    Ok(page)
}

// ---------------------------------------------------------------------------------------------
// Compares

/// Whether `compare` holds for the key's current record (`None`: the key is absent), exactly as
/// kvset.proto defines it: VALUE compares bytes and is false for every op on an absent key;
/// VERSION / CREATE_REVISION / MOD_REVISION treat an absent key as 0; EXISTS supports only
/// EQUAL and NOT_EQUAL. A missing or mismatched operand, or an unknown target or op, is false.
pub(crate) fn compare_holds(current: Option<&KvRecord>, c: &Compare) -> bool {
    use compare::{Op, Operand, Target};
    let (Ok(target), Ok(op)) = (Target::try_from(c.target), Op::try_from(c.op)) else {
        return false;
    };
    let number = |f: fn(&KvRecord) -> i64| current.map_or(0, f);
    let ordering = match (target, &c.operand) {
        (Target::Value, Some(Operand::Value(want))) => match current {
            Some(r) => r.value.as_slice().cmp(want.as_slice()),
            None => return false,
        },
        (Target::Version, Some(Operand::Version(want))) => number(|r| r.version).cmp(want),
        (Target::CreateRevision, Some(Operand::CreateRevision(want))) => {
            number(|r| r.create_revision).cmp(want)
        }
        (Target::ModRevision, Some(Operand::ModRevision(want))) => {
            number(|r| r.mod_revision).cmp(want)
        }
        (Target::Lease, Some(Operand::Lease(want))) => number(|r| r.lease).cmp(want),
        (Target::Exists, Some(Operand::Exists(want))) => {
            return match op {
                Op::Equal => current.is_some() == *want,
                Op::NotEqual => current.is_some() != *want,
                Op::Greater | Op::Less => false,
            };
        }
        _ => return false,
    };
    match op {
        Op::Equal => ordering == Ordering::Equal,
        Op::NotEqual => ordering != Ordering::Equal,
        Op::Greater => ordering == Ordering::Greater,
        Op::Less => ordering == Ordering::Less,
    }
}

// ---------------------------------------------------------------------------------------------
// Writes

/// Applies one command to the overlay and updates the counters in `meta` (revision, key
/// count, compact revision, lease ids). Returns the command's result (headers left empty).
///
/// A [`Command::Batch`] or [`Command::Alarm`] is not a key-value command: the state machine
/// unpacks batches and applies alarms itself, so receiving one is an error.
pub(crate) fn execute(
    ov: &mut Overlay<'_>,
    meta: &mut SmMeta,
    command: &Command,
) -> Result<CommandResult, StoreError> {
    use kvset_proto::raft::command_result::Result as R;
    match command {
        Command::LeaseGrant(req) => return grant(ov, meta, req),
        Command::Compact(req) => return compact(ov, meta, req),
        Command::Batch(_) | Command::Alarm(_) => {
            return Err(StoreError::Corrupt {
                what: "log command",
                detail: "a command the state machine handles itself reached the key-value executor"
                    .into(),
            })
        }
        _ => {}
    }
    if let Some(id) = missing_lease(ov, command)? {
        return Ok(refused(
            meta.revision,
            command_refusal::Kind::NotFound,
            format!(
                "lease {id} does not exist (expired or revoked?): grant a new lease and use its id"
            ),
        ));
    }
    if let Some(key) = missing_kept_key(ov, command)? {
        return Ok(refused(
            meta.revision,
            command_refusal::Kind::NotFound,
            format!(
                "key {} does not exist: ignore_value and ignore_lease keep what an existing key \
                 has, so the key must exist",
                String::from_utf8_lossy(&key)
            ),
        ));
    }
    let mut exec = Exec {
        ov,
        key_count: &mut meta.key_count,
        rev: meta.revision + 1,
        wrote: false,
        sub: 0,
    };
    let result = match command {
        Command::Put(req) => R::Put(exec.put(req)?),
        Command::Delete(req) => R::Delete(exec.delete(req)?),
        Command::Txn(req) => R::Txn(exec.txn(req)?),
        Command::LeaseRevoke(req) => {
            if lease::get(&*exec.ov, req.id)?.is_none() {
                return Ok(refused(
                    meta.revision,
                    command_refusal::Kind::NotFound,
                    format!(
                        "lease {} does not exist (expired or already revoked)",
                        req.id
                    ),
                ));
            }
            exec.revoke(req.id)?;
            R::LeaseRevoke(LeaseRevokeResponse { header: None })
        }
        Command::LeaseGrant(_) | Command::Compact(_) | Command::Batch(_) | Command::Alarm(_) => {
            unreachable!("handled above")
        }
    };
    if exec.wrote {
        meta.revision = exec.rev;
    }
    Ok(CommandResult {
        revision: meta.revision,
        result: Some(result),
    })
}

/// A result saying the command was refused and wrote nothing.
fn refused(revision: i64, kind: command_refusal::Kind, message: String) -> CommandResult {
    CommandResult {
        revision,
        result: Some(kvset_proto::raft::command_result::Result::Refused(
            CommandRefusal {
                kind: kind as i32,
                message,
            },
        )),
    }
}

/// The first lease a put of `command` names that does not exist (both branches of a Txn).
fn missing_lease(view: &dyn View, command: &Command) -> Result<Option<i64>, StoreError> {
    let leases = puts(command)
        .into_iter()
        .filter(|p| !p.ignore_lease)
        .map(|p| p.lease);
    for id in leases.filter(|&id| id != 0) {
        if lease::get(view, id)?.is_none() {
            return Ok(Some(id));
        }
    }
    Ok(None)
}

/// The puts of `command` (both branches of a Txn).
fn puts(command: &Command) -> Vec<&PutRequest> {
    match command {
        Command::Put(p) => vec![p],
        Command::Txn(t) => t
            .success
            .iter()
            .chain(&t.failure)
            .filter_map(|op| match &op.request {
                Some(request_op::Request::Put(p)) => Some(p),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The first key a put of `command` with `ignore_value` or `ignore_lease` names that does not
/// exist before the command (both branches of a Txn are checked against the state before it).
fn missing_kept_key(view: &dyn View, command: &Command) -> Result<Option<Vec<u8>>, StoreError> {
    for p in puts(command) {
        if (p.ignore_value || p.ignore_lease) && view.get(&codec::kv_key(&p.key))?.is_none() {
            return Ok(Some(p.key.clone()));
        }
    }
    Ok(None)
}

/// Creates a lease. Does not change the revision (no key changes).
fn grant(
    ov: &mut Overlay<'_>,
    meta: &mut SmMeta,
    req: &LeaseGrantRequest,
) -> Result<CommandResult, StoreError> {
    use kvset_proto::raft::command_result::Result as R;
    let id = match req.id {
        0 => meta.max_lease_id.saturating_add(1),
        id if id < 0 => {
            return Ok(refused(
                meta.revision,
                command_refusal::Kind::OutOfRange,
                format!("lease id {id} is negative; use a positive id or 0 to get a fresh one"),
            ))
        }
        id => id,
    };
    if lease::get(&*ov, id)?.is_some() {
        return Ok(refused(
            meta.revision,
            command_refusal::Kind::AlreadyExists,
            format!("lease {id} already exists; pick another id or 0 to get a fresh one"),
        ));
    }
    lease::put(ov, id, LeaseRecord { ttl: req.ttl })?;
    meta.max_lease_id = meta.max_lease_id.max(id);
    Ok(CommandResult {
        revision: meta.revision,
        result: Some(R::LeaseGrant(LeaseGrantResponse {
            header: None,
            id,
            ttl: req.ttl,
        })),
    })
}

/// Forgets the history at and below the requested revision. Does not change the revision.
fn compact(
    ov: &mut Overlay<'_>,
    meta: &mut SmMeta,
    req: &CompactRequest,
) -> Result<CommandResult, StoreError> {
    use kvset_proto::raft::command_result::Result as R;
    if req.revision > meta.revision {
        return Ok(refused(
            meta.revision,
            command_refusal::Kind::OutOfRange,
            format!(
                "cannot compact to revision {}: it is a future revision; the current revision is {}",
                req.revision, meta.revision
            ),
        ));
    }
    if req.revision <= meta.compact_revision {
        return Ok(refused(
            meta.revision,
            command_refusal::Kind::OutOfRange,
            format!(
                "revision {} is already compacted; the compact revision is {}",
                req.revision, meta.compact_revision
            ),
        ));
    }
    history::compact(ov, meta.compact_revision, req.revision)?;
    meta.compact_revision = req.revision;
    Ok(CommandResult {
        revision: meta.revision,
        result: Some(R::Compact(CompactResponse {
            header: None,
            compact_revision: meta.compact_revision,
        })),
    })
}

/// One command in progress: the revision its writes get and whether it wrote yet.
struct Exec<'a, 't> {
    ov: &'a mut Overlay<'t>,
    key_count: &'a mut u64,
    /// The revision this command's writes carry (current revision + 1).
    rev: i64,
    wrote: bool,
    /// The number of changes recorded at `rev` so far (each key changed is one).
    sub: u32,
}

impl Exec<'_, '_> {
    /// The revision a read inside this command observes.
    fn visible_revision(&self) -> i64 {
        if self.wrote {
            self.rev
        } else {
            self.rev - 1
        }
    }

    fn record(&self, key: &[u8]) -> Result<Option<KvRecord>, StoreError> {
        if key.is_empty() {
            return Ok(None);
        }
        self.ov
            .get(&codec::kv_key(key))?
            .map(|b| KvRecord::decode(&b))
            .transpose()
    }

    /// Records one change at this command's revision (see `history.rs`).
    fn change(&mut self, event: StoredEvent) -> Result<(), StoreError> {
        history::record(self.ov, self.rev, self.sub, &event)?;
        self.sub += 1;
        self.wrote = true;
        Ok(())
    }

    /// Deletes one existing key whose stored record is `before`, with its history and lease
    /// attachment.
    fn remove_key(&mut self, key: &[u8], before: Vec<u8>) -> Result<(), StoreError> {
        let leased = codec::KvHeader::decode(&before)?.lease;
        if leased != 0 {
            lease::detach(self.ov, leased, key);
        }
        self.ov.remove(codec::kv_key(key));
        *self.key_count = self.key_count.saturating_sub(1);
        self.change(StoredEvent {
            key: key.to_vec(),
            after: None,
            before: Some(before),
        })
    }

    fn put(&mut self, req: &PutRequest) -> Result<PutResponse, StoreError> {
        if req.key.is_empty() {
            return Ok(PutResponse::default());
        }
        let before = self.ov.get(&codec::kv_key(&req.key))?;
        let old = before.as_deref().map(KvRecord::decode).transpose()?;
        let new = KvRecord {
            create_revision: old.as_ref().map_or(self.rev, |o| o.create_revision),
            mod_revision: self.rev,
            version: old.as_ref().map_or(1, |o| o.version + 1),
            lease: match (&old, req.ignore_lease) {
                (Some(o), true) => o.lease,
                _ => req.lease,
            },
            value: match (&old, req.ignore_value) {
                (Some(o), true) => o.value.clone(),
                _ => req.value.clone(),
            },
        };
        if old.is_none() {
            *self.key_count += 1;
        }
        let old_lease = old.as_ref().map_or(0, |o| o.lease);
        if old_lease != new.lease {
            if old_lease != 0 {
                lease::detach(self.ov, old_lease, &req.key);
            }
            if new.lease != 0 {
                lease::attach(self.ov, new.lease, &req.key);
            }
        }
        let after = new.encode();
        self.ov.put(codec::kv_key(&req.key), after.clone());
        self.change(StoredEvent {
            key: req.key.clone(),
            after: Some(after),
            before,
        })?;
        Ok(PutResponse {
            header: None,
            prev_kv: old
                .filter(|_| req.prev_kv)
                .map(|o| o.to_key_value(&req.key, false)),
        })
    }

    fn delete(&mut self, req: &DeleteRequest) -> Result<DeleteResponse, StoreError> {
        let Some(range) = KeyRange::of_delete(req) else {
            return Ok(DeleteResponse::default());
        };
        let (lo, hi) = range.sled_bounds();
        let mut doomed: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut prev_kvs = Vec::new();
        self.ov.scan(&lo, &hi, &mut |k, v| {
            if req.prev_kv {
                prev_kvs.push(codec::key_value(codec::user_key(k), v, false)?);
            }
            doomed.push((codec::user_key(k).to_vec(), v.to_vec()));
            Ok(Scan::Continue)
        })?;
        let deleted = doomed.len();
        for (key, before) in doomed {
            self.remove_key(&key, before)?;
        }
        Ok(DeleteResponse {
            header: None,
            deleted: deleted as i64,
            prev_kvs,
        })
    }

    /// Deletes every key attached to lease `id` (in this command's one revision) and the lease.
    fn revoke(&mut self, id: i64) -> Result<(), StoreError> {
        for key in lease::keys(&*self.ov, id)? {
            // An attachment always has its key (both change in the same batch); skip defensively
            // rather than fail the node if one ever does not.
            if let Some(before) = self.ov.get(&codec::kv_key(&key))? {
                self.remove_key(&key, before)?;
            }
        }
        lease::remove(self.ov, id);
        Ok(())
    }

    fn range(&self, req: &RangeRequest) -> Result<RangeResponse, StoreError> {
        let range = KeyRange::of_range(req);
        let limit = if req.limit > 0 {
            usize::try_from(req.limit).unwrap_or(usize::MAX)
        } else {
            TXN_RANGE_DEFAULT_LIMIT
        };
        let known = range.is_everything().then_some(*self.key_count);
        let page = page(&*self.ov, &range, None, limit, req.keys_only, known)?;
        Ok(RangeResponse {
            header: None,
            kvs: page.kvs,
            more: page.more,
            next_cursor: Vec::new(),
            count: page.count as i64,
            first_page_revision: self.visible_revision(),
        })
    }

    fn txn(&mut self, req: &TxnRequest) -> Result<TxnResponse, StoreError> {
        let mut succeeded = true;
        for c in &req.compares {
            if !compare_holds(self.record(&c.key)?.as_ref(), c) {
                succeeded = false;
                break;
            }
        }
        let branch = if succeeded {
            &req.success
        } else {
            &req.failure
        };
        let mut responses = Vec::with_capacity(branch.len());
        for op in branch {
            let response = match &op.request {
                Some(request_op::Request::Put(p)) => Some(response_op::Response::Put(self.put(p)?)),
                Some(request_op::Request::Delete(d)) => {
                    Some(response_op::Response::Delete(self.delete(d)?))
                }
                Some(request_op::Request::Range(r)) => {
                    Some(response_op::Response::Range(self.range(r)?))
                }
                None => None,
            };
            responses.push(ResponseOp { response });
        }
        Ok(TxnResponse {
            header: None,
            succeeded,
            responses,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use compare::{Op, Operand, Target};

    #[test]
    fn prefix_end_handles_0xff() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[0x61, 0xff]), Some(vec![0x62]));
        assert_eq!(prefix_end(&[0x01, 0xff, 0xff]), Some(vec![0x02]));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        assert_eq!(prefix_end(b""), None);
    }

    #[test]
    fn delete_ranges() {
        let d = |key: &[u8], end: &[u8], prefix| DeleteRequest {
            key: key.to_vec(),
            range_end: end.to_vec(),
            prefix,
            ..Default::default()
        };
        assert_eq!(KeyRange::of_delete(&d(b"", b"", false)), None);
        assert!(KeyRange::of_delete(&d(b"", b"", true))
            .unwrap()
            .is_everything());
        assert_eq!(
            KeyRange::of_delete(&d(b"a", b"", false)),
            Some(KeyRange::single(b"a"))
        );
        assert_eq!(
            KeyRange::of_delete(&d(b"a", b"c", false)),
            Some(KeyRange::span(b"a", b"c"))
        );
        // prefix wins over range_end (the API refuses the combination)
        assert_eq!(
            KeyRange::of_delete(&d(b"a", b"c", true)),
            Some(KeyRange::prefix(b"a"))
        );
    }

    fn cmp(target: Target, op: Op, operand: Option<Operand>) -> Compare {
        Compare {
            key: b"k".to_vec(),
            target: target as i32,
            op: op as i32,
            operand,
        }
    }

    #[test]
    fn compares_on_absent_keys() {
        use Op::*;
        for op in [Equal, NotEqual, Greater, Less] {
            assert!(
                !compare_holds(None, &cmp(Target::Value, op, Some(Operand::Value(vec![])))),
                "value compare on an absent key is false for {op:?}"
            );
        }
        assert!(compare_holds(
            None,
            &cmp(Target::Version, Equal, Some(Operand::Version(0)))
        ));
        assert!(compare_holds(
            None,
            &cmp(
                Target::CreateRevision,
                Less,
                Some(Operand::CreateRevision(1))
            )
        ));
        assert!(compare_holds(
            None,
            &cmp(Target::ModRevision, NotEqual, Some(Operand::ModRevision(5)))
        ));
        assert!(compare_holds(
            None,
            &cmp(Target::Exists, Equal, Some(Operand::Exists(false)))
        ));
        assert!(!compare_holds(
            None,
            &cmp(Target::Exists, NotEqual, Some(Operand::Exists(false)))
        ));
        assert!(!compare_holds(
            None,
            &cmp(Target::Exists, Greater, Some(Operand::Exists(false)))
        ));
    }

    #[test]
    fn malformed_compares_are_false() {
        let present = KvRecord {
            create_revision: 1,
            mod_revision: 2,
            version: 3,
            lease: 0,
            value: b"v".to_vec(),
        };
        let p = Some(&present);
        assert!(!compare_holds(p, &cmp(Target::Version, Op::Equal, None)));
        assert!(!compare_holds(
            p,
            &cmp(Target::Version, Op::Equal, Some(Operand::ModRevision(3)))
        ));
        assert!(!compare_holds(
            p,
            &cmp(Target::Exists, Op::Less, Some(Operand::Exists(true)))
        ));
        let mut unknown = cmp(Target::Version, Op::Equal, Some(Operand::Version(3)));
        assert!(compare_holds(p, &unknown));
        unknown.op = 42;
        assert!(!compare_holds(p, &unknown));
        unknown.op = Op::Equal as i32;
        unknown.target = -1;
        assert!(!compare_holds(p, &unknown));
    }
}
