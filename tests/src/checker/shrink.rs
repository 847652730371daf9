//! Shrinking a violation to a window a person can read.
//!
//! A non-linearizable key may have thousands of operations; the report should show the few
//! that cannot be reconciled. Only transformations that keep the *proof* are used: each one
//! maps any linearization of the original history to a linearization of the smaller one, so
//! "the smaller one has none" still implies "the original has none". Every window printed
//! was itself checked and found non-linearizable.
//!
//! 1. **Cut at a time `T`.** Keep the operations invoked at or before `T`. Those that returned
//!    at or before `T` keep their results; those still running at `T` become `info` (their
//!    effect may or may not have happened yet); running read-only operations are dropped.
//!    Given a linearization of the full history, its prefix up to the first operation invoked
//!    after `T` is a linearization of the cut: every operation that returned by `T` precedes
//!    every operation invoked after `T`, so it is in that prefix, and the prefix's states are
//!    unchanged. Cuts are monotone (a cut of a cut is a cut), so the earliest violating cut is
//!    found by binary search over the return times: the completion at that time is the moment
//!    the history became impossible.
//! 2. **Drop read-only operations** (reads, and cas whose compare failed): first the longest
//!    run of the earliest ones that can go together (binary search), then the others one at a
//!    time, keeping a drop whenever the rest is still a violation. Removing an operation that never
//!    changes the state from a linearization leaves a linearization, so this is sound too.
//!    What remains is a window in which every read is needed for the contradiction.
//!
//! Writes are never dropped: removing one could make a read of its value impossible and so
//! manufacture a violation that the original history does not have.
//!
//! Shrinking runs under its own step allowance and the check's deadline. When those run out it
//! stops with the smallest window proven so far, and says the window may not be minimal.

use super::model::KeyOp;
use super::search::{search, Limits, SearchResult};

/// The result of shrinking: a violating sub-history of one key.
#[derive(Debug, Clone)]
pub(crate) struct Window {
    /// Indexes into the key's operations, in invoke order, each with whether the cut turned it
    /// into `info` (it was still running at the cut).
    pub ops: Vec<(usize, bool)>,
    /// The cut time, when the window is a proper cut.
    pub cut: Option<u64>,
    /// The operation whose completion at the cut made the history impossible.
    pub culprit: Option<usize>,
    /// False when the allowance ran out before shrinking finished.
    pub complete: bool,
    /// Steps spent.
    pub steps: u64,
}

/// Tracks the step allowance across the probes of one shrink.
struct Allowance {
    limits: Limits,
    left: u64,
    spent: u64,
    exhausted: bool,
}

impl Allowance {
    /// Whether `ops` is (provably) not linearizable. Giving up counts as "not proven".
    fn violates(&mut self, ops: &[KeyOp]) -> bool {
        if self.exhausted {
            return false;
        }
        let limits = Limits {
            max_steps: self.left,
            ..self.limits
        };
        let outcome = search(ops, &limits);
        self.spent += outcome.steps;
        self.left = self.left.saturating_sub(outcome.steps);
        match outcome.result {
            SearchResult::Violation => true,
            SearchResult::Linearizable(_) => false,
            SearchResult::GaveUp(_) => {
                self.exhausted = true;
                false
            }
        }
    }
}

/// The operations of the cut at `t`, as `(index, pending)` pairs.
fn cut(ops: &[KeyOp], t: u64) -> Vec<(usize, bool)> {
    ops.iter()
        .enumerate()
        .filter(|(_, op)| op.call <= t)
        .filter_map(|(i, op)| match op.ret {
            Some(ret) if ret <= t => Some((i, false)),
            Some(_) if op.effect.is_read_only() => None,
            Some(_) => Some((i, true)),
            None => Some((i, false)),
        })
        .collect()
}

/// The operations of a window, ready to search (pending ones lose their return).
fn materialize(ops: &[KeyOp], window: &[(usize, bool)]) -> Vec<KeyOp> {
    window
        .iter()
        .map(|&(i, pending)| KeyOp {
            ret: if pending { None } else { ops[i].ret },
            ..ops[i]
        })
        .collect()
}

/// Shrinks the known-violating history `ops` of one key. `limits.max_steps` is the allowance
/// for the whole shrink.
pub(crate) fn shrink(ops: &[KeyOp], limits: &Limits) -> Window {
    let mut allowance = Allowance {
        limits: *limits,
        left: limits.max_steps,
        spent: 0,
        exhausted: false,
    };
    let mut times: Vec<u64> = ops.iter().filter_map(|op| op.ret).collect();
    times.sort_unstable();
    times.dedup();
    if times.is_empty() {
        // Nothing completed: such a history is always linearizable; keep everything.
        return Window {
            ops: (0..ops.len()).map(|i| (i, false)).collect(),
            cut: None,
            culprit: None,
            complete: false,
            steps: 0,
        };
    }

    // 1. The earliest violating cut. The cut at the last return is equivalent to the whole
    //    history (only `info` operations are invoked after it), which is known to violate.
    let (mut lo, mut hi) = (0, times.len() - 1);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if allowance.violates(&materialize(ops, &cut(ops, times[mid]))) {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let t = times[hi];
    let mut window = cut(ops, t);
    let culprit = window
        .iter()
        .map(|&(i, _)| i)
        .find(|&i| ops[i].ret == Some(t));

    // 2. Drop read-only operations that the contradiction does not need: first the longest
    //    run of the earliest ones that can go together (found by binary search; usually most
    //    of them, as the contradiction tends to sit near the cut), then the rest one by one.
    let read_only: Vec<usize> = window
        .iter()
        .filter(|&&(i, _)| ops[i].effect.is_read_only())
        .map(|&(i, _)| i)
        .collect();
    let without = |window: &[(usize, bool)], gone: &[usize]| -> Vec<(usize, bool)> {
        window
            .iter()
            .filter(|(i, _)| !gone.contains(i))
            .copied()
            .collect()
    };
    let (mut lo, mut hi) = (0, read_only.len());
    while lo < hi && !allowance.exhausted {
        let mid = lo + (hi - lo).div_ceil(2);
        if allowance.violates(&materialize(ops, &without(&window, &read_only[..mid]))) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    window = without(&window, &read_only[..lo]);
    for &candidate in &read_only[lo..] {
        if allowance.exhausted {
            break;
        }
        let smaller = without(&window, &[candidate]);
        if allowance.violates(&materialize(ops, &smaller)) {
            window = smaller;
        }
    }

    Window {
        culprit: culprit.filter(|c| window.iter().any(|&(i, _)| i == *c)),
        ops: window,
        cut: Some(t),
        complete: !allowance.exhausted,
        steps: allowance.spent,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::model::{Effect, ABSENT};

    fn op(effect: Effect, call: u64, ret: Option<u64>) -> KeyOp {
        KeyOp {
            effect,
            call,
            ret,
            origin: 0,
        }
    }

    #[test]
    fn shrinks_to_the_write_and_the_stale_read() {
        let ops = [
            op(Effect::Read(ABSENT), 0, Some(1)),
            op(Effect::Write(1), 2, Some(3)),
            op(Effect::Read(1), 4, Some(5)),
            op(Effect::Read(ABSENT), 6, Some(7)),
            op(Effect::Write(2), 8, Some(9)),
            op(Effect::Read(2), 10, Some(11)),
        ];
        let limits = Limits {
            max_steps: 100_000,
            deadline: None,
            max_memo_bytes: 1 << 30,
        };
        let window = shrink(&ops, &limits);
        assert_eq!(window.ops, vec![(1, false), (3, false)]);
        assert_eq!(window.cut, Some(7));
        assert_eq!(window.culprit, Some(3));
        assert!(window.complete);
    }
}
