//! KV semantics of the state machine: revisions, versions, deletes, Txn, compares, ranges.

mod store_util;

use kvset_proto::raft::log_command::Command;
use kvset_proto::v1::compare::{Op, Operand, Target};
use kvset_proto::v1::{DeleteRequest, PutRequest, RangeRequest, TxnRequest};
use kvset_server::store::StoreError;
use store_util::*;

fn del(key: &[u8]) -> DeleteRequest {
    DeleteRequest {
        key: key.to_vec(),
        ..Default::default()
    }
}

fn prefix_range(prefix: &[u8]) -> RangeRequest {
    RangeRequest {
        start: prefix.to_vec(),
        prefix: true,
        ..Default::default()
    }
}

#[tokio::test]
async fn revisions_and_versions_across_put_delete_reput() {
    let mut s = TestStore::new();
    assert_eq!(s.sm.revision(), 0);

    let (rev, resp) = s.put(b"a", b"1").await;
    assert_eq!(rev, 1);
    assert_eq!(resp.prev_kv, None);
    let a = s.sm.get(b"a").unwrap().unwrap();
    assert_eq!((a.create_revision, a.mod_revision, a.version), (1, 1, 1));

    let (rev, resp) = s
        .put_req(PutRequest {
            key: b"a".to_vec(),
            value: b"2".to_vec(),
            prev_kv: true,
            request_id: None,
            lease: 0,
            ignore_lease: Default::default(),
            ignore_value: Default::default(),
        })
        .await;
    assert_eq!(rev, 2);
    let prev = resp.prev_kv.expect("prev_kv requested");
    assert_eq!((prev.value.as_slice(), prev.version), (&b"1"[..], 1));
    let a = s.sm.get(b"a").unwrap().unwrap();
    assert_eq!((a.create_revision, a.mod_revision, a.version), (1, 2, 2));
    assert_eq!(a.value, b"2");

    // prev_kv not requested: not returned
    let (rev, resp) = s.put(b"b", b"x").await;
    assert_eq!((rev, resp.prev_kv), (3, None));
    let (_, resp) = s.put(b"b", b"y").await;
    assert_eq!(resp.prev_kv, None);

    let (rev, resp) = s.delete(del(b"a")).await;
    assert_eq!((rev, resp.deleted), (5, 1));
    assert!(resp.prev_kvs.is_empty());
    assert_eq!(s.sm.get(b"a").unwrap(), None);

    // deleting nothing does not bump the revision
    let (rev, resp) = s.delete(del(b"a")).await;
    assert_eq!((rev, resp.deleted), (5, 0));
    assert_eq!(s.sm.revision(), 5);

    // re-put after delete: new create_revision, version starts over
    let (rev, _) = s.put(b"a", b"3").await;
    assert_eq!(rev, 6);
    let a = s.sm.get(b"a").unwrap().unwrap();
    assert_eq!((a.create_revision, a.mod_revision, a.version), (6, 6, 1));
    assert_eq!(s.sm.key_count(), 2);
    assert_eq!(s.sm.last_applied().map(|l| l.index), Some(7));
}

#[tokio::test]
async fn delete_by_range_end_prefix_and_everything() {
    let mut s = TestStore::new();
    for k in ["a", "ab", "abc", "b", "c", "d"] {
        s.put(k.as_bytes(), b"v").await;
    }
    let (rev, resp) = s
        .delete(DeleteRequest {
            key: b"ab".to_vec(),
            range_end: b"c".to_vec(),
            prev_kv: true,
            ..Default::default()
        })
        .await;
    assert_eq!((rev, resp.deleted), (7, 3));
    let deleted: Vec<_> = resp.prev_kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(
        deleted,
        vec![b"ab".to_vec(), b"abc".to_vec(), b"b".to_vec()]
    );
    assert_eq!(resp.prev_kvs[0].value, b"v");

    let (_, resp) = s
        .delete(DeleteRequest {
            key: b"c".to_vec(),
            prefix: true,
            ..Default::default()
        })
        .await;
    assert_eq!(resp.deleted, 1);
    assert_eq!(s.sm.key_count(), 2);

    // an empty key with prefix is every key
    let (rev, resp) = s
        .delete(DeleteRequest {
            prefix: true,
            ..Default::default()
        })
        .await;
    assert_eq!((rev, resp.deleted), (9, 2));
    assert_eq!(s.sm.key_count(), 0);
    assert_eq!(s.range(&RangeRequest::default(), 100).count, 0);

    // an empty key without prefix deletes nothing
    let (rev, resp) = s.delete(DeleteRequest::default()).await;
    assert_eq!((rev, resp.deleted), (9, 0));
}

#[tokio::test]
async fn txn_branch_ops_see_earlier_writes_and_bump_once() {
    let mut s = TestStore::new();
    s.put(b"other", b"o").await; // revision 1

    let (rev, resp) = s
        .txn(TxnRequest {
            compares: vec![compare(
                b"k",
                Target::Version,
                Op::Equal,
                Operand::Version(0),
            )],
            success: vec![
                put_op(b"k", b"1"),
                range_op(prefix_range(b"k")),
                put_op(b"k", b"2"),
                put_op(b"k2", b"x"),
                range_op(prefix_range(b"k")),
                delete_op(del(b"k")),
                range_op(prefix_range(b"k")),
            ],
            failure: vec![put_op(b"never", b"x")],
            request_id: None,
        })
        .await;
    assert!(resp.succeeded);
    assert_eq!(rev, 2, "one bump for the whole txn");
    assert_eq!(resp.responses.len(), 7);

    let r1 = as_range(&resp.responses[1]);
    assert_eq!(keys(r1), vec![b"k".to_vec()]);
    assert_eq!(
        (r1.kvs[0].value.as_slice(), r1.kvs[0].version),
        (&b"1"[..], 1)
    );
    assert_eq!(r1.kvs[0].mod_revision, 2);

    let prev = as_put(&resp.responses[2]);
    assert_eq!(prev.prev_kv, None, "prev_kv not requested");
    let r4 = as_range(&resp.responses[4]);
    assert_eq!(keys(r4), vec![b"k".to_vec(), b"k2".to_vec()]);
    assert_eq!(
        (r4.kvs[0].value.as_slice(), r4.kvs[0].version),
        (&b"2"[..], 2)
    );
    assert_eq!(r4.kvs[0].create_revision, 2);
    assert_eq!(r4.count, 2);

    assert_eq!(as_delete(&resp.responses[5]).deleted, 1);
    assert_eq!(keys(as_range(&resp.responses[6])), vec![b"k2".to_vec()]);

    assert_eq!(s.sm.get(b"k").unwrap(), None);
    assert_eq!(s.sm.get(b"never").unwrap(), None);
    let k2 = s.sm.get(b"k2").unwrap().unwrap();
    assert_eq!((k2.create_revision, k2.mod_revision), (2, 2));
    assert_eq!(s.sm.revision(), 2);

    // the failure branch runs when a compare fails; a read-only branch does not bump
    let (rev, resp) = s
        .txn(TxnRequest {
            compares: vec![
                compare(b"k2", Target::Exists, Op::Equal, Operand::Exists(true)),
                compare(
                    b"k2",
                    Target::Value,
                    Op::Equal,
                    Operand::Value(b"nope".to_vec()),
                ),
            ],
            success: vec![put_op(b"never", b"x")],
            failure: vec![range_op(prefix_range(b""))],
            request_id: None,
        })
        .await;
    assert!(!resp.succeeded);
    assert_eq!(rev, 2);
    let all = as_range(&resp.responses[0]);
    assert_eq!(all.count, 2);
    assert_eq!(all.first_page_revision, 2);

    // an empty txn holds and changes nothing
    let (rev, resp) = s.txn(TxnRequest::default()).await;
    assert!(resp.succeeded && resp.responses.is_empty());
    assert_eq!(rev, 2);
}

#[tokio::test]
async fn commands_in_one_apply_batch_see_each_other() {
    let mut s = TestStore::new();
    let results = s
        .apply_batch(vec![
            cmd(put_cmd(b"a", b"1")),
            cmd(Command::Txn(TxnRequest {
                compares: vec![compare(
                    b"a",
                    Target::Value,
                    Op::Equal,
                    Operand::Value(b"1".to_vec()),
                )],
                success: vec![put_op(b"b", b"2")],
                ..Default::default()
            })),
            cmd(put_cmd(b"a", b"3")),
        ])
        .await;
    assert_eq!(
        results.iter().map(|r| r.revision).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(s.sm.get(b"b").unwrap().unwrap().mod_revision, 2);
    assert_eq!(s.sm.get(b"a").unwrap().unwrap().version, 2);
    assert_eq!(s.sm.key_count(), 2);
}

/// Every compare target x op, on a present and an absent key, with operands below, equal to
/// and above the actual value.
#[tokio::test]
async fn compare_matrix() {
    let mut s = TestStore::new();
    s.put(b"filler", b"f").await; // revision 1
    s.put(b"k", b"m").await; // revision 2: create 2
    s.put(b"k", b"m").await; // revision 3: version 2, mod 3
    let k = s.sm.get(b"k").unwrap().unwrap();
    assert_eq!((k.create_revision, k.mod_revision, k.version), (2, 3, 2));

    let ops = [Op::Equal, Op::NotEqual, Op::Greater, Op::Less];
    let expect = |actual: std::cmp::Ordering, op: Op| match op {
        Op::Equal => actual.is_eq(),
        Op::NotEqual => actual.is_ne(),
        Op::Greater => actual.is_gt(),
        Op::Less => actual.is_lt(),
    };
    let mut cases = Vec::new();
    for key in [&b"k"[..], &b"absent"[..]] {
        let present = key == b"k";
        // numeric targets: an absent key counts as 0
        type MakeOperand = fn(i64) -> Operand;
        let numeric: [(Target, i64, MakeOperand); 3] = [
            (
                Target::Version,
                if present { 2 } else { 0 },
                Operand::Version,
            ),
            (
                Target::CreateRevision,
                if present { 2 } else { 0 },
                Operand::CreateRevision,
            ),
            (
                Target::ModRevision,
                if present { 3 } else { 0 },
                Operand::ModRevision,
            ),
        ];
        for (target, actual, make) in numeric {
            for operand in [actual - 1, actual, actual + 1] {
                for op in ops {
                    let want = expect(actual.cmp(&operand), op);
                    cases.push((compare(key, target, op, make(operand)), want));
                }
            }
        }
        for operand in [&b"a"[..], &b"m"[..], &b"mm"[..], &b"z"[..]] {
            for op in ops {
                // a value compare on an absent key is false for every op
                let want = present && expect(b"m"[..].cmp(operand), op);
                cases.push((
                    compare(key, Target::Value, op, Operand::Value(operand.to_vec())),
                    want,
                ));
            }
        }
        for operand in [true, false] {
            for op in ops {
                let want = match op {
                    Op::Equal => present == operand,
                    Op::NotEqual => present != operand,
                    Op::Greater | Op::Less => false,
                };
                cases.push((
                    compare(key, Target::Exists, op, Operand::Exists(operand)),
                    want,
                ));
            }
        }
    }
    assert_eq!(cases.len(), 2 * (3 * 3 * 4 + 4 * 4 + 2 * 4));

    for (c, want) in cases {
        let (rev, resp) = s
            .txn(TxnRequest {
                compares: vec![c.clone()],
                ..Default::default()
            })
            .await;
        assert_eq!(resp.succeeded, want, "{c:?}");
        assert_eq!(rev, 3, "compares never write");
    }
}

#[tokio::test]
async fn range_pagination_with_cursors() {
    let mut s = TestStore::new();
    for i in 0..25 {
        s.put(format!("key{i:02}").as_bytes(), b"v").await;
    }
    let req = prefix_range(b"key");
    let mut page_req = RangeRequest {
        limit: 10,
        ..req.clone()
    };

    let (p1, rev1) = s.sm.range_with_revision(&page_req, 100).unwrap();
    assert_eq!(rev1, 25);
    assert_eq!(p1.kvs.len(), 10);
    assert!(p1.more);
    assert_eq!(p1.count, 25);
    assert_eq!(p1.first_page_revision, 25);
    assert_eq!(p1.header, None);
    assert_eq!(p1.kvs[0].key, b"key00");

    // a write between pages: later pages are still read at the first page's revision (the
    // header says the current one), so the late key is not in them
    s.put(b"key15x", b"late").await;
    page_req.cursor = p1.next_cursor.clone();
    let (p2, rev2) = s.sm.range_with_revision(&page_req, 100).unwrap();
    assert_eq!(rev2, 26);
    assert_eq!(p2.first_page_revision, 25);
    assert_eq!(p2.count, 25);
    assert_eq!(p2.kvs[0].key, b"key10");
    assert!(!keys(&p2).contains(&b"key15x".to_vec()));
    assert!(p2.more);

    page_req.cursor = p2.next_cursor.clone();
    let p3 = s.range(&page_req, 100);
    assert_eq!(p3.kvs.len(), 5);
    assert!(!p3.more);
    assert!(p3.next_cursor.is_empty());
    assert_eq!(p3.kvs.last().unwrap().key, b"key24");

    // a cursor is bound to its range
    let foreign = RangeRequest {
        start: b"key".to_vec(),
        end: b"kez".to_vec(),
        cursor: p1.next_cursor.clone(),
        ..Default::default()
    };
    let err = s.sm.range(&foreign, 100).unwrap_err();
    assert!(matches!(err, StoreError::InvalidCursor(_)), "{err}");
    assert!(err.is_deterministic());
    let garbage = RangeRequest {
        cursor: vec![1, 2, 3],
        ..req.clone()
    };
    assert!(matches!(
        s.sm.range(&garbage, 100),
        Err(StoreError::InvalidCursor(_))
    ));
}

#[tokio::test]
async fn range_limits_and_keys_only() {
    let mut s = TestStore::new();
    for i in 0..7 {
        s.put(format!("{i}").as_bytes(), b"value").await;
    }
    // limit 0 is the server maximum
    let page = s.range(&RangeRequest::default(), 3);
    assert_eq!((page.kvs.len(), page.more, page.count), (3, true, 7));
    let page = s.range(
        &RangeRequest {
            limit: 3,
            ..Default::default()
        },
        3,
    );
    assert_eq!(page.kvs.len(), 3);
    for bad in [4, -1] {
        let err =
            s.sm.range(
                &RangeRequest {
                    limit: bad,
                    ..Default::default()
                },
                3,
            )
            .unwrap_err();
        assert!(matches!(err, StoreError::InvalidArgument(_)), "{err}");
    }
    let err =
        s.sm.range(
            &RangeRequest {
                start: b"a".to_vec(),
                end: b"b".to_vec(),
                prefix: true,
                ..Default::default()
            },
            3,
        )
        .unwrap_err();
    assert!(err.is_deterministic());

    let page = s.range(
        &RangeRequest {
            keys_only: true,
            ..Default::default()
        },
        100,
    );
    assert_eq!(page.kvs.len(), 7);
    assert!(page
        .kvs
        .iter()
        .all(|kv| kv.value.is_empty() && kv.version == 1));
    assert!(!page.more && page.next_cursor.is_empty());

    // paging through every key (whose count is kept, not scanned)
    let mut req = RangeRequest {
        limit: 3,
        ..Default::default()
    };
    let mut seen = Vec::new();
    loop {
        let page = s.range(&req, 3);
        assert_eq!(page.count, 7);
        seen.extend(keys(&page));
        if !page.more {
            break;
        }
        req.cursor = page.next_cursor;
    }
    let want: Vec<Vec<u8>> = (0..7).map(|i| format!("{i}").into_bytes()).collect();
    assert_eq!(seen, want);
}

#[tokio::test]
async fn prefix_and_range_end_edge_cases() {
    let mut s = TestStore::new();
    let all: Vec<Vec<u8>> = vec![
        vec![0x61],
        vec![0x61, 0xff],
        vec![0x61, 0xff, 0x00],
        vec![0x62],
        vec![0xfe, 0xff],
        vec![0xff],
        vec![0xff, 0xfe],
        vec![0xff, 0xff],
        vec![0xff, 0xff, 0x01],
    ];
    for k in &all {
        s.put(k, b"v").await;
    }
    let listed = |s: &TestStore, req: RangeRequest| keys(&s.range(&req, 100));

    assert_eq!(
        listed(&s, prefix_range(&[0x61, 0xff])),
        vec![vec![0x61, 0xff], vec![0x61, 0xff, 0x00]]
    );
    assert_eq!(
        listed(&s, prefix_range(&[0xff, 0xff])),
        vec![vec![0xff, 0xff], vec![0xff, 0xff, 0x01]]
    );
    assert_eq!(listed(&s, prefix_range(&[0xff])), all[5..].to_vec());
    assert_eq!(listed(&s, prefix_range(&[0xfe])), vec![vec![0xfe, 0xff]]);
    assert_eq!(listed(&s, prefix_range(b"")), all);
    assert_eq!(
        listed(&s, RangeRequest::default()),
        all,
        "empty start and end: everything"
    );
    assert_eq!(
        listed(
            &s,
            RangeRequest {
                start: vec![0x61, 0xff],
                end: vec![0xff],
                ..Default::default()
            }
        ),
        all[1..5].to_vec()
    );
    assert_eq!(
        listed(
            &s,
            RangeRequest {
                start: vec![0x62],
                ..Default::default()
            }
        ),
        all[3..].to_vec(),
        "an empty end reads to the last key"
    );
    assert_eq!(
        listed(
            &s,
            RangeRequest {
                start: vec![0x62],
                end: vec![0x61],
                ..Default::default()
            }
        ),
        Vec::<Vec<u8>>::new(),
        "end before start is empty"
    );

    // deleting a prefix of all 0xff bytes deletes to the end of the key space, nothing before
    let (_, resp) = s
        .delete(DeleteRequest {
            key: vec![0xff, 0xff],
            prefix: true,
            ..Default::default()
        })
        .await;
    assert_eq!(resp.deleted, 2);
    assert_eq!(listed(&s, prefix_range(b"")), all[..7].to_vec());
}

#[tokio::test]
async fn get_of_empty_or_absent_key_is_none() {
    let mut s = TestStore::new();
    s.put(b"a", b"1").await;
    assert_eq!(s.sm.get(b"").unwrap(), None);
    assert_eq!(s.sm.get(b"b").unwrap(), None);
    let (kv, rev) = s.sm.get_with_revision(b"a").unwrap();
    assert_eq!((kv.unwrap().value, rev), (b"1".to_vec(), 1));
}

#[tokio::test]
async fn commands_the_api_would_refuse_have_a_deterministic_meaning() {
    let mut s = TestStore::new();
    // an empty put key writes nothing
    let (rev, _) = s.put(b"", b"x").await;
    assert_eq!(rev, 0);
    // (a command without a body is an error, not a no-op: see store_batch.rs)
    // a compare with a mismatched operand is false
    let (_, resp) = s
        .txn(TxnRequest {
            compares: vec![compare(
                b"a",
                Target::Version,
                Op::Equal,
                Operand::Exists(false),
            )],
            ..Default::default()
        })
        .await;
    assert!(!resp.succeeded);
}
