//! The linearizability checker: does a recorded history of gets, puts and compare-and-sets
//! have an explanation in which every operation took effect atomically, at one instant between
//! its invoke and its completion?
//!
//! # What is checked
//!
//! Each key is a register that starts absent. Its sequential specification:
//!
//! | operation | requires | then |
//! | --- | --- | --- |
//! | `get` → `v` | the value is `v` (`null` = absent) | unchanged |
//! | `put(v)` | nothing | the value is `v` |
//! | `cas(e → v)` → succeeded | the value is `e` | the value is `v` |
//! | `cas(e → v)` → not succeeded | the value is not `e` | unchanged |
//!
//! A history is linearizable when there is a total order of its operations that this
//! specification accepts and that respects real time (an operation that returned before
//! another was invoked comes first). The outcome types of the history format map onto this as
//! follows:
//!
//! * `ok`: the operation took effect, with the recorded result, between its invoke and its
//!   completion.
//! * `fail`: it had no effect; it is left out.
//! * `info` (or no completion): unknown. A write may take effect at any time after its invoke,
//!   or never, so its return is +∞ and it need not be linearized at all. An unknown read
//!   constrains nothing and is left out.
//!
//! # How
//!
//! 1. `model`: linearizability is local (Herlihy & Wing), so the history is split by key and
//!    each key is checked on its own; values are interned into small integers, and operations
//!    that cannot matter (unknown reads, unknown writes nothing could observe) are dropped.
//! 2. A cheap pre-check: a completed read (or successful cas) of a value that no operation on
//!    the key ever writes is a violation whatever the timing.
//! 3. `search`: Wing & Gong's search for a linearization, pruned with Lowe's memo of
//!    (linearized set, state) configurations.
//! 4. `shrink`: on a violation, the history is cut at the earliest completion that makes it
//!    impossible, and reads the contradiction does not need are removed, every step checked,
//!    so that the window shown is itself a proven violation.
//!
//! # Guarantees and limits
//!
//! * **Sound**: a violation is reported only when the search refuted every order (or the
//!   pre-check's argument applies); the window shown is itself checked to be non-linearizable.
//! * **Complete within the budget**: "linearizable" is reported only with a linearization in
//!   hand (in debug builds it is re-verified independently). When the budget ([`CheckOptions`])
//!   runs out the verdict is [`Verdict::Inconclusive`], which is never a pass.
//! * The search is exponential in the worst case (many mutually concurrent writes followed by
//!   an impossible read); with per-key partitioning and the memo, histories of the size a chaos
//!   run produces per key are normally decided in milliseconds.
//! * Timestamps are trusted: the recorder must stamp invokes before sending and completions
//!   after receiving (see [`crate::history`]). Timestamps that merely touch count as concurrent.
//! * Keys are independent registers: multi-key transactions are outside this model.

mod model;
mod report;
mod search;
mod shrink;

pub mod cli;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

pub use report::{CheckReport, KeyReport, KeyResult, Verdict, ViolationDetails, WindowOp};

use crate::history::{History, HistoryError, Operation, Operations};
use model::{KeyHistory, KeyOp};
use search::{search, GiveUp, Limits, SearchResult};

/// Default step limit per key.
pub const DEFAULT_MAX_STEPS: u64 = 10_000_000;

/// Default cap on the memo of one key's search, in bytes.
pub const DEFAULT_MAX_MEMO_BYTES: usize = 4 << 30;

/// Shrinking a violation may take this many times the steps the search that found it took…
const SHRINK_FACTOR: u64 = 4;
/// …or this many steps, whichever is more (and never more than `max_steps`).
const SHRINK_MIN_STEPS: u64 = 200_000;

/// How much work a check may do. A limit reached makes the verdict inconclusive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOptions {
    /// Search steps allowed per key (one step moves the search by one entry, linearizes one
    /// operation or undoes one). Shrinking a violation gets a further allowance of a few times
    /// what the search took, capped by this.
    pub max_steps: u64,
    /// Wall-clock budget for the whole check; `None` for no deadline.
    pub time_budget: Option<Duration>,
    /// Approximate memory the memo of one key's search may take.
    pub max_memo_bytes: usize,
    /// Shrink violations to a small window (on by default).
    pub shrink: bool,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            max_steps: DEFAULT_MAX_STEPS,
            time_budget: None,
            max_memo_bytes: DEFAULT_MAX_MEMO_BYTES,
            shrink: true,
        }
    }
}

/// Reads, validates and checks a history file.
pub fn check_file(
    path: impl AsRef<Path>,
    options: &CheckOptions,
) -> Result<CheckReport, HistoryError> {
    Ok(check_history(&History::from_file(path)?, options))
}

/// Checks a validated history.
pub fn check_history(history: &History, options: &CheckOptions) -> CheckReport {
    check_operations(&history.operations(), options)
}

/// Checks operations (see [`History::operations`]).
pub fn check_operations(operations: &Operations, options: &CheckOptions) -> CheckReport {
    let started = Instant::now();
    let deadline = options.time_budget.map(|budget| started + budget);
    let limits = Limits {
        max_steps: options.max_steps,
        deadline,
        max_memo_bytes: options.max_memo_bytes,
    };
    let mut failed: BTreeMap<&str, usize> = BTreeMap::new();
    for op in &operations.failed {
        *failed.entry(op.key.as_str()).or_default() += 1;
    }

    let mut histories: BTreeMap<String, Option<KeyHistory>> = model::partition(&operations.ops)
        .into_iter()
        .map(|h| (h.key.clone(), Some(h)))
        .collect();
    for key in failed.keys() {
        histories.entry((*key).to_string()).or_insert(None);
    }

    let keys: Vec<KeyReport> = histories
        .into_iter()
        .map(|(key, history)| {
            let failed = failed.get(key.as_str()).copied().unwrap_or(0);
            match history {
                Some(history) => check_key(&history, &operations.ops, failed, &limits, options),
                None => KeyReport {
                    key,
                    ok: 0,
                    info: 0,
                    failed,
                    checked: 0,
                    result: KeyResult::Linearizable,
                    steps: 0,
                    elapsed_ms: 0.0,
                },
            }
        })
        .collect();

    let verdict = combine(&keys);
    CheckReport {
        verdict,
        keys,
        elapsed_ms: millis(started.elapsed()),
    }
}

/// The verdict over all keys: the first violation, else inconclusive if any key is, else
/// linearizable.
fn combine(keys: &[KeyReport]) -> Verdict {
    if let Some((key, details)) = keys.iter().find_map(|k| match &k.result {
        KeyResult::Violation { details } => Some((&k.key, details)),
        _ => None,
    }) {
        return Verdict::Violation {
            key: key.clone(),
            details: details.clone(),
        };
    }
    let undecided: Vec<String> = keys
        .iter()
        .filter_map(|k| match &k.result {
            KeyResult::Inconclusive { reason } => Some(format!("key {:?}: {reason}", k.key)),
            _ => None,
        })
        .collect();
    if undecided.is_empty() {
        Verdict::Linearizable
    } else {
        Verdict::Inconclusive {
            reason: format!(
                "{} of {} keys undecided ({})",
                undecided.len(),
                keys.len(),
                undecided.join("; ")
            ),
        }
    }
}

fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn check_key(
    history: &KeyHistory,
    all: &[Operation],
    failed: usize,
    limits: &Limits,
    options: &CheckOptions,
) -> KeyReport {
    let started = Instant::now();
    let mut steps = 0;
    let result = if limits.deadline.is_some_and(|d| started >= d) {
        KeyResult::Inconclusive {
            reason: "the time budget was spent before this key was checked".to_string(),
        }
    } else if let Some(i) = history.never_written() {
        let op = &all[history.ops[i].origin];
        let what = match op.f() {
            crate::history::Function::Get => "A read returned",
            _ => "A compare-and-set succeeded expecting",
        };
        KeyResult::Violation {
            details: Box::new(ViolationDetails {
                reason: format!(
                    "{what} a value that no operation on this key ever writes (and that is \
                     not the initial absent value): impossible whatever the timing."
                ),
                window: vec![WindowOp {
                    operation: op.clone(),
                    pending_at_cut: false,
                }],
                cut_ns: None,
                culprit: None,
                key_operations: history.ops.len(),
                minimal: true,
            }),
        }
    } else {
        let outcome = search(&history.ops, limits);
        steps += outcome.steps;
        match outcome.result {
            SearchResult::Linearizable(_) => KeyResult::Linearizable,
            SearchResult::GaveUp(why) => KeyResult::Inconclusive {
                reason: give_up_reason(why, outcome.steps, options),
            },
            SearchResult::Violation => {
                let (details, shrink_steps) =
                    violation(history, outcome.steps, all, limits, options);
                steps += shrink_steps;
                KeyResult::Violation {
                    details: Box::new(details),
                }
            }
        }
    };
    KeyReport {
        key: history.key.clone(),
        ok: history.ok,
        info: history.info,
        failed,
        checked: history.ops.len(),
        result,
        steps,
        elapsed_ms: millis(started.elapsed()),
    }
}

fn give_up_reason(why: GiveUp, steps: u64, options: &CheckOptions) -> String {
    match why {
        GiveUp::Steps => format!(
            "no answer within {} search steps (raise --max-steps)",
            options.max_steps
        ),
        GiveUp::Deadline => format!(
            "no answer within the time budget of {} ms after {steps} steps (raise --budget-ms)",
            options.time_budget.unwrap_or_default().as_millis()
        ),
        GiveUp::Memory => format!(
            "the search memo reached its cap of {} MiB after {steps} steps",
            options.max_memo_bytes >> 20
        ),
    }
}

/// Builds the evidence for a key known to violate; returns it with the steps spent shrinking.
fn violation(
    history: &KeyHistory,
    main_steps: u64,
    all: &[Operation],
    limits: &Limits,
    options: &CheckOptions,
) -> (ViolationDetails, u64) {
    let ops: &[KeyOp] = &history.ops;
    let window = if options.shrink {
        let allowance = Limits {
            max_steps: options
                .max_steps
                .min(SHRINK_MIN_STEPS.max(main_steps.saturating_mul(SHRINK_FACTOR))),
            ..*limits
        };
        Some(shrink::shrink(ops, &allowance))
    } else {
        None
    };
    let original = |i: usize| all[ops[i].origin].clone();
    let details = match &window {
        Some(w) => ViolationDetails {
            reason: format!(
                "No order of these operations is consistent with both the register's \
                 semantics and real time (an operation that returned before another was \
                 invoked must come first); the key's history (after dropping unknown reads) \
                 has {} operations.",
                ops.len()
            ),
            window: w
                .ops
                .iter()
                .map(|&(i, pending)| WindowOp {
                    operation: original(i),
                    pending_at_cut: pending,
                })
                .collect(),
            cut_ns: w.cut,
            culprit: w.culprit.map(original),
            key_operations: ops.len(),
            minimal: w.complete,
        },
        None => ViolationDetails {
            reason: "No order of the key's operations is consistent with both the register's \
                     semantics and real time (shrinking disabled: the whole key is shown)."
                .to_string(),
            window: (0..ops.len())
                .map(|i| WindowOp {
                    operation: original(i),
                    pending_at_cut: false,
                })
                .collect(),
            cut_ns: None,
            culprit: None,
            key_operations: ops.len(),
            minimal: false,
        },
    };
    (details, window.map_or(0, |w| w.steps))
}
