//! How far the state machine's effects are durable: the watermark that log purges wait for.
//!
//! openraft 0.9 installs a snapshot on a follower by forwarding it to the state-machine worker
//! and then queues `PurgeLog` for the entries it covers at once, with no ordering between the
//! two (`FollowingHandler::install_full_snapshot`; `Command::PurgeLog` has no condition). If
//! the log made that purge durable before `install_snapshot` saved the snapshot file, a crash in
//! between would leave entries that exist nowhere on this member, and it could not restart.
//!
//! So the state machine raises this watermark only once an index is durably covered (the
//! snapshot file holding it was saved with fsync, or the applied state read back when the store
//! opened, after every sled file was fsynced), and the log store never makes a purge durable
//! past it (`log.rs`). It is a `tokio::sync::watch` so that an append that must wait for it
//! (see `LogStore::append`) can await a change.

use std::time::Duration;

use tokio::sync::watch;

/// The highest log index whose effect the state machine holds durably (`None`: nothing yet).
#[derive(Debug)]
pub(crate) struct Coverage {
    covered: watch::Sender<Option<u64>>,
}

impl Coverage {
    pub(crate) fn new() -> Self {
        Self {
            covered: watch::Sender::new(None),
        }
    }

    /// The highest durably covered index.
    pub(crate) fn get(&self) -> Option<u64> {
        *self.covered.borrow()
    }

    /// Records that everything up to `index` is durable in the state machine (never lowers).
    pub(crate) fn raise(&self, index: Option<u64>) {
        self.covered.send_if_modified(|c| {
            let higher = index > *c;
            if higher {
                *c = index;
            }
            higher
        });
    }

    /// Waits up to `timeout` until `index` is covered; returns the coverage reached.
    pub(crate) async fn wait_for(&self, index: u64, timeout: Duration) -> Option<u64> {
        let mut rx = self.covered.subscribe();
        let _ = tokio::time::timeout(timeout, rx.wait_for(|c| *c >= Some(index))).await;
        self.get()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn coverage_only_rises_and_wakes_waiters() {
        let c = std::sync::Arc::new(Coverage::new());
        assert_eq!(c.get(), None);
        c.raise(Some(5));
        c.raise(Some(3));
        assert_eq!(c.get(), Some(5));
        assert_eq!(c.wait_for(7, Duration::from_millis(20)).await, Some(5));
        let raiser = c.clone();
        let waiter = tokio::spawn(async move { c.wait_for(9, Duration::from_secs(30)).await });
        raiser.raise(Some(9));
        assert_eq!(waiter.await.unwrap(), Some(9));
    }
}
