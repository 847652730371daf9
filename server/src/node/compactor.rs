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
//!
//! # In steps
//!
//! A compaction deletes every change it forgets inside one apply, and applies are serial: while
//! it runs, no write is acknowledged on that member. Under a steady write load the leader finds
//! thousands of revisions to forget at each check (every revision written since the last one),
//! and one command deleting them all put a pause of that size into every member's apply once a
//! check. So the leader moves the compact revision forward in steps of at most
//! `--auto-compaction-step` revisions (250 by default), each its own log command, proposed
//! one after the other: writes queued meanwhile go into the entries between them. The same
//! history goes, in slices a write waits behind at most once (etcd too deletes in batches:
//! `--experimental-compaction-batch-limit`, 1,000 keys by default, but off its write path).
//!
//! Steps go one at a time (proposed together, group commit would put them back into one entry),
//! so they forget at most a step per write round trip. Should that fall behind the writes (a
//! small step, slow round trips), the history would grow without bound; so once half a check
//! interval went into steps, each further step is twice the one before: longer pauses, but the
//! steps outgrow any write rate within a few round trips, so the history stays bounded whatever
//! the load. (Compacting all the rest in one command there, tried first, brought back the long
//! pause under the heaviest load: p99 at 256 writers rose again.)
//! docs/BENCHMARKS.md has the measurements (step sizes against p99 put latency).

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

/// The next compact revision the leader proposes on the way from `compacted` to `target`: one
/// step of at most `size` revisions. `None` when `target` is reached.
pub fn next_compaction_step(compacted: i64, target: i64, size: i64) -> Option<i64> {
    (compacted < target).then(|| target.min(compacted.saturating_add(size.max(1))))
}

/// The size of the step after one of `previous` revisions: the same while the check's time for
/// steps lasts, twice as large once it is `spent`.
pub fn next_step_size(previous: i64, spent: bool) -> i64 {
    if spent {
        previous.max(1).saturating_mul(2)
    } else {
        previous
    }
}

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
                let (mut reached, mut steps) = (compacted, 0u32);
                let mut size = self.config().auto_compaction_step;
                let started = Instant::now();
                while let Some(step) = next_compaction_step(reached, revision, size) {
                    if self.is_shutting_down()
                        || self.metrics().current_leader != Some(self.id())
                        || !self.compact_to(step).await
                    {
                        break;
                    }
                    (reached, steps) = (step, steps + 1);
                    self.telemetry().auto_compaction_step();
                    size = next_step_size(size, started.elapsed() >= check / 2);
                }
                if steps > 0 {
                    tracing::info!(
                        revision = reached,
                        steps,
                        "compacted the revision history automatically"
                    );
                }
            }
        }
    }

    /// Proposes a compaction to `revision`; failures are logged (the next check tries again).
    /// Whether it was applied.
    async fn compact_to(&self, revision: i64) -> bool {
        let command = LogCommand {
            request_id: None,
            command: Some(log_command::Command::Compact(CompactRequest { revision })),
        };
        match self.write(command).await {
            Ok(WriteOutcome::Applied(result)) => match result.result {
                Some(command_result::Result::Compact(_)) => {
                    tracing::debug!(revision, "automatic compaction step applied");
                    true
                }
                other => {
                    tracing::debug!(revision, ?other, "automatic compaction not applied");
                    false
                }
            },
            Ok(WriteOutcome::NotLeader(_)) => false,
            Err(e) => {
                tracing::warn!(revision, error = %e, "automatic compaction failed");
                false
            }
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
    fn compaction_moves_in_steps_that_end_at_the_target() {
        let steps = |from, to, step| {
            std::iter::successors(next_compaction_step(from, to, step), |&at| {
                next_compaction_step(at, to, step)
            })
            .collect::<Vec<_>>()
        };
        assert_eq!(steps(0, 2_500, 1_000), vec![1_000, 2_000, 2_500]);
        assert_eq!(steps(100, 1_100, 1_000), vec![1_100]);
        assert_eq!(steps(100, 1_101, 1_000), vec![1_100, 1_101]);
        assert_eq!(steps(5, 5, 1_000), Vec::<i64>::new());
        assert_eq!(steps(7, 3, 1_000), Vec::<i64>::new());
        assert_eq!(steps(0, 3, 0), vec![1, 2, 3]);
    }

    #[test]
    fn steps_double_once_the_time_for_them_is_spent() {
        assert_eq!(next_step_size(250, false), 250);
        assert_eq!(next_step_size(250, true), 500);
        assert_eq!(next_step_size(500, true), 1_000);
        assert_eq!(next_step_size(0, true), 2);
        assert_eq!(next_step_size(i64::MAX, true), i64::MAX);
        // Doubling catches up with any backlog in a logarithmic number of steps.
        let (mut at, mut size, mut steps) = (0, 250, 0);
        while let Some(next) = next_compaction_step(at, 1_000_000, size) {
            (at, size, steps) = (next, next_step_size(size, true), steps + 1);
        }
        assert_eq!((at, steps), (1_000_000, 12));
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
