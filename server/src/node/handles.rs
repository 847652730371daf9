//! The node's parts as the layers above see them: read-only views (configuration, state
//! machine, metrics registry, faults, quota) and the few operations on the Raft core that the
//! server's lifecycle and the inbound transport need.
//!
//! `Node`'s fields are private so that no caller drives the Raft core or the store behind the
//! node's back: a write goes through [`Node::write`] (the quota, the write pause, group commit),
//! a membership change through `membership`, a read barrier through
//! [`Node::linearizable_barrier`]. What is left here hands out nothing that could bypass them.

use std::sync::Arc;
use std::time::Duration;

use crate::config::ServerConfig;
use crate::faults::Faults;
use crate::raft::network::ClusterIdCell;
use crate::raft::{NodeId, Raft};
use crate::store::{SnapshotSummary, StateMachineStore};
use crate::telemetry::Telemetry;
use crate::tls::Dialer;

use super::leadership::ElectionSteering;
use super::quota::Quota;
use super::{Node, NodeError};

/// What the inbound Raft transport (`api::peer`) hands the other members' messages to, once its
/// fences let them through.
#[derive(Clone)]
pub struct RaftInbox {
    /// The Raft core: appends, votes and snapshots from the leader.
    pub raft: Raft,
    /// This member's cluster id, to check senders against and stamp replies with.
    pub cluster_id: ClusterIdCell,
    /// Election steering requests from a leader handing off.
    pub steering: Arc<ElectionSteering>,
}

/// A backup snapshot: everything applied when it was asked for.
pub struct BackupSnapshot {
    /// Index and term of the last entry it covers.
    pub last_log_index: u64,
    pub last_log_term: u64,
    /// The snapshot file's bytes.
    pub data: Vec<u8>,
    /// What it holds (revision, keys, format).
    pub summary: SnapshotSummary,
}

/// How long a backup waits for its snapshot to be built.
const BACKUP_SNAPSHOT_TIMEOUT: Duration = Duration::from_secs(120);

impl Node {
    /// The member's configuration.
    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// The applied state, for reads.
    pub fn state_machine(&self) -> &StateMachineStore {
        &self.state_machine
    }

    /// The metrics registry.
    pub fn telemetry(&self) -> &Telemetry {
        &self.telemetry
    }

    /// The test-only faults this member runs with.
    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    /// The space quota and its last measurement.
    pub fn quota(&self) -> &Quota {
        &self.quota
    }

    /// The cluster id, once known.
    pub fn cluster_id(&self) -> Option<String> {
        self.cluster_id.get().cloned()
    }

    /// Dials other members (TLS or plain, as configured).
    pub fn dialer(&self) -> &Arc<Dialer> {
        self.network.dialer()
    }

    /// The inbound transport's handles; see [`RaftInbox`].
    pub fn raft_inbox(&self) -> RaftInbox {
        RaftInbox {
            raft: self.raft.clone(),
            cluster_id: self.cluster_id.clone(),
            steering: self.steering.clone(),
        }
    }

    /// The highest log index this member knows committed.
    pub async fn committed_index(&self) -> u64 {
        self.raft
            .with_raft_state(|s| s.committed)
            .await
            .ok()
            .flatten()
            .map(|l| l.index)
            .unwrap_or(0)
    }

    /// Stops the Raft core (the last step of leaving).
    pub async fn shutdown_raft(&self) {
        if let Err(e) = self.raft.shutdown().await {
            tracing::debug!(error = %e, "raft shutdown");
        }
    }

    /// Builds a snapshot covering everything applied now, on the leader, for a backup.
    pub async fn backup_snapshot(&self) -> Result<BackupSnapshot, NodeError> {
        let m = self.metrics();
        if m.state != openraft::ServerState::Leader {
            return Err(match self.leader() {
                Some((_, leader)) => NodeError::NotLeader {
                    member: self.name(),
                    leader,
                },
                None => NodeError::NoLeader {
                    member: self.name(),
                },
            });
        }
        let applied = m.last_applied.map(|l| l.index).unwrap_or(0);
        let stopped = |e: openraft::error::Fatal<NodeId>| NodeError::RaftStopped {
            member: self.name(),
            reason: e.to_string(),
        };
        self.raft.trigger().snapshot().await.map_err(stopped)?;
        self.raft
            .wait(Some(BACKUP_SNAPSHOT_TIMEOUT))
            .metrics(
                |m| m.snapshot.map(|s| s.index).unwrap_or(0) >= applied,
                "backup snapshot",
            )
            .await
            .map_err(|e| {
                NodeError::Timeout(format!("building the snapshot for the backup: {e}"))
            })?;
        let snapshot = self
            .raft
            .get_snapshot()
            .await
            .map_err(|e| NodeError::RaftStopped {
                member: self.name(),
                reason: e.to_string(),
            })?
            .ok_or_else(|| {
                NodeError::FailedPrecondition("no snapshot is available yet; retry".into())
            })?;
        let last = snapshot.meta.last_log_id.unwrap_or_default();
        let data = snapshot.snapshot.into_inner();
        let summary = crate::store::describe_snapshot(&data).map_err(|e| NodeError::Storage {
            member: self.name(),
            source: e,
        })?;
        Ok(BackupSnapshot {
            last_log_index: last.index,
            last_log_term: last.leader_id.term,
            data,
            summary,
        })
    }
}
