//! What the metrics show of this member: a [`StateReading`] taken from the Raft metrics, the
//! store and the quota at scrape time, and a watcher that counts the events a scrape could miss.
//!
//! The metrics registry (`crate::telemetry`) knows nothing of the node; the node fills in the
//! reading and reports events to it. That keeps the arrow one way: node → telemetry.

use std::sync::Arc;

use crate::telemetry::StateReading;

use super::Node;

impl Node {
    /// The member's state now, for the metrics' gauges.
    pub async fn state_reading(&self) -> StateReading {
        let m = self.metrics();
        let commit_index = self.committed_index().await;
        let last = m.last_log_index.unwrap_or(0);
        let purged = m.purged.map(|l| l.index + 1).unwrap_or(0);
        let membership = m.membership_config.membership();
        let nospace = self
            .state_machine
            .alarms()
            .iter()
            .any(|a| a.alarm == kvset_proto::v1::AlarmType::Nospace as i32);
        StateReading {
            term: m.current_term,
            is_leader: m.state == openraft::ServerState::Leader,
            leader_id: m.current_leader,
            last_log_index: last,
            commit_index,
            applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
            snapshot_index: m.snapshot.map(|l| l.index).unwrap_or(0),
            log_entries: last.saturating_add(1).saturating_sub(purged.max(1)),
            voters: membership.voter_ids().count(),
            learners: membership.learner_ids().count(),
            revision: self.state_machine.revision(),
            keys: self.state_machine.key_count(),
            disk_bytes: self.store.disk_size().ok(),
            usage_bytes: self.quota.usage(),
            quota_bytes: self.quota.bytes(),
            nospace,
            ready: self.is_ready(),
        }
    }

    /// Counts leader changes and snapshots as they happen, so scrapes cannot miss them. Runs
    /// until the Raft core stops.
    pub async fn count_raft_events(self: Arc<Self>) {
        let mut rx = self.raft.metrics();
        let (mut leader, mut snapshot) = {
            let m = rx.borrow();
            (m.current_leader, m.snapshot)
        };
        while rx.changed().await.is_ok() {
            let (new_leader, new_snapshot) = {
                let m = rx.borrow();
                (m.current_leader, m.snapshot)
            };
            if new_leader != leader && new_leader.is_some() {
                self.telemetry.leader_changed();
            }
            if new_snapshot != snapshot && new_snapshot.is_some() {
                self.telemetry.snapshot_taken();
            }
            leader = new_leader;
            snapshot = new_snapshot;
        }
    }
}
