//! What the cluster looked like over a run: every member's role, term and indexes, sampled
//! while the workload runs, for the HTML report's leader band and lag chart.
//!
//! The run already polls every member's `Status` a few times a second to keep the workload's
//! idea of the leader fresh; [`ClusterSamples::record`] keeps a small digest of each of those
//! polls, so sampling costs no extra requests. Only what the report draws is kept (reachable,
//! leader, term, commit and applied index), stamped on the run's clock so that it lines up
//! with the faults and the history.
//!
//! The memory is bounded whatever the run's length: when [`MAX_SAMPLES`] are held, every
//! second sample is dropped and from then on only every second poll is kept (the stride
//! doubles again at the next fill). A long run thus gets a coarser picture, never a bigger one.
//!
//! The samples are not part of `report.json`: they are a picture of the run, not a result,
//! and a long run would make the JSON large.

use std::sync::Mutex;

use super::monitor::ClusterView;

/// The most samples kept; reaching it halves the resolution (see the module doc).
pub const MAX_SAMPLES: usize = 4096;

/// One member at one poll.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemberSample {
    /// It answered the poll.
    pub reachable: bool,
    /// It said it was the leader.
    pub leader: bool,
    /// Its term.
    pub term: u64,
    /// The highest index it knows committed.
    pub commit_index: u64,
    /// The highest index it applied.
    pub applied_index: u64,
}

/// Every member at one poll, by ordinal.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterSample {
    /// When (ms on the run's clock, see [`super::RunClock`]).
    pub at_ms: f64,
    /// By ordinal.
    pub members: Vec<MemberSample>,
}

impl ClusterSample {
    /// The digest of one poll.
    pub fn of(at_ms: f64, view: &ClusterView) -> ClusterSample {
        ClusterSample {
            at_ms,
            members: view
                .members
                .iter()
                .map(|m| MemberSample {
                    reachable: m.reachable,
                    leader: m.is_leader(),
                    term: m.term,
                    commit_index: m.commit_index,
                    applied_index: m.applied_index,
                })
                .collect(),
        }
    }

    /// The ordinal and term of the leader with the highest term (an old leader that has not
    /// yet heard of the new term may still call itself leader).
    pub fn leader(&self) -> Option<(usize, u64)> {
        self.members
            .iter()
            .enumerate()
            .filter(|(_, m)| m.reachable && m.leader)
            .max_by_key(|(_, m)| m.term)
            .map(|(i, m)| (i, m.term))
    }

    /// The highest commit index any reachable member reports.
    pub fn commit_index(&self) -> Option<u64> {
        self.members
            .iter()
            .filter(|m| m.reachable)
            .map(|m| m.commit_index)
            .max()
    }
}

/// The samples of one run (bounded, see the module doc).
#[derive(Debug, Default)]
pub struct ClusterSamples {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    samples: Vec<ClusterSample>,
    /// Keep one poll in `stride`.
    stride: u64,
    polls: u64,
}

impl ClusterSamples {
    /// No samples yet.
    pub fn new() -> ClusterSamples {
        ClusterSamples::default()
    }

    /// Keeps a digest of `view`, polled at `at_ms` (or skips it, once thinned).
    pub fn record(&self, at_ms: f64, view: &ClusterView) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let stride = inner.stride.max(1);
        inner.polls += 1;
        if !(inner.polls - 1).is_multiple_of(stride) {
            return;
        }
        if inner.samples.len() >= MAX_SAMPLES {
            let mut keep = false;
            inner.samples.retain(|_| {
                keep = !keep;
                keep
            });
            inner.stride = stride * 2;
        }
        inner.samples.push(ClusterSample::of(at_ms, view));
    }

    /// The samples so far, in time order.
    pub fn snapshot(&self) -> Vec<ClusterSample> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.samples.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::monitor::MemberView;

    fn view(leader: usize, term: u64) -> ClusterView {
        ClusterView {
            members: (0..3)
                .map(|i| MemberView {
                    name: format!("kv-{i}"),
                    reachable: true,
                    role: if i == leader { "leader" } else { "follower" }.into(),
                    term,
                    ..MemberView::default()
                })
                .collect(),
        }
    }

    #[test]
    fn samples_stay_bounded_and_in_order() {
        let s = ClusterSamples::new();
        for i in 0..(MAX_SAMPLES * 5) {
            s.record(i as f64, &view(i % 3, i as u64));
        }
        let got = s.snapshot();
        assert!(got.len() <= MAX_SAMPLES, "{}", got.len());
        assert!(got.len() >= MAX_SAMPLES / 2, "{}", got.len());
        assert!(got.windows(2).all(|w| w[0].at_ms < w[1].at_ms));
        assert_eq!(got[0].leader(), Some((0, 0)));
    }
}
