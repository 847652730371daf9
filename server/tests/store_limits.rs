//! Request validation: limits and malformed requests, with messages that say what to change.

use kvset_proto::v1::compare::{Op, Operand, Target};
use kvset_proto::v1::{
    request_op, Compare, DeleteRequest, GetRequest, PutRequest, RangeRequest, RequestId, RequestOp,
    TxnRequest,
};
use kvset_server::limits::{LimitError, Limits};

fn put(key_len: usize, value_len: usize) -> PutRequest {
    PutRequest {
        key: vec![b'k'; key_len],
        value: vec![b'v'; value_len],
        ..Default::default()
    }
}

fn put_op(key_len: usize) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::Put(put(key_len, 1))),
    }
}

fn cmp(target: Target, op: Op, operand: Option<Operand>) -> Compare {
    Compare {
        key: b"k".to_vec(),
        target: target as i32,
        op: op as i32,
        operand,
    }
}

fn txn_with_compare(c: Compare) -> TxnRequest {
    TxnRequest {
        compares: vec![c],
        ..Default::default()
    }
}

#[test]
fn defaults_match_the_api_contract() {
    let l = Limits::default();
    assert_eq!(
        (
            l.max_key_bytes,
            l.max_value_bytes,
            l.max_range_limit,
            l.max_txn_ops
        ),
        (4096, 1 << 20, 10_000, 128)
    );
    // a maximal Txn of maximal puts must fit the gRPC decoding cap
    assert!(l.max_request_bytes() > 2 * 128 * ((1 << 20) + 4096));
}

#[test]
fn sizes_are_checked_with_messages_naming_the_flag() {
    let l = Limits::default();
    assert_eq!(l.validate_put(&put(4096, 1 << 20)), Ok(()));

    let err = l.validate_put(&put(5000, 1)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "key is 5000 bytes; the limit is 4096 (--max-key-bytes / KVSET_MAX_KEY_BYTES)"
    );
    let err = l.validate_put(&put(1, (1 << 20) + 1)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "value is 1048577 bytes; the limit is 1048576 (--max-value-bytes / KVSET_MAX_VALUE_BYTES)"
    );
    let err = l
        .validate_get(&GetRequest {
            key: vec![0; 4097],
            ..Default::default()
        })
        .unwrap_err();
    assert!(matches!(err, LimitError::KeyTooLarge { size: 4097, .. }));

    let custom = Limits {
        max_key_bytes: 8,
        ..Limits::default()
    };
    assert!(custom.validate_put(&put(9, 0)).is_err());
    assert!(custom.validate_put(&put(8, 0)).is_ok());
}

#[test]
fn empty_keys() {
    let l = Limits::default();
    assert!(matches!(
        l.validate_put(&put(0, 1)),
        Err(LimitError::EmptyKey(_))
    ));
    assert!(matches!(
        l.validate_get(&GetRequest::default()),
        Err(LimitError::EmptyKey(_))
    ));
    assert!(matches!(
        l.validate_delete(&DeleteRequest::default()),
        Err(LimitError::EmptyKey(_))
    ));
    // an empty prefix means every key: allowed
    assert_eq!(
        l.validate_delete(&DeleteRequest {
            prefix: true,
            ..Default::default()
        }),
        Ok(())
    );
    // an empty range start means from the first key: allowed
    assert_eq!(l.validate_range(&RangeRequest::default()), Ok(()));
}

#[test]
fn range_end_with_prefix_is_refused() {
    let l = Limits::default();
    let err = l
        .validate_delete(&DeleteRequest {
            key: b"a".to_vec(),
            range_end: b"b".to_vec(),
            prefix: true,
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(err, LimitError::EndWithPrefix("range_end"));
    assert!(err.to_string().contains("cannot be combined with prefix"));
    let err = l
        .validate_range(&RangeRequest {
            start: b"a".to_vec(),
            end: b"b".to_vec(),
            prefix: true,
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(err, LimitError::EndWithPrefix("end"));
}

#[test]
fn range_limits() {
    let l = Limits::default();
    let range = |limit| RangeRequest {
        limit,
        ..Default::default()
    };
    assert_eq!(l.validate_range(&range(0)), Ok(()));
    assert_eq!(l.validate_range(&range(10_000)), Ok(()));
    let err = l.validate_range(&range(10_001)).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("range limit is 10001; the maximum is 10000 (--max-range-limit / KVSET_MAX_RANGE_LIMIT)"),
        "{err}"
    );
    assert_eq!(
        l.validate_range(&range(-1)),
        Err(LimitError::NegativeRangeLimit(-1))
    );
}

#[test]
fn txn_op_counts_per_part() {
    let l = Limits {
        max_txn_ops: 2,
        ..Limits::default()
    };
    let ok = TxnRequest {
        success: vec![put_op(1), put_op(1)],
        failure: vec![put_op(1), put_op(1)],
        ..Default::default()
    };
    assert_eq!(l.validate_txn(&ok), Ok(()));
    let mut too_many = ok.clone();
    too_many.failure.push(put_op(1));
    assert_eq!(
        l.validate_txn(&too_many).unwrap_err().to_string(),
        "txn has 3 failure operations; the limit is 2 (--max-txn-ops / KVSET_MAX_TXN_OPS)"
    );
}

#[test]
fn errors_inside_a_txn_say_where() {
    let l = Limits::default();
    let txn = TxnRequest {
        success: vec![put_op(1), put_op(5000)],
        ..Default::default()
    };
    assert_eq!(
        l.validate_txn(&txn).unwrap_err().to_string(),
        "txn success[1]: key is 5000 bytes; the limit is 4096 (--max-key-bytes / KVSET_MAX_KEY_BYTES)"
    );
    let txn = TxnRequest {
        failure: vec![RequestOp { request: None }],
        ..Default::default()
    };
    assert!(l
        .validate_txn(&txn)
        .unwrap_err()
        .to_string()
        .starts_with("txn failure[0]: "));
    let txn = TxnRequest {
        success: vec![RequestOp {
            request: Some(request_op::Request::Range(RangeRequest {
                limit: 20_000,
                ..Default::default()
            })),
        }],
        ..Default::default()
    };
    assert!(l.validate_txn(&txn).is_err());
}

#[test]
fn compares_need_a_matching_operand() {
    let l = Limits::default();
    let ok = [
        cmp(Target::Value, Op::Less, Some(Operand::Value(b"x".to_vec()))),
        cmp(Target::Version, Op::Greater, Some(Operand::Version(1))),
        cmp(
            Target::CreateRevision,
            Op::Equal,
            Some(Operand::CreateRevision(1)),
        ),
        cmp(
            Target::ModRevision,
            Op::NotEqual,
            Some(Operand::ModRevision(1)),
        ),
        cmp(Target::Exists, Op::Equal, Some(Operand::Exists(true))),
        cmp(Target::Exists, Op::NotEqual, Some(Operand::Exists(false))),
    ];
    for c in ok {
        assert_eq!(
            l.validate_txn(&txn_with_compare(c.clone())),
            Ok(()),
            "{c:?}"
        );
    }

    let err = l
        .validate_txn(&txn_with_compare(cmp(Target::Version, Op::Equal, None)))
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "txn compares[0]: compare on target TARGET_VERSION needs the `version` operand, but no operand is set"
    );
    let err = l
        .validate_txn(&txn_with_compare(cmp(
            Target::ModRevision,
            Op::Equal,
            Some(Operand::Version(1)),
        )))
        .unwrap_err();
    assert!(
        err.to_string()
            .ends_with("needs the `mod_revision` operand, but `version` is set"),
        "{err}"
    );

    for op in [Op::Greater, Op::Less] {
        let err = l
            .validate_txn(&txn_with_compare(cmp(
                Target::Exists,
                op,
                Some(Operand::Exists(true)),
            )))
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("EXISTS compare supports only EQUAL and NOT_EQUAL"),
            "{err}"
        );
    }

    let mut unknown = cmp(Target::Version, Op::Equal, Some(Operand::Version(1)));
    unknown.op = 9;
    assert!(l.validate_txn(&txn_with_compare(unknown)).is_err());
    let mut empty_key = cmp(Target::Version, Op::Equal, Some(Operand::Version(1)));
    empty_key.key.clear();
    assert!(l.validate_txn(&txn_with_compare(empty_key)).is_err());
}

#[test]
fn request_ids_need_a_sequence() {
    let l = Limits::default();
    let mut p = put(1, 1);
    p.request_id = Some(RequestId {
        client_id: 7,
        sequence: 0,
    });
    assert_eq!(l.validate_put(&p), Err(LimitError::ZeroSequence(7)));
    p.request_id = Some(RequestId {
        client_id: 0,
        sequence: 0,
    });
    assert_eq!(l.validate_put(&p), Ok(()));
    p.request_id = Some(RequestId {
        client_id: 7,
        sequence: 1,
    });
    assert_eq!(l.validate_put(&p), Ok(()));
}
