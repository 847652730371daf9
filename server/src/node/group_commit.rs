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
//!
//! One proposal at a time also means one unanswered proposal would stop every later write, so
//! the wait for each answer is bounded by [`PROPOSAL_DEADLINE`]. openraft answers a proposal when
//! its entry is applied or truncated, but not when a snapshot install purges past it (a leader
//! cut off while a write was in flight, then brought back behind a compacted log). At the
//! deadline the proposal's writes fail as possibly applied ([`GroupCommitError::Deadline`]) and
//! the proposer moves on; the entry may still commit later, which the request id makes safe.

use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

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
    /// The proposal got no answer within the proposal deadline. Its entry may still be
    /// committed and applied later (or may never be); the proposer has moved on.
    #[error(
        "the write was proposed but got no answer within {waited:?}; it may or may not be \
         applied (a retry with the same request id is safe)"
    )]
    Deadline { waited: Duration },
}

/// Where the proposer sends an entry: openraft's `client_write` on a member, a stand-in in tests.
pub trait Propose: Send + Sync + 'static {
    /// Proposes one log entry and resolves with its result once it is committed and applied.
    fn propose(
        &self,
        entry: LogCommand,
    ) -> impl Future<Output = Result<CommandResult, RaftWriteError>> + Send;
}

/// A member's proposer: openraft's `client_write`, with two test-only faults: `stall-proposal=N`
/// (the Nth proposal goes to Raft but its answer is never awaited, as when openraft never
/// answers it) and `ack-uncommitted-puts` (see [`RaftProposer::ack_before_commit`]).
pub struct RaftProposer {
    raft: Raft,
    stall_nth: Option<u64>,
    ack_uncommitted_puts: bool,
    proposals: AtomicU64,
    /// The highest revision a committed proposal of this member returned (for the made-up
    /// answers of `ack-uncommitted-puts`).
    last_revision: AtomicI64,
}

impl RaftProposer {
    pub fn new(raft: Raft, faults: &crate::faults::Faults) -> Self {
        Self {
            raft,
            stall_nth: faults.stall_proposal(),
            ack_uncommitted_puts: faults.ack_uncommitted_puts(),
            proposals: AtomicU64::new(0),
            last_revision: AtomicI64::new(0),
        }
    }

    /// The `ack-uncommitted-puts` fault: while this member believes it leads, a put (or a batch
    /// of puts only) is handed to Raft in the background and answered at once with a made-up
    /// result, one revision per put past the last committed one this member saw, as a leader
    /// that acknowledges before a majority holds the entry would. None: propose normally.
    fn ack_before_commit(&self, entry: &LogCommand) -> Option<CommandResult> {
        if !self.ack_uncommitted_puts || !self.raft.metrics().borrow().state.is_leader() {
            return None;
        }
        let is_put = |c: &LogCommand| matches!(c.command, Some(log_command::Command::Put(_)));
        let batch = match &entry.command {
            Some(log_command::Command::Put(_)) => None,
            Some(log_command::Command::Batch(b)) if b.commands.iter().all(is_put) => {
                Some(b.commands.len() as i64)
            }
            _ => return None,
        };
        let puts = batch.unwrap_or(1);
        let first = self.last_revision.fetch_add(puts, Ordering::SeqCst) + 1;
        let made_up = |revision: i64| CommandResult {
            revision,
            result: Some(command_result::Result::Put(Default::default())),
        };
        let raft = self.raft.clone();
        let entry = entry.clone();
        tokio::spawn(async move {
            let _ = raft.client_write(Proto(entry)).await;
        });
        tracing::warn!(
            puts,
            "injected fault: acknowledging puts before they are committed"
        );
        Some(match batch {
            None => made_up(first),
            Some(n) => CommandResult {
                revision: first + n - 1,
                result: Some(command_result::Result::Batch(
                    kvset_proto::raft::ResultBatch {
                        results: (first..first + n).map(made_up).collect(),
                    },
                )),
            },
        })
    }
}

impl Propose for RaftProposer {
    async fn propose(&self, entry: LogCommand) -> Result<CommandResult, RaftWriteError> {
        let n = self.proposals.fetch_add(1, Ordering::SeqCst) + 1;
        if self.stall_nth == Some(n) {
            tracing::warn!(
                proposal = n,
                "injected fault: this proposal's answer is never awaited"
            );
            let raft = self.raft.clone();
            tokio::spawn(async move {
                let _ = raft.client_write(Proto(entry)).await;
            });
            return std::future::pending().await;
        }
        if let Some(made_up) = self.ack_before_commit(&entry) {
            return Ok(made_up);
        }
        let result = self
            .raft
            .client_write(Proto(entry))
            .await
            .map(|resp| resp.data.0)?;
        self.last_revision
            .fetch_max(result.revision, Ordering::SeqCst);
        Ok(result)
    }
}

impl GroupCommitError {
    /// The same failure, for each write of a batch that failed as a whole.
    fn clone_for_batch(&self) -> Self {
        match self {
            Self::Raft(e) => Self::Raft(e.clone()),
            Self::Stopped => Self::Stopped,
            Self::MalformedBatchResult { commands, results } => Self::MalformedBatchResult {
                commands: *commands,
                results: *results,
            },
            Self::Deadline { waited } => Self::Deadline { waited: *waited },
        }
    }
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

/// How long the proposer waits for one proposal's answer before it fails the writes in it as
/// possibly applied and proposes the next batch. openraft answers a proposal only when its entry
/// is applied or truncated; one purged by an installed snapshot is answered never.
pub const PROPOSAL_DEADLINE: Duration = Duration::from_secs(5);

impl GroupCommit {
    /// Starts the proposer task on the current tokio runtime. It ends when this handle is
    /// dropped. `batch_sizes` observes the number of writes in each proposal; `deadline` bounds
    /// the wait for each proposal's answer ([`PROPOSAL_DEADLINE`] on a member).
    pub fn start(proposer: impl Propose, batch_sizes: Histogram, deadline: Duration) -> Self {
        let (queue, pending) = mpsc::unbounded_channel();
        tokio::spawn(propose_in_turn(proposer, pending, batch_sizes, deadline));
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
    proposer: impl Propose,
    mut queue: mpsc::UnboundedReceiver<Pending>,
    batch_sizes: Histogram,
    deadline: Duration,
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
        propose(&proposer, batch, deadline).await;
    }
}

/// Proposes `entry`, waiting at most `deadline` for its answer.
async fn propose_within(
    proposer: &impl Propose,
    entry: LogCommand,
    deadline: Duration,
) -> Result<CommandResult, GroupCommitError> {
    match tokio::time::timeout(deadline, proposer.propose(entry)).await {
        Ok(result) => result.map_err(|e| GroupCommitError::Raft(Box::new(e))),
        Err(_elapsed) => {
            tracing::warn!(
                waited = ?deadline,
                "a proposal got no answer in time; its writes fail as possibly applied"
            );
            Err(GroupCommitError::Deadline { waited: deadline })
        }
    }
}

/// Proposes one batch and answers every write in it.
async fn propose(proposer: &impl Propose, mut batch: Vec<Pending>, deadline: Duration) {
    if batch.len() == 1 {
        let Pending { command, reply, .. } = batch.pop().expect("one write");
        let _ = reply.send(propose_within(proposer, command, deadline).await);
        return;
    }

    let (commands, replies): (Vec<_>, Vec<_>) =
        batch.into_iter().map(|p| (p.command, p.reply)).unzip();
    let entry = LogCommand {
        request_id: None,
        command: Some(log_command::Command::Batch(CommandBatch { commands })),
    };
    match propose_within(proposer, entry, deadline).await {
        Ok(resp) => match resp.result {
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
                let _ = reply.send(Err(e.clone_for_batch()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use kvset_proto::v1::PutRequest;
    use prometheus_client::metrics::histogram::exponential_buckets;

    use super::*;

    /// Answers every proposal with the next revision, except the first one, which it never
    /// answers (as openraft does when a snapshot install purges past an uncommitted entry).
    #[derive(Default)]
    struct FirstNeverAnswers {
        proposals: Arc<AtomicU64>,
    }

    impl Propose for FirstNeverAnswers {
        async fn propose(&self, _entry: LogCommand) -> Result<CommandResult, RaftWriteError> {
            let n = self.proposals.fetch_add(1, Ordering::SeqCst) + 1;
            if n == 1 {
                std::future::pending::<()>().await;
            }
            Ok(CommandResult {
                revision: n as i64,
                result: None,
            })
        }
    }

    fn put(key: &str) -> LogCommand {
        LogCommand {
            request_id: None,
            command: Some(log_command::Command::Put(PutRequest {
                key: key.into(),
                ..Default::default()
            })),
        }
    }

    #[tokio::test]
    async fn a_proposal_that_is_never_answered_does_not_block_later_writes() {
        let proposer = FirstNeverAnswers::default();
        let proposals = proposer.proposals.clone();
        let gc = Arc::new(GroupCommit::start(
            proposer,
            Histogram::new(exponential_buckets(1.0, 2.0, 4)),
            Duration::from_millis(300),
        ));
        let stuck = tokio::spawn({
            let gc = gc.clone();
            async move { gc.write(put("a")).await }
        });
        while proposals.load(Ordering::SeqCst) == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // The first proposal is in flight and will never be answered. A later write must still
        // get an answer, and the stuck one must fail as possibly applied.
        let later = tokio::time::timeout(Duration::from_secs(10), gc.write(put("b")))
            .await
            .expect("a later write hung behind a proposal that is never answered");
        assert_eq!(later.expect("the later write is proposed").revision, 2);
        let stuck = tokio::time::timeout(Duration::from_secs(1), stuck)
            .await
            .expect("the stuck write got no answer")
            .expect("task");
        assert!(
            matches!(stuck, Err(GroupCommitError::Deadline { .. })),
            "{stuck:?}"
        );
    }
}
