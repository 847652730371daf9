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
//! Two drivers use it: kv-0 reclaiming leadership when it is back and caught up (the preferred
//! primary), and a leader leaving on SIGTERM.

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

/// Sends one steering action to `id` (locally when `id` is this member).
async fn steer(
    node: &Node,
    id: NodeId,
    action: Action,
    duration: Duration,
) -> Result<(), HandOffError> {
    if id == node.id() {
        match action {
            Action::Suppress => node.steering.suppress(duration),
            Action::Resume => node.steering.resume(),
            Action::ElectNow => {
                node.steering
                    .elect_now()
                    .await
                    .map_err(|e| HandOffError::Unreachable {
                        who: node.name(),
                        reason: e.to_string(),
                    })?
            }
        }
        return Ok(());
    }
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
    };
    tokio::time::timeout(
        Duration::from_secs(2),
        RaftClient::new(channel).election(request),
    )
    .await
    .map_err(|_| unreachable("timed out".into()))?
    .map_err(|s| unreachable(s.message().to_string()))?;
    Ok(())
}

/// kv-0's loop: when it follows another leader and has caught up with the commit index, it takes
/// leadership back. Runs until the node shuts down.
pub async fn reclaim_preferred_leadership(node: Arc<Node>) {
    let check_every = Duration::from_secs(2);
    loop {
        sleep(check_every).await;
        if node.is_shutting_down() {
            return;
        }
        let m = node.metrics();
        let follows_other = m.state == openraft::ServerState::Follower
            && m.current_leader.is_some_and(|l| l != node.id());
        if !follows_other {
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
        match hand_off(&node, node.id(), false).await {
            Ok(()) => tracing::info!("leadership returned to the preferred primary"),
            Err(e) => {
                tracing::info!(error = %e, "leadership hand-off did not complete; will retry")
            }
        }
    }
}
