//! What a check says: the verdict, the evidence for a violation, and a summary per key, both
//! for people ([`std::fmt::Display`]) and for scripts (`serde` JSON).

use std::fmt;

use serde::Serialize;

use crate::history::Operation;

/// How many window operations the human-readable report prints before eliding the rest.
const MAX_PRINTED_OPS: usize = 200;

/// The verdict on a whole history.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    /// Every key's history has a linearization.
    Linearizable,
    /// A key's history has none. When several keys violate, this is the first in key order.
    Violation {
        /// The key.
        key: String,
        /// The evidence.
        details: Box<ViolationDetails>,
    },
    /// No violation was found, but at least one key could not be decided within the budget.
    /// Never a pass.
    Inconclusive {
        /// Which keys were left undecided and why.
        reason: String,
    },
}

impl Verdict {
    /// The `kvset-chaos check` exit code: 0 linearizable, 1 violation, 2 inconclusive.
    pub fn exit_code(&self) -> u8 {
        match self {
            Verdict::Linearizable => 0,
            Verdict::Violation { .. } => 1,
            Verdict::Inconclusive { .. } => 2,
        }
    }

    /// True only for [`Verdict::Linearizable`].
    pub fn is_linearizable(&self) -> bool {
        matches!(self, Verdict::Linearizable)
    }

    /// True only for [`Verdict::Violation`].
    pub fn is_violation(&self) -> bool {
        matches!(self, Verdict::Violation { .. })
    }
}

/// One operation of a violation window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WindowOp {
    /// The operation as recorded.
    #[serde(flatten)]
    pub operation: Operation,
    /// True when the operation was still running at the cut, and so was checked as `info`
    /// (its result, if any came later, was not used).
    pub pending_at_cut: bool,
}

/// The evidence for a violation on one key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ViolationDetails {
    /// One sentence on what is impossible.
    pub reason: String,
    /// The window: a part of the key's history that is already not linearizable, in invoke
    /// order.
    pub window: Vec<WindowOp>,
    /// The window is the history cut at this time (see [`WindowOp::pending_at_cut`]).
    pub cut_ns: Option<u64>,
    /// The operation whose completion at `cut_ns` made the history impossible.
    pub culprit: Option<Operation>,
    /// How many operations the key has in all (after dropping `info` reads).
    pub key_operations: usize,
    /// False when shrinking ran out of budget: the window is a violation, but perhaps not the
    /// smallest one this checker could find.
    pub minimal: bool,
}

/// How one key's check ended.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum KeyResult {
    /// A linearization exists.
    Linearizable,
    /// None exists.
    Violation {
        /// The evidence.
        details: Box<ViolationDetails>,
    },
    /// The budget ran out first.
    Inconclusive {
        /// Why.
        reason: String,
    },
}

/// The summary of one key.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeyReport {
    /// The key.
    pub key: String,
    /// Operations that completed `ok`.
    pub ok: usize,
    /// Operations with an unknown outcome (`info`, including never completed).
    pub info: usize,
    /// Operations that completed `fail` (ignored by the check).
    pub failed: usize,
    /// Operations the search ran on: `ok` and `info`, without `info` reads.
    pub checked: usize,
    /// The result.
    #[serde(flatten)]
    pub result: KeyResult,
    /// Search steps spent on the key (including shrinking a violation).
    pub steps: u64,
    /// Time spent on the key, in milliseconds.
    pub elapsed_ms: f64,
}

/// The report of a whole check.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CheckReport {
    /// The verdict.
    #[serde(flatten)]
    pub verdict: Verdict,
    /// One summary per key, in key order.
    pub keys: Vec<KeyReport>,
    /// Total time, in milliseconds.
    pub elapsed_ms: f64,
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = self
            .keys
            .iter()
            .map(|k| format!("{:?}", k.key).chars().count())
            .max()
            .unwrap_or(3)
            .max(3);
        writeln!(
            f,
            "{:<width$}  {:>7}  {:>6}  {:>6}  {:>7}  {:<13}  {:>10}  {:>10}",
            "key", "ok", "info", "fail", "checked", "result", "steps", "time"
        )?;
        for k in &self.keys {
            let result = match &k.result {
                KeyResult::Linearizable => "linearizable",
                KeyResult::Violation { .. } => "VIOLATION",
                KeyResult::Inconclusive { .. } => "inconclusive",
            };
            writeln!(
                f,
                "{:<width$}  {:>7}  {:>6}  {:>6}  {:>7}  {:<13}  {:>10}  {:>7.1} ms",
                format!("{:?}", k.key),
                k.ok,
                k.info,
                k.failed,
                k.checked,
                result,
                k.steps,
                k.elapsed_ms
            )?;
        }
        for k in &self.keys {
            if let KeyResult::Inconclusive { reason } = &k.result {
                writeln!(f, "key {:?}: inconclusive: {reason}", k.key)?;
            }
        }
        writeln!(f)?;
        match &self.verdict {
            Verdict::Linearizable => writeln!(
                f,
                "verdict: LINEARIZABLE ({} keys, {:.1} ms)",
                self.keys.len(),
                self.elapsed_ms
            ),
            Verdict::Violation { key, details } => {
                writeln!(f, "verdict: VIOLATION on key {key:?}")?;
                write!(f, "{details}")
            }
            Verdict::Inconclusive { reason } => {
                writeln!(f, "verdict: INCONCLUSIVE (not a pass): {reason}")
            }
        }
    }
}

impl fmt::Display for ViolationDetails {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.reason)?;
        if let Some(culprit) = &self.culprit {
            writeln!(f, "It became impossible when this operation returned:")?;
            writeln!(f, "    {culprit}")?;
        }
        let pending = self.window.iter().filter(|w| w.pending_at_cut).count();
        writeln!(
            f,
            "Window: {} of the key's {} operations{}, already not linearizable{}:",
            self.window.len(),
            self.key_operations,
            match self.cut_ns {
                Some(t) => format!(" (history cut at ts_ns {t}; reads not needed removed)"),
                None => String::new(),
            },
            if self.minimal {
                ""
            } else {
                " (shrinking ran out of budget; may not be minimal)"
            }
        )?;
        for w in self.window.iter().take(MAX_PRINTED_OPS) {
            let mark = if w.pending_at_cut {
                "  (running at the cut: checked as info)"
            } else {
                ""
            };
            writeln!(f, "    {}{mark}", w.operation)?;
        }
        if self.window.len() > MAX_PRINTED_OPS {
            writeln!(
                f,
                "    ... {} more (see --json)",
                self.window.len() - MAX_PRINTED_OPS
            )?;
        }
        if pending > 0 {
            writeln!(
                f,
                "Operations running at the cut may or may not have taken effect by then."
            )?;
        }
        writeln!(
            f,
            "Times are [invoke ts_ns, completion ts_ns]; ∞ = outcome unknown (info)."
        )
    }
}
