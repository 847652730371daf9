//! A member's way into the cluster, and the check that it still belongs.
//!
//! Joining (ordinals ≥ 1 on an empty volume, or a wiped kv-0): ask the members in ordinal order —
//! kv-0's stable name first, since under `OrderedReady` it is the one that surely runs — for the
//! cluster id, record it in the volume, then ask to be added as a learner and wait until caught
//! up (the leader streams a snapshot when the log was compacted), then ask to be promoted to
//! voter. Any member accepts these requests and forwards them to the leader. The loop retries
//! with back-off until it succeeds or the member shuts down; nothing here needs a quorum that
//! cannot exist yet, because the cluster already has one when kv-N is created. (A wiped kv-0
//! waiting to be re-admitted asks kv-1, kv-2, … until two of them run again.)
//!
//! While joining, the member is *re-joining* in the sense of [`super::rejoin`]: before asking
//! to be added it learns the current leader's term and raises its fence to it (and again to the
//! term of the leader that answers AddLearner), and the join only ends — the re-join marker
//! removed, elections back on — once its own log holds the membership entry in which the leader
//! promoted it, and it follows a leader of at least that term (`rejoin::readmitted`).

use std::sync::Arc;
use std::time::Duration;

use kvset_proto::v1::cluster_client::ClusterClient;
use kvset_proto::v1::{AddLearnerRequest, Member, MembersRequest, PromoteRequest, StatusRequest};
use tokio::time::sleep;

use super::Node;
use crate::raft::MemberNode;
use crate::tls::{Dialer, Port};

/// Why joining or a membership check failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error(
        "{me} was removed from cluster {cluster} (its members are now {members}); refusing to \
         start so it cannot disrupt the cluster. To bring it back as a new member, delete its data \
         (in Kubernetes: the PVC data-{me}) and start it again"
    )]
    Removed {
        me: String,
        cluster: String,
        members: String,
    },
    #[error(
        "{me} was removed from cluster {cluster} while the set was smaller (its members are now \
         {members}), without marking its volume departed (its leave did not finish, or it was \
         down when the set shrank). The set's size includes it again: its volume is now marked \
         departed, and on its next start (the supervisor restarts it) it discards its old data \
         and joins as a new member"
    )]
    RemovedWhileScaledAway {
        me: String,
        cluster: String,
        members: String,
    },
    #[error("{0}")]
    Volume(#[from] crate::volume::VolumeError),
    #[error("shut down before joining")]
    ShutDown,
    #[error("{0}")]
    Rejoin(#[from] super::rejoin::RejoinError),
}

fn client(dialer: &Dialer, addr: &str) -> Option<ClusterClient<tonic::transport::Channel>> {
    dialer
        .connect_lazy(Port::Client, addr, Duration::from_secs(1))
        .ok()
        .map(ClusterClient::new)
}

/// A Cluster client for this member's own requests to `member` (adding, promoting, checking
/// itself): on the peer port when authorization is on (see [`Node::member_channel`]).
fn member_client(
    node: &Node,
    member: &MemberNode,
) -> Option<ClusterClient<tonic::transport::Channel>> {
    if !node.authorizer().is_on() {
        return client(node.network.dialer(), &member.client_addr);
    }
    node.network
        .dialer()
        .connect_lazy(Port::Peer, &member.peer_addr, Duration::from_secs(1))
        .ok()
        .map(ClusterClient::new)
}

/// Asks each candidate for its cluster id; the first non-empty answer wins.
pub async fn probe_cluster_id(
    dialer: &Dialer,
    candidates: &[MemberNode],
    timeout: Duration,
) -> Option<(String, MemberNode)> {
    for candidate in candidates {
        let Some(mut c) = client(dialer, &candidate.client_addr) else {
            continue;
        };
        if let Ok(Ok(resp)) = tokio::time::timeout(timeout, c.status(StatusRequest {})).await {
            let id = resp
                .into_inner()
                .header
                .map(|h| h.cluster_id)
                .unwrap_or_default();
            if !id.is_empty() {
                return Some((id, candidate.clone()));
            }
        }
    }
    None
}

/// Joins through `candidates` until this member is a voter. `record_cluster_id` persists the
/// learned id in the volume before the first join request.
pub async fn join(
    node: Arc<Node>,
    candidates: Vec<MemberNode>,
    mut record_cluster_id: impl FnMut(&str) -> Result<(), crate::volume::VolumeError>,
) -> Result<(), JoinError> {
    let me = node
        .config
        .peers
        .member(&node.config.identity)
        .expect("own address is resolvable");
    let mut backoff = Duration::from_millis(200);
    // Never conclude from the local membership alone that joining is done: a member whose
    // volume was wiped may receive the log (and see itself as a voter in it) before the leader
    // has demoted it. Only a completed AddLearner + Promote round counts. Once AddLearner has
    // succeeded, retries go straight to Promote (which is idempotent): asking to be added again
    // would make the leader treat this member as one that lost its volume and remove it.
    let mut added = false;
    loop {
        if node.is_shutting_down() {
            return Err(JoinError::ShutDown);
        }
        if node.cluster_id.get().is_none() {
            if let Some((id, from)) =
                probe_cluster_id(node.network.dialer(), &candidates, Duration::from_secs(2)).await
            {
                tracing::info!(cluster_id = %id, via = %from.name, "learned the cluster id");
                record_cluster_id(&id)?;
                let _ = node.cluster_id.set(id);
            }
        }
        if node.cluster_id.get().is_some() {
            if !added {
                raise_fence_to_current_term(&node, &candidates).await?;
            }
            for candidate in &candidates {
                match try_join_via(&node, &me, candidate, &mut added).await {
                    Ok(()) => {
                        if confirm_readmission(&node).await? {
                            tracing::info!("joined the cluster as a voter");
                            return Ok(());
                        }
                        // The promotion never reached this member's log (a leader change lost
                        // it): ask again.
                        tracing::info!(
                            "the promotion has not reached this member's log within \
                             {CONFIRM_WAIT:?}; asking again"
                        );
                        break;
                    }
                    Err(e) => {
                        tracing::info!(via = %candidate.name, error = %e, "join attempt failed; trying the next member")
                    }
                }
            }
        } else {
            tracing::info!("no member answered with a cluster id yet; waiting for the cluster");
        }
        sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// The fence: traffic from leaders of older terms than the current one predates this member's
/// re-admission (see [`super::rejoin`]). Asks every candidate at once and takes the highest term
/// among those that follow or are a leader, so that a deposed leader that still believes it leads
/// (and answers with its old term) cannot set the fence below the current leader's term.
async fn raise_fence_to_current_term(
    node: &Node,
    candidates: &[MemberNode],
) -> Result<(), JoinError> {
    let mine = node.cluster_id.get().cloned().unwrap_or_default();
    let asks = candidates.iter().filter_map(|c| {
        let mut client = member_client(node, c)?;
        let mine = mine.clone();
        Some(async move {
            match tokio::time::timeout(Duration::from_secs(1), client.status(StatusRequest {}))
                .await
            {
                Ok(Ok(resp)) => {
                    let s = resp.into_inner();
                    let same_cluster = s.header.as_ref().is_some_and(|h| h.cluster_id == mine);
                    s.leader_id.filter(|_| same_cluster).map(|_| s.term)
                }
                _ => None,
            }
        })
    });
    let term = futures::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .max();
    if let Some(term) = term {
        node.raise_fence(term)?;
    }
    Ok(())
}

/// How long a member waits for the entry that promoted it to reach its own log before it asks
/// to be promoted again.
const CONFIRM_WAIT: Duration = Duration::from_secs(30);

/// Waits until the re-admission is confirmed (see `rejoin::readmitted`), then ends the
/// re-joining state durably. False when it was not confirmed within [`CONFIRM_WAIT`].
async fn confirm_readmission(node: &Node) -> Result<bool, JoinError> {
    let deadline = tokio::time::Instant::now() + CONFIRM_WAIT;
    loop {
        if node.finish_rejoin_if_readmitted()? {
            return Ok(true);
        }
        if node.is_shutting_down() {
            return Err(JoinError::ShutDown);
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(false);
        }
        sleep(Duration::from_millis(100)).await;
    }
}

async fn try_join_via(
    node: &Node,
    me: &MemberNode,
    via: &MemberNode,
    added: &mut bool,
) -> Result<(), tonic::Status> {
    let mut c =
        member_client(node, via).ok_or_else(|| tonic::Status::invalid_argument("bad address"))?;
    let member = Member {
        id: node.id(),
        name: me.name.clone(),
        client_addr: me.client_addr.clone(),
        peer_addr: me.peer_addr.clone(),
        voter: false,
    };
    if !*added {
        tracing::info!(via = %via.name, "asking to be added as a learner");
        let add = c.add_learner(AddLearnerRequest {
            member: Some(member),
            wait_caught_up: true,
        });
        let added_by = tokio::time::timeout(Duration::from_secs(600), add)
            .await
            .map_err(|_| {
                tonic::Status::deadline_exceeded("catching up took longer than 10 minutes")
            })??
            .into_inner();
        // The leader that re-admitted this member answers with its term.
        if let Some(h) = added_by.header {
            node.raise_fence(h.raft_term)
                .map_err(|e| tonic::Status::internal(e.to_string()))?;
        }
        *added = true;
    }
    tracing::info!(via = %via.name, "caught up as a learner; asking to be promoted to voter");
    let promoted = tokio::time::timeout(
        Duration::from_secs(30),
        c.promote(PromoteRequest { id: node.id() }),
    )
    .await
    .map_err(|_| tonic::Status::deadline_exceeded("promotion took longer than 30 s"))?;
    let promoted = match promoted {
        Ok(answer) => answer.into_inner(),
        Err(status) => {
            if status.code() == tonic::Code::NotFound {
                // Removed meanwhile: start over with AddLearner.
                *added = false;
            }
            return Err(status);
        }
    };
    // Re-admitted only once this member's own log has reached the entry that made it a voter
    // (see `rejoin::readmitted`): its own membership may still be an old one it is catching up
    // through.
    node.set_promoted_at(promoted.membership_index);
    Ok(())
}

/// For a member restarting with data: if the leader reports a committed membership that no
/// longer contains this member, it was removed (scale-down) and must not start.
///
/// Only the leader's committed membership says so. Any other member's list may be behind: a
/// follower cut off before this member joined, or a wiped member that is catching up from a
/// snapshot taken while the set was smaller, lists the cluster as it was. Taking their word made
/// a voter that had only restarted discard its volume (the chaos soak found it). So every
/// candidate is asked, and only an authoritative answer counts; when none comes (no leader
/// answers), the member starts with its stored membership, as when nobody answers at all.
pub async fn check_still_member(node: &Node, candidates: &[MemberNode]) -> Result<(), JoinError> {
    let mine = node.cluster_id.get().cloned().unwrap_or_default();
    for candidate in candidates {
        let Some(mut c) = member_client(node, candidate) else {
            continue;
        };
        let Ok(Ok(resp)) =
            tokio::time::timeout(Duration::from_secs(2), c.members(MembersRequest {})).await
        else {
            continue;
        };
        let resp = resp.into_inner();
        let cluster = resp.header.map(|h| h.cluster_id).unwrap_or_default();
        if cluster != mine || resp.members.is_empty() || !resp.authoritative {
            continue;
        }
        if resp.members.iter().any(|m| m.id == node.id()) {
            return Ok(());
        }
        let members = resp
            .members
            .iter()
            .map(|m| m.name.clone())
            .collect::<Vec<_>>()
            .join(", ");
        return Err(JoinError::Removed {
            me: node.name(),
            cluster,
            members,
        });
    }
    Ok(())
}
