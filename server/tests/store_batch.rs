//! Group commit in the state machine: a `CommandBatch` entry is applied as if each of its
//! commands had its own entry, and entries it cannot apply stop the state machine instead of
//! being skipped.

mod store_util;

use kvset_proto::raft::log_command::Command;
use kvset_proto::raft::{command_result, CommandBatch, CommandResult, LogCommand};
use kvset_proto::v1::{compare, DeleteRequest, RequestId, TxnRequest};
use kvset_server::raft::types::Proto;
use openraft::storage::RaftStateMachine;
use store_util::*;

fn batch(commands: Vec<LogCommand>) -> LogCommand {
    LogCommand {
        request_id: None,
        command: Some(Command::Batch(CommandBatch { commands })),
    }
}

fn results(r: CommandResult) -> Vec<CommandResult> {
    match r.result {
        Some(command_result::Result::Batch(b)) => b.results,
        other => panic!("expected a batch result, got {other:?}"),
    }
}

/// A mix of commands that depend on each other: a later one reads what an earlier one wrote.
fn workload() -> Vec<LogCommand> {
    vec![
        cmd_id(1, 1, put_cmd(b"a", b"1")),
        cmd(put_cmd(b"b", b"1")),
        cmd_id(2, 1, put_cmd(b"a", b"2")),
        cmd(Command::Txn(TxnRequest {
            compares: vec![compare(
                b"a",
                compare::Target::Value,
                compare::Op::Equal,
                compare::Operand::Value(b"2".to_vec()),
            )],
            success: vec![put_op(b"c", b"seen a=2")],
            failure: vec![put_op(b"c", b"missed")],
            request_id: None,
        })),
        cmd_id(
            1,
            2,
            Command::Delete(DeleteRequest {
                key: b"b".to_vec(),
                ..Default::default()
            }),
        ),
    ]
}

#[tokio::test]
async fn a_batch_applies_like_one_entry_per_command() {
    let mut one_by_one = TestStore::new();
    let mut expected = Vec::new();
    for c in workload() {
        expected.push(one_by_one.apply(c).await);
    }

    let mut batched = TestStore::new();
    let r = batched.apply(batch(workload())).await;
    assert_eq!(r.revision, 5, "each command got its own revision");
    assert_eq!(results(r), expected, "same results, in order");
    assert_eq!(
        batched.sm.get(b"c").unwrap().unwrap().value,
        b"seen a=2",
        "a later command of the batch saw an earlier one's write"
    );
    let (a, b) = (
        batched.sm.digest().unwrap(),
        one_by_one.sm.digest().unwrap(),
    );
    assert_eq!(
        (a.revision, a.key_count, a.hash),
        (b.revision, b.key_count, b.hash)
    );
    assert_eq!(batched.sm.dedup_clients(), 2);
}

#[tokio::test]
async fn exactly_once_holds_inside_and_across_batches() {
    let mut s = TestStore::new();
    let first = results(
        s.apply(batch(vec![
            cmd_id(9, 1, put_cmd(b"k", b"x")),
            // the same request twice in one batch (a retry that raced the original)
            cmd_id(9, 1, put_cmd(b"k", b"x")),
            cmd_id(10, 1, put_cmd(b"k", b"y")),
        ]))
        .await,
    );
    assert_eq!(
        first[0], first[1],
        "the duplicate got the remembered result"
    );
    assert_eq!((first[0].revision, first[2].revision), (1, 2));

    // A retry of a command of the first batch, inside a later batch.
    let second = results(
        s.apply(batch(vec![
            cmd_id(10, 1, put_cmd(b"k", b"y")),
            cmd_id(9, 2, put_cmd(b"k", b"z")),
        ]))
        .await,
    );
    assert_eq!(second[0], first[2]);
    assert_eq!(second[1].revision, 3);
    let k = s.sm.get(b"k").unwrap().unwrap();
    assert_eq!((k.value.as_slice(), k.version), (b"z".as_slice(), 3));
}

#[tokio::test]
async fn a_batch_survives_a_restart() {
    let mut s = TestStore::new();
    s.apply(batch(workload())).await;
    let before = s.sm.digest().unwrap();
    let dir = s.dir;
    drop(s.sm);
    drop(s.store);
    let store = reopen(dir.path());
    let after = store.state_machine().digest().unwrap();
    assert_eq!((before.revision, before.hash), (after.revision, after.hash));
}

/// Entries the state machine cannot apply are errors: skipping one would make this replica
/// diverge from the replicas that applied it.
#[tokio::test]
async fn entries_it_cannot_apply_stop_the_state_machine() {
    let cases = [
        (
            LogCommand {
                request_id: None,
                command: None,
            },
            "holds no command this kvset-server knows",
        ),
        (
            batch(vec![batch(vec![cmd(put_cmd(b"a", b"1"))])]),
            "nests a command batch",
        ),
        (
            batch(vec![
                cmd(put_cmd(b"a", b"1")),
                LogCommand {
                    request_id: None,
                    command: None,
                },
            ]),
            "holds no command this kvset-server knows",
        ),
        (
            LogCommand {
                request_id: Some(RequestId {
                    client_id: 1,
                    sequence: 1,
                }),
                command: Some(Command::Batch(CommandBatch {
                    commands: vec![cmd(put_cmd(b"a", b"1"))],
                })),
            },
            "request id of its own",
        ),
    ];
    for (command, want) in cases {
        let mut s = TestStore::new();
        let err =
            s.sm.apply(vec![entry(1, command)])
                .await
                .map(|r| r.into_iter().map(|Proto(r)| r).collect::<Vec<_>>())
                .expect_err("must not apply");
        let msg = err.to_string();
        assert!(msg.contains(want), "{msg:?} should contain {want:?}");
        assert!(msg.contains("log entry 1"), "{msg:?}");
        assert_eq!(s.sm.revision(), 0, "nothing of the entry was applied");
        assert!(s.sm.get(b"a").unwrap().is_none());
    }
}
