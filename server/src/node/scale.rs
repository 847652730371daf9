//! Membership that follows the set's size: leaving on scale-down, and the leader's clean-up.
//!
//! A StatefulSet scales down by deleting its highest ordinals, one at a time, and restarts any
//! pod in place with the same name and volume. Both look the same from inside a pod (SIGTERM,
//! then exit); what tells them apart is the set's size (see [`crate::replicas`]): a member
//! whose ordinal is ≥ the desired size is going away, any other one is coming back. So:
//!
//! - **On SIGTERM, a member with ordinal ≥ the desired size leaves** ([`leave_cluster`]): after
//!   the usual hand-off (if it leads), it asks the leader to remove it and waits until the
//!   removal is committed, then marks its volume as departed ([`DepartedMarker`]). Any other
//!   member keeps the restart behaviour: hand off, exit, come back with its volume.
//! - **The leader reconciles** ([`reconcile`]): a member with ordinal ≥ the desired size that
//!   does not answer (it was killed, or its leave did not finish) is removed, highest ordinal
//!   first, one at a time, and never below a quorum of members that answer (the rules of
//!   [`super::membership`]). A member below the size is never removed for being down: that is a
//!   restart.
//! - **A departed volume rejoins as a new member.** When the set grows again, the StatefulSet
//!   gives the new pod the volume the old one left behind. Its data is of no use (the cluster
//!   went on without it) and its Raft state would make it refuse to start ("removed from the
//!   cluster"). The departed marker, written only once the removal was committed, says that this
//!   is safe: at start the member empties its store and joins as any new member does.
//! - **A member removed without the marker comes back too.** A member scaled away that could
//!   not finish its leave (killed while leaving, down when the set shrank) is removed by the
//!   leader's reconciliation, and its volume has no marker. When the set grows again, it starts,
//!   finds that a live member of its cluster no longer lists it, and sees that the set's size
//!   includes it: it marks its volume departed and exits, and the supervisor's restart joins it
//!   anew (`server::carry_out_start_plan`). Safe for the same reason as the marker: a removal
//!   that is the effective membership of a live member was proposed only after the joint
//!   configuration committed, so every committed entry is on the members that remain. A member
//!   removed while the set's size still includes it (an operator's `members remove`) is wanted
//!   by the set, so it comes back the same way; with no readable size it still refuses to start.
//!
//! Without a readable size (manual membership) none of this happens: nobody leaves by
//! themselves and the leader removes nobody. Never guess.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kvset_proto::v1::cluster_client::ClusterClient;
use kvset_proto::v1::RemoveRequest;
use openraft::ServerState;
use tokio::time::{sleep, Instant};

use super::{Node, NodeError};
use crate::raft::NodeId;

/// The file on a volume whose member left the cluster on a scale-down.
pub const DEPARTED_FILE: &str = "kvset-departed.json";
/// How often the leader looks for members to remove.
pub const RECONCILE_INTERVAL: Duration = Duration::from_secs(2);
/// How many rounds in a row a member above the size must be silent before the leader removes it.
const SILENT_ROUNDS: u32 = 2;
/// How long the leader waits for one removal to commit before it looks again.
const REMOVAL_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a departed volume could not be handled.
#[derive(Debug, thiserror::Error)]
pub enum DepartedError {
    #[error("departed marker {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// Whether this member, with ordinal `ordinal`, is being scaled away under `desired`.
/// A size of 0 stops the whole set: nobody leaves (the last voter could not anyway).
pub fn scaled_away(ordinal: u64, desired: Option<u64>) -> bool {
    desired.is_some_and(|n| n >= 1 && ordinal >= n)
}

/// The members the leader may remove now under `desired`: ordinal ≥ the size, not `me`,
/// highest first. Only the first one is ever removed per round.
pub fn removal_candidates(members: &[NodeId], me: NodeId, desired: Option<u64>) -> Vec<NodeId> {
    let Some(n) = desired.filter(|n| *n >= 1) else {
        return Vec::new();
    };
    let mut ids: Vec<NodeId> = members
        .iter()
        .copied()
        .filter(|id| *id >= n && *id != me)
        .collect();
    ids.sort_unstable_by(|a, b| b.cmp(a));
    ids
}

/// Leaves the cluster for good: asks the leader (this member, if leadership could not be handed
/// off) to remove this member, until the removal is committed or `deadline` passes. Returns
/// whether it left.
pub async fn leave_cluster(node: &Node, deadline: Instant) -> bool {
    let me = node.id();
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let outcome = remove_me(node).await;
        match outcome {
            Ok(()) => {
                tracing::info!(member = %node.name(), "left the cluster (scale-down): removal committed");
                return true;
            }
            Err(e) if attempt == 1 || attempt.is_multiple_of(10) => {
                tracing::info!(error = %e, member = me, "leaving the cluster: removal not done yet; retrying");
            }
            Err(_) => {}
        }
        if Instant::now() + Duration::from_millis(300) >= deadline {
            tracing::warn!(
                member = %node.name(),
                "could not leave the cluster before the grace period ran out; the leader removes \
                 this member once it is gone (ordinal at or above the set's size)"
            );
            return false;
        }
        sleep(Duration::from_millis(300)).await;
    }
}

/// One attempt at having this member removed.
async fn remove_me(node: &Node) -> Result<(), NodeError> {
    let me = node.id();
    if !node
        .metrics()
        .membership_config
        .membership()
        .nodes()
        .any(|(id, _)| *id == me)
    {
        return Ok(());
    }
    if node.metrics().state == ServerState::Leader {
        // The hand-off failed: the leader removes itself (openraft steps it down once the
        // removal is committed).
        return node.remove_member(me, true).await;
    }
    let (_, leader) = node.leader().ok_or(NodeError::NoLeader {
        member: node.name(),
    })?;
    let mut client = ClusterClient::new(node.member_channel(&leader)?);
    let answer = tokio::time::timeout(
        Duration::from_secs(10),
        client.remove(RemoveRequest {
            id: me,
            any_order: true,
        }),
    )
    .await
    .map_err(|_| NodeError::FailedPrecondition("the leader did not answer in 10 s".into()))?
    .map_err(|s| NodeError::FailedPrecondition(s.message().to_string()))?;
    // The answer's membership is the leader's after the committed change.
    if answer.into_inner().members.iter().any(|m| m.id == me) {
        return Err(NodeError::FailedPrecondition(
            "the leader still lists this member".into(),
        ));
    }
    Ok(())
}

/// On the leader, forever: removes the members above the set's size that no longer answer,
/// highest ordinal first, one at a time (see the module docs).
pub async fn reconcile(node: Arc<Node>) {
    let mut silent: BTreeMap<NodeId, u32> = BTreeMap::new();
    loop {
        sleep(RECONCILE_INTERVAL).await;
        if node.is_shutting_down() {
            return;
        }
        if node.metrics().state != ServerState::Leader {
            silent.clear();
            continue;
        }
        let members: Vec<NodeId> = node
            .metrics()
            .membership_config
            .membership()
            .nodes()
            .map(|(id, _)| *id)
            .collect();
        let desired = node.desired_replicas().current();
        let Some(&highest) = removal_candidates(&members, node.id(), desired).first() else {
            silent.clear();
            continue;
        };
        silent.retain(|id, _| *id == highest);
        if node.answers(highest).await {
            // Still running: it leaves by itself when it is stopped.
            silent.remove(&highest);
            continue;
        }
        let rounds = silent.entry(highest).or_insert(0);
        *rounds += 1;
        if *rounds < SILENT_ROUNDS {
            continue;
        }
        tracing::info!(
            member = highest,
            desired = desired.unwrap_or(0),
            "removing a member above the set's size that is gone"
        );
        match tokio::time::timeout(REMOVAL_TIMEOUT, node.remove_member(highest, true)).await {
            Ok(Ok(())) => {
                silent.remove(&highest);
            }
            Ok(Err(e)) => tracing::info!(member = highest, error = %e, "cannot remove it yet"),
            Err(_) => tracing::warn!(
                member = highest,
                "the removal did not commit within {REMOVAL_TIMEOUT:?}; looking again"
            ),
        }
    }
}

/// The marker a member leaves on its volume once its removal (scale-down) was committed.
pub struct DepartedMarker {
    path: PathBuf,
}

impl DepartedMarker {
    /// The marker of the volume at `data_dir`.
    pub fn new(data_dir: &Path) -> Self {
        Self {
            path: data_dir.join(DEPARTED_FILE),
        }
    }

    fn io(&self) -> impl FnOnce(std::io::Error) -> DepartedError + '_ {
        |source| DepartedError::Io {
            path: self.path.display().to_string(),
            source,
        }
    }

    /// Records, durably, that this member left `cluster_id`.
    pub fn store(&self, cluster_id: &str, member: &str) -> Result<(), DepartedError> {
        let json = serde_json::json!({ "format": 1, "cluster_id": cluster_id, "member": member });
        crate::volume::write_atomically(&self.path, json.to_string().as_bytes()).map_err(self.io())
    }

    /// Whether the marker is there.
    pub fn exists(&self) -> bool {
        self.path.exists()
    }

    /// The member left the cluster: empties `store_dir` (and drops the re-join marker), then
    /// removes the marker, so that the member starts as a new one. Safe to repeat after a crash:
    /// the marker goes last.
    pub fn clear_departed_volume(&self, store_dir: &Path) -> Result<(), DepartedError> {
        match std::fs::remove_dir_all(store_dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(self.io()(e)),
        }
        if let Some(dir) = self.path.parent() {
            match std::fs::remove_file(dir.join(super::rejoin::REJOIN_FILE)) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(self.io()(e)),
            }
            crate::volume::sync_dir(dir).map_err(self.io())?;
        }
        std::fs::remove_file(&self.path).map_err(self.io())?;
        if let Some(dir) = self.path.parent() {
            crate::volume::sync_dir(dir).map_err(self.io())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ordinals_at_or_above_the_size_leave_and_are_removed_highest_first() {
        assert!(!scaled_away(2, None), "manual membership: nobody leaves");
        assert!(!scaled_away(0, Some(1)));
        assert!(!scaled_away(2, Some(3)), "below the size: a restart");
        assert!(scaled_away(2, Some(2)));
        assert!(scaled_away(4, Some(3)));
        assert!(
            !scaled_away(1, Some(0)),
            "scaled to zero: a full stop, nobody leaves"
        );

        let members = [0, 1, 2, 3, 4];
        assert_eq!(removal_candidates(&members, 0, Some(2)), vec![4, 3, 2]);
        assert_eq!(removal_candidates(&members, 4, Some(2)), vec![3, 2]);
        assert!(removal_candidates(&members, 0, Some(5)).is_empty());
        assert!(removal_candidates(&members, 0, None).is_empty());
        assert!(removal_candidates(&members, 0, Some(0)).is_empty());
    }

    #[test]
    fn a_departed_volume_is_emptied_and_the_marker_goes_last() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("store");
        std::fs::create_dir_all(store.join("db")).unwrap();
        std::fs::write(store.join("db/conf"), b"x").unwrap();
        std::fs::write(dir.path().join(super::super::rejoin::REJOIN_FILE), b"{}").unwrap();
        let marker = DepartedMarker::new(dir.path());
        assert!(!marker.exists());
        marker.store("c-1", "kv-2").unwrap();
        assert!(marker.exists());
        marker.clear_departed_volume(&store).unwrap();
        assert!(!store.exists());
        assert!(!marker.exists());
        assert!(!dir.path().join(super::super::rejoin::REJOIN_FILE).exists());
        // Again (a crash after the wipe): nothing left to do but no error for the store.
        marker.store("c-1", "kv-2").unwrap();
        marker.clear_departed_volume(&store).unwrap();
    }
}
