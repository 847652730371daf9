//! Exactly-once write ids: a pool of client ids, each with at most one write in flight.
//!
//! # The server's side of the contract
//!
//! Every `Put`, `Delete` and `Txn` carries a `RequestId{client_id, sequence}`. The state machine
//! remembers, per `client_id`, only the *last* sequence it applied and that write's response. A
//! request whose sequence is `<=` the remembered one is a duplicate: it is answered from memory
//! and not applied again.
//!
//! # Why one counter per client is not enough
//!
//! If one client id had two writes in flight, sequence 5 could reach the leader before 4. Then
//! 4 counts as a duplicate: it is never applied, and it is answered with the response of 5.
//! That loses a write silently, with or without retries.
//!
//! # The design: a pool of sessions
//!
//! A `Session` is a random non-zero `client_id` plus the next sequence to hand out. A write
//! takes a session from the `IdPool` for its whole life — the first attempt *and every retry*
//! — and gives it back when the call returns (or is dropped). So each client id has at most
//! one write in flight, its sequences reach the server in order, and a retry always carries the
//! newest sequence of its client id, whose stored response is exactly this write's response.
//!
//! Concurrency is kept: `n` concurrent writes use `n` sessions. Sessions are created on demand
//! up to [`crate::Config::max_inflight_writes`]; a further write waits (within its deadline)
//! until one is free. Free sessions are reused last-in-first-out, so a client that writes one
//! thing at a time uses a single client id and the server keeps one record for it.
//!
//! # What happens after a write that may or may not have applied
//!
//! When a write gives up (deadline passed, the caller dropped the future), its session goes
//! back to the pool and its next write uses the next sequence. A lost attempt of the abandoned
//! write that reaches the leader later carries an older sequence and is dropped as a duplicate;
//! one that arrives earlier is applied before the next write. Either way the order of one
//! session's writes is preserved and nothing is applied twice. The caller sees
//! `may_have_applied` on the error: the abandoned write is *at most once*, not exactly once.

use std::sync::Mutex;

use kvset_proto::v1 as pb;
use tokio::sync::{Semaphore, SemaphorePermit};

/// One client id and its next sequence.
#[derive(Debug)]
pub(crate) struct Session {
    client_id: u64,
    next_sequence: u64,
}

/// The pool of sessions of one [`crate::Client`] (shared by its clones).
#[derive(Debug)]
pub(crate) struct IdPool {
    free: Mutex<Vec<Session>>,
    created: Mutex<Vec<u64>>,
    permits: Semaphore,
}

impl IdPool {
    pub(crate) fn new(max_inflight: usize) -> IdPool {
        IdPool {
            free: Mutex::new(Vec::new()),
            created: Mutex::new(Vec::new()),
            permits: Semaphore::new(max_inflight),
        }
    }

    /// Waits for a free session. The returned lease hands the session back when dropped.
    pub(crate) async fn acquire(&self) -> WriteLease<'_> {
        let permit = self
            .permits
            .acquire()
            .await
            .expect("the id pool's semaphore is never closed");
        let reused = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let session = reused.unwrap_or_else(|| self.new_session());
        WriteLease {
            pool: self,
            session: Some(session),
            _permit: permit,
        }
    }

    fn new_session(&self) -> Session {
        let mut created = self.created.lock().unwrap_or_else(|e| e.into_inner());
        let client_id = loop {
            let id: u64 = rand::random();
            if id != 0 && !created.contains(&id) {
                break id;
            }
        };
        created.push(client_id);
        Session {
            client_id,
            next_sequence: 1,
        }
    }

    /// The client ids created so far (for diagnostics and tests).
    pub(crate) fn client_ids(&self) -> Vec<u64> {
        self.created
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Exclusive use of one session for the duration of one write call.
pub(crate) struct WriteLease<'a> {
    pool: &'a IdPool,
    session: Option<Session>,
    _permit: SemaphorePermit<'a>,
}

impl WriteLease<'_> {
    /// Allocates the id of the next logical write. Every attempt of that write reuses it.
    pub(crate) fn next_request_id(&mut self) -> pb::RequestId {
        let session = self.session.as_mut().expect("present until drop");
        let id = pb::RequestId {
            client_id: session.client_id,
            sequence: session.next_sequence,
        };
        session.next_sequence += 1;
        id
    }
}

impl Drop for WriteLease<'_> {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            self.pool
                .free
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(session);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn serial_writes_share_one_id_with_increasing_sequences() {
        let pool = IdPool::new(4);
        let a = pool.acquire().await.next_request_id();
        let b = pool.acquire().await.next_request_id();
        assert_ne!(a.client_id, 0);
        assert_eq!(a.client_id, b.client_id);
        assert_eq!((a.sequence, b.sequence), (1, 2));
        assert_eq!(pool.client_ids().len(), 1);
    }

    #[tokio::test]
    async fn concurrent_writes_get_distinct_ids_and_the_pool_is_bounded() {
        let pool = IdPool::new(2);
        let mut l1 = pool.acquire().await;
        let mut l2 = pool.acquire().await;
        assert_ne!(
            l1.next_request_id().client_id,
            l2.next_request_id().client_id
        );
        // A third write waits until a lease is returned.
        let third = tokio::time::timeout(std::time::Duration::from_millis(50), pool.acquire());
        assert!(third.await.is_err());
        drop(l1);
        let mut l3 = pool.acquire().await;
        assert_eq!(l3.next_request_id().sequence, 2);
        drop(l2);
        assert_eq!(pool.client_ids().len(), 2);
    }
}
