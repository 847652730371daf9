//! The lock check: the lock clients' increments (`locks.jsonl`, see [`super::locks`]) against
//! the counter read back at the end.
//!
//! With a correct mutex and a correct fence, increments happen one at a time, each writing
//! one more than the last, so:
//!
//! * no two acknowledged increments wrote the same value (two that did overlapped: a lost
//!   update);
//! * the final counter `C` satisfies `acknowledged <= C <= acknowledged + unknown`: every
//!   acknowledged increment counted, and at most the unknown ones besides;
//! * no acknowledged increment wrote more than `C` (the counter never goes down).
//!
//! Refused increments (`lost_lock`: the fence saw the lock key gone or replaced) count for
//! nothing. The check is inconclusive when the counter could not be read back, or when no
//! increment was acknowledged.

use std::collections::BTreeMap;

use serde::Serialize;

use super::checks::{CheckResult, CheckStatus};
use super::locks::LockRecord;

/// The lock check's findings.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LockFindings {
    /// Lock clients that recorded an increment.
    pub clients: usize,
    /// Acknowledged increments.
    pub acknowledged: usize,
    /// Increments with an unknown outcome.
    pub unknown: usize,
    /// Increments the fence refused.
    pub refused: usize,
    /// The counter read back (`None`: unread).
    pub final_value: Option<i64>,
    /// What went wrong (empty: pass).
    pub violations: Vec<String>,
}

impl LockFindings {
    /// The check result.
    pub fn result(&self) -> CheckResult {
        let counts = format!(
            "{} acknowledged increments, {} unknown, {} refused by the fence, final counter {}",
            self.acknowledged,
            self.unknown,
            self.refused,
            self.final_value
                .map_or_else(|| "unread".to_string(), |v| v.to_string())
        );
        let (status, summary) = if let Some(first) = self.violations.first() {
            (
                CheckStatus::Fail,
                format!(
                    "{} violation(s); first: {first} ({counts})",
                    self.violations.len()
                ),
            )
        } else if self.final_value.is_none() || self.acknowledged == 0 {
            (CheckStatus::Inconclusive, counts)
        } else {
            (
                CheckStatus::Pass,
                format!("{} lock client(s): {counts}", self.clients),
            )
        };
        CheckResult {
            name: "lock",
            status,
            summary,
        }
    }
}

/// Judges the lock clients' records (see the module docs).
pub fn check_locks(records: &[LockRecord]) -> LockFindings {
    let mut f = LockFindings::default();
    let mut acked_values: BTreeMap<i64, Vec<(u64, String)>> = BTreeMap::new();
    let mut clients = std::collections::BTreeSet::new();
    for r in records {
        match r {
            LockRecord::Increment {
                client,
                lock_key,
                value,
                outcome,
                ..
            } => {
                clients.insert(*client);
                match outcome.as_str() {
                    "ok" => {
                        f.acknowledged += 1;
                        acked_values
                            .entry(*value)
                            .or_default()
                            .push((*client, lock_key.clone()));
                    }
                    "lost_lock" => f.refused += 1,
                    _ => f.unknown += 1,
                }
            }
            LockRecord::Final { value } => f.final_value = *value,
        }
    }
    f.clients = clients.len();
    for (value, writers) in &acked_values {
        if writers.len() > 1 {
            let who: Vec<String> = writers
                .iter()
                .map(|(c, k)| format!("client {c} holding {k}"))
                .collect();
            f.violations.push(format!(
                "lost update: {} acknowledged increments all wrote {value} ({})",
                writers.len(),
                who.join(", ")
            ));
        }
    }
    if let Some(c) = f.final_value {
        let acked = f.acknowledged as i64;
        if c < acked {
            f.violations.push(format!(
                "the counter is {c} but {acked} increments were acknowledged: {} lost",
                acked - c
            ));
        }
        if c > acked + f.unknown as i64 {
            f.violations.push(format!(
                "the counter is {c}, above the {acked} acknowledged + {} unknown increments",
                f.unknown
            ));
        }
        if let Some((&top, _)) = acked_values.iter().next_back() {
            if top > c {
                f.violations.push(format!(
                    "an acknowledged increment wrote {top}, above the final counter {c}"
                ));
            }
        }
    }
    f
}
