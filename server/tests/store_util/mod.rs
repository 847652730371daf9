//! Helpers shared by the `store_*` tests: a store in a temp dir and log entries to feed it.
#![allow(dead_code)]

use std::path::Path;

use kvset_proto::raft::{command_result, log_command::Command, CommandResult, LogCommand};
use kvset_proto::v1::{
    compare, request_op, response_op, Compare, DeleteRequest, DeleteResponse, PutRequest,
    PutResponse, RangeRequest, RangeResponse, RequestId, RequestOp, TxnRequest, TxnResponse,
};
use kvset_server::raft::types::{Entry, LogId, Proto};
use kvset_server::store::{self, StateMachineStore, Store};
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, EntryPayload};
use tempfile::TempDir;

/// A log id in term 1 of leader 0.
pub fn log_id(index: u64) -> LogId {
    LogId::new(CommittedLeaderId::new(1, 0), index)
}

/// A normal entry carrying `command` at `index`.
pub fn entry(index: u64, command: LogCommand) -> Entry {
    Entry {
        log_id: log_id(index),
        payload: EntryPayload::Normal(Proto(command)),
    }
}

/// A command without a request id.
pub fn cmd(command: Command) -> LogCommand {
    LogCommand {
        request_id: None,
        command: Some(command),
    }
}

/// A command with a request id.
pub fn cmd_id(client_id: u64, sequence: u64, command: Command) -> LogCommand {
    LogCommand {
        request_id: Some(RequestId {
            client_id,
            sequence,
        }),
        command: Some(command),
    }
}

pub fn put_cmd(key: &[u8], value: &[u8]) -> Command {
    Command::Put(PutRequest {
        key: key.to_vec(),
        value: value.to_vec(),
        ..Default::default()
    })
}

pub fn put_op(key: &[u8], value: &[u8]) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::Put(PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            ..Default::default()
        })),
    }
}

pub fn delete_op(req: DeleteRequest) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::Delete(req)),
    }
}

pub fn range_op(req: RangeRequest) -> RequestOp {
    RequestOp {
        request: Some(request_op::Request::Range(req)),
    }
}

pub fn compare(
    key: &[u8],
    target: compare::Target,
    op: compare::Op,
    operand: compare::Operand,
) -> Compare {
    Compare {
        key: key.to_vec(),
        target: target as i32,
        op: op as i32,
        operand: Some(operand),
    }
}

/// Opens a store this process just closed (see `store::test_support::when_released`).
pub fn reopen(path: &Path) -> Store {
    store::test_support::when_released(|| store::open(path))
}

/// A store in its own temp dir, applying entries with consecutive indexes.
pub struct TestStore {
    pub dir: TempDir,
    pub store: Store,
    pub sm: StateMachineStore,
    pub next_index: u64,
}

impl TestStore {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = store::open(dir.path()).expect("open store");
        let sm = store.state_machine();
        Self {
            dir,
            store,
            sm,
            next_index: 1,
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Applies commands as one batch; returns their results.
    pub async fn apply_batch(&mut self, commands: Vec<LogCommand>) -> Vec<CommandResult> {
        let entries: Vec<Entry> = commands
            .into_iter()
            .map(|c| {
                let e = entry(self.next_index, c);
                self.next_index += 1;
                e
            })
            .collect();
        self.sm
            .apply(entries)
            .await
            .expect("apply")
            .into_iter()
            .map(|Proto(r)| r)
            .collect()
    }

    pub async fn apply(&mut self, command: LogCommand) -> CommandResult {
        self.apply_batch(vec![command]).await.remove(0)
    }

    pub async fn put(&mut self, key: &[u8], value: &[u8]) -> (i64, PutResponse) {
        self.put_req(PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            ..Default::default()
        })
        .await
    }

    pub async fn put_req(&mut self, req: PutRequest) -> (i64, PutResponse) {
        let r = self.apply(cmd(Command::Put(req))).await;
        match r.result {
            Some(command_result::Result::Put(p)) => (r.revision, p),
            other => panic!("expected a put result, got {other:?}"),
        }
    }

    pub async fn delete(&mut self, req: DeleteRequest) -> (i64, DeleteResponse) {
        let r = self.apply(cmd(Command::Delete(req))).await;
        match r.result {
            Some(command_result::Result::Delete(d)) => (r.revision, d),
            other => panic!("expected a delete result, got {other:?}"),
        }
    }

    pub async fn txn(&mut self, req: TxnRequest) -> (i64, TxnResponse) {
        let r = self.apply(cmd(Command::Txn(req))).await;
        match r.result {
            Some(command_result::Result::Txn(t)) => (r.revision, t),
            other => panic!("expected a txn result, got {other:?}"),
        }
    }

    /// A page of keys as strings-of-bytes.
    pub fn range(&self, req: &RangeRequest, max: usize) -> RangeResponse {
        self.sm.range(req, max).expect("range")
    }
}

/// The keys of a range response.
pub fn keys(resp: &RangeResponse) -> Vec<Vec<u8>> {
    resp.kvs.iter().map(|kv| kv.key.clone()).collect()
}

/// Takes the range response out of a txn response op.
pub fn as_range(op: &kvset_proto::v1::ResponseOp) -> &RangeResponse {
    match &op.response {
        Some(response_op::Response::Range(r)) => r,
        other => panic!("expected a range response, got {other:?}"),
    }
}

pub fn as_put(op: &kvset_proto::v1::ResponseOp) -> &PutResponse {
    match &op.response {
        Some(response_op::Response::Put(p)) => p,
        other => panic!("expected a put response, got {other:?}"),
    }
}

pub fn as_delete(op: &kvset_proto::v1::ResponseOp) -> &DeleteResponse {
    match &op.response {
        Some(response_op::Response::Delete(d)) => d,
        other => panic!("expected a delete response, got {other:?}"),
    }
}
