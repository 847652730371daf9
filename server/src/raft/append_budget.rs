//! How many bytes of log entries one AppendEntries to a peer may carry.
//!
//! openraft 0.9 bounds an AppendEntries by entry count (`max_payload_entries`) and gives every
//! one the heartbeat interval to complete (`replication/mod.rs`: the call is wrapped in a timeout
//! of `heartbeat_interval`), and on a timeout it sends **the same batch again**. With large
//! values a far-behind follower can therefore never catch up: 256 entries of 16 KiB are 4 MiB to
//! encode, send, append and fsync within one heartbeat, which a loaded machine (or a slow disk)
//! misses every time. The follower hears no heartbeat that succeeds, keeps starting elections it
//! cannot win (its log is short), and the leader never learns of the higher term because every
//! answer is cut off by the timeout: the cluster stays unavailable until load drops.
//!
//! The only lever openraft offers is `PayloadTooLarge` with an entry-count hint, which it obeys
//! for the next few calls. So the transport keeps a per-peer byte budget, as etcd bounds each
//! message by bytes (`MaxSizePerMsg`, 1 MiB): a batch over budget is refused with a hint of how
//! many entries fit; a call that is dropped before it answers (openraft's timeout fired) halves
//! the budget, down to [`MIN_BYTES`]; a call that answers doubles it again, up to
//! [`MAX_BYTES`]. A single entry is always sent, whatever its size: it cannot be split.
//!
//! Hand-written because it is a dozen lines specific to openraft's retry behaviour; no crate
//! offers it.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// The most bytes of entries one AppendEntries carries (etcd's default `MaxSizePerMsg`).
pub const MAX_BYTES: usize = 1024 * 1024;
/// The budget never shrinks below this.
pub const MIN_BYTES: usize = 64 * 1024;

/// A peer's current budget, shared with the guards of calls in flight.
#[derive(Clone, Debug)]
pub struct AppendBudget(Arc<AtomicUsize>);

impl Default for AppendBudget {
    fn default() -> Self {
        Self(Arc::new(AtomicUsize::new(MAX_BYTES)))
    }
}

impl AppendBudget {
    /// The current limit in bytes.
    pub fn limit(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }

    /// `None` when entries of these sizes fit in one call; otherwise how many of the first ones
    /// do (at least one).
    pub fn fit(&self, sizes: impl IntoIterator<Item = usize>) -> Option<u64> {
        let limit = self.limit();
        let (mut total, mut fitting, mut all) = (0usize, 0u64, true);
        for size in sizes {
            total = total.saturating_add(size);
            if total > limit {
                all = false;
                break;
            }
            fitting += 1;
        }
        (!all).then_some(fitting.max(1))
    }

    /// Marks a call carrying more than one entry as in flight: dropping the guard without
    /// [`InFlight::answered`] (a timeout) halves the budget.
    pub fn start(&self) -> InFlight {
        InFlight {
            budget: self.0.clone(),
            armed: true,
        }
    }
}

/// A call in flight; see [`AppendBudget::start`].
#[must_use = "call answered() when the peer answers"]
pub struct InFlight {
    budget: Arc<AtomicUsize>,
    armed: bool,
}

impl InFlight {
    /// The peer answered (whatever it said): the budget may grow again.
    pub fn answered(mut self) {
        self.armed = false;
        let _ = self
            .budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                Some(b.saturating_mul(2).min(MAX_BYTES))
            });
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.armed {
            let _ = self
                .budget
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |b| {
                    Some((b / 2).max(MIN_BYTES))
                });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_over_the_budget_are_cut_to_what_fits() {
        let b = AppendBudget::default();
        assert_eq!(b.fit([1000; 10]), None);
        assert_eq!(b.fit([16 * 1024; 256]), Some(64), "1 MiB of 16 KiB entries");
        assert_eq!(b.fit([4 * MAX_BYTES, 1]), Some(1), "one entry always goes");
    }

    #[test]
    fn a_dropped_call_halves_the_budget_and_an_answer_doubles_it() {
        let b = AppendBudget::default();
        drop(b.start());
        assert_eq!(b.limit(), MAX_BYTES / 2);
        for _ in 0..20 {
            drop(b.start());
        }
        assert_eq!(b.limit(), MIN_BYTES, "floor");
        assert_eq!(b.fit([16 * 1024; 256]), Some(4));
        b.start().answered();
        assert_eq!(b.limit(), 2 * MIN_BYTES);
        for _ in 0..20 {
            b.start().answered();
        }
        assert_eq!(b.limit(), MAX_BYTES, "ceiling");
    }
}
