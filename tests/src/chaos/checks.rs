//! The run's checks and how they combine into one verdict.
//!
//! | check | passes when | fails when | inconclusive when |
//! | --- | --- | --- | --- |
//! | linearizability | the checker finds a linearization of every key's history (final reads included) | some key has none | the checker's budget ran out |
//! | lost writes | every acknowledged write-once key reads back with its value, and no write reported as certainly not applied shows up | an acknowledged write is missing, a `fail` write is present, or a key holds a value never written to it | a key that decides this could not be read |
//! | convergence | every member reaches one revision with one `state_hash` | members at equal revisions hash differently, or they never reach one revision within the bound | — |
//! | liveness | the cluster healed before every fault and at the end, within `--heal-timeout` | it did not | — |
//!
//! The verdict is **violation** (exit 1) if any check fails, else **inconclusive** (exit 2) if
//! any check is inconclusive or the harness hit an error, else **pass** (exit 0). Inconclusive
//! is never a pass. Linearizability covers the lost-write question too (the final reads are in
//! the history); the explicit check exists because "acknowledged write-once key k is missing"
//! is a much clearer report than a violation window.

use std::collections::BTreeMap;

use serde::Serialize;

use super::monitor::Convergence;
use super::workload::{FinalReads, UniqueWrite, WriteOutcome};
use crate::checker::{CheckReport, Verdict as CheckerVerdict};

/// The result of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    /// It held.
    Pass,
    /// It did not: a bug.
    Fail,
    /// It could not be decided.
    Inconclusive,
}

impl CheckStatus {
    /// `pass`, `FAIL`, `inconclusive` (for tables).
    pub fn label(self) -> &'static str {
        match self {
            CheckStatus::Pass => "pass",
            CheckStatus::Fail => "FAIL",
            CheckStatus::Inconclusive => "inconclusive",
        }
    }
}

/// One check's outcome, summarized.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    /// `linearizability`, `lost_writes`, `convergence` or `liveness`.
    pub name: &'static str,
    /// Its status.
    pub status: CheckStatus,
    /// One sentence.
    pub summary: String,
}

/// The run's verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunVerdict {
    /// Every check passed.
    Pass,
    /// A check failed.
    Violation,
    /// Nothing failed, but something could not be decided (or the harness hit an error).
    Inconclusive,
}

impl RunVerdict {
    /// 0 pass, 1 violation, 2 inconclusive — the `kvset-chaos check` codes.
    pub fn exit_code(self) -> u8 {
        match self {
            RunVerdict::Pass => 0,
            RunVerdict::Violation => 1,
            RunVerdict::Inconclusive => 2,
        }
    }

    /// `PASS`, `VIOLATION`, `INCONCLUSIVE`.
    pub fn label(self) -> &'static str {
        match self {
            RunVerdict::Pass => "PASS",
            RunVerdict::Violation => "VIOLATION",
            RunVerdict::Inconclusive => "INCONCLUSIVE",
        }
    }
}

/// Combines check results (and whether the harness hit errors) into the verdict.
pub fn verdict(checks: &[CheckResult], harness_errors: bool) -> RunVerdict {
    if checks.iter().any(|c| c.status == CheckStatus::Fail) {
        RunVerdict::Violation
    } else if harness_errors || checks.iter().any(|c| c.status == CheckStatus::Inconclusive) {
        RunVerdict::Inconclusive
    } else {
        RunVerdict::Pass
    }
}

/// The linearizability check from the checker's report.
pub fn linearizability(report: &CheckReport, operations: usize) -> CheckResult {
    let (status, summary) = match &report.verdict {
        CheckerVerdict::Linearizable => (
            CheckStatus::Pass,
            format!(
                "{operations} operations on {} keys: linearizable ({:.0} ms)",
                report.keys.len(),
                report.elapsed_ms
            ),
        ),
        CheckerVerdict::Violation { key, details } => (
            CheckStatus::Fail,
            format!("key {key:?}: {}", details.reason),
        ),
        CheckerVerdict::Inconclusive { reason } => (CheckStatus::Inconclusive, reason.clone()),
    };
    CheckResult {
        name: "linearizability",
        status,
        summary,
    }
}

/// What the final reads say about the write-once keys.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LostWrites {
    /// Write-once keys written.
    pub written: usize,
    /// … acknowledged.
    pub acknowledged: usize,
    /// … with an unknown outcome.
    pub unknown: usize,
    /// … certainly not applied.
    pub failed: usize,
    /// Unknown writes found applied at the end.
    pub unknown_applied: usize,
    /// Acknowledged keys missing at the end (lost writes).
    pub lost: Vec<String>,
    /// `fail` writes present at the end (a write reported as not applied that was).
    pub phantom: Vec<String>,
    /// Keys holding a value never written to them, as (key, value).
    pub corrupt: Vec<(String, String)>,
    /// Keys that decide the check but could not be read.
    pub unread: Vec<String>,
}

impl LostWrites {
    /// Compares the write-once keys with their final reads.
    pub fn compute(unique: &BTreeMap<String, UniqueWrite>, finals: &FinalReads) -> LostWrites {
        let mut out = LostWrites {
            written: unique.len(),
            ..LostWrites::default()
        };
        for (key, write) in unique {
            match write.outcome {
                WriteOutcome::Ok => out.acknowledged += 1,
                WriteOutcome::Info => out.unknown += 1,
                WriteOutcome::Fail => out.failed += 1,
            }
            let Some(read) = finals.values.get(key) else {
                if write.outcome != WriteOutcome::Info {
                    out.unread.push(key.clone());
                }
                continue;
            };
            match (read, write.outcome) {
                (Some(v), _) if *v != write.value => out.corrupt.push((key.clone(), v.clone())),
                (Some(_), WriteOutcome::Ok) => {}
                (Some(_), WriteOutcome::Info) => out.unknown_applied += 1,
                (Some(_), WriteOutcome::Fail) => out.phantom.push(key.clone()),
                (None, WriteOutcome::Ok) => out.lost.push(key.clone()),
                (None, _) => {}
            }
        }
        out
    }

    /// The check result.
    pub fn result(&self) -> CheckResult {
        let mut problems = Vec::new();
        if !self.lost.is_empty() {
            problems.push(format!(
                "{} acknowledged write(s) lost (e.g. {})",
                self.lost.len(),
                self.lost[0]
            ));
        }
        if !self.phantom.is_empty() {
            problems.push(format!(
                "{} write(s) reported as not applied are present (e.g. {})",
                self.phantom.len(),
                self.phantom[0]
            ));
        }
        if !self.corrupt.is_empty() {
            problems.push(format!(
                "{} key(s) hold a value never written to them (e.g. {} = {:?})",
                self.corrupt.len(),
                self.corrupt[0].0,
                self.corrupt[0].1
            ));
        }
        let (status, summary) = if !problems.is_empty() {
            (CheckStatus::Fail, problems.join("; "))
        } else if !self.unread.is_empty() {
            (
                CheckStatus::Inconclusive,
                format!(
                    "{} write-once key(s) could not be read back (e.g. {})",
                    self.unread.len(),
                    self.unread[0]
                ),
            )
        } else {
            (
                CheckStatus::Pass,
                format!(
                    "all {} acknowledged write-once keys present; {} unknown writes ({} applied, \
                     {} not); {} refused writes absent",
                    self.acknowledged,
                    self.unknown,
                    self.unknown_applied,
                    self.unknown - self.unknown_applied,
                    self.failed
                ),
            )
        };
        CheckResult {
            name: "lost_writes",
            status,
            summary,
        }
    }
}

/// The convergence check.
pub fn convergence(c: &Convergence) -> CheckResult {
    let (status, summary) = match c {
        Convergence::Converged {
            revision,
            state_hash,
            waited_ms,
        } => (
            CheckStatus::Pass,
            format!(
                "every member at revision {revision} with state hash {} (after {:.1} s)",
                &state_hash[..state_hash.len().min(16)],
                waited_ms / 1e3
            ),
        ),
        Convergence::Diverged { views } => (
            CheckStatus::Fail,
            format!(
                "members at equal revisions have different state hashes: {}",
                views
                    .last()
                    .map(|v| v
                        .members
                        .iter()
                        .map(|m| format!("{} rev {} hash {}", m.name, m.revision, m.state_hash))
                        .collect::<Vec<_>>()
                        .join(", "))
                    .unwrap_or_default()
            ),
        ),
        Convergence::NotConverged { last } => (
            CheckStatus::Fail,
            format!(
                "the members did not reach one revision within the bound: {}",
                last.summary()
            ),
        ),
    };
    CheckResult {
        name: "convergence",
        status,
        summary,
    }
}

/// The liveness check: `problems` are the heal failures met (before a fault, at the end).
pub fn liveness(problems: &[String], final_heal_ms: Option<f64>) -> CheckResult {
    if problems.is_empty() {
        CheckResult {
            name: "liveness",
            status: CheckStatus::Pass,
            summary: format!(
                "healed before every fault and at the end{}",
                final_heal_ms
                    .map(|ms| format!(" (final heal {:.1} s)", ms / 1e3))
                    .unwrap_or_default()
            ),
        }
    } else {
        CheckResult {
            name: "liveness",
            status: CheckStatus::Fail,
            summary: problems.join("; "),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unique(entries: &[(&str, &str, WriteOutcome)]) -> BTreeMap<String, UniqueWrite> {
        entries
            .iter()
            .map(|(k, v, o)| {
                (
                    k.to_string(),
                    UniqueWrite {
                        value: v.to_string(),
                        outcome: *o,
                    },
                )
            })
            .collect()
    }

    fn finals(entries: &[(&str, Option<&str>)]) -> FinalReads {
        FinalReads {
            values: entries
                .iter()
                .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
                .collect(),
            unread: vec![],
        }
    }

    #[test]
    fn acknowledged_writes_must_be_there_and_refused_ones_must_not() {
        let u = unique(&[
            ("u/0/1", "a", WriteOutcome::Ok),
            ("u/0/2", "b", WriteOutcome::Info),
            ("u/0/3", "c", WriteOutcome::Info),
            ("u/0/4", "d", WriteOutcome::Fail),
        ]);
        let good = LostWrites::compute(
            &u,
            &finals(&[
                ("u/0/1", Some("a")),
                ("u/0/2", Some("b")),
                ("u/0/3", None),
                ("u/0/4", None),
            ]),
        );
        assert_eq!(good.result().status, CheckStatus::Pass, "{good:?}");
        assert_eq!(
            (good.acknowledged, good.unknown, good.unknown_applied),
            (1, 2, 1)
        );

        let lost = LostWrites::compute(
            &u,
            &finals(&[("u/0/1", None), ("u/0/4", Some("d")), ("u/0/2", Some("x"))]),
        );
        assert_eq!(lost.lost, vec!["u/0/1"]);
        assert_eq!(lost.phantom, vec!["u/0/4"]);
        assert_eq!(lost.corrupt, vec![("u/0/2".to_string(), "x".to_string())]);
        assert_eq!(lost.result().status, CheckStatus::Fail);

        let unread = LostWrites::compute(&u, &finals(&[("u/0/4", None)]));
        assert_eq!(unread.unread, vec!["u/0/1"]);
        assert_eq!(unread.result().status, CheckStatus::Inconclusive);
    }

    #[test]
    fn the_verdict_is_never_a_pass_with_anything_undecided() {
        let check = |status| CheckResult {
            name: "x",
            status,
            summary: String::new(),
        };
        assert_eq!(
            verdict(&[check(CheckStatus::Pass)], false),
            RunVerdict::Pass
        );
        assert_eq!(
            verdict(&[check(CheckStatus::Pass)], true),
            RunVerdict::Inconclusive
        );
        assert_eq!(
            verdict(
                &[check(CheckStatus::Inconclusive), check(CheckStatus::Fail)],
                false
            ),
            RunVerdict::Violation
        );
        assert_eq!(RunVerdict::Pass.exit_code(), 0);
        assert_eq!(RunVerdict::Violation.exit_code(), 1);
        assert_eq!(RunVerdict::Inconclusive.exit_code(), 2);
    }
}
