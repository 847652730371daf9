//! Request limits and request validation, checked at the API edge before anything is proposed.
//!
//! Every error message is the whole answer a user needs: what is wrong, the actual size, the
//! limit, and the server flag / environment variable that changes it. The API maps every
//! [`LimitError`] to `INVALID_ARGUMENT`, and nothing has been written when it is returned.
//!
//! The state machine does not rely on this validation for safety: a command that gets past it
//! (say from a leader with different flags) still has one deterministic meaning there (see
//! `store/kv.rs`). Validation is about giving the client a clear error instead of a surprising
//! result.

use kvset_proto::v1::{
    compare, request_op, Compare, DeleteRequest, GetRequest, PutRequest, RangeRequest, RequestId,
    RequestOp, TxnRequest,
};

/// Size and count limits on requests. Each is a server flag (`--max-key-bytes`, …) and an
/// environment variable (`KVSET_MAX_KEY_BYTES`, …).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest key in bytes (keys must also be non-empty).
    pub max_key_bytes: usize,
    /// Largest value in bytes.
    pub max_value_bytes: usize,
    /// Largest range page; also the page size when a Range asks for limit 0.
    pub max_range_limit: usize,
    /// Most compares, and most operations per branch, in one Txn.
    pub max_txn_ops: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_key_bytes: 4096,
            max_value_bytes: 1024 * 1024,
            max_range_limit: 10_000,
            max_txn_ops: 128,
        }
    }
}

/// A request that breaks a limit or is malformed. `Display` is the complete user message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LimitError {
    /// A key longer than `max_key_bytes`.
    #[error(
        "{what} is {size} bytes; the limit is {limit} (--max-key-bytes / KVSET_MAX_KEY_BYTES)"
    )]
    KeyTooLarge {
        what: &'static str,
        size: usize,
        limit: usize,
    },
    /// A value longer than `max_value_bytes`.
    #[error(
        "value is {size} bytes; the limit is {limit} (--max-value-bytes / KVSET_MAX_VALUE_BYTES)"
    )]
    ValueTooLarge { size: usize, limit: usize },
    /// A range `limit` above `max_range_limit`.
    #[error(
        "range limit is {requested}; the maximum is {limit} (--max-range-limit / \
         KVSET_MAX_RANGE_LIMIT); use limit 0 for the maximum and follow next_cursor for more"
    )]
    RangeLimitTooLarge { requested: i64, limit: usize },
    /// A negative range `limit`.
    #[error("range limit is {0}; use 0 for the server maximum or a positive page size")]
    NegativeRangeLimit(i64),
    /// A Txn with too many compares or operations in a branch.
    #[error("txn has {count} {part}; the limit is {limit} (--max-txn-ops / KVSET_MAX_TXN_OPS)")]
    TooManyTxnOps {
        part: &'static str,
        count: usize,
        limit: usize,
    },
    /// An empty key where one is required.
    #[error("{0}")]
    EmptyKey(&'static str),
    /// `range_end` / `end` together with `prefix`.
    #[error("{0} cannot be combined with prefix: use either a prefix or an explicit range end")]
    EndWithPrefix(&'static str),
    /// Two fields of a request that contradict each other; the message says which.
    #[error("{0}")]
    Conflict(&'static str),
    /// A compare without an operand, or with one of another type than its target.
    #[error("compare on target {target} needs the `{expected}` operand, but {found}")]
    CompareOperand {
        target: &'static str,
        expected: &'static str,
        found: String,
    },
    /// EXISTS compared with GREATER or LESS.
    #[error("an EXISTS compare supports only EQUAL and NOT_EQUAL, not {0}")]
    ExistsOrdering(&'static str),
    /// A compare target or op that is not in the enum.
    #[error("compare has unknown {field} {value}")]
    UnknownEnum { field: &'static str, value: i32 },
    /// A Txn operation with no request set.
    #[error("txn operation is empty: set put, delete or range")]
    EmptyOp,
    /// `client_id` set but `sequence` 0.
    #[error(
        "request_id has client_id {0} but sequence 0; sequences start at 1 (or leave client_id 0 \
         to write without exactly-once)"
    )]
    ZeroSequence(u64),
    /// An error inside a Txn, with where it is.
    #[error("txn {place}[{index}]: {source}")]
    InTxn {
        place: &'static str,
        index: usize,
        source: Box<LimitError>,
    },
}

impl Limits {
    /// The largest protobuf request these limits admit (a Txn with two full branches of maximal
    /// puts and a full list of maximal compares, plus framing), for the gRPC decoder's cap. Any
    /// request that passes validation fits, so oversized requests get this module's message
    /// rather than a bare RESOURCE_EXHAUSTED.
    pub fn max_request_bytes(&self) -> usize {
        const FRAMING: usize = 64;
        let put = self
            .max_key_bytes
            .saturating_add(self.max_value_bytes)
            .saturating_add(FRAMING);
        let compare = self
            .max_key_bytes
            .max(self.max_value_bytes)
            .saturating_add(self.max_key_bytes)
            .saturating_add(FRAMING);
        put.saturating_mul(2)
            .saturating_mul(self.max_txn_ops)
            .saturating_add(compare.saturating_mul(self.max_txn_ops))
            .saturating_add(4096)
    }

    /// Checks a Put.
    pub fn validate_put(&self, req: &PutRequest) -> Result<(), LimitError> {
        self.key(&req.key, "key", "put key must not be empty")?;
        if req.ignore_value && !req.value.is_empty() {
            return Err(LimitError::Conflict(
                "put: value must be empty when ignore_value is set",
            ));
        }
        if req.ignore_lease && req.lease != 0 {
            return Err(LimitError::Conflict(
                "put: lease must be 0 when ignore_lease is set",
            ));
        }
        if req.value.len() > self.max_value_bytes {
            return Err(LimitError::ValueTooLarge {
                size: req.value.len(),
                limit: self.max_value_bytes,
            });
        }
        request_id(req.request_id.as_ref())
    }

    /// Checks a Get.
    pub fn validate_get(&self, req: &GetRequest) -> Result<(), LimitError> {
        self.key(&req.key, "key", "get key must not be empty")
    }

    /// Checks a Delete.
    pub fn validate_delete(&self, req: &DeleteRequest) -> Result<(), LimitError> {
        if req.prefix {
            if !req.range_end.is_empty() {
                return Err(LimitError::EndWithPrefix("range_end"));
            }
            self.key_size(&req.key, "prefix")?;
        } else {
            self.key(
                &req.key,
                "key",
                "delete key must not be empty (set prefix with an empty key to delete every key)",
            )?;
            self.key_size(&req.range_end, "range_end")?;
        }
        request_id(req.request_id.as_ref())
    }

    /// Checks a Range.
    pub fn validate_range(&self, req: &RangeRequest) -> Result<(), LimitError> {
        if req.prefix && !req.end.is_empty() {
            return Err(LimitError::EndWithPrefix("end"));
        }
        self.key_size(&req.start, "range start")?;
        self.key_size(&req.end, "range end")?;
        if req.limit < 0 {
            return Err(LimitError::NegativeRangeLimit(req.limit));
        }
        if usize::try_from(req.limit).map_or(true, |l| l > self.max_range_limit) {
            return Err(LimitError::RangeLimitTooLarge {
                requested: req.limit,
                limit: self.max_range_limit,
            });
        }
        Ok(())
    }

    /// Checks a Txn: counts, every compare, and every operation of both branches.
    pub fn validate_txn(&self, req: &TxnRequest) -> Result<(), LimitError> {
        for (part, count) in [
            ("compares", req.compares.len()),
            ("success operations", req.success.len()),
            ("failure operations", req.failure.len()),
        ] {
            if count > self.max_txn_ops {
                return Err(LimitError::TooManyTxnOps {
                    part,
                    count,
                    limit: self.max_txn_ops,
                });
            }
        }
        let within = |place, index| {
            move |e: LimitError| LimitError::InTxn {
                place,
                index,
                source: Box::new(e),
            }
        };
        for (i, c) in req.compares.iter().enumerate() {
            self.compare(c).map_err(within("compares", i))?;
        }
        for (place, ops) in [("success", &req.success), ("failure", &req.failure)] {
            for (i, op) in ops.iter().enumerate() {
                self.op(op).map_err(within(place, i))?;
            }
        }
        request_id(req.request_id.as_ref())
    }

    fn op(&self, op: &RequestOp) -> Result<(), LimitError> {
        match &op.request {
            // Nested request ids are ignored (the Txn's own covers it), so they are not checked.
            Some(request_op::Request::Put(p)) => self.validate_put(&PutRequest {
                request_id: None,
                ..p.clone()
            }),
            Some(request_op::Request::Delete(d)) => self.validate_delete(&DeleteRequest {
                request_id: None,
                ..d.clone()
            }),
            Some(request_op::Request::Range(r)) => self.validate_range(&RangeRequest {
                cursor: Vec::new(),
                ..r.clone()
            }),
            None => Err(LimitError::EmptyOp),
        }
    }

    fn compare(&self, c: &Compare) -> Result<(), LimitError> {
        use compare::{Op, Operand, Target};
        self.key(&c.key, "compare key", "compare key must not be empty")?;
        let target = Target::try_from(c.target).map_err(|_| LimitError::UnknownEnum {
            field: "target",
            value: c.target,
        })?;
        let op = Op::try_from(c.op).map_err(|_| LimitError::UnknownEnum {
            field: "op",
            value: c.op,
        })?;
        let expected = match target {
            Target::Value => "value",
            Target::Version => "version",
            Target::CreateRevision => "create_revision",
            Target::ModRevision => "mod_revision",
            Target::Exists => "exists",
            Target::Lease => "lease",
        };
        let found = match &c.operand {
            None => None,
            Some(Operand::Value(v)) => {
                if v.len() > self.max_value_bytes {
                    return Err(LimitError::ValueTooLarge {
                        size: v.len(),
                        limit: self.max_value_bytes,
                    });
                }
                Some("value")
            }
            Some(Operand::Version(_)) => Some("version"),
            Some(Operand::CreateRevision(_)) => Some("create_revision"),
            Some(Operand::ModRevision(_)) => Some("mod_revision"),
            Some(Operand::Exists(_)) => Some("exists"),
            Some(Operand::Lease(_)) => Some("lease"),
        };
        if found != Some(expected) {
            return Err(LimitError::CompareOperand {
                target: target.as_str_name(),
                expected,
                found: match found {
                    None => "no operand is set".into(),
                    Some(f) => format!("`{f}` is set"),
                },
            });
        }
        if target == Target::Exists && matches!(op, Op::Greater | Op::Less) {
            return Err(LimitError::ExistsOrdering(op.as_str_name()));
        }
        Ok(())
    }

    /// A required key: non-empty and within the size limit.
    fn key(&self, key: &[u8], what: &'static str, empty: &'static str) -> Result<(), LimitError> {
        if key.is_empty() {
            return Err(LimitError::EmptyKey(empty));
        }
        self.key_size(key, what)
    }

    /// A key-sized field that may be empty.
    fn key_size(&self, key: &[u8], what: &'static str) -> Result<(), LimitError> {
        if key.len() > self.max_key_bytes {
            return Err(LimitError::KeyTooLarge {
                what,
                size: key.len(),
                limit: self.max_key_bytes,
            });
        }
        Ok(())
    }
}

fn request_id(id: Option<&RequestId>) -> Result<(), LimitError> {
    match id {
        Some(id) if id.client_id != 0 && id.sequence == 0 => {
            Err(LimitError::ZeroSequence(id.client_id))
        }
        _ => Ok(()),
    }
}
