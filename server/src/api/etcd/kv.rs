//! etcd's `KV` service over kvset's (see the module docs of `etcd/mod.rs`).
//!
//! Range options kvset's own Range does not have — sorting, `count_only`, and the min/max
//! revision filters — are applied here to kvset's answer. When they need the whole range, every
//! page is read at the first page's revision (kvset pins paginations to one revision), so the
//! result is still one consistent snapshot.

use crate::auth::same_caller;
use kvset_proto::etcd::etcdserverpb as pb;
use kvset_proto::etcd::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use kvset_proto::etcd::etcdserverpb::range_request::{SortOrder, SortTarget};
use kvset_proto::etcd::etcdserverpb::{request_op as erq, response_op as ers};
use kvset_proto::v1::{self, compare, kv_server::Kv, request_op, response_op, Consistency};
use tonic::{Request, Response, Status};

use super::{errors, etcd_status, header, key_value};
use crate::api::kv::KvService;

/// Serves `etcdserverpb.KV` through kvset's KV service.
#[derive(Clone)]
pub struct EtcdKv {
    kv: KvService,
}

impl EtcdKv {
    pub fn new(kv: KvService) -> Self {
        Self { kv }
    }
}

/// kvset's `[start, end)` for etcd's `key` / `range_end`: empty `range_end` is the one key,
/// `"\0"` every key from `key` on (kvset's empty end).
pub fn range_bounds(key: &[u8], range_end: &[u8]) -> Result<(Vec<u8>, Vec<u8>), Status> {
    if range_end.is_empty() {
        if key.is_empty() {
            return Err(Status::invalid_argument(errors::EMPTY_KEY));
        }
        let mut end = key.to_vec();
        end.push(0);
        Ok((key.to_vec(), end))
    } else if range_end == [0] {
        Ok((key.to_vec(), Vec::new()))
    } else {
        Ok((key.to_vec(), range_end.to_vec()))
    }
}

/// True when the answer needs the whole range before the limit applies (sorting other than by
/// key ascending, or revision filters).
fn needs_whole_range(r: &pb::RangeRequest) -> bool {
    let sorted = !matches!(
        (sort_order(r), SortTarget::try_from(r.sort_target)),
        (SortOrder::None, _) | (SortOrder::Ascend, Ok(SortTarget::Key))
    );
    sorted
        || r.min_mod_revision > 0
        || r.max_mod_revision > 0
        || r.min_create_revision > 0
        || r.max_create_revision > 0
}

/// etcd's rule: a sort target without an order sorts ascending.
fn sort_order(r: &pb::RangeRequest) -> SortOrder {
    match SortOrder::try_from(r.sort_order).unwrap_or(SortOrder::None) {
        SortOrder::None if r.sort_target != SortTarget::Key as i32 => SortOrder::Ascend,
        order => order,
    }
}

/// Applies etcd's filters, sort and limit to the keys of a range; returns whether more keys
/// matched than the limit let through.
fn shape(r: &pb::RangeRequest, kvs: &mut Vec<v1::KeyValue>) -> bool {
    let within = |v: i64, min: i64, max: i64| (min <= 0 || v >= min) && (max <= 0 || v <= max);
    kvs.retain(|kv| {
        within(kv.mod_revision, r.min_mod_revision, r.max_mod_revision)
            && within(
                kv.create_revision,
                r.min_create_revision,
                r.max_create_revision,
            )
    });
    let order = sort_order(r);
    if order != SortOrder::None {
        match SortTarget::try_from(r.sort_target).unwrap_or(SortTarget::Key) {
            SortTarget::Key => kvs.sort_by(|a, b| a.key.cmp(&b.key)),
            SortTarget::Version => kvs.sort_by_key(|kv| kv.version),
            SortTarget::Create => kvs.sort_by_key(|kv| kv.create_revision),
            SortTarget::Mod => kvs.sort_by_key(|kv| kv.mod_revision),
            SortTarget::Value => kvs.sort_by(|a, b| a.value.cmp(&b.value)),
        }
        if order == SortOrder::Descend {
            kvs.reverse();
        }
    }
    match usize::try_from(r.limit) {
        Ok(limit) if limit > 0 && kvs.len() > limit => {
            kvs.truncate(limit);
            true
        }
        _ => false,
    }
}

impl EtcdKv {
    /// A Range: kvset pages read at one revision, then etcd's options applied.
    async fn range_kvs(
        &self,
        request: &Request<pb::RangeRequest>,
    ) -> Result<pb::RangeResponse, Status> {
        let r = request.get_ref();
        let (start, end) = range_bounds(&r.key, &r.range_end)?;
        let whole = needs_whole_range(r);
        let consistency = if r.serializable {
            Consistency::Stale
        } else {
            Consistency::Linearizable
        };
        let wanted = usize::try_from(r.limit).unwrap_or(0);
        let mut cursor = Vec::new();
        let mut kvs = Vec::new();
        let mut first: Option<v1::RangeResponse> = None;
        let mut more = false;
        loop {
            let page = self
                .kv
                .range(same_caller(
                    request,
                    Request::new(v1::RangeRequest {
                        start: start.clone(),
                        end: end.clone(),
                        prefix: false,
                        limit: 0,
                        keys_only: r.keys_only || r.count_only,
                        consistency: consistency as i32,
                        revision: if cursor.is_empty() {
                            r.revision.max(0)
                        } else {
                            0
                        },
                        cursor: std::mem::take(&mut cursor),
                    }),
                ))
                .await?
                .into_inner();
            let page_more = page.more;
            cursor = page.next_cursor.clone();
            kvs.extend(page.kvs.iter().cloned());
            if first.is_none() {
                first = Some(page);
            }
            if r.count_only || !page_more {
                break;
            }
            if !whole && wanted > 0 && kvs.len() > wanted {
                more = true;
                break;
            }
        }
        let first = first.unwrap_or_default();
        if r.count_only {
            kvs.clear();
        } else {
            more |= shape(r, &mut kvs);
        }
        Ok(pb::RangeResponse {
            header: header(first.header.as_ref()),
            kvs: kvs.into_iter().map(key_value).collect(),
            more,
            count: first.count,
        })
    }
}

/// kvset's compare for etcd's.
fn compare_of(c: &pb::Compare) -> Result<v1::Compare, Status> {
    use compare::{Op, Operand, Target};
    if !c.range_end.is_empty() {
        return Err(Status::invalid_argument(
            "kvset does not support compares over a key range (range_end in a compare); compare \
             each key",
        ));
    }
    let op = match CompareResult::try_from(c.result) {
        Ok(CompareResult::Equal) => Op::Equal,
        Ok(CompareResult::NotEqual) => Op::NotEqual,
        Ok(CompareResult::Greater) => Op::Greater,
        Ok(CompareResult::Less) => Op::Less,
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "unknown compare result {}",
                c.result
            )))
        }
    };
    let target = match CompareTarget::try_from(c.target) {
        Ok(CompareTarget::Version) => Target::Version,
        Ok(CompareTarget::Create) => Target::CreateRevision,
        Ok(CompareTarget::Mod) => Target::ModRevision,
        Ok(CompareTarget::Value) => Target::Value,
        Ok(CompareTarget::Lease) => Target::Lease,
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "unknown compare target {}",
                c.target
            )))
        }
    };
    let operand = c.target_union.as_ref().map(|u| match u {
        TargetUnion::Version(v) => Operand::Version(*v),
        TargetUnion::CreateRevision(v) => Operand::CreateRevision(*v),
        TargetUnion::ModRevision(v) => Operand::ModRevision(*v),
        TargetUnion::Value(v) => Operand::Value(v.clone()),
        TargetUnion::Lease(v) => Operand::Lease(*v),
    });
    Ok(v1::Compare {
        key: c.key.clone(),
        target: target as i32,
        op: op as i32,
        operand,
    })
}

fn put_of(p: &pb::PutRequest) -> v1::PutRequest {
    v1::PutRequest {
        key: p.key.clone(),
        value: p.value.clone(),
        prev_kv: p.prev_kv,
        request_id: None,
        lease: p.lease,
        ignore_value: p.ignore_value,
        ignore_lease: p.ignore_lease,
    }
}

fn delete_of(d: &pb::DeleteRangeRequest) -> v1::DeleteRequest {
    v1::DeleteRequest {
        key: d.key.clone(),
        // kvset reads "\0" as "every key from `key` on", like etcd
        range_end: d.range_end.clone(),
        prefix: false,
        prev_kv: d.prev_kv,
        request_id: None,
    }
}

/// kvset's operation for etcd's, inside a Txn.
fn op_of(op: &pb::RequestOp) -> Result<v1::RequestOp, Status> {
    let request = match &op.request {
        Some(erq::Request::RequestPut(p)) => request_op::Request::Put(put_of(p)),
        Some(erq::Request::RequestDeleteRange(d)) => request_op::Request::Delete(delete_of(d)),
        Some(erq::Request::RequestRange(r)) => {
            let (start, end) = range_bounds(&r.key, &r.range_end)?;
            let limit = if needs_whole_range(r) {
                0
            } else {
                r.limit.max(0)
            };
            request_op::Request::Range(v1::RangeRequest {
                start,
                end,
                limit,
                keys_only: r.keys_only || r.count_only,
                ..Default::default()
            })
        }
        Some(erq::Request::RequestTxn(_)) => {
            return Err(Status::invalid_argument(
                "kvset does not support nested transactions (request_txn inside a Txn)",
            ))
        }
        None => {
            return Err(Status::invalid_argument(
                "a Txn operation without a request",
            ))
        }
    };
    Ok(v1::RequestOp {
        request: Some(request),
    })
}

/// etcd's answer to one Txn operation, from kvset's (`asked` is the etcd operation).
fn response_of(
    asked: &pb::RequestOp,
    got: v1::ResponseOp,
    txn_header: &Option<pb::ResponseHeader>,
) -> pb::ResponseOp {
    let response = match (got.response, &asked.request) {
        (Some(response_op::Response::Put(p)), _) => {
            Some(ers::Response::ResponsePut(pb::PutResponse {
                header: *txn_header,
                prev_kv: p.prev_kv.map(key_value),
            }))
        }
        (Some(response_op::Response::Delete(d)), _) => Some(ers::Response::ResponseDeleteRange(
            pb::DeleteRangeResponse {
                header: *txn_header,
                deleted: d.deleted,
                prev_kvs: d.prev_kvs.into_iter().map(key_value).collect(),
            },
        )),
        (Some(response_op::Response::Range(r)), Some(erq::Request::RequestRange(req))) => {
            let mut kvs = r.kvs;
            let more = if req.count_only {
                kvs.clear();
                false
            } else {
                shape(req, &mut kvs) || r.more
            };
            Some(ers::Response::ResponseRange(pb::RangeResponse {
                header: *txn_header,
                kvs: kvs.into_iter().map(key_value).collect(),
                more,
                count: r.count,
            }))
        }
        _ => None,
    };
    pb::ResponseOp { response }
}

#[tonic::async_trait]
impl pb::kv_server::Kv for EtcdKv {
    async fn range(
        &self,
        request: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        self.range_kvs(&request)
            .await
            .map(Response::new)
            .map_err(etcd_status)
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let resp = self
            .kv
            .put(same_caller(
                &request,
                Request::new(put_of(request.get_ref())),
            ))
            .await
            .map_err(etcd_status)?
            .into_inner();
        Ok(Response::new(pb::PutResponse {
            header: header(resp.header.as_ref()),
            prev_kv: resp.prev_kv.map(key_value),
        }))
    }

    async fn delete_range(
        &self,
        request: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let r = request.get_ref();
        if r.key.is_empty() {
            return Err(Status::invalid_argument(errors::EMPTY_KEY));
        }
        let resp = self
            .kv
            .delete(same_caller(&request, Request::new(delete_of(r))))
            .await
            .map_err(etcd_status)?
            .into_inner();
        Ok(Response::new(pb::DeleteRangeResponse {
            header: header(resp.header.as_ref()),
            deleted: resp.deleted,
            prev_kvs: resp.prev_kvs.into_iter().map(key_value).collect(),
        }))
    }

    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        let r = request.get_ref();
        let txn = v1::TxnRequest {
            compares: r.compare.iter().map(compare_of).collect::<Result<_, _>>()?,
            success: r.success.iter().map(op_of).collect::<Result<_, _>>()?,
            failure: r.failure.iter().map(op_of).collect::<Result<_, _>>()?,
            request_id: None,
        };
        let resp = self
            .kv
            .txn(same_caller(&request, Request::new(txn)))
            .await
            .map_err(etcd_status)?
            .into_inner();
        let txn_header = header(resp.header.as_ref());
        let asked = if resp.succeeded {
            &r.success
        } else {
            &r.failure
        };
        let responses = asked
            .iter()
            .zip(resp.responses)
            .map(|(a, got)| response_of(a, got, &txn_header))
            .collect();
        Ok(Response::new(pb::TxnResponse {
            header: txn_header,
            succeeded: resp.succeeded,
            responses,
        }))
    }

    async fn compact(
        &self,
        request: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        let resp = self
            .kv
            .compact(same_caller(
                &request,
                Request::new(v1::CompactRequest {
                    revision: request.get_ref().revision,
                }),
            ))
            .await
            .map_err(etcd_status)?
            .into_inner();
        Ok(Response::new(pb::CompactionResponse {
            header: header(resp.header.as_ref()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, create: i64, modr: i64) -> v1::KeyValue {
        v1::KeyValue {
            key: key.into(),
            create_revision: create,
            mod_revision: modr,
            ..Default::default()
        }
    }

    #[test]
    fn range_ends_follow_etcds_conventions() {
        assert_eq!(
            range_bounds(b"a", b"").unwrap(),
            (b"a".to_vec(), b"a\0".to_vec())
        );
        assert_eq!(range_bounds(b"a", b"\0").unwrap(), (b"a".to_vec(), vec![]));
        assert_eq!(
            range_bounds(b"a", b"c").unwrap(),
            (b"a".to_vec(), b"c".to_vec())
        );
        assert_eq!(
            range_bounds(b"", b"").unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }

    #[test]
    fn filters_sort_and_limit_like_etcd() {
        // etcd's mutex looks for the key with the highest create revision below its own:
        // max_create_revision + sort by create descending + limit 1.
        let r = pb::RangeRequest {
            sort_target: SortTarget::Create as i32,
            sort_order: SortOrder::Descend as i32,
            max_create_revision: 7,
            limit: 1,
            ..Default::default()
        };
        let mut kvs = vec![kv("a", 5, 5), kv("b", 9, 9), kv("c", 6, 8)];
        assert!(needs_whole_range(&r));
        let more = shape(&r, &mut kvs);
        assert_eq!(
            kvs.iter().map(|k| k.create_revision).collect::<Vec<_>>(),
            vec![6]
        );
        assert!(more);
        // a target without an order sorts ascending (etcd's rule)
        let r = pb::RangeRequest {
            sort_target: SortTarget::Mod as i32,
            ..Default::default()
        };
        let mut kvs = vec![kv("a", 5, 5), kv("b", 9, 9), kv("c", 6, 3)];
        shape(&r, &mut kvs);
        assert_eq!(
            kvs.iter().map(|k| k.mod_revision).collect::<Vec<_>>(),
            vec![3, 5, 9]
        );
        assert!(!needs_whole_range(&pb::RangeRequest::default()));
    }
}
