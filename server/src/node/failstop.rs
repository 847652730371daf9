//! Fail-stop: a member whose storage failed stops at once, says why, and exits.
//!
//! openraft stops its core for good on any storage error (a full disk, an I/O error, a failed
//! fsync): every later call answers "raft is shutting down". Left alone, the process would go on
//! answering health probes as if nothing happened, a zombie that Kubernetes neither restarts
//! nor takes out of the Service, while every write and linearizable read through it fails.
//!
//! So the member turns a storage failure into a clean stop:
//!
//! 1. [`FailStop::trip`] records the first cause (later ones are the same failure seen again) and
//!    logs `stopping: storage failure: …` once, at ERROR.
//! 2. From that moment readiness *and* liveness answer NOT_SERVING, and every client RPC,
//!    `Status` included, answers `UNAVAILABLE` with the cause, so nobody reads a storage failure as
//!    a network or TLS problem.
//! 3. After a short drain (long enough for the probes and the clients already connected to see
//!    the answers above) the server stops without a leadership hand-off (a stopped core cannot
//!    hand anything off) and the process exits non-zero. Its supervisor — the local launcher,
//!    Docker's restart policy, the kubelet — starts it again.
//!
//! Why exit rather than retry in place: a failed fsync may have dropped the dirty pages it was
//! meant to persist, and the kernel can report the next fsync as a success (the PostgreSQL
//! "fsyncgate" lesson). The only state that can be trusted after a failed write or sync is what a
//! fresh process reads back from disk, so the member recovers by restarting from it, never by
//! retrying the write as if the data were safe. A full disk is the common case: once space
//! returns, the restart resumes where the durable state left off, and a member that fell behind
//! catches up from the leader as after any restart.
//!
//! Detection is the Raft metrics' `running_state` (set to the fatal error when the core stops on
//! a storage error, whether it came from the log store or the state machine), the core's metrics
//! channel closing without an orderly stop (a panic in the core task: a bug, but one that must
//! not leave a zombie member behind, so it is handled the same way), plus any storage error the
//! API layer meets while reading the state machine directly.

use std::sync::OnceLock;

use tokio::sync::watch;

use crate::raft::Raft;

/// The member's storage-failure latch: unset while healthy, set once for good.
#[derive(Debug)]
pub struct FailStop {
    cause: OnceLock<String>,
    tripped: watch::Sender<bool>,
}

impl Default for FailStop {
    fn default() -> Self {
        Self {
            cause: OnceLock::new(),
            tripped: watch::Sender::new(false),
        }
    }
}

impl FailStop {
    /// Records `cause` as the reason this member stops (only the first cause counts) and wakes
    /// everything waiting in [`FailStop::tripped`].
    pub fn trip(&self, member: &str, cause: impl Into<String>) {
        let cause = cause.into();
        if self.cause.set(cause.clone()).is_ok() {
            tracing::error!(
                member,
                cause = %cause,
                "stopping: storage failure: {cause}; this member exits so that it restarts from \
                 what is on disk (free space or fix the volume if it keeps happening)"
            );
            self.tripped.send_replace(true);
        }
    }

    /// The recorded cause, once tripped.
    pub fn cause(&self) -> Option<&str> {
        self.cause.get().map(String::as_str)
    }

    /// Resolves once the latch trips (at once if it already has).
    pub async fn tripped(&self) {
        let mut rx = self.tripped.subscribe();
        let _ = rx.wait_for(|t| *t).await;
    }

    /// Trips the latch when the Raft core stops with a fatal error (a storage error). Runs until
    /// then, or until the core is gone for another reason (an orderly shutdown, which is not a
    /// failure).
    pub async fn watch_raft(&self, member: &str, raft: Raft) {
        let mut metrics = raft.metrics();
        loop {
            let fatal = metrics.borrow_and_update().running_state.clone().err();
            if let Some(fatal) = fatal {
                // An orderly `Raft::shutdown` also ends the core, with `Fatal::Stopped`: not a
                // failure of the storage.
                if !matches!(fatal, openraft::error::Fatal::Stopped) {
                    self.trip(member, format!("the Raft core stopped: {fatal}"));
                }
                return;
            }
            if metrics.changed().await.is_err() {
                // The core is gone. openraft records why in `running_state` when its main loop
                // ends (`Fatal::Stopped` for an orderly shutdown); a panic in the core task
                // unwinds past that, drops the metrics sender and leaves the last state `Ok`. A
                // core that died is as fatal as one that stopped on a storage error: without
                // this the member would stay up, answering probes, with a dead core.
                match metrics.borrow().running_state.clone() {
                    Err(openraft::error::Fatal::Stopped) => {}
                    Err(fatal) => self.trip(member, format!("the Raft core stopped: {fatal}")),
                    Ok(()) => self.trip(
                        member,
                        "the Raft core stopped without saying why (it panicked; see the log \
                         above)"
                            .to_string(),
                    ),
                }
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_first_cause_wins_and_waiters_wake() {
        let latch = std::sync::Arc::new(FailStop::default());
        assert_eq!(latch.cause(), None);
        let waiter = {
            let latch = latch.clone();
            tokio::spawn(async move { latch.tripped().await })
        };
        latch.trip("kv-1", "No space left on device (os error 28)");
        latch.trip("kv-1", "a later, derived error");
        waiter.await.unwrap();
        assert_eq!(latch.cause(), Some("No space left on device (os error 28)"));
        // Already tripped: resolves at once.
        latch.tripped().await;
    }
}
