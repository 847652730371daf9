//! Coalesced ReadIndex: linearizable reads that arrive together share one quorum round.
//!
//! openraft 0.9's `get_read_log_id` confirms leadership with a heartbeat round to every
//! follower on each call, so one linearizable read cost two peer RPCs. etcd shares one
//! ReadIndex among all the reads waiting for it, and so does this:
//!
//! - A read that finds no round running starts one.
//! - A read that arrives while a round runs waits for the **next** round, which starts as soon as
//!   the running one ends and serves every read that queued meanwhile.
//!
//! Why that is still linearizable: a read may use a round's read index only if the round began
//! after the read arrived. The read index is then at least the commit index at some moment after
//! the read began, so the read observes every write that completed before it began. Joining a
//! round that is already running would break this (the round may have fixed its index before a
//! write that completed just before the read arrived), which is why late readers wait for the
//! next one.

use std::sync::{Arc, Mutex, PoisonError};

use openraft::error::{CheckIsLeaderError, Fatal, RaftError};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::oneshot;

use crate::raft::{LogId, MemberNode, NodeId, Raft};

/// What a ReadIndex round answers: the log id a read must wait to have applied.
pub type ReadIndexResult =
    Result<Option<LogId>, RaftError<NodeId, CheckIsLeaderError<NodeId, MemberNode>>>;

/// Shares ReadIndex rounds between the linearizable reads waiting at the same time.
pub struct ReadIndexCoalescer {
    raft: Raft,
    waiting: Mutex<Waiting>,
    rounds: Counter,
}

#[derive(Default)]
struct Waiting {
    /// True while a round task runs (it keeps starting rounds while readers wait).
    round_running: bool,
    /// Readers that arrived after the running round began.
    readers: Vec<oneshot::Sender<ReadIndexResult>>,
}

impl ReadIndexCoalescer {
    /// `rounds` counts the quorum rounds actually run.
    pub fn new(raft: Raft, rounds: Counter) -> Arc<Self> {
        Arc::new(Self {
            raft,
            waiting: Mutex::default(),
            rounds,
        })
    }

    /// The read index for a read that begins now (see the module docs).
    pub async fn read_log_id(self: &Arc<Self>) -> ReadIndexResult {
        let (reply, answer) = oneshot::channel();
        let start_rounds = {
            let mut w = self.lock();
            w.readers.push(reply);
            !std::mem::replace(&mut w.round_running, true)
        };
        if start_rounds {
            tokio::spawn(self.clone().run_rounds());
        }
        answer
            .await
            .unwrap_or(Err(RaftError::Fatal(Fatal::Stopped)))
    }

    /// Runs rounds until no reader waits. Every reader taken here arrived before the round that
    /// answers it began.
    async fn run_rounds(self: Arc<Self>) {
        loop {
            let readers = {
                let mut w = self.lock();
                w.readers.retain(|r| !r.is_closed());
                if w.readers.is_empty() {
                    w.round_running = false;
                    return;
                }
                std::mem::take(&mut w.readers)
            };
            self.rounds.inc();
            let result = self.raft.get_read_log_id().await.map(|(id, _applied)| id);
            for reader in readers {
                let _ = reader.send(result.clone());
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Waiting> {
        // Nothing panics while holding the lock; a poisoned one still holds consistent data.
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
