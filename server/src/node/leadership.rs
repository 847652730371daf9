//! Leadership hand-off, which openraft 0.9 does not provide.
//!
//! Raft voters refuse to vote while their leader lease is fresh, so simply telling the target to
//! campaign usually loses. What works reliably: every voter except the target stops starting
//! elections and the current leader stops sending heartbeats ([`ElectionSteering::suppress`]),
//! everyone waits past the lease (`election_timeout_max`), the target campaigns
//! ([`ElectionSteering::elect_now`]), and once it leads everyone resumes. Suppression always
//! carries a deadline after which it lifts itself, so a hand-off that dies half-way (the driver
//! crashes) cannot leave the cluster unable to elect.
//!
//! Two drivers use it, both on the leader, which first stops taking writes (appends would renew
//! the followers' lease and keep the target a few entries behind): a leader leaving on SIGTERM,
//! and a leader asked by kv-0 (back and caught up, the preferred primary) to transfer
//! ([`transfer_to`]). The pauses are counted ([`super::write_pause`]), so overlapping transfers
//! keep writes paused until the last one ends. kv-0 asks again after a failed attempt only after
//! an exponentially growing wait ([`ReclaimSchedule`]: 2 s doubling to 60 s), because every
//! attempt pauses the leader's writes.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kvset_proto::raft::election_request::Action;
use kvset_proto::raft::raft_client::RaftClient;
use kvset_proto::raft::ElectionRequest;
use openraft::error::Fatal;
use tokio::time::{sleep, Instant};

use super::Node;
use crate::raft::{NodeId, Raft};

/// Local control over elections and heartbeats, with self-expiring suppression.
pub struct ElectionSteering {
    raft: Raft,
    generation: Arc<AtomicU64>,
}

impl ElectionSteering {
    pub fn new(raft: Raft) -> Self {
        Self {
            raft,
            generation: Arc::default(),
        }
    }

    /// Stops elections (and heartbeats, if leading) for `duration`, then resumes by itself
    /// unless a newer suppress or resume came in between.
    pub fn suppress(&self, duration: Duration) {
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        self.raft.runtime_config().elect(false);
        self.raft.runtime_config().heartbeat(false);
        let raft = self.raft.clone();
        let current = self.generation.clone();
        tokio::spawn(async move {
            sleep(duration).await;
            if current.load(Ordering::SeqCst) == generation {
                raft.runtime_config().elect(true);
                raft.runtime_config().heartbeat(true);
            }
        });
    }

    /// Allows elections and heartbeats again.
    pub fn resume(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        self.raft.runtime_config().elect(true);
        self.raft.runtime_config().heartbeat(true);
    }

    /// Starts an election now.
    pub async fn elect_now(&self) -> Result<(), Fatal<NodeId>> {
        self.raft.trigger().elect().await
    }
}

/// Why a hand-off did not happen.
#[derive(Debug, thiserror::Error)]
pub enum HandOffError {
    #[error("{target} is not a voter")]
    NotAVoter { target: NodeId },
    #[error("could not reach {who} to steer the election: {reason}")]
    Unreachable { who: String, reason: String },
    #[error("{target} did not become leader within {waited:?}")]
    Lost { target: NodeId, waited: Duration },
}

/// Moves leadership to `target`. Can be driven by any member (the leader leaving, or the target
/// itself). Returns once `target` leads, or fails after a bounded wait; suppression is lifted in
/// every case except on the driver when it is `leaving` (it is about to exit).
pub async fn hand_off(node: &Node, target: NodeId, leaving: bool) -> Result<(), HandOffError> {
    let metrics = node.metrics();
    let membership = metrics.membership_config.membership().clone();
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    if !voters.contains(&target) {
        return Err(HandOffError::NotAVoter { target });
    }
    let lease = node.config.timing.election_timeout_max;
    let suppress_for = lease * 4 + Duration::from_secs(2);
    let others: Vec<NodeId> = voters.iter().copied().filter(|v| *v != target).collect();

    let mut steered = Vec::new();
    for id in &others {
        if let Err(e) = steer(node, *id, Action::Suppress, suppress_for).await {
            // A voter we cannot reach cannot vote against us either; carry on.
            tracing::debug!(voter = id, error = %e, "could not suppress elections");
        } else {
            steered.push(*id);
        }
    }
    sleep(lease + lease / 2).await;
    let result = async {
        steer(node, target, Action::ElectNow, Duration::ZERO).await?;
        let deadline = Instant::now() + lease * 3;
        while Instant::now() < deadline {
            if node.metrics().current_leader == Some(target) {
                return Ok(());
            }
            sleep(Duration::from_millis(25)).await;
        }
        Err(HandOffError::Lost {
            target,
            waited: lease * 3,
        })
    }
    .await;
    for id in steered {
        if leaving && id == node.id() {
            continue;
        }
        let _ = steer(node, id, Action::Resume, Duration::ZERO).await;
    }
    result
}

/// On the leader: pauses writes, waits until `target` has the whole log, then hands leadership
/// to it. Writes resume when this returns (they then go to the new leader by forwarding).
pub async fn transfer_to(node: &Node, target: NodeId) -> Result<(), HandOffError> {
    if node.metrics().state != openraft::ServerState::Leader {
        return Err(HandOffError::Unreachable {
            who: node.name(),
            reason: "not the leader".into(),
        });
    }
    let _pause = node.pause_writes();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let m = node.metrics();
        let last = m.last_log_index.unwrap_or(0);
        let matched = m
            .replication
            .as_ref()
            .and_then(|r| r.get(&target).copied().flatten())
            .map(|l| l.index)
            .unwrap_or(0);
        if matched >= last {
            break;
        }
        if Instant::now() >= deadline {
            return Err(HandOffError::Lost {
                target,
                waited: Duration::from_secs(5),
            });
        }
        sleep(Duration::from_millis(10)).await;
    }
    hand_off(node, target, false).await
}

/// Sends one steering action to `id` (locally when `id` is this member).
async fn steer(
    node: &Node,
    id: NodeId,
    action: Action,
    duration: Duration,
) -> Result<(), HandOffError> {
    if id == node.id() {
        let failed = |e: openraft::error::Fatal<NodeId>| HandOffError::Unreachable {
            who: node.name(),
            reason: e.to_string(),
        };
        match action {
            Action::Suppress => node.steering.suppress(duration),
            Action::Resume => node.steering.resume(),
            Action::ElectNow => node.steering.elect_now().await.map_err(failed)?,
            Action::Transfer => {
                return Err(HandOffError::Unreachable {
                    who: node.name(),
                    reason: "a transfer is asked of the leader, not of oneself".into(),
                })
            }
        }
        return Ok(());
    }
    send_election_request(node, id, action, duration, 0, Duration::from_secs(2)).await
}

/// Sends an `Election` request to member `id` and waits up to `timeout` for its answer.
async fn send_election_request(
    node: &Node,
    id: NodeId,
    action: Action,
    duration: Duration,
    target: NodeId,
    timeout: Duration,
) -> Result<(), HandOffError> {
    let member = node
        .metrics()
        .membership_config
        .membership()
        .get_node(&id)
        .cloned();
    let member = member.ok_or(HandOffError::NotAVoter { target: id })?;
    let unreachable = |reason: String| HandOffError::Unreachable {
        who: member.name.clone(),
        reason,
    };
    let channel = node
        .network
        .channel(&member.peer_addr)
        .map_err(|e| unreachable(e.to_string()))?;
    let request = ElectionRequest {
        cluster_id: node.cluster_id.get().cloned().unwrap_or_default(),
        from: node.id(),
        action: action as i32,
        duration_ms: duration.as_millis() as u64,
        target,
    };
    tokio::time::timeout(timeout, RaftClient::new(channel).election(request))
        .await
        .map_err(|_| unreachable("timed out".into()))?
        .map_err(|s| unreachable(s.message().to_string()))?;
    Ok(())
}

/// kv-0's loop: when it follows another leader and has caught up with the commit index, it takes
/// leadership back. Runs until the node shuts down.
pub async fn reclaim_preferred_leadership(node: Arc<Node>) {
    let mut schedule = ReclaimSchedule::default();
    loop {
        sleep(schedule.next_wait()).await;
        if node.is_shutting_down() {
            return;
        }
        let m = node.metrics();
        let follows_other = m.state == openraft::ServerState::Follower
            && m.current_leader.is_some_and(|l| l != node.id());
        if !follows_other {
            schedule.reset();
            continue;
        }
        // Caught up: a linearizable barrier succeeds (we have applied the leader's read index).
        if node
            .linearizable_barrier(Duration::from_secs(1))
            .await
            .is_err()
        {
            continue;
        }
        tracing::info!(from = ?m.current_leader, "caught up; reclaiming leadership as the preferred primary");
        // The leader drives the transfer: it pauses writes so that this member can match its log
        // and the followers' lease can lapse (see `transfer_to`).
        let Some(leader) = m.current_leader else {
            continue;
        };
        let asked = send_election_request(
            &node,
            leader,
            Action::Transfer,
            Duration::ZERO,
            node.id(),
            Duration::from_secs(20),
        );
        match asked.await {
            Ok(()) => {
                schedule.reset();
                tracing::info!("leadership returned to the preferred primary")
            }
            Err(e) => {
                schedule.failed();
                tracing::info!(
                    error = %e,
                    retry_in = ?schedule.next_wait(),
                    "leadership hand-off did not complete; will retry"
                )
            }
        }
    }
}

/// When kv-0's reclaim loop looks again. Every attempt pauses the leader's writes for up to
/// several seconds, so attempts that fail back off exponentially (2 s, 4 s, 8 s, … up to
/// [`ReclaimSchedule::MAX`]); a success, or kv-0 no longer following another leader, starts
/// over at [`ReclaimSchedule::BASE`].
#[derive(Debug, Default)]
pub struct ReclaimSchedule {
    failures: u32,
}

impl ReclaimSchedule {
    /// The pause between checks while nothing failed.
    pub const BASE: Duration = Duration::from_secs(2);
    /// The longest pause after failed attempts.
    pub const MAX: Duration = Duration::from_secs(60);

    /// How long to wait before the next check.
    pub fn next_wait(&self) -> Duration {
        Self::BASE
            .saturating_mul(1u32 << self.failures.min(16))
            .min(Self::MAX)
    }

    /// Records a hand-off attempt that failed.
    pub fn failed(&mut self) {
        self.failures = self.failures.saturating_add(1);
    }

    /// Starts over (the hand-off worked, or there is nothing to reclaim).
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failed_reclaims_back_off_exponentially_up_to_a_cap_and_reset() {
        let mut s = ReclaimSchedule::default();
        assert_eq!(s.next_wait(), Duration::from_secs(2));
        let mut waits = Vec::new();
        for _ in 0..8 {
            s.failed();
            waits.push(s.next_wait().as_secs());
        }
        assert_eq!(waits, [4, 8, 16, 32, 60, 60, 60, 60]);
        for _ in 0..100 {
            s.failed();
        }
        assert_eq!(s.next_wait(), ReclaimSchedule::MAX, "no overflow");
        s.reset();
        assert_eq!(s.next_wait(), ReclaimSchedule::BASE);
    }
}
