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
//!
//! # After a restart: the read floor
//!
//! openraft's read index is `max(commit index, the leader's first entry of its term)`. That is
//! the commit index at the moment only if the leader learned it in this term. A member that led
//! term T when the whole cluster lost power comes back as the leader of T without an election
//! (its vote was committed), with the commit index it last had *durable* — openraft stores it
//! lazily, and the power cut took the rest — and with its first entry of T far behind. Its
//! ReadIndex would then confirm leadership with a follower and answer an index below writes
//! that were acknowledged before the cut: a stale linearizable read (found by the chaos
//! harness's `power-loss-all` fault).
//!
//! [`RestartFloor`] closes it. At start-up the member notes its term and its last log entry.
//! Everything acknowledged before the restart is in that log (a leader fsyncs an entry before
//! it counts towards a commit, and by leader completeness so does every entry committed before
//! its term), so while the member still leads that same term a read waits until the member has
//! applied up to that entry. The leader commits it again by replicating it, in its own term, so
//! the wait ends. Once the term moves on, a new leader's first entry of its new term lies above
//! every entry of the old log and the floor has nothing left to add.

use std::sync::{Arc, Mutex, PoisonError};

use openraft::error::{CheckIsLeaderError, Fatal, RaftError};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::oneshot;

use crate::raft::{LogId, MemberNode, NodeId, Raft};

/// What a ReadIndex round answers: the log id a read must wait to have applied.
pub type ReadIndexResult =
    Result<Option<LogId>, RaftError<NodeId, CheckIsLeaderError<NodeId, MemberNode>>>;

/// The member's term and last log entry when it started; see the module docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestartFloor {
    pub term: u64,
    pub last_log: LogId,
}

impl RestartFloor {
    /// The log id a read that got `read` from a round must wait for, when the member answering
    /// is in `current_term`.
    pub fn apply(
        floor: Option<&RestartFloor>,
        current_term: u64,
        read: Option<LogId>,
    ) -> Option<LogId> {
        match floor {
            Some(f) if f.term == current_term => {
                let floor = Some(f.last_log);
                if floor.map(|l| l.index) > read.map(|l| l.index) {
                    floor
                } else {
                    read
                }
            }
            _ => read,
        }
    }
}

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

#[cfg(test)]
mod floor_tests {
    use super::*;

    fn log_id(term: u64, index: u64) -> LogId {
        LogId::new(openraft::CommittedLeaderId::new(term, 0), index)
    }

    #[test]
    fn the_floor_lifts_reads_only_in_the_term_the_member_restarted_in() {
        let floor = RestartFloor {
            term: 3,
            last_log: log_id(3, 120),
        };
        // Restarted as the leader of term 3 with a stale commit index: wait for entry 120.
        assert_eq!(
            RestartFloor::apply(Some(&floor), 3, Some(log_id(3, 90))),
            Some(log_id(3, 120))
        );
        assert_eq!(
            RestartFloor::apply(Some(&floor), 3, None),
            Some(log_id(3, 120))
        );
        // Past the floor already: the round's answer stands.
        assert_eq!(
            RestartFloor::apply(Some(&floor), 3, Some(log_id(3, 150))),
            Some(log_id(3, 150))
        );
        // A later term: its leader's first entry is above the old log; no floor.
        assert_eq!(
            RestartFloor::apply(Some(&floor), 4, Some(log_id(4, 100))),
            Some(log_id(4, 100))
        );
        assert_eq!(
            RestartFloor::apply(None, 3, Some(log_id(3, 90))),
            Some(log_id(3, 90))
        );
    }
}
