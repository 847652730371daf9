//! What each request needs (see [`crate::auth`]), and the one place a denial is counted,
//! logged and answered.
//!
//! The rules, per RPC:
//! - **KV**: Get and Range need read on every key they cover (a Range over `["a", "c")` needs
//!   read on all of it, even if the keys that exist are all readable: what a range *could*
//!   return is what it asks for); Put needs write on its key, and read too with `prev_kv`
//!   (the answer carries the old value); Delete needs write on its range, read too with
//!   `prev_kv`; Txn needs read on every compared key and on every range it reads, write on
//!   every key it puts or deletes, checked over both branches (which one runs is decided
//!   later, at apply); Compact needs admin.
//! - **Watch**: read on the watched range.
//! - **Lease**: Grant, KeepAlive and TimeToLive need write on some key (a lease only serves to
//!   attach keys one may write); TimeToLive with `keys` also read on each attached key; Revoke
//!   needs write on every attached key (its keys are deleted) or admin; Leases (every lease of
//!   the cluster) needs admin.
//! - **Cluster**: Status and Members are open to every caller (they tell what DNS tells, and
//!   clients need them to find the leader); AddLearner, Promote, Remove, Snapshot and changing
//!   alarms need admin; listing alarms is open.
//! - **Auth** (WhoAmI, Check) is open: it tells a caller about itself only.
//!
//! A denied request writes nothing (the check comes before any proposal) and is answered
//! `PERMISSION_DENIED` naming the identity, the permission and what its roles grant. It is
//! counted (`kvset_auth_denied_total{permission}`) and logged with the identity and the
//! operation, never a value.

use kvset_proto::v1::{DeleteRequest, PutRequest, RangeRequest, RequestOp, TxnRequest};
use tonic::{Request, Status};

use crate::auth::{Caller, Need};
use crate::node::Node;
use crate::store::KeyRange;

/// Refuses `request` unless its caller has everything in `needs`.
pub(crate) fn authorize<T>(
    node: &Node,
    request: &Request<T>,
    needs: &[Need],
) -> Result<(), Status> {
    check(node, request.extensions().get::<Caller>(), needs)
}

/// Refuses `caller` unless it has everything in `needs`: the denial counted, logged and turned
/// into `PERMISSION_DENIED`.
pub(crate) fn check(node: &Node, caller: Option<&Caller>, needs: &[Need]) -> Result<(), Status> {
    node.authorizer().check(caller, needs).map_err(|denied| {
        node.telemetry().auth_denied(denied.permission.label());
        tracing::warn!(
            identity = %denied.identity,
            permission = %denied.permission,
            "{denied}"
        );
        Status::permission_denied(denied.to_string())
    })
}

/// The range a key + range end (+ prefix flag) names, with etcd's conventions: an empty end
/// is the key alone, `"\0"` every key from it on.
pub(crate) fn range_of(key: &[u8], range_end: &[u8], prefix: bool) -> KeyRange {
    if prefix {
        KeyRange::prefix(key)
    } else if range_end == [0] {
        KeyRange::span(key, b"")
    } else if range_end.is_empty() {
        KeyRange::single(key)
    } else {
        KeyRange::span(key, range_end)
    }
}

pub(crate) fn put_needs(req: &PutRequest, needs: &mut Vec<Need>) {
    let key = KeyRange::single(&req.key);
    if req.prev_kv {
        needs.push(Need::Read(key.clone()));
    }
    needs.push(Need::Write(key));
}

pub(crate) fn delete_needs(req: &DeleteRequest, needs: &mut Vec<Need>) {
    let range = range_of(&req.key, &req.range_end, req.prefix);
    if req.prev_kv {
        needs.push(Need::Read(range.clone()));
    }
    needs.push(Need::Write(range));
}

pub(crate) fn range_needs(req: &RangeRequest) -> Need {
    Need::Read(KeyRange::of_range(req))
}

/// Everything a Txn touches, over both branches and its compares.
pub(crate) fn txn_needs(req: &TxnRequest) -> Vec<Need> {
    use kvset_proto::v1::request_op::Request as Op;
    let mut needs: Vec<Need> = req
        .compares
        .iter()
        .map(|c| Need::Read(KeyRange::single(&c.key)))
        .collect();
    for op in req.success.iter().chain(&req.failure) {
        match op {
            RequestOp {
                request: Some(Op::Put(put)),
            } => put_needs(put, &mut needs),
            RequestOp {
                request: Some(Op::Delete(delete)),
            } => delete_needs(delete, &mut needs),
            RequestOp {
                request: Some(Op::Range(range)),
            } => needs.push(range_needs(range)),
            RequestOp { request: None } => {}
        }
    }
    needs
}

#[cfg(test)]
mod tests {
    use super::*;
    use kvset_proto::v1::{request_op, Compare};

    #[test]
    fn a_txn_needs_its_compares_and_both_branches() {
        let put = |k: &str| RequestOp {
            request: Some(request_op::Request::Put(PutRequest {
                key: k.into(),
                ..Default::default()
            })),
        };
        let txn = TxnRequest {
            compares: vec![Compare {
                key: b"c".to_vec(),
                ..Default::default()
            }],
            success: vec![put("s")],
            failure: vec![RequestOp {
                request: Some(request_op::Request::Delete(DeleteRequest {
                    key: b"d/".to_vec(),
                    prefix: true,
                    prev_kv: true,
                    ..Default::default()
                })),
            }],
            request_id: None,
        };
        assert_eq!(
            txn_needs(&txn),
            vec![
                Need::Read(KeyRange::single(b"c")),
                Need::Write(KeyRange::single(b"s")),
                Need::Read(KeyRange::prefix(b"d/")),
                Need::Write(KeyRange::prefix(b"d/")),
            ]
        );
    }

    #[test]
    fn ranges_follow_etcds_conventions() {
        assert_eq!(range_of(b"a", b"", false), KeyRange::single(b"a"));
        assert_eq!(range_of(b"a", b"\0", false), KeyRange::span(b"a", b""));
        assert_eq!(range_of(b"a", b"c", false), KeyRange::span(b"a", b"c"));
        assert_eq!(range_of(b"a", b"c", true), KeyRange::prefix(b"a"));
    }
}
