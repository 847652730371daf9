//! Exactly-once: a request id applied twice is applied once and answered the same.

mod store_util;

use kvset_proto::raft::command_result;
use kvset_proto::raft::log_command::Command;
use kvset_proto::v1::{DeleteRequest, PutRequest, TxnRequest};
use store_util::*;

fn put_prev(key: &[u8], value: &[u8]) -> Command {
    Command::Put(PutRequest {
        key: key.to_vec(),
        value: value.to_vec(),
        prev_kv: true,
        request_id: None,
        lease: 0,
        ignore_lease: Default::default(),
        ignore_value: Default::default(),
    })
}

#[tokio::test]
async fn a_retried_write_is_applied_once_with_the_same_result() {
    let mut s = TestStore::new();
    s.put(b"k", b"old").await; // revision 1

    let first = s.apply(cmd_id(42, 1, put_prev(b"k", b"new"))).await;
    assert_eq!(first.revision, 2);
    // something else happens in between
    s.put(b"other", b"x").await; // revision 3

    let retry = s.apply(cmd_id(42, 1, put_prev(b"k", b"new"))).await;
    assert_eq!(retry, first, "the remembered result, revision included");
    assert_eq!(s.sm.revision(), 3, "the retry wrote nothing");
    let k = s.sm.get(b"k").unwrap().unwrap();
    assert_eq!((k.version, k.mod_revision), (2, 2));
    match retry.result {
        Some(command_result::Result::Put(p)) => {
            assert_eq!(p.prev_kv.unwrap().value, b"old")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(s.sm.dedup_clients(), 1);
}

#[tokio::test]
async fn duplicates_in_one_batch_are_applied_once() {
    let mut s = TestStore::new();
    let results = s
        .apply_batch(vec![
            cmd_id(7, 1, put_cmd(b"a", b"1")),
            cmd_id(7, 1, put_cmd(b"a", b"1")),
            cmd_id(8, 1, put_cmd(b"a", b"2")),
        ])
        .await;
    assert_eq!(results[0], results[1]);
    assert_eq!(results[0].revision, 1);
    assert_eq!(results[2].revision, 2);
    assert_eq!(s.sm.get(b"a").unwrap().unwrap().version, 2);
}

#[tokio::test]
async fn older_sequences_are_not_applied_and_newer_ones_are() {
    let mut s = TestStore::new();
    s.apply(cmd_id(5, 1, put_cmd(b"a", b"1"))).await;
    s.apply(cmd_id(5, 2, put_cmd(b"a", b"2"))).await;
    assert_eq!(s.sm.revision(), 2);

    // sequence 1 is older than the remembered 2: nothing applied, no result
    let stale = s.apply(cmd_id(5, 1, put_cmd(b"a", b"1"))).await;
    assert_eq!((stale.revision, stale.result), (2, None));
    assert_eq!(s.sm.get(b"a").unwrap().unwrap().value, b"2");

    // a new sequence applies (gaps are fine)
    let next = s.apply(cmd_id(5, 10, put_cmd(b"a", b"3"))).await;
    assert_eq!(next.revision, 3);
}

#[tokio::test]
async fn without_a_usable_request_id_every_copy_applies() {
    let mut s = TestStore::new();
    for _ in 0..2 {
        s.apply(cmd(put_cmd(b"a", b"1"))).await;
        s.apply(cmd_id(0, 1, put_cmd(b"a", b"1"))).await;
        s.apply(cmd_id(9, 0, put_cmd(b"a", b"1"))).await;
    }
    assert_eq!(s.sm.revision(), 6);
    assert_eq!(s.sm.dedup_clients(), 0);
}

#[tokio::test]
async fn dedup_covers_deletes_and_txns_and_results_that_wrote_nothing() {
    let mut s = TestStore::new();
    s.put(b"x", b"1").await;
    let del = Command::Delete(DeleteRequest {
        key: b"x".to_vec(),
        ..Default::default()
    });
    let first = s.apply(cmd_id(1, 1, del.clone())).await;
    s.put(b"x", b"again").await;
    let retry = s.apply(cmd_id(1, 1, del)).await;
    assert_eq!(first, retry);
    assert!(
        s.sm.get(b"x").unwrap().is_some(),
        "the retried delete did not run again"
    );

    let txn = Command::Txn(TxnRequest {
        success: vec![put_op(b"t", b"1")],
        ..Default::default()
    });
    let first = s.apply(cmd_id(2, 1, txn.clone())).await;
    let retry = s.apply(cmd_id(2, 1, txn)).await;
    assert_eq!(first, retry);
    assert_eq!(s.sm.get(b"t").unwrap().unwrap().version, 1);
}

#[tokio::test]
async fn the_table_survives_a_restart() {
    let mut s = TestStore::new();
    let first = s.apply(cmd_id(3, 4, put_cmd(b"a", b"1"))).await;
    let next_index = s.next_index;
    let path = s.path().to_path_buf();
    let TestStore { dir, store, sm, .. } = s;
    drop((store, sm));

    let reopened = reopen(&path);
    let mut s = TestStore {
        dir,
        sm: reopened.state_machine(),
        store: reopened,
        next_index,
    };
    let retry = s.apply(cmd_id(3, 4, put_cmd(b"a", b"1"))).await;
    assert_eq!(retry, first);
    assert_eq!(s.sm.revision(), 1);
}
