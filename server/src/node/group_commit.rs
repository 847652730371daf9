//! Group commit: client writes that queue up while the previous proposal is in flight share one
//! log entry.
//!
//! openraft 0.9 makes every `client_write` its own log entry and appends it, fsync included,
//! inside its single core task before it looks at the next write (see docs/BENCHMARKS.md). One
//! durable append per client write caps a leader at a few thousand writes a second, however
//! many clients wait. etcd avoids this by batching every proposal that arrives while its WAL
//! syncs; kvset does the same one level up:
//!
//! - Writes go into a queue. One task proposes them, **one proposal at a time**.
//! - A write that finds the proposer idle goes alone, as a plain command: a lone client pays no
//!   extra latency and the log holds exactly what it would without batching.
//! - Writes that queued while a proposal was in flight are proposed together, as one entry
//!   holding a [`CommandBatch`], once that proposal is answered. One append, one fsync on each
//!   replica and one replication round then cover all of them.
//!
//! The state machine applies a batch command by command, each with its own revision, request id
//! and exactly-once check (`store/state_machine.rs`), so a batched write means exactly what it
//! would mean alone. A batch is capped by count and by encoded size, so that entries stay well
//! below the peer message limit however large the values are.
//!
//! One proposal in flight, not several: a second proposal only waits behind the first one's
//! fsync inside openraft, so more in flight measured no better (with the log in sled, worse;
//! the numbers are in docs/BENCHMARKS.md). A write whose caller has gone (deadline, cancelled RPC)
//! before its batch is proposed is dropped: its caller already got an error that does not claim
//! the write happened, and a retry carries the same request id.

use kvset_proto::raft::{command_result, log_command, CommandBatch, CommandResult, LogCommand};
use openraft::error::{ClientWriteError, RaftError};
use prometheus_client::metrics::histogram::Histogram;
use prost::Message;
use tokio::sync::{mpsc, oneshot};

use crate::raft::{MemberNode, NodeId, Proto, Raft};

/// What openraft answers a proposal with when it fails.
pub type RaftWriteError = RaftError<NodeId, ClientWriteError<NodeId, MemberNode>>;

/// Most client commands in one entry.
pub const MAX_BATCH_COMMANDS: usize = 512;

/// Most encoded bytes of client commands in one entry. A single larger command still goes
/// through, alone.
pub const MAX_BATCH_BYTES: usize = 1024 * 1024;

/// Why a write submitted to the group committer has no result.
#[derive(Debug, thiserror::Error)]
pub enum GroupCommitError {
    /// openraft refused or failed the proposal (not the leader, membership change, stopped).
    #[error(transparent)]
    Raft(Box<RaftWriteError>),
    /// The proposer task is gone: the member is shutting down.
    #[error("the write proposer stopped")]
    Stopped,
    /// A batch entry was applied but its result does not have one result per command. The
    /// writes did happen; their individual results are unknown.
    #[error(
        "a batch of {commands} writes was applied but produced {results} results; \
         the writes are applied, their results are unknown"
    )]
    MalformedBatchResult { commands: usize, results: usize },
}

/// One queued write and where its result goes.
struct Pending {
    command: LogCommand,
    encoded_len: usize,
    reply: oneshot::Sender<Result<CommandResult, GroupCommitError>>,
}

/// The handle the API uses to write; owns the queue of the proposer task.
pub struct GroupCommit {
    queue: mpsc::UnboundedSender<Pending>,
}

impl GroupCommit {
    /// Starts the proposer task on the current tokio runtime. It ends when this handle is
    /// dropped. `batch_sizes` observes the number of writes in each proposal.
    pub fn start(raft: Raft, batch_sizes: Histogram) -> Self {
        let (queue, pending) = mpsc::unbounded_channel();
        tokio::spawn(propose_in_turn(raft, pending, batch_sizes));
        Self { queue }
    }

    /// Proposes `command` (alone or with others queued with it) and returns its result once its
    /// entry is committed and applied here.
    pub async fn write(&self, command: LogCommand) -> Result<CommandResult, GroupCommitError> {
        let (reply, result) = oneshot::channel();
        let pending = Pending {
            encoded_len: command.encoded_len(),
            command,
            reply,
        };
        self.queue
            .send(pending)
            .map_err(|_| GroupCommitError::Stopped)?;
        result.await.unwrap_or(Err(GroupCommitError::Stopped))
    }
}

/// The proposer task: takes what is queued, proposes it, waits for the answer, repeats.
async fn propose_in_turn(
    raft: Raft,
    mut queue: mpsc::UnboundedReceiver<Pending>,
    batch_sizes: Histogram,
) {
    let mut carried: Option<Pending> = None;
    loop {
        let first = match carried.take() {
            Some(p) => p,
            None => match queue.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let mut batch = vec![first];
        let mut bytes = batch[0].encoded_len;
        while batch.len() < MAX_BATCH_COMMANDS {
            let Ok(next) = queue.try_recv() else { break };
            if bytes + next.encoded_len > MAX_BATCH_BYTES {
                carried = Some(next);
                break;
            }
            bytes += next.encoded_len;
            batch.push(next);
        }
        batch.retain(|p| !p.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        batch_sizes.observe(batch.len() as f64);
        propose(&raft, batch).await;
    }
}

/// Proposes one batch and answers every write in it.
async fn propose(raft: &Raft, mut batch: Vec<Pending>) {
    if batch.len() == 1 {
        let Pending { command, reply, .. } = batch.pop().expect("one write");
        let result = raft
            .client_write(Proto(command))
            .await
            .map(|resp| resp.data.0)
            .map_err(|e| GroupCommitError::Raft(Box::new(e)));
        let _ = reply.send(result);
        return;
    }

    let (commands, replies): (Vec<_>, Vec<_>) =
        batch.into_iter().map(|p| (p.command, p.reply)).unzip();
    let entry = LogCommand {
        request_id: None,
        command: Some(log_command::Command::Batch(CommandBatch { commands })),
    };
    match raft.client_write(Proto(entry)).await {
        Ok(resp) => match resp.data.0.result {
            Some(command_result::Result::Batch(b)) if b.results.len() == replies.len() => {
                for (reply, result) in replies.into_iter().zip(b.results) {
                    let _ = reply.send(Ok(result));
                }
            }
            other => {
                let results = match other {
                    Some(command_result::Result::Batch(b)) => b.results.len(),
                    _ => 0,
                };
                let commands = replies.len();
                tracing::error!(
                    commands,
                    results,
                    "a batch entry produced malformed results"
                );
                for reply in replies {
                    let _ = reply.send(Err(GroupCommitError::MalformedBatchResult {
                        commands,
                        results,
                    }));
                }
            }
        },
        Err(e) => {
            for reply in replies {
                let _ = reply.send(Err(GroupCommitError::Raft(Box::new(e.clone()))));
            }
        }
    }
}
