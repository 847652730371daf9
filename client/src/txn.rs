//! Transactions: compares, then one of two branches, as one atomic step.
//!
//! A [`Txn`] is evaluated by the leader's state machine in one step: if every [`Compare`] holds
//! the `and_then` operations run, otherwise the `or_else` operations. The transaction is
//! retried safely like any write (one `RequestId` for all its attempts). That the compares
//! failed is a *result* (`succeeded == false`), not an error.
//!
//! ```no_run
//! # async fn demo(client: kvset_client::Client) -> kvset_client::Result<()> {
//! use kvset_client::{Compare, Txn, TxnOp};
//! let txn = Txn::new()
//!     .when([Compare::value("leader").equal("kv-0"), Compare::version("epoch").less(5)])
//!     .and_then([TxnOp::put("epoch-owner", "kv-0")])
//!     .or_else([TxnOp::get("leader")]);
//! let result = client.txn(txn).await?;
//! println!("succeeded: {}", result.succeeded);
//! # Ok(()) }
//! ```
//!
//! For the common case, compare-and-swap of one key, use [`crate::Client::cas`].

use kvset_proto::v1 as pb;

use crate::error::Result;
use crate::range::KeyRange;
use crate::types::{Header, KeyValue};

/// How a compare relates the key's field to the operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CompareOp {
    /// `=`
    Equal,
    /// `!=`
    NotEqual,
    /// `>`
    Greater,
    /// `<`
    Less,
}

/// What a compare looks at, with the operand.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum CompareOperand {
    /// The value, compared byte-wise. A value compare on an absent key is false for every op.
    Value(Vec<u8>),
    /// The version (0 for an absent key).
    Version(i64),
    /// The create revision (0 for an absent key).
    CreateRevision(i64),
    /// The mod revision (0 for an absent key).
    ModRevision(i64),
    /// Whether the key exists (only `Equal` and `NotEqual`).
    Exists(bool),
}

/// One condition of a transaction. Build with [`Compare::value`], [`Compare::version`],
/// [`Compare::create_revision`], [`Compare::mod_revision`], [`Compare::exists`] or
/// [`Compare::absent`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Compare {
    /// The key whose field is compared.
    pub key: Vec<u8>,
    /// The relation.
    pub op: CompareOp,
    /// The field and the operand.
    pub operand: CompareOperand,
}

/// A half-built compare on a key's value; finish with `equal`, `not_equal`, `greater`, `less`.
#[derive(Debug, Clone)]
pub struct ValueCompare {
    key: Vec<u8>,
}

/// A half-built compare on a numeric field; finish with `equal`, `not_equal`, `greater`,
/// `less`.
#[derive(Debug, Clone)]
pub struct NumberCompare {
    key: Vec<u8>,
    field: fn(i64) -> CompareOperand,
}

impl Compare {
    /// Compare the key's value.
    pub fn value(key: impl AsRef<[u8]>) -> ValueCompare {
        ValueCompare {
            key: key.as_ref().to_vec(),
        }
    }

    /// Compare the key's version.
    pub fn version(key: impl AsRef<[u8]>) -> NumberCompare {
        NumberCompare {
            key: key.as_ref().to_vec(),
            field: CompareOperand::Version,
        }
    }

    /// Compare the key's create revision.
    pub fn create_revision(key: impl AsRef<[u8]>) -> NumberCompare {
        NumberCompare {
            key: key.as_ref().to_vec(),
            field: CompareOperand::CreateRevision,
        }
    }

    /// Compare the key's mod revision.
    pub fn mod_revision(key: impl AsRef<[u8]>) -> NumberCompare {
        NumberCompare {
            key: key.as_ref().to_vec(),
            field: CompareOperand::ModRevision,
        }
    }

    /// Holds when the key exists.
    pub fn exists(key: impl AsRef<[u8]>) -> Compare {
        Compare {
            key: key.as_ref().to_vec(),
            op: CompareOp::Equal,
            operand: CompareOperand::Exists(true),
        }
    }

    /// Holds when the key does not exist.
    pub fn absent(key: impl AsRef<[u8]>) -> Compare {
        Compare {
            key: key.as_ref().to_vec(),
            op: CompareOp::Equal,
            operand: CompareOperand::Exists(false),
        }
    }

    fn to_pb(&self) -> pb::Compare {
        use pb::compare::{Op, Operand, Target};
        let (target, operand) = match &self.operand {
            CompareOperand::Value(v) => (Target::Value, Operand::Value(v.clone())),
            CompareOperand::Version(n) => (Target::Version, Operand::Version(*n)),
            CompareOperand::CreateRevision(n) => {
                (Target::CreateRevision, Operand::CreateRevision(*n))
            }
            CompareOperand::ModRevision(n) => (Target::ModRevision, Operand::ModRevision(*n)),
            CompareOperand::Exists(b) => (Target::Exists, Operand::Exists(*b)),
        };
        let op = match self.op {
            CompareOp::Equal => Op::Equal,
            CompareOp::NotEqual => Op::NotEqual,
            CompareOp::Greater => Op::Greater,
            CompareOp::Less => Op::Less,
        };
        pb::Compare {
            key: self.key.clone(),
            target: target as i32,
            op: op as i32,
            operand: Some(operand),
        }
    }
}

impl ValueCompare {
    fn with(self, op: CompareOp, value: impl AsRef<[u8]>) -> Compare {
        Compare {
            key: self.key,
            op,
            operand: CompareOperand::Value(value.as_ref().to_vec()),
        }
    }
    /// value `=` operand
    pub fn equal(self, value: impl AsRef<[u8]>) -> Compare {
        self.with(CompareOp::Equal, value)
    }
    /// value `!=` operand
    pub fn not_equal(self, value: impl AsRef<[u8]>) -> Compare {
        self.with(CompareOp::NotEqual, value)
    }
    /// value `>` operand (byte-wise)
    pub fn greater(self, value: impl AsRef<[u8]>) -> Compare {
        self.with(CompareOp::Greater, value)
    }
    /// value `<` operand (byte-wise)
    pub fn less(self, value: impl AsRef<[u8]>) -> Compare {
        self.with(CompareOp::Less, value)
    }
}

impl NumberCompare {
    fn with(self, op: CompareOp, n: i64) -> Compare {
        Compare {
            key: self.key,
            op,
            operand: (self.field)(n),
        }
    }
    /// field `=` n
    pub fn equal(self, n: i64) -> Compare {
        self.with(CompareOp::Equal, n)
    }
    /// field `!=` n
    pub fn not_equal(self, n: i64) -> Compare {
        self.with(CompareOp::NotEqual, n)
    }
    /// field `>` n
    pub fn greater(self, n: i64) -> Compare {
        self.with(CompareOp::Greater, n)
    }
    /// field `<` n
    pub fn less(self, n: i64) -> Compare {
        self.with(CompareOp::Less, n)
    }
}

/// One operation of a transaction branch.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TxnOp {
    /// Set a key.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
        /// Return the previous key-value.
        prev_kv: bool,
        /// Attach the key to this lease (0: none).
        lease: i64,
    },
    /// Delete a key, range or prefix.
    Delete {
        /// What to delete.
        range: KeyRange,
        /// Return the deleted key-values.
        prev_kv: bool,
    },
    /// Read a key, range or prefix (sees earlier writes of the same branch).
    Range {
        /// What to read.
        range: KeyRange,
        /// At most this many keys (0: the server's maximum).
        limit: i64,
        /// Leave values out.
        keys_only: bool,
    },
}

impl TxnOp {
    /// Put `key = value`.
    pub fn put(key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) -> TxnOp {
        TxnOp::Put {
            key: key.as_ref().to_vec(),
            value: value.as_ref().to_vec(),
            prev_kv: false,
            lease: 0,
        }
    }

    /// Put `key = value`, attached to `lease` (the key is deleted when the lease ends).
    pub fn put_with_lease(key: impl AsRef<[u8]>, value: impl AsRef<[u8]>, lease: i64) -> TxnOp {
        TxnOp::Put {
            key: key.as_ref().to_vec(),
            value: value.as_ref().to_vec(),
            prev_kv: false,
            lease,
        }
    }

    /// Delete one key.
    pub fn delete(key: impl AsRef<[u8]>) -> TxnOp {
        TxnOp::delete_range(KeyRange::key(key))
    }

    /// Delete a key range or prefix.
    pub fn delete_range(range: KeyRange) -> TxnOp {
        TxnOp::Delete {
            range,
            prev_kv: false,
        }
    }

    /// Read one key.
    pub fn get(key: impl AsRef<[u8]>) -> TxnOp {
        TxnOp::range(KeyRange::key(key))
    }

    /// Read a key range or prefix.
    pub fn range(range: KeyRange) -> TxnOp {
        TxnOp::Range {
            range,
            limit: 0,
            keys_only: false,
        }
    }

    fn to_pb(&self) -> Result<pb::RequestOp> {
        use pb::request_op::Request;
        let request = match self {
            TxnOp::Put {
                key,
                value,
                prev_kv,
                lease,
            } => Request::Put(pb::PutRequest {
                key: key.clone(),
                value: value.clone(),
                prev_kv: *prev_kv,
                request_id: None,
                lease: *lease,
                ignore_lease: Default::default(),
                ignore_value: Default::default(),
            }),
            TxnOp::Delete { range, prev_kv } => Request::Delete(pb::DeleteRequest {
                prev_kv: *prev_kv,
                ..range.delete_request()?
            }),
            TxnOp::Range {
                range,
                limit,
                keys_only,
            } => Request::Range(pb::RangeRequest {
                limit: *limit,
                keys_only: *keys_only,
                ..range.range_request()
            }),
        };
        Ok(pb::RequestOp {
            request: Some(request),
        })
    }
}

/// A transaction: compares, a success branch and a failure branch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    /// All must hold for `success` to run; an empty list holds.
    pub compares: Vec<Compare>,
    /// Runs when every compare holds.
    pub success: Vec<TxnOp>,
    /// Runs when any compare fails.
    pub failure: Vec<TxnOp>,
}

impl Txn {
    /// An empty transaction.
    pub fn new() -> Txn {
        Txn::default()
    }

    /// Adds compares (all must hold).
    pub fn when(mut self, compares: impl IntoIterator<Item = Compare>) -> Txn {
        self.compares.extend(compares);
        self
    }

    /// Adds operations to the success branch.
    pub fn and_then(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Txn {
        self.success.extend(ops);
        self
    }

    /// Adds operations to the failure branch.
    pub fn or_else(mut self, ops: impl IntoIterator<Item = TxnOp>) -> Txn {
        self.failure.extend(ops);
        self
    }

    pub(crate) fn to_pb(&self, request_id: pb::RequestId) -> Result<pb::TxnRequest> {
        Ok(pb::TxnRequest {
            compares: self.compares.iter().map(Compare::to_pb).collect(),
            success: self
                .success
                .iter()
                .map(TxnOp::to_pb)
                .collect::<Result<_>>()?,
            failure: self
                .failure
                .iter()
                .map(TxnOp::to_pb)
                .collect::<Result<_>>()?,
            request_id: Some(request_id),
        })
    }
}

/// The result of one transaction operation, in the position of its operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnOpResponse {
    /// A put's result.
    Put {
        /// The previous key-value, when asked for and present.
        prev_kv: Option<KeyValue>,
    },
    /// A delete's result.
    Delete {
        /// How many keys were deleted.
        deleted: i64,
        /// The deleted key-values, when asked for.
        prev_kvs: Vec<KeyValue>,
    },
    /// A read's result.
    Range {
        /// The keys read.
        kvs: Vec<KeyValue>,
        /// More keys matched than were returned.
        more: bool,
        /// Keys matched in total.
        count: i64,
    },
}

/// The result of a transaction.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TxnResponse {
    /// Who served it; `revision` is the revision after it.
    pub header: Header,
    /// True when every compare held and the success branch ran.
    pub succeeded: bool,
    /// One result per operation of the branch that ran.
    pub responses: Vec<TxnOpResponse>,
}

impl TxnResponse {
    pub(crate) fn from_pb(r: pb::TxnResponse) -> TxnResponse {
        use pb::response_op::Response;
        TxnResponse {
            header: Header::from_pb(r.header),
            succeeded: r.succeeded,
            responses: r
                .responses
                .into_iter()
                .filter_map(|op| op.response)
                .map(|resp| match resp {
                    Response::Put(p) => TxnOpResponse::Put {
                        prev_kv: p.prev_kv.map(KeyValue::from),
                    },
                    Response::Delete(d) => TxnOpResponse::Delete {
                        deleted: d.deleted,
                        prev_kvs: d.prev_kvs.into_iter().map(KeyValue::from).collect(),
                    },
                    Response::Range(r) => TxnOpResponse::Range {
                        kvs: r.kvs.into_iter().map(KeyValue::from).collect(),
                        more: r.more,
                        count: r.count,
                    },
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::compare::{Op, Operand, Target};

    #[test]
    fn builds_the_wire_request() {
        let txn = Txn::new()
            .when([
                Compare::value("a").equal("x"),
                Compare::version("b").greater(3),
            ])
            .when([Compare::absent("c")])
            .and_then([TxnOp::put("a", "y"), TxnOp::delete("b")])
            .or_else([TxnOp::get("a")]);
        let req = txn
            .to_pb(pb::RequestId {
                client_id: 7,
                sequence: 1,
            })
            .unwrap();
        assert_eq!(req.compares.len(), 3);
        assert_eq!(req.compares[0].target, Target::Value as i32);
        assert_eq!(req.compares[0].operand, Some(Operand::Value(b"x".to_vec())));
        assert_eq!(req.compares[1].op, Op::Greater as i32);
        assert_eq!(req.compares[1].operand, Some(Operand::Version(3)));
        assert_eq!(req.compares[2].target, Target::Exists as i32);
        assert_eq!(req.compares[2].operand, Some(Operand::Exists(false)));
        assert_eq!(req.success.len(), 2);
        assert_eq!(req.failure.len(), 1);
        assert_eq!(req.request_id.unwrap().client_id, 7);
    }
}
