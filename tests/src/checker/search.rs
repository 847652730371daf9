//! The search for a linearization of one key's history: Wing & Gong's algorithm with Lowe's
//! memoization ("just-in-time linearization").
//!
//! # The idea
//!
//! A history is linearizable iff its operations can be put in one sequence that (1) the
//! register's sequential specification accepts, starting from "absent", and (2) respects real
//! time: if `a` returned before `b` was invoked, `a` comes first. Operations whose outcome is
//! unknown (`info`) have no return; they may appear anywhere after their call, or not at all.
//!
//! The history is laid out as a list of *entries*, the calls and returns of all operations in
//! time order (a call sorts before a return at the same instant, so that operations that merely
//! touch are treated as concurrent: this can only accept more, never reject a valid history).
//! The search builds the sequence one operation at a time:
//!
//! * Walk the list from the front. At a **call** entry, the operation may be linearized next
//!   if the model accepts it in the current state: do so, remove its call and return entries
//!   from the list, push it on a stack, and start again from the front.
//! * Reaching a **return** entry means that operation returned while still not linearized:
//!   nothing that comes later in the list may be linearized before it, so the current prefix
//!   is a dead end. Pop the last linearized operation, put its entries back, restore the state,
//!   and continue after its call entry (try the next candidate instead).
//! * When no completed operation is left, the stack is a linearization (any `info` operation
//!   still in the list simply never took effect). When the stack is empty at a dead end, every
//!   candidate order was refuted and the history is not linearizable.
//!
//! Only operations whose call comes before the first remaining return are ever candidates, and
//! that is exactly the real-time condition: an operation `b` can be linearized before the
//! pending `a` only if `b` was invoked before `a` returned.
//!
//! # Why memoization is sound
//!
//! What the rest of the search can do depends only on *which* operations are linearized (that
//! fixes the remaining list) and on the register's state. So a configuration (set, state) that
//! was reached before and not succeeded from can be skipped (Lowe, "Testing for
//! linearizability", 2017). A configuration can never recur inside its own subtree, since the
//! set only grows along a path, so "reached before" always means "fully explored and failed".
//! The set is a bitset over the key's operations; the state is appended as one more word, so a
//! configuration is one `[u64]` slice in a hash set.
//!
//! # Pruning `info` operations
//!
//! `info` operations never block anything (they have no return entry), so they stay
//! candidates for the rest of the search and would multiply the configurations. Two rules cut
//! them down without losing any linearization; both depend only on the configuration, so the
//! memo stays sound:
//!
//! * An `info` operation is not linearized where it would leave the state unchanged: any
//!   continuation from there is also a continuation without it, and it need not happen.
//! * Among `info` operations with the same effect, the earlier one (in call order) is always
//!   linearized first. When both are candidates, every position valid for one is valid for
//!   the other, so swapping them in any linearization gives another one.
//!
//! # Cost and limits
//!
//! Each step moves one entry forward, linearizes one operation or undoes one. In the worst case
//! the number of configurations is exponential in the number of mutually concurrent
//! operations, so the search runs under [`Limits`]: a step count, a deadline and a cap on the
//! memo's size. Running out is reported as [`SearchResult::GaveUp`], never as a verdict.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Instant;

use super::model::{Effect, KeyOp, State, ABSENT};

/// How much work one search may do.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Steps (moves of the search) before giving up.
    pub max_steps: u64,
    /// Wall-clock time after which to give up.
    pub deadline: Option<Instant>,
    /// Approximate bytes the memo may use before giving up.
    pub max_memo_bytes: usize,
}

/// Why a search stopped without an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GiveUp {
    /// The step limit was reached.
    Steps,
    /// The deadline passed.
    Deadline,
    /// The memo reached its size cap.
    Memory,
}

/// The answer of one search.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SearchResult {
    /// A linearization: indexes into the searched operations, in linearization order. Every
    /// completed operation appears once; `info` operations that never took effect are absent.
    Linearizable(Vec<usize>),
    /// No linearization exists.
    Violation,
    /// The limits were reached first.
    GaveUp(GiveUp),
}

/// A search's answer and the steps it took.
#[derive(Debug, Clone)]
pub(crate) struct SearchOutcome {
    /// The answer.
    pub result: SearchResult,
    /// Steps taken.
    pub steps: u64,
}

/// Marks the end of the entry list.
const NIL: u32 = u32::MAX;
/// The list's head sentinel.
const HEAD: u32 = 0;
/// How often (in steps) the clock is read.
const CLOCK_EVERY: u64 = 4096;

/// The entry list: a doubly linked list over a vector, node 0 being the head sentinel, so
/// that an entry can be removed and put back in O(1) ("dancing links"). Removals and
/// restorations happen in stack order, which is what makes restoring by the node's own
/// `prev`/`next` correct.
struct Entries {
    next: Vec<u32>,
    prev: Vec<u32>,
    /// The operation of each node (unused for the head).
    op: Vec<u32>,
    /// Whether each node is a call (else a return).
    is_call: Vec<bool>,
    /// Each operation's call node.
    call_node: Vec<u32>,
    /// Each operation's return node, or `NIL` for `info`.
    ret_node: Vec<u32>,
}

impl Entries {
    fn new(ops: &[KeyOp]) -> Entries {
        // (time, 0 = call / 1 = return, op): calls first at equal times.
        let mut events: Vec<(u64, u8, u32)> = Vec::with_capacity(ops.len() * 2);
        for (i, op) in ops.iter().enumerate() {
            let i = u32::try_from(i).expect("fewer than 2^32 operations per key");
            events.push((op.call, 0, i));
            if let Some(ret) = op.ret {
                events.push((ret.max(op.call), 1, i));
            }
        }
        events.sort_unstable();
        let n = events.len() + 1;
        let mut entries = Entries {
            next: (1..=n as u32).collect(),
            prev: (0..n as u32).map(|i| i.wrapping_sub(1)).collect(),
            op: vec![0; n],
            is_call: vec![false; n],
            call_node: vec![NIL; ops.len()],
            ret_node: vec![NIL; ops.len()],
        };
        entries.next[n - 1] = NIL;
        entries.prev[0] = NIL;
        for (k, &(_, kind, op)) in events.iter().enumerate() {
            let node = k as u32 + 1;
            entries.op[node as usize] = op;
            entries.is_call[node as usize] = kind == 0;
            if kind == 0 {
                entries.call_node[op as usize] = node;
            } else {
                entries.ret_node[op as usize] = node;
            }
        }
        entries
    }

    fn first(&self) -> u32 {
        self.next[HEAD as usize]
    }

    fn unlink(&mut self, node: u32) {
        let (p, n) = (self.prev[node as usize], self.next[node as usize]);
        self.next[p as usize] = n;
        if n != NIL {
            self.prev[n as usize] = p;
        }
    }

    fn relink(&mut self, node: u32) {
        let (p, n) = (self.prev[node as usize], self.next[node as usize]);
        self.next[p as usize] = node;
        if n != NIL {
            self.prev[n as usize] = node;
        }
    }

    /// Removes an operation's entries (it has been linearized).
    fn lift(&mut self, op: usize) {
        self.unlink(self.call_node[op]);
        if self.ret_node[op] != NIL {
            self.unlink(self.ret_node[op]);
        }
    }

    /// Puts an operation's entries back (undoing the last [`Entries::lift`]).
    fn unlift(&mut self, op: usize) {
        if self.ret_node[op] != NIL {
            self.relink(self.ret_node[op]);
        }
        self.relink(self.call_node[op]);
    }
}

/// A fast hasher for memo keys, which are already well-mixed bitsets (the std SipHash is
/// needlessly slow here, and the memo is never fed untrusted keys).
#[derive(Default)]
struct WordHasher(u64);

impl Hasher for WordHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
    }

    fn write_u64(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn write_usize(&mut self, word: usize) {
        self.write_u64(word as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type Memo = HashSet<Box<[u64]>, BuildHasherDefault<WordHasher>>;

/// Searches for a linearization of `ops` (one key's operations) within `limits`.
pub(crate) fn search(ops: &[KeyOp], limits: &Limits) -> SearchOutcome {
    let n = ops.len();
    let words = n.div_ceil(64);
    let mut entries = Entries::new(ops);
    // The configuration: the linearized set (`words` words) followed by the state.
    let mut config: Vec<u64> = vec![0; words + 1];
    let mut state: State = ABSENT;
    let mut memo = Memo::default();
    let entry_bytes = (words + 1) * 8 + 48;
    let mut memo_bytes = 0usize;
    // Linearized operations, with the state before each.
    let mut stack: Vec<(usize, State)> = Vec::new();
    let mut unresolved = ops.iter().filter(|op| op.ret.is_some()).count();
    let mut steps: u64 = 0;
    let mut node = entries.first();
    let twins = twins(ops);
    // Whether linearizing the `info` operation `op` here, giving `next`, can matter.
    let useful_info = |op: usize, next: State, state: State, config: &[u64]| {
        next != state && twins[op].is_none_or(|twin| config[twin / 64] & (1 << (twin % 64)) != 0)
    };

    let outcome = |result, steps| SearchOutcome { result, steps };
    loop {
        if unresolved == 0 {
            let order: Vec<usize> = stack.iter().map(|&(op, _)| op).collect();
            debug_assert!(is_linearization(ops, &order));
            return outcome(SearchResult::Linearizable(order), steps);
        }
        steps += 1;
        if steps > limits.max_steps {
            return outcome(SearchResult::GaveUp(GiveUp::Steps), steps);
        }
        if steps.is_multiple_of(CLOCK_EVERY) && limits.deadline.is_some_and(|d| Instant::now() >= d)
        {
            return outcome(SearchResult::GaveUp(GiveUp::Deadline), steps);
        }

        if node != NIL && entries.is_call[node as usize] {
            let op = entries.op[node as usize] as usize;
            let candidate = ops[op]
                .effect
                .step(state)
                .filter(|&next| ops[op].ret.is_some() || useful_info(op, next, state, &config));
            if let Some(next_state) = candidate {
                config[op / 64] |= 1 << (op % 64);
                config[words] = u64::from(next_state);
                if !memo.contains(&config[..]) {
                    if memo_bytes >= limits.max_memo_bytes {
                        return outcome(SearchResult::GaveUp(GiveUp::Memory), steps);
                    }
                    memo.insert(config.clone().into_boxed_slice());
                    memo_bytes += entry_bytes;
                    stack.push((op, state));
                    state = next_state;
                    entries.lift(op);
                    if ops[op].ret.is_some() {
                        unresolved -= 1;
                    }
                    node = entries.first();
                    continue;
                }
                config[op / 64] &= !(1 << (op % 64));
            }
            node = entries.next[node as usize];
            continue;
        }

        // A return entry (or, defensively, the end of the list): dead end, backtrack.
        let Some((op, previous)) = stack.pop() else {
            return outcome(SearchResult::Violation, steps);
        };
        entries.unlift(op);
        if ops[op].ret.is_some() {
            unresolved += 1;
        }
        config[op / 64] &= !(1 << (op % 64));
        state = previous;
        node = entries.next[entries.call_node[op] as usize];
    }
}

/// For each `info` operation, the nearest earlier `info` operation with the same effect.
fn twins(ops: &[KeyOp]) -> Vec<Option<usize>> {
    let mut last: HashMap<Effect, usize> = HashMap::new();
    ops.iter()
        .enumerate()
        .map(|(i, op)| match op.ret {
            Some(_) => None,
            None => last.insert(op.effect, i),
        })
        .collect()
}

/// Checks a claimed linearization independently of the search: every completed operation
/// appears exactly once, the model accepts the sequence from "absent", and no operation comes
/// after one that was invoked only after it had returned.
pub(crate) fn is_linearization(ops: &[KeyOp], order: &[usize]) -> bool {
    let mut seen = vec![false; ops.len()];
    let mut state = ABSENT;
    let mut latest_call = 0u64;
    for &i in order {
        let Some(op) = ops.get(i) else {
            return false;
        };
        if std::mem::replace(&mut seen[i], true) {
            return false;
        }
        if op.ret.is_some_and(|ret| ret < latest_call) {
            return false;
        }
        latest_call = latest_call.max(op.call);
        match op.effect.step(state) {
            Some(next) => state = next,
            None => return false,
        }
    }
    ops.iter()
        .zip(&seen)
        .all(|(op, &seen)| seen || op.ret.is_none())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checker::model::Effect;

    fn op(effect: Effect, call: u64, ret: Option<u64>) -> KeyOp {
        KeyOp {
            effect,
            call,
            ret,
            origin: 0,
        }
    }

    fn run(ops: &[KeyOp]) -> SearchResult {
        let limits = Limits {
            max_steps: 1_000_000,
            deadline: None,
            max_memo_bytes: 1 << 30,
        };
        search(ops, &limits).result
    }

    #[test]
    fn empty_history_is_linearizable() {
        assert_eq!(run(&[]), SearchResult::Linearizable(vec![]));
    }

    #[test]
    fn concurrent_write_and_read_can_be_reordered() {
        // read(1) is invoked before write(1) but overlaps it.
        let ops = [
            op(Effect::Read(1), 0, Some(10)),
            op(Effect::Write(1), 5, Some(15)),
        ];
        assert_eq!(run(&ops), SearchResult::Linearizable(vec![1, 0]));
    }

    #[test]
    fn sequential_stale_read_is_a_violation() {
        let ops = [
            op(Effect::Write(1), 0, Some(1)),
            op(Effect::Read(ABSENT), 2, Some(3)),
        ];
        assert_eq!(run(&ops), SearchResult::Violation);
    }

    #[test]
    fn touching_intervals_count_as_concurrent() {
        let ops = [
            op(Effect::Read(1), 0, Some(5)),
            op(Effect::Write(1), 5, Some(6)),
        ];
        assert!(matches!(run(&ops), SearchResult::Linearizable(_)));
    }

    #[test]
    fn info_write_may_never_happen_or_happen_late() {
        let never = [
            op(Effect::Write(1), 0, None),
            op(Effect::Read(ABSENT), 5, Some(6)),
        ];
        assert_eq!(run(&never), SearchResult::Linearizable(vec![1]));
        let late = [
            op(Effect::Write(1), 0, None),
            op(Effect::Read(ABSENT), 5, Some(6)),
            op(Effect::Read(1), 100, Some(101)),
        ];
        assert_eq!(run(&late), SearchResult::Linearizable(vec![1, 0, 2]));
    }

    #[test]
    fn step_limit_gives_up() {
        let ops: Vec<KeyOp> = (0..20)
            .map(|i| op(Effect::Write(i + 1), 0, Some(10)))
            .chain([op(Effect::Read(ABSENT), 11, Some(12))])
            .collect();
        let limits = Limits {
            max_steps: 100,
            deadline: None,
            max_memo_bytes: 1 << 30,
        };
        assert_eq!(
            search(&ops, &limits).result,
            SearchResult::GaveUp(GiveUp::Steps)
        );
    }

    #[test]
    fn witness_checker_rejects_bad_orders() {
        let ops = [
            op(Effect::Write(1), 0, Some(1)),
            op(Effect::Read(1), 2, Some(3)),
        ];
        assert!(is_linearization(&ops, &[0, 1]));
        assert!(!is_linearization(&ops, &[1, 0]));
        assert!(!is_linearization(&ops, &[0]));
        assert!(!is_linearization(&ops, &[0, 1, 1]));
    }
}
