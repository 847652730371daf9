//! Automatic compaction of the revision history (`--auto-compaction-mode`,
//! `--auto-compaction-retention`): what keeps the history, and so the disk, bounded under any
//! write load.
//!
//! Only the leader decides, and it decides through the log: it proposes a compact command, and
//! every member applies it at the same position, so all of them forget the same history (a
//! watcher resuming on another member finds the same compact revision). Every member samples
//! its applied revision over time, so a member that becomes leader can at once tell which
//! revision was current one retention period ago.
//!
//! - `revision` mode keeps the last N revisions. The leader compacts once the history holds
//!   N + N/10 revisions, so compactions come in batches of about N/10 rather than one per write.
//! - `periodic` mode keeps what was written in the last period: the leader compacts to the
//!   revision that was current one period ago (sampled every tenth of the period).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use kvset_proto::raft::{command_result, log_command, LogCommand};
use kvset_proto::v1::CompactRequest;
use tokio::time::Instant;

use super::{Node, WriteOutcome};
use crate::config::AutoCompaction;

/// How often `revision` mode looks at the history's length.
const REVISION_MODE_CHECK: Duration = Duration::from_secs(1);

/// The revision to compact to in `revision` mode, if it is time: keep `keep` revisions, and
/// compact only once `keep / 10` (at least one) more have piled up.
pub fn revision_mode_target(current: i64, compacted: i64, keep: i64) -> Option<i64> {
    let target = current - keep;
    let slack = (keep / 10).max(1);
    (target - compacted >= slack).then_some(target)
}

/// The revision to compact to in `periodic` mode: the newest sample at least `period` old, if
/// it is above what is compacted.
pub fn periodic_target(
    samples: &VecDeque<(Instant, i64)>,
    now: Instant,
    period: Duration,
    compacted: i64,
) -> Option<i64> {
    let cutoff = now.checked_sub(period)?;
    samples
        .iter()
        .rev()
        .find(|(at, _)| *at <= cutoff)
        .map(|(_, revision)| *revision)
        .filter(|&revision| revision > compacted)
}

impl Node {
    /// The automatic compaction loop; returns at once when it is off.
    pub async fn run_auto_compaction(self: Arc<Self>) {
        let mode = self.config().auto_compaction;
        let check = match mode {
            AutoCompaction::Off => return,
            AutoCompaction::Revisions(_) => REVISION_MODE_CHECK,
            AutoCompaction::Period(p) => (p / 10).max(Duration::from_secs(1)),
        };
        let mut samples: VecDeque<(Instant, i64)> = VecDeque::new();
        let mut tick = tokio::time::interval(check);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if self.is_shutting_down() {
                return;
            }
            let (current, compacted) = self.state_machine().revisions();
            let now = Instant::now();
            let target = match mode {
                AutoCompaction::Off => return,
                AutoCompaction::Revisions(keep) => revision_mode_target(current, compacted, keep),
                AutoCompaction::Period(period) => {
                    samples.push_back((now, current));
                    // Keep one sample older than the period (the one compacted to), drop the rest.
                    while samples.len() > 1
                        && now
                            .checked_sub(period)
                            .is_some_and(|cutoff| samples[1].0 <= cutoff)
                    {
                        samples.pop_front();
                    }
                    periodic_target(&samples, now, period, compacted)
                }
            };
            if let Some(revision) = target {
                if self.metrics().current_leader == Some(self.id()) {
                    self.compact_to(revision).await;
                }
            }
        }
    }

    /// Proposes a compaction to `revision`; failures are logged (the next check tries again).
    async fn compact_to(&self, revision: i64) {
        let command = LogCommand {
            request_id: None,
            command: Some(log_command::Command::Compact(CompactRequest { revision })),
        };
        match self.write(command).await {
            Ok(WriteOutcome::Applied(result)) => match result.result {
                Some(command_result::Result::Compact(_)) => {
                    tracing::info!(revision, "compacted the revision history automatically")
                }
                other => tracing::debug!(revision, ?other, "automatic compaction not applied"),
            },
            Ok(WriteOutcome::NotLeader(_)) => {}
            Err(e) => tracing::warn!(revision, error = %e, "automatic compaction failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revision_mode_compacts_in_batches() {
        assert_eq!(revision_mode_target(100, 0, 1000), None);
        assert_eq!(revision_mode_target(1099, 0, 1000), None);
        assert_eq!(revision_mode_target(1100, 0, 1000), Some(100));
        assert_eq!(revision_mode_target(1150, 100, 1000), None);
        assert_eq!(revision_mode_target(1200, 100, 1000), Some(200));
        assert_eq!(revision_mode_target(3, 1, 1), Some(2));
    }

    #[test]
    fn periodic_mode_compacts_to_the_revision_one_period_ago() {
        let start = Instant::now();
        let at = |s| start + Duration::from_secs(s);
        let samples: VecDeque<_> = [(at(0), 10), (at(30), 40), (at(60), 90)].into();
        let hour = Duration::from_secs(45);
        assert_eq!(periodic_target(&samples, at(60), hour, 0), Some(10));
        assert_eq!(periodic_target(&samples, at(80), hour, 0), Some(40));
        assert_eq!(periodic_target(&samples, at(80), hour, 40), None);
        assert_eq!(periodic_target(&samples, at(10), hour, 0), None);
    }
}
