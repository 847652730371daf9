//! The lease check: the lease keepers' records (`leases.jsonl`, see [`super::leases`]).
//!
//! A lease's deadline is set by the leader when it receives a grant or a renewal, which is
//! after the keeper sent it; a failover only moves deadlines later (fresh TTLs). So a key of a
//! lease renewed (or granted) at `t` cannot be deleted by expiry before `t + TTL`, whatever the
//! faults do. Nothing else deletes a lease key. Hence:
//!
//! 1. **Kept keys stay.** A read of a kept lease's key that finds it absent, answered at `c`
//!    (after the key was attached), is a violation if some grant or renewal of that lease was
//!    sent at `t <= c` with `t + TTL > c + margin` — the key vanished while its owner was
//!    provably keeping the lease alive. (If the owner could not renew for a whole TTL — a long
//!    outage — the lease may legitimately expire, and no renewal is recent enough to object.)
//!    The reads after the run are judged by the same rule: renewals continue until then.
//! 2. **Revoked keys go.** After a revoke is acknowledged, every read of the key sent later
//!    finds it absent.
//! 3. **Expired keys go.** At the end, after waiting out the TTL, every short lease's key is
//!    gone (revoked or expired).
//!
//! Times are the keeper's own (one clock, the same machine as the cluster for the process and
//! docker backends); the margin ([`MARGIN_MS`]) absorbs the leader's expiry tick. Inconclusive
//! when no kept key was ever read or no short key was read at the end.

use std::collections::HashMap;

use serde::Serialize;

use super::checks::{CheckResult, CheckStatus};
use super::leases::LeaseRecord;

/// Slack on every deadline comparison, ms.
pub const MARGIN_MS: f64 = 1000.0;

#[derive(Debug, Default)]
struct Lease {
    role: String,
    ttl_ms: f64,
    key: String,
    attached_ms: Option<f64>,
    /// Grant and renewals: when sent.
    renewals: Vec<f64>,
    revoked_ms: Option<f64>,
}

/// The lease check's findings.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LeaseFindings {
    /// Kept leases.
    pub kept: usize,
    /// Short leases.
    pub short: usize,
    /// Reads of kept keys judged.
    pub kept_reads: usize,
    /// Short keys read at the end.
    pub short_end_reads: usize,
    /// Acknowledged revokes.
    pub revoked: usize,
    /// What went wrong (empty: pass).
    pub violations: Vec<String>,
}

impl LeaseFindings {
    /// The check result.
    pub fn result(&self) -> CheckResult {
        let counts = format!(
            "{} kept leases ({} reads), {} short leases ({} revoked, {} read at the end)",
            self.kept, self.kept_reads, self.short, self.revoked, self.short_end_reads
        );
        let (status, summary) = if let Some(first) = self.violations.first() {
            (
                CheckStatus::Fail,
                format!(
                    "{} violation(s); first: {first} ({counts})",
                    self.violations.len()
                ),
            )
        } else if self.kept_reads == 0 || self.short_end_reads == 0 {
            (CheckStatus::Inconclusive, counts)
        } else {
            (
                CheckStatus::Pass,
                format!("{counts}: kept keys stayed, revoked and expired ones went"),
            )
        };
        CheckResult {
            name: "lease",
            status,
            summary,
        }
    }
}

/// Judges the lease keepers' records (see the module docs).
pub fn check_leases(records: &[LeaseRecord]) -> LeaseFindings {
    let mut leases: HashMap<i64, Lease> = HashMap::new();
    for r in records {
        match r {
            LeaseRecord::Grant {
                lease,
                role,
                ttl,
                key,
                attached,
                invoked_ms,
                ms,
                ..
            } => {
                let l = leases.entry(*lease).or_default();
                l.role = role.clone();
                l.ttl_ms = *ttl as f64 * 1e3;
                l.key = key.clone();
                l.attached_ms = attached.then_some(*ms);
                l.renewals.push(*invoked_ms);
            }
            LeaseRecord::Renew {
                lease, invoked_ms, ..
            } => leases.entry(*lease).or_default().renewals.push(*invoked_ms),
            LeaseRecord::Revoke { lease, outcome, ms } => {
                if outcome == "ok" {
                    leases
                        .entry(*lease)
                        .or_default()
                        .revoked_ms
                        .get_or_insert(*ms);
                }
            }
            LeaseRecord::Read { .. } => {}
        }
    }
    let mut f = LeaseFindings {
        kept: leases.values().filter(|l| l.role == "kept").count(),
        short: leases.values().filter(|l| l.role == "short").count(),
        revoked: leases.values().filter(|l| l.revoked_ms.is_some()).count(),
        ..LeaseFindings::default()
    };
    // The last read at the end of each short lease's key.
    let mut short_end: HashMap<i64, (bool, f64)> = HashMap::new();
    for r in records {
        let LeaseRecord::Read {
            lease,
            key,
            present,
            invoked_ms,
            ms,
            at_end,
        } = r
        else {
            continue;
        };
        let Some(l) = leases.get(lease) else {
            f.violations
                .push(format!("read of {key}: lease {lease:x} was never granted"));
            continue;
        };
        let Some(attached) = l.attached_ms else {
            continue;
        };
        if *invoked_ms < attached {
            continue;
        }
        if let Some(revoked) = l.revoked_ms {
            if *present && *invoked_ms > revoked {
                f.violations.push(format!(
                    "{key} still there at {ms:.0} ms, though lease {lease:x} was revoked at \
                     {revoked:.0} ms"
                ));
            }
        }
        if l.role == "kept" && l.revoked_ms.is_none() {
            f.kept_reads += 1;
            if !*present {
                let recent = l
                    .renewals
                    .iter()
                    .filter(|&&t| t <= *ms && t + l.ttl_ms > *ms + MARGIN_MS)
                    .fold(None, |m: Option<f64>, &t| Some(m.map_or(t, |m| m.max(t))));
                if let Some(t) = recent {
                    f.violations.push(format!(
                        "{key} gone at {ms:.0} ms, though lease {lease:x} was renewed at \
                         {t:.0} ms with a TTL of {:.0} s",
                        l.ttl_ms / 1e3
                    ));
                }
            }
        }
        if l.role == "short" && *at_end {
            short_end.insert(*lease, (*present, *ms));
        }
    }
    f.short_end_reads = short_end.len();
    let mut still: Vec<(&i64, &(bool, f64))> = short_end.iter().filter(|(_, v)| v.0).collect();
    still.sort_by_key(|(lease, _)| **lease);
    for (lease, (_, ms)) in still {
        let l = &leases[lease];
        f.violations.push(format!(
            "{} still there at the end ({ms:.0} ms): lease {lease:x} was {}",
            l.key,
            if l.revoked_ms.is_some() {
                "revoked"
            } else {
                "never renewed (expired)"
            }
        ));
    }
    f
}
