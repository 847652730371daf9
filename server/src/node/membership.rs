//! The membership rules of a StatefulSet-shaped cluster, applied by the leader.
//!
//! A StatefulSet names its pods by ordinal and scales by ordinal: pods are added in ordinal
//! order and removed highest ordinal first. kvset's membership follows the same shape, and the
//! rules below keep every change safe for the data:
//!
//! - **A member is its ordinal.** Its node id must equal the ordinal of its name, and its set
//!   (the name without the ordinal) must be this cluster's set ([`Node::validate_member`]).
//! - **A voter that asks to join again lost its volume.** Its old votes and acknowledgements
//!   are gone, so it must stop counting before it catches up: it is first demoted (removed as a
//!   voter), then added again as a learner ([`Node::add_learner`]). The leader itself cannot be
//!   re-added.
//! - **Growth is refused under `NOSPACE`**: a new member is one more copy of the data. A known
//!   member re-joining after losing its volume is a repair and is let through.
//! - **Promotion needs a learner** that is already in the membership ([`Node::promote`]).
//! - **Removal takes the highest ordinal first** (unless asked for out of order), never the last
//!   voter, and never when the voters left behind could not form a quorum from the members that
//!   answer right now, nor when today's voters could not (the change goes through a joint
//!   configuration that needs both) ([`Node::remove_member`]): removing a member must not be
//!   what stops the cluster, and a change that cannot commit would hang.
//!
//! These run on the leader; the API layer forwards the requests there. The node calls openraft's
//! membership changes only from here.

use std::collections::BTreeSet;
use std::time::Duration;

use kvset_proto::v1::cluster_client::ClusterClient;
use kvset_proto::v1::{Member, StatusRequest};
use openraft::error::{ClientWriteError, RaftError};
use openraft::ChangeMembers;

use super::{Node, NodeError};
use crate::identity::PodIdentity;
use crate::raft::{MemberNode, NodeId};

/// How long a member asked "are you alive?" before a removal may answer.
const LIVENESS_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

impl Node {
    /// Checks the member a joiner describes against the rules: its id is its ordinal, its set
    /// is ours, it names both addresses.
    pub fn validate_member(&self, member: &Member) -> Result<MemberNode, NodeError> {
        let invalid = NodeError::InvalidMember;
        let id = PodIdentity::parse(&member.name).map_err(|e| invalid(e.to_string()))?;
        if id.set != self.config.identity.set {
            return Err(invalid(format!(
                "member {} belongs to set {:?}, this cluster is set {:?}",
                member.name, id.set, self.config.identity.set
            )));
        }
        if id.ordinal != member.id {
            return Err(invalid(format!(
                "member id {} does not match the ordinal of its name {} (ids are ordinals)",
                member.id, member.name
            )));
        }
        if member.client_addr.is_empty() || member.peer_addr.is_empty() {
            return Err(invalid(format!(
                "member {} needs client_addr and peer_addr",
                member.name
            )));
        }
        Ok(MemberNode {
            name: member.name.clone(),
            client_addr: member.client_addr.clone(),
            peer_addr: member.peer_addr.clone(),
        })
    }

    /// Adds `node` (validated by [`Node::validate_member`]) as the learner `id`, demoting it
    /// first if it is still a voter (it lost its volume). With `wait_caught_up`, returns once
    /// openraft counts it caught up: within `replication_lag_threshold` (5,000) entries of the
    /// leader's log, not at its end (the joiner itself waits for the rest, see
    /// `rejoin::readmitted`).
    pub async fn add_learner(
        &self,
        id: NodeId,
        node: MemberNode,
        wait_caught_up: bool,
    ) -> Result<(), NodeError> {
        let m = self.metrics();
        let membership = m.membership_config.membership();
        let is_voter = membership.voter_ids().any(|v| v == id);
        if membership.get_node(&id).is_none() {
            // A new member is one more copy of the data to store: refused under NOSPACE. A member
            // that lost its volume and re-joins (known) is a repair, not growth.
            self.check_space(&format!("adding {}", node.name))?;
        }
        if is_voter {
            if id == self.id() {
                return Err(NodeError::FailedPrecondition(format!(
                    "{} is the leader and cannot be re-added as a learner",
                    node.name
                )));
            }
            // A voter asking to join again has lost its volume: stop counting it before it
            // catches up again.
            tracing::warn!(member = %node.name, "a voter asked to join again (volume lost?); demoting it to learner first");
            let demote = ChangeMembers::RemoveVoters(BTreeSet::from([id]));
            self.raft
                .change_membership(demote, true)
                .await
                .map_err(|e| self.membership_error(e))?;
        }
        tracing::info!(member = %node, wait = wait_caught_up, "adding learner");
        self.raft
            .add_learner(id, node, wait_caught_up)
            .await
            .map_err(|e| self.membership_error(e))?;
        Ok(())
    }

    /// Promotes the learner `id` to voter; a member that already votes is left as it is.
    /// Returns the log index of the membership entry in which `id` is a voter.
    pub async fn promote(&self, id: NodeId) -> Result<u64, NodeError> {
        let m = self.metrics();
        let membership = m.membership_config.membership();
        if membership.get_node(&id).is_none() {
            return Err(NodeError::NotFound(format!(
                "member {id} is not in the cluster; add it as a learner first"
            )));
        }
        if membership.voter_ids().any(|v| v == id) {
            return Ok(m.membership_config.log_id().map_or(0, |l| l.index));
        }
        tracing::info!(member = id, "promoting learner to voter");
        let change = ChangeMembers::AddVoterIds(BTreeSet::from([id]));
        let written = self
            .raft
            .change_membership(change, false)
            .await
            .map_err(|e| self.membership_error(e))?;
        Ok(written.log_id.index)
    }

    /// Removes member `id`: the highest ordinal unless `any_order`, never the last voter, never
    /// below a quorum of members that answer now.
    pub async fn remove_member(&self, id: NodeId, any_order: bool) -> Result<(), NodeError> {
        let m = self.metrics();
        let membership = m.membership_config.membership();
        let Some(target) = membership.get_node(&id).cloned() else {
            return Err(NodeError::NotFound(format!(
                "member {id} is not in the cluster"
            )));
        };
        let highest = membership.nodes().map(|(id, _)| *id).max().unwrap_or(0);
        if id != highest && !any_order {
            return Err(NodeError::FailedPrecondition(format!(
                "remove the highest ordinal first (kv-{highest}), as a StatefulSet scales down; \
                 set any_order to remove {} out of order",
                target.name
            )));
        }
        let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
        let change = if voters.contains(&id) {
            let remaining: BTreeSet<NodeId> = voters.iter().copied().filter(|v| *v != id).collect();
            if remaining.is_empty() {
                return Err(NodeError::FailedPrecondition(format!(
                    "{} is the last voter; removing it would leave no cluster",
                    target.name
                )));
            }
            // The change passes through a joint configuration, which needs a quorum of the
            // voters as they are now as well as of those left behind.
            let alive_now = self.responsive(&voters).await;
            let quorum_now = voters.len() / 2 + 1;
            if alive_now.len() < quorum_now {
                return Err(NodeError::FailedPrecondition(format!(
                    "removing {} needs a quorum of today's {} voters ({quorum_now}), but only {} \
                     answer ({:?}). Bring members back first",
                    target.name,
                    voters.len(),
                    alive_now.len(),
                    alive_now
                )));
            }
            let alive: BTreeSet<NodeId> = alive_now.intersection(&remaining).copied().collect();
            let quorum = remaining.len() / 2 + 1;
            if alive.len() < quorum {
                return Err(NodeError::FailedPrecondition(format!(
                    "removing {} would leave {} voters of which only {} answer ({:?}); a quorum needs {quorum}. \
                     Bring members back first",
                    target.name,
                    remaining.len(),
                    alive.len(),
                    alive
                )));
            }
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        };
        tracing::info!(member = %target.name, "removing member");
        self.raft
            .change_membership(change, false)
            .await
            .map_err(|e| self.membership_error(e))?;
        Ok(())
    }

    /// Whether member `id` answers now, as a member of our cluster.
    pub async fn answers(&self, id: NodeId) -> bool {
        self.responsive(&BTreeSet::from([id])).await.contains(&id)
    }

    /// Asks `ids` for their status; returns those that answered as members of our cluster.
    async fn responsive(&self, ids: &BTreeSet<NodeId>) -> BTreeSet<NodeId> {
        let m = self.metrics();
        let mine = self.cluster_id.get().cloned().unwrap_or_default();
        let mut alive = BTreeSet::new();
        for id in ids {
            if *id == self.id() {
                alive.insert(*id);
                continue;
            }
            let Some(node) = m.membership_config.membership().get_node(id) else {
                continue;
            };
            let Ok(channel) = self.member_channel(node) else {
                continue;
            };
            let mut client = ClusterClient::new(channel);
            let answer =
                tokio::time::timeout(LIVENESS_PROBE_TIMEOUT, client.status(StatusRequest {})).await;
            if let Ok(Ok(resp)) = answer {
                if resp
                    .into_inner()
                    .header
                    .is_some_and(|h| h.cluster_id == mine)
                {
                    alive.insert(*id);
                }
            }
        }
        alive
    }

    /// A failed membership change as the node's error.
    fn membership_error(
        &self,
        e: RaftError<NodeId, ClientWriteError<NodeId, MemberNode>>,
    ) -> NodeError {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => NodeError::NoLeader {
                member: self.name(),
            },
            RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => {
                NodeError::FailedPrecondition(format!("membership change refused: {e}"))
            }
            RaftError::Fatal(e) => NodeError::RaftStopped {
                member: self.name(),
                reason: e.to_string(),
            },
        }
    }
}
